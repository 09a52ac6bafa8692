"""One ``generate()`` call's arguments checked whole (step 0), before any model work.

The rules themselves are in ``sa3.checks`` (inputs), ``sa3.sampling`` (the sampler's settings) and
the stages (``plan_latents``, ``prepare_audio``), which check what they are given; this module
applies them all to one request, so ``generate()`` and the CLI refuse a bad call before loading
or running anything. It sits above ``sa3.stages`` (it plans and prepares through them), which is
why it is not part of ``sa3.checks`` (the stages import that).

Legend: S audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .config import DURATION_PADDING_SEC, ModelConfig
from .sampling import CFG_INTERVAL, check_sampling
from .stages import LatentPlan, plan_latents, prepare_audio


@dataclass(frozen=True)
class Request:
    """The checked arguments of one ``generate()`` call, as its stages take them."""

    prompts: list[str]
    negatives: list[str] | None
    durations: list[float]
    regions: list[tuple[float, float]]
    plan: LatentPlan
    init_wav: torch.Tensor | None  # (1, 2, S) at the model rate
    inpaint_wav: torch.Tensor | None


def check_request(config: ModelConfig, *, prompt, negative_prompt=None, duration=120, steps=8, cfg_scale=1.0,
                  seed=-1, batch_size=1, init_audio=None, init_noise_level=1.0, inpaint_audio=None,
                  inpaint_mask_start_seconds=None, inpaint_mask_end_seconds=None, apg_scale=1.0,
                  sampler_type=None, duration_padding_sec=DURATION_PADDING_SEC, scale_phi=0.0,
                  cfg_norm_threshold=0.0, cfg_interval=CFG_INTERVAL, dist_shift=None) -> Request:
    """Step 0 of ``generate()``: every argument checked against ``config`` (type, range, NaN, audio
    rate and samples, cost) with no model work; the CLI calls it before loading any weights."""
    if prompt is None:
        raise checks.fail("prompt", "a string or one string per batch item", prompt)
    batch_size = checks.check_number("batch_size", batch_size, 1, checks.MAX_BATCH, integer=True)
    prompts = [checks.check_text("prompt", p) for p in checks.per_item(prompt, "prompt", batch_size)]
    negatives = None
    if negative_prompt is not None:
        negatives = [checks.check_text("negative_prompt", p)
                     for p in checks.per_item(negative_prompt, "negative_prompt", batch_size)]
    durations = checks.per_item(duration, "duration", batch_size)
    durations = checks.check_durations("duration", durations, config.max_duration)
    check_sampling(steps, cfg_scale, apg_scale, init_noise_level, sampler_type, scale_phi, cfg_norm_threshold,
                   cfg_interval, dist_shift)
    if seed != -1:
        checks.check_number("seed", seed, -1, checks.MAX_SEED, integer=True, fix="-1 picks a random seed.")
    regions = checks.official_regions(inpaint_mask_start_seconds, inpaint_mask_end_seconds)
    regions = checks.check_regions("inpaint region", regions, max(durations))
    if regions and inpaint_audio is None:
        raise ValueError(checks.message("inpaint regions need inpaint_audio (got regions and no audio)."))
    plan = plan_latents(config, durations, duration_padding_sec)
    sr = config.sample_rate
    init_wav = None if init_audio is None else prepare_audio(init_audio, sr, plan.audio_samples, "init_audio")
    inpaint_wav = None if inpaint_audio is None else \
        prepare_audio(inpaint_audio, sr, plan.audio_samples, "inpaint_audio")
    return Request(prompts, negatives, durations, regions, plan, init_wav, inpaint_wav)
