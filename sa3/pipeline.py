"""Generation as public stage functions, and ``StableAudioModel``, which composes them.

Stages (each a function here, and a node in ComfyUI):
1. ``StableAudioModel.from_pretrained``: DiT + conditioner + text encoder + SAME.
2. ``encode_text``: prompts, negative prompts and durations -> ``TextConditioning``.
3. ``plan_latents``: durations -> ``LatentPlan`` (latent length, padding mask, schedule lengths).
4. ``make_generator``: the one explicit RNG stream of a generation.
5. ``prepare_sampling``: initial noise (``make_noise``), source audio -> latents (``encode_audio``),
   regions -> latent keep-mask (``build_inpaint_mask``) and inpainting conditioning, in the
   stream's order; ``generate()`` and the sampler node both call it.
6. ``sample``: schedule + sampler + CFG/APG -> latents.
7. ``decode``: latents -> audio, zeroed past each item's valid region, clamped.

Randomness follows the official order (spec 6.9): initial noise, SAME encoder noise (init audio
then inpaint audio), sampler noise, decoder noise; all from one ``torch.Generator``, never from
the global RNG, so a node graph and ``generate()`` give the same audio for the same seed.

Legend: B batch, C latent channels, L latent frames, S audio samples, K context tokens (257).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import audio as audio_utils
from . import checks, single_file
from .attention import BACKENDS, PADDING_MODES, resolve_backend
from .conditioners import Conditioner, TextEncoder, require_transformers
from .config import DURATION_PADDING_SEC, LATENT_ALIGN, SAMPLES_PER_LATENT, ModelConfig, shift_config
from .devices import official_numerics
from .dit import DiT, DiTConditioning
from .layers import set_weight_packing
from .loading import (
    CHECKPOINT_PREFIXES,
    WEIGHTS_FILE,
    default_device,
    load_strict,
    read_checkpoint,
    release_mapped_weights,
    resolve_model_dir,
    resolve_text_dir,
    split_checkpoint,
)
from .precision import resolve_autoencoder_precision, resolve_dtype
from .rng import make_generator, randn, stream_device
from .same import SAMEAutoencoder, SAMEConfig
from .sampling import (
    CFG_INTERVAL,
    SAMPLERS,
    build_schedule,
    dit_call_times,
    get_sampler,
    guide,
    guided_at,
    make_shift,
)

logger = logging.getLogger(__name__)

MAX_SEED = checks.MAX_SEED
AudioInput = tuple  # (sample_rate, tensor (C, S) or numpy (S, C)), as in the official interface


# --- input checks ----------------------------------------------------------------------------


def _as_list(value, name: str, batch_size: int) -> list:
    """Broadcast a scalar, or check a per-item list has ``batch_size`` entries."""
    if isinstance(value, (list, tuple)):
        checks.check_count(name, len(value), batch_size)
        return list(value)
    return [value] * batch_size


def official_regions(starts, ends) -> list[tuple[float, float]]:
    """The official ``inpaint_mask_start_seconds`` / ``inpaint_mask_end_seconds`` (two numbers or two
    equal-length lists) as ``[(start, end)]``; their order is checked by ``checks.check_regions``."""
    start_name, end_name = "inpaint_mask_start_seconds", "inpaint_mask_end_seconds"
    if (starts is None) != (ends is None):
        raise ValueError(checks.message(f"give both {start_name} and {end_name} (got only "
                                        f"{end_name if starts is None else start_name})."))
    if starts is None:
        return []
    if isinstance(starts, (list, tuple)) != isinstance(ends, (list, tuple)):
        raise ValueError(checks.message(f"{start_name} and {end_name} must both be numbers or both be lists "
                                        f"(got {type(starts).__name__} and {type(ends).__name__})."))
    starts, ends = (list(starts), list(ends)) if isinstance(starts, (list, tuple)) else ([starts], [ends])
    checks.check_count(end_name, len(ends), len(starts), what=f"entries, one per {start_name} entry")
    return [(checks.check_number(start_name, s, 0, unit="seconds"), checks.check_number(end_name, e, unit="seconds"))
            for s, e in zip(starts, ends, strict=True)]


def check_sampling(steps: int, cfg_scale: float, apg_scale: float, init_noise_level: float,
                   sampler_type: str | None, scale_phi: float = 0.0, cfg_norm_threshold: float = 0.0,
                   cfg_interval=CFG_INTERVAL, dist_shift=None) -> dict:
    """The sampler's settings, checked and normalised (``sample`` and ``generate`` step 0)."""
    return dict(
        steps=checks.check_number("steps", steps, 1, checks.MAX_STEPS, integer=True),
        cfg_scale=checks.check_number("cfg_scale", cfg_scale, 0, checks.MAX_CFG_SCALE),
        apg_scale=checks.check_number("apg_scale", apg_scale, 0, checks.MAX_APG_SCALE),
        init_noise_level=checks.check_number("init_noise_level", init_noise_level, 0, 1),
        sampler_type=None if sampler_type is None else checks.check_choice("sampler_type", sampler_type, SAMPLERS),
        **check_controls(scale_phi, cfg_norm_threshold, cfg_interval, dist_shift),
    )


def check_controls(scale_phi: float = 0.0, cfg_norm_threshold: float = 0.0, cfg_interval=CFG_INTERVAL,
                   dist_shift=None, where: str | None = None) -> dict:
    """The official app's advanced controls, checked: CFG rescale, norm threshold and interval, and
    the schedule shift override (an official spec dict or ``ShiftConfig`` -> ``ShiftConfig``;
    None keeps the model's)."""
    return dict(
        scale_phi=checks.check_number("scale_phi", scale_phi, 0, 1, where=where),
        cfg_norm_threshold=checks.check_number("cfg_norm_threshold", cfg_norm_threshold, 0,
                                               checks.MAX_CFG_NORM_THRESHOLD, where=where),
        cfg_interval=checks.check_noise_interval("cfg_interval", cfg_interval, where),
        dist_shift=None if dist_shift is None else shift_config(dist_shift, "dist_shift", where),
    )


# --- stage 2: text ---------------------------------------------------------------------------


@dataclass
class TextConditioning:
    """Conditioning tensors for a batch (on the DiT's device).

    cross: (B, K, E) prompt embeddings + seconds token; global_cond: (B, E) seconds embedding;
    negative_cross / negative_mask: (B, K, E) / (B, K), or None without a negative prompt.
    """

    cross: torch.Tensor
    global_cond: torch.Tensor
    durations: list[float]
    prompts: list[str]
    negative_cross: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.cross.shape[0]

    def unconditional(self) -> torch.Tensor:
        """Context of the CFG branch: the negative prompt with padded positions zeroed (the
        official behaviour), or all zeros without a negative prompt."""
        if self.negative_cross is None:
            return torch.zeros_like(self.cross)
        keep = self.negative_mask.to(torch.bool)[..., None]
        return torch.where(keep, self.negative_cross, torch.zeros_like(self.negative_cross))


def _encode_prompts(text_encoder: TextEncoder, conditioner: Conditioner, prompts: list[str], durations: list[float]):
    device = conditioner.conditioners["prompt"].padding_embedding.device
    hidden, mask = text_encoder(prompts)
    hidden, mask = hidden.to(device), mask.to(device)
    prompt_emb = conditioner.prompt(hidden, mask)  # (B, P, E)
    seconds = conditioner.seconds(durations)  # (B, 1, E)
    cross = torch.cat([prompt_emb, seconds.to(prompt_emb.dtype)], dim=1)  # (B, K, E)
    cross_mask = torch.cat([mask.float(), torch.ones_like(mask[:, :1], dtype=torch.float32)], dim=1)  # (B, K)
    return cross, cross_mask, seconds[:, 0]


@torch.no_grad()
def encode_text(text_encoder: TextEncoder, conditioner: Conditioner, prompts: Sequence[str],
                durations: Sequence[float], negative_prompts: Sequence[str] | None = None) -> TextConditioning:
    """Encode per-item prompts and durations (and optional negative prompts, which reuse the
    durations) into DiT conditioning."""
    prompts = [checks.check_text("prompt", p) for p in prompts]
    checks.check_number("prompt count", len(prompts), 1, checks.MAX_BATCH, integer=True)
    durations = checks.check_durations("duration", durations, checks.MAX_SECONDS)
    checks.check_count("duration", len(durations), len(prompts))
    if negative_prompts is not None:
        negative_prompts = [checks.check_text("negative_prompt", p) for p in negative_prompts]
        checks.check_count("negative_prompt", len(negative_prompts), len(prompts))
    cross, _, global_cond = _encode_prompts(text_encoder, conditioner, prompts, durations)
    out = TextConditioning(cross=cross, global_cond=global_cond, durations=durations, prompts=prompts)
    if negative_prompts is not None:
        out.negative_cross, out.negative_mask, _ = _encode_prompts(text_encoder, conditioner, negative_prompts,
                                                                   durations)
    return out


# --- stage 3: latent plan --------------------------------------------------------------------


@dataclass(frozen=True)
class LatentPlan:
    """Sizes of one generation (spec 6.2, 6.8).

    audio_samples: padded audio length S = latents * 4096; latents: L;
    effective: (B,) latent lengths of the requested durations (the schedule's lengths);
    valid: (B,) effective + 6 s headroom, clamped to L (the DiT's padding mask).
    """

    audio_samples: int
    latents: int
    effective: tuple[int, ...]
    valid: tuple[int, ...]
    durations: tuple[float, ...]

    def padding_mask(self, device=None) -> torch.Tensor:
        """(B, L) bool, True on valid latents."""
        valid = torch.tensor(self.valid, device=device)
        return torch.arange(self.latents, device=device)[None, :] < valid[:, None]


def plan_latents(cfg: ModelConfig, durations: Sequence[float], padding_sec: float = DURATION_PADDING_SEC,
                 latents: int | None = None) -> LatentPlan:
    """Latent length for a batch: ``align8192((max duration + 6 s) * sr)``, capped at the
    model's ``sample_size`` (from its config, so medium reaches 380 s).

    ``latents``: a length fixed elsewhere instead (ComfyUI's EmptyLatentAudio sizes latents from
    its own seconds, rounded to the nearest frame, without headroom); each item's valid region
    is capped at it, and the longest duration must fit in it (to that same rounding).
    """
    durations = checks.check_durations("duration", durations, cfg.max_duration)
    checks.check_number("batch size", len(durations), 1, checks.MAX_BATCH, integer=True)
    padding_sec = checks.check_number("duration_padding_sec", padding_sec, 0, checks.MAX_SECONDS, unit="seconds")
    sr = cfg.sample_rate
    headroom = int(padding_sec * sr / SAMPLES_PER_LATENT)
    effective = tuple(max(1, math.ceil(int(d * sr) / SAMPLES_PER_LATENT)) for d in durations)
    if latents is None:
        n = int((max(durations) + padding_sec) * sr)
        n = math.ceil(n / SAMPLES_PER_LATENT) * SAMPLES_PER_LATENT
        n = math.ceil(n / LATENT_ALIGN) * LATENT_ALIGN
        n = min(n, cfg.sample_size // LATENT_ALIGN * LATENT_ALIGN)
        latents = n // SAMPLES_PER_LATENT
    elif not (needed := round(max(durations) * sr / SAMPLES_PER_LATENT)) <= latents <= cfg.max_latents:
        raise ValueError(f"Stable Audio 3: a latent of {latents} frames ({latents * SAMPLES_PER_LATENT / sr:.2f} s) "
                         f"does not fit {max(durations):g} s (expected {needed} to {cfg.max_latents} frames).")
    valid = tuple(min(e + headroom, latents) for e in effective)
    return LatentPlan(latents * SAMPLES_PER_LATENT, latents, effective, valid, tuple(durations))


# --- stage 4: audio in -----------------------------------------------------------------------


def check_audio_input(name: str, audio_input: AudioInput, where: str | None = None) -> tuple[int, torch.Tensor]:
    """``(sample_rate, audio)`` as the official interface takes it -> ``(rate, (C, S))`` with the rate
    in range. ``name`` says which input is wrong (init_audio, inpaint_audio)."""
    if not (isinstance(audio_input, (tuple, list)) and len(audio_input) == 2):
        raise checks.fail(name, "a (sample_rate, audio) pair", audio_input, where)
    in_sr, data = audio_input
    if torch.is_tensor(in_sr) and not torch.is_tensor(data):
        raise ValueError(checks.message(f"{name} must be (sample_rate, audio) with the sample rate first (got "
                                        "(tensor, number)); torchaudio.load returns (audio, sr), so swap it.",
                                        where))
    rate = checks.check_sample_rate(name, in_sr, where)
    return rate, audio_utils.as_channels_first(data, name)


def prepare_audio(audio_input: AudioInput, sample_rate: int, length: int, name: str = "audio",
                  where: str | None = None) -> torch.Tensor:
    """(sample_rate, audio) -> (1, 2, length) float32 at the model rate: resample, then keep the
    first ``length`` samples (zero-padded), then mono -> stereo (official order). Only the first two
    channels and the samples that reach those ``length`` outputs are resampled (the same numbers,
    bounded work for long files); each of those samples must be finite."""
    in_sr, wav = check_audio_input(name, audio_input, where)
    checks.check_resample(name, in_sr, sample_rate, where)
    wav = wav[:2, : audio_utils.samples_needed(length, in_sr, sample_rate)]  # (C, S) -> (<=2, <=needed)
    wav = checks.check_waveform(name, wav, where).float()
    wav = audio_utils.resample(wav, in_sr, sample_rate)
    wav = audio_utils.pad_crop(wav, length)
    return audio_utils.to_stereo(wav[None])


@torch.no_grad()
def encode_audio(autoencoder: SAMEAutoencoder, audio: torch.Tensor, *, chunked: bool,
                 generator: torch.Generator | None) -> torch.Tensor:
    """(1, 2, S) audio -> (1, C, S / 4096) latents. SAME-L draws encoder noise from ``generator``."""
    return autoencoder.encode(audio.to(autoencoder.device, autoencoder.dtype), chunked=chunked, generator=generator)


def build_inpaint_mask(plan: LatentPlan, regions: Sequence[tuple[float, float]], sample_rate: int,
                       device=None) -> torch.Tensor:
    """Latent keep-mask (1, 1, L): 1 = keep the source, 0 = generate.

    Built at audio rate over ``[int(start * sr), int(end * sr))`` per region, zeroed past the
    longest duration (the headroom is generated), then nearest-sampled at sample 4096 * j.
    """
    regions = checks.check_regions("inpaint region", regions, max(plan.durations))
    mask = torch.ones(1, plan.audio_samples, device=device)
    for start, end in regions:
        s = min(int(start * sample_rate), plan.audio_samples)
        e = min(int(end * sample_rate), plan.audio_samples)
        mask[:, s:e] = 0
    mask[:, int(max(plan.durations) * sample_rate):] = 0
    return F.interpolate(mask[:, None], size=plan.latents, mode="nearest")  # (1, 1, S) -> (1, 1, L)


# --- stage 5: randomness ---------------------------------------------------------------------


def random_seed() -> int:
    """A fresh seed for seed = -1 (drawn without touching torch's global RNG)."""
    return random.SystemRandom().randint(0, 99998)


def make_noise(batch_size: int, channels: int, latents: int, generator: torch.Generator,
               device=None) -> torch.Tensor:
    """The initial noise (B, C, L), float32, on ``device`` (default: the generator's): always the
    first draw of the stream, made on the generator's device (``sa3.rng``)."""
    checks.check_number("batch_size", batch_size, 1, checks.MAX_BATCH, integer=True)
    return randn((batch_size, channels, latents), generator, device or generator.device)


def local_conditioning(batch_size: int, latents: int, channels: int, inpaint_latents: torch.Tensor | None,
                       inpaint_mask: torch.Tensor | None, device=None) -> torch.Tensor:
    """(B, 1 + C, L): the keep-mask and the masked source latents; zeros without inpainting."""
    if inpaint_mask is None:
        return torch.zeros(batch_size, 1 + channels, latents, device=device)
    mask = inpaint_mask.to(device).expand(batch_size, 1, latents)
    source = torch.zeros(batch_size, channels, latents, device=device) if inpaint_latents is None \
        else inpaint_latents.to(device).expand(batch_size, -1, -1)
    return torch.cat([mask, source * mask], dim=1)


def encode_sources(autoencoder: SAMEAutoencoder, waveforms: Sequence[torch.Tensor], *, chunked: bool,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Prepared sources, one (1, 2, S) waveform per item -> (N, C, L) latents, encoded one item
    after the other (SAME-L draws each item's encoder noise in turn)."""
    return torch.cat([encode_audio(autoencoder, wav, chunked=chunked, generator=generator) for wav in waveforms])


@dataclass
class SamplingStart:
    """What ``sample`` starts from: noise (B, C, L) float32; init_latents (1 or B, C, L) or None
    (text-to-audio); local_cond (B, 1 + C, L), the inpainting conditioning (zeros without)."""

    noise: torch.Tensor
    init_latents: torch.Tensor | None
    local_cond: torch.Tensor


def prepare_sampling(autoencoder: SAMEAutoencoder, cfg: ModelConfig, plan: LatentPlan, generator: torch.Generator, *,
                     batch_size: int, init_audio: Sequence[torch.Tensor] | None = None,
                     init_latents: torch.Tensor | None = None, inpaint_audio: Sequence[torch.Tensor] | None = None,
                     inpaint_latents: torch.Tensor | None = None, inpaint_regions: Sequence[tuple[float, float]] = (),
                     device=None) -> SamplingStart:
    """Stages 4-5 in the official random order (spec 6.9): the initial noise, then the init source,
    then the inpaint source, each SAME-encoded here when given as audio (SAME-L draws encoder
    noise from ``generator``), then the inpaint keep-mask and the local conditioning.

    A source is either audio, ``prepare_audio`` waveforms (1, 2, plan.audio_samples) one per
    item, or latents (1 or B, C, L) encoded before (used as given: no encoder draw here).
    ``inpaint_regions`` (seconds) are regenerated; without regions an inpaint source is kept
    whole up to the longest duration (continuation past its end).
    """
    for name, audio, latents in (("init", init_audio, init_latents), ("inpaint", inpaint_audio, inpaint_latents)):
        if audio is not None and latents is not None:
            raise ValueError(f"Stable Audio 3: give the {name} source as audio or as latents, not both.")
    device = device or generator.device
    channels = cfg.latent_channels
    chunked = autoencoder.config.chunked  # the checkpoint's default
    noise = make_noise(batch_size, channels, plan.latents, generator, device)
    if init_audio is not None:
        init_latents = encode_sources(autoencoder, init_audio, chunked=chunked, generator=generator)
    if inpaint_audio is not None:
        inpaint_latents = encode_sources(autoencoder, inpaint_audio, chunked=chunked, generator=generator)
    mask = None
    if inpaint_latents is not None:
        mask = build_inpaint_mask(plan, inpaint_regions, cfg.sample_rate, device)
    elif inpaint_regions:
        raise ValueError("Stable Audio 3: inpaint regions need an inpaint source.")
    local = local_conditioning(batch_size, plan.latents, channels, inpaint_latents, mask, device)
    return SamplingStart(noise, None if init_latents is None else init_latents.to(device), local)


# --- stage 6: sampling -----------------------------------------------------------------------


@torch.no_grad()
def sample(dit: DiT, noise: torch.Tensor, text: TextConditioning, plan: LatentPlan, *, cfg: ModelConfig,
           steps: int = 8, cfg_scale: float = 1.0, apg_scale: float = 1.0, sampler_type: str | None = None,
           init_latents: torch.Tensor | None = None, init_noise_level: float = 1.0,
           local_cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
           callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
           step_hooks: Sequence[Callable[[torch.Tensor], None]] = (), scale_phi: float = 0.0,
           cfg_norm_threshold: float = 0.0, cfg_interval: tuple[float, float] = CFG_INTERVAL,
           dist_shift=None) -> torch.Tensor:
    """Run the sampler from ``noise`` (B, C, L) and return the final latents (B, C, L).

    ``init_latents`` (1 or B, C, L) with ``init_noise_level`` < 1 starts from
    ``init * (1 - level) + noise * level`` (audio-to-audio). ``local_cond`` is the inpainting
    conditioning from ``local_conditioning``. ``callback(step, x, denoised)`` runs once per step;
    ``step_hooks`` run before every DiT call with its t (B,) as a float32 CPU tensor (LoRA timing:
    reading it costs no device sync; ``sampling.dit_call_times``). With ``cfg_scale`` != 1,
    guidance runs in the DiT calls whose noise level lies in ``cfg_interval``; the others run the
    conditional branch alone. ``dist_shift`` (an official shift spec or ``ShiftConfig``) replaces the
    model's sampling time shift.
    """
    checked = check_sampling(steps, cfg_scale, apg_scale, init_noise_level, sampler_type, scale_phi, cfg_norm_threshold,
                             cfg_interval, dist_shift)
    steps, cfg_scale, apg_scale = checked["steps"], checked["cfg_scale"], checked["apg_scale"]
    init_noise_level, scale_phi, cfg_norm_threshold, cfg_interval = (
        checked[k] for k in ("init_noise_level", "scale_phi", "cfg_norm_threshold", "cfg_interval"))
    shift = make_shift(checked["dist_shift"] or cfg.shift)
    sampler = get_sampler(sampler_type or cfg.default_sampler)
    device, dtype = noise.device, dit.dtype
    b = noise.shape[0]
    padding_mask = plan.padding_mask(device)
    if b != text.batch_size or b != len(plan.valid):
        raise ValueError(f"Stable Audio 3: batch sizes differ (noise {b}, text {text.batch_size}, "
                         f"plan {len(plan.valid)}).")
    local = local_cond
    if local is None:
        local = local_conditioning(b, plan.latents, noise.shape[1], None, None, device)
    cond = DiTConditioning(cross=text.cross.to(device, dtype), global_cond=text.global_cond.to(device, dtype),
                           local=local.to(device, dtype), padding_mask=padding_mask)
    guided = cfg_scale != 1.0
    if guided:
        uncond_cross = text.unconditional().to(device, dtype)
        batch_cond = DiTConditioning(
            cross=torch.cat([cond.cross, uncond_cross]), global_cond=cond.global_cond.repeat(2, 1),
            local=cond.local.repeat(2, 1, 1), padding_mask=padding_mask.repeat(2, 1),
        )

    # step-independent DiT work (context K/V, local embeddings, rotary) once per conditioning, made
    # on first use (an interval may leave one branch unused); the DiT refreshes a cache itself if a
    # step hook (LoRA) changes a weight it depends on
    caches = {}

    def run_dit(x: torch.Tensor, t: torch.Tensor, c: DiTConditioning) -> torch.Tensor:
        if id(c) not in caches:
            caches[id(c)] = dit.prepare(c)
        return dit(x, t, c, cache=caches[id(c)])

    host_times = iter(())  # each DiT call's t on the CPU, set once the schedule is known

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.float()  # the DiT and guidance use float32 time (spec 4.2)
        t_host = next(host_times)
        for hook in step_hooks:
            hook(t_host)
        x = x.to(dtype)
        if not (guided and guided_at(t_host, cfg_interval)):
            return run_dit(x, t, cond)
        v_cond, v_uncond = run_dit(torch.cat([x, x]), torch.cat([t, t]), batch_cond).chunk(2)
        return guide(x, t, v_cond, v_uncond, cfg_scale=cfg_scale, apg_scale=apg_scale, padding_mask=padding_mask,
                     norm_threshold=cfg_norm_threshold, scale_phi=scale_phi)

    sigma_max = 1.0
    x = noise
    if init_latents is not None:
        sigma_max = float(init_noise_level)
        x = init_latents.to(device) * (1 - sigma_max) + noise * sigma_max
    x = x.to(dtype)
    effective = torch.tensor(plan.effective, dtype=torch.float32, device=device)
    sigmas = build_schedule(steps, sigma_max, shift, effective)
    host_times = iter(dit_call_times(sampler, sigmas, x.dtype))
    return sampler(velocity, x, sigmas, generator=generator, callback=callback)


# --- stage 7: decode -------------------------------------------------------------------------


@torch.no_grad()
def decode(autoencoder: SAMEAutoencoder, latents: torch.Tensor, plan: LatentPlan, *, chunked: bool,
           generator: torch.Generator | None, on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(B, C, L) latents -> (B, 2, L * 4096) float32 audio: samples past each item's valid
    latents are zeroed, then clamped to [-1, 1]. Draws the decoder noise from ``generator``."""
    audio = autoencoder.decode(latents.to(autoencoder.device, autoencoder.dtype), chunked=chunked,
                               generator=generator, on_chunk=on_chunk)
    keep = plan.padding_mask(audio.device).repeat_interleave(SAMPLES_PER_LATENT, dim=-1)[:, None]  # (B, 1, S)
    audio = audio * keep[..., : audio.shape[-1]].to(audio.dtype)
    return audio.float().clamp(-1, 1)


def trim_to_duration(audio: torch.Tensor, durations: Sequence[float], sample_rate: int) -> torch.Tensor:
    """Crop to the duration when all items share it; mixed durations keep the padded length
    (official behaviour; items are already silent past their own length + headroom)."""
    if len(set(durations)) == 1:
        return audio[..., : int(durations[0] * sample_rate)]
    return audio


# --- a whole request ---------------------------------------------------------------------------


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
    prompts = [checks.check_text("prompt", p) for p in _as_list(prompt, "prompt", batch_size)]
    negatives = None if negative_prompt is None else \
        [checks.check_text("negative_prompt", p) for p in _as_list(negative_prompt, "negative_prompt", batch_size)]
    durations = checks.check_durations("duration", _as_list(duration, "duration", batch_size), config.max_duration)
    check_sampling(steps, cfg_scale, apg_scale, init_noise_level, sampler_type, scale_phi, cfg_norm_threshold,
                   cfg_interval, dist_shift)
    if seed != -1:
        checks.check_number("seed", seed, -1, MAX_SEED, integer=True, fix="-1 picks a random seed.")
    regions = checks.check_regions("inpaint region", official_regions(inpaint_mask_start_seconds,
                                                                      inpaint_mask_end_seconds), max(durations))
    if regions and inpaint_audio is None:
        raise ValueError(checks.message("inpaint regions need inpaint_audio (got regions and no audio)."))
    plan = plan_latents(config, durations, duration_padding_sec)
    sr = config.sample_rate
    init_wav = None if init_audio is None else prepare_audio(init_audio, sr, plan.audio_samples, "init_audio")
    inpaint_wav = None if inpaint_audio is None else \
        prepare_audio(inpaint_audio, sr, plan.audio_samples, "inpaint_audio")
    return Request(prompts, negatives, durations, regions, plan, init_wav, inpaint_wav)


# --- the model -------------------------------------------------------------------------------


def read_config(path: str | Path) -> tuple[ModelConfig, SAMEConfig]:
    """``model_config.json`` parsed and checked whole (DiT, conditioners and SAME parts) before any
    weights are read; a problem names the file and the key."""
    config = ModelConfig.from_file(path)
    return config, same_config(config, path)


def same_config(config: ModelConfig, path: str | Path) -> SAMEConfig:
    """The SAME part of ``config`` (read from ``path``), its problems named as config problems."""
    try:
        return SAMEConfig.from_official(config.pretransform)
    except KeyError as e:
        raise ValueError(f"Stable Audio 3 config: model.pretransform is missing the key {e.args[0]!r} in "
                         f"{str(path)!r}.") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"Stable Audio 3 config: model.pretransform is not a SAME autoencoder config ({e}) in "
                         f"{str(path)!r}.") from e


class _LoadOptions(NamedTuple):
    device: torch.device
    attention: str  # as asked (SAME resolves its own backend)
    backend: str  # the DiT's
    dtype: torch.dtype
    padding_mode: str
    text_dtype: torch.dtype | None  # None: the checkpoint's
    autoencoder_dtype: torch.dtype | str  # or "bf16-mixed"


def _load_options(device, dtype, attention: str, padding_mode: str, text_dtype, autoencoder_dtype) -> _LoadOptions:
    """Device, attention backend, dtypes and padding mode of a load, checked before any file is read."""
    checks.check_choice("padding_mode", padding_mode, PADDING_MODES)
    checks.check_choice("attention", attention, BACKENDS)
    require_transformers()  # T5Gemma: a clear message before any weight is read
    device = torch.device(device) if device is not None else default_device()
    model_dtype = resolve_dtype(dtype, device)
    return _LoadOptions(device, attention, resolve_backend(attention, device, model_dtype), model_dtype, padding_mode,
                        resolve_dtype(text_dtype, device, "text_dtype") if text_dtype else None,
                        resolve_autoencoder_precision(autoencoder_dtype, device, model_dtype))


def _release_block(block: nn.Module) -> None:
    """``low_memory`` during sampling: drop one DiT block's memory-mapped CPU weights (no heap
    trim in the middle of a step)."""
    release_mapped_weights(block, trim_heap=False)


class StableAudioModel:
    """The official Stable Audio 3 Python interface (``from_pretrained`` / ``generate`` / LoRA)."""

    def __init__(self, config: ModelConfig, dit: DiT, conditioner: Conditioner, text_encoder: TextEncoder,
                 autoencoder: SAMEAutoencoder, device: torch.device, model_dir: Path | None = None,
                 low_memory: bool = False):
        self.config = config
        self.dit = dit
        self.conditioner = conditioner
        self.text_encoder = text_encoder
        self.autoencoder = autoencoder
        self.device = device
        self.model_dir = model_dir
        self.sample_rate = config.sample_rate
        self.lora = None  # sa3.lora.LoRAStack once load_lora() is called
        self.low_memory = low_memory  # see from_pretrained
        # low_memory also streams the DiT's mapped weights during sampling: each block's pages are
        # dropped once it has run and fault back in from the page cache at the next step
        dit.transformer.after_block = _release_block if low_memory else None
        # bf16 CPU GEMMs on prepacked weights: faster, one more copy of the weights, so not in low_memory
        for part in (dit, autoencoder):
            set_weight_packing(part, not low_memory)

    # -- loading --

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, *, attention: str = "auto",
                        padding_mode: str = "exact", text_dtype: str | torch.dtype | None = None,
                        autoencoder_dtype: str | torch.dtype | None = "fp32",
                        cache_dir: str | Path | None = None, download: bool = True,
                        low_memory: bool = False, ops: type | None = None) -> StableAudioModel:
        """Load one of the six official models by name, or an official local folder.

        Args:
            name_or_path: "small-music", "small-sfx", "medium" or their "-base" versions (fetched
                from the Hugging Face hub, gated: accept the license and set HF_TOKEN), or a folder
                in the official layout (model_config.json, model.safetensors, t5gemma-b-b-ul2/).
            device: where the model runs ("cuda", "mps", "cpu", a torch.device); None picks CUDA,
                then MPS, then the CPU.
            dtype: DiT and conditioner precision: "fp32", "fp16", "bf16", a torch dtype, or
                None / "auto" (fp16 on CUDA, fp32 elsewhere, as official). Half precision halves
                their memory and is faster on GPUs; fp32 reproduces the official CPU numbers.
            attention: "auto" (flash-attn on CUDA for fp16/bf16 parts when installed, else PyTorch
                SDPA), "sdpa", "flash" (fp16/bf16 only) or "math" (slow dense reference). The
                choice changes speed and memory, not the result beyond float rounding.
            padding_mode: how padded latent frames are masked in attention: "exact" (flash-attn
                semantics, as trained: valid audio does not depend on a batch's padding) or
                "reference" (the official CPU behaviour, which the golden tests pin bit for bit).
            text_dtype: T5Gemma precision; None keeps the checkpoint's (bf16 for the official files).
            autoencoder_dtype: SAME precision: "fp32" (the default, exact), "bf16-mixed" (opt-in,
                faster: bf16 GEMMs and convolutions with the norms, attention and noise in fp32;
                audio within about 2e-2 relative L2 of fp32 on the test models, see
                bench/RESULTS.md), or a plain dtype for the whole module (half precision hurts SAME
                attention); None follows ``dtype``.
            cache_dir: Hugging Face cache folder for names (None: the default HF cache).
            download: True fetches missing official files from the hub; False only uses local
                folders and the HF cache (an error says what is missing).
            low_memory: after each stage of ``generate``, drop that part's memory-mapped weights
                from RAM (text encoder and conditioner after encoding, SAME after encoding/decoding,
                DiT after sampling), so the peak is the largest part instead of the sum; they are
                re-read from the page cache at the next use. Linux and CPU only, also under
                ``torch.inference_mode()``; weights converted to another dtype, and the pages a
                LoRA wrote, stay resident. Without it, bf16 layers on an x86 CPU keep a copy of
                their weights prepacked for oneDNN (``layers.set_weight_packing``: the bf16 DiT
                step about 10 % faster, for about the bf16 DiT's size in RAM); with it they don't.
            ops: the operations namespace the DiT and SAME build their layers with (None:
                ``layers.DefaultOps``); a host passes its own, as ComfyUI's nodes pass cast
                operations so its partial loading works (same parameters and state-dict keys).

        Raises ValueError for bad options and RuntimeError for missing or broken files, before
        any weight is read where it can.
        """
        # checked before any download
        options = _load_options(device, dtype, attention, padding_mode, text_dtype, autoencoder_dtype)
        model_dir = resolve_model_dir(name_or_path, cache_dir=cache_dir, download=download)
        config, same_cfg = read_config(model_dir / "model_config.json")

        def load_text(text_dtype_: torch.dtype | None) -> TextEncoder:
            text_dir = resolve_text_dir(model_dir, config.text.model_path or config.text.repo_id,
                                        config.text.subfolder, cache_dir=cache_dir, download=download)
            return TextEncoder.from_folder(text_dir, config.text, dtype=text_dtype_)

        return cls._assemble(config, same_cfg, model_dir / WEIGHTS_FILE, load_text, model_dir, options,
                             low_memory=low_memory, ops=ops)

    @classmethod
    def from_single_file(cls, checkpoint: str | Path, text_encoder: str | Path,
                         device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, *,
                         variant: str = "auto", attention: str = "auto",
                         padding_mode: str = "exact", text_dtype: str | torch.dtype | None = None,
                         autoencoder_dtype: str | torch.dtype | None = "fp32",
                         low_memory: bool = False, ops: type | None = None) -> StableAudioModel:
        """Load core ComfyUI's single files: a checkpoint (DiT + conditioner + SAME, the official
        key layout; fp32, fp16 or bf16) and a T5Gemma text-encoder file with its tokenizer.

        variant: "auto" (from the file's shapes and name) or one of the six official names; it
        sets the config (default sampler, maximum duration). A sidecar ``<checkpoint stem>.json``
        (official model_config.json) decides instead; see ``sa3.single_file``. The other
        arguments are those of ``from_pretrained``; the same weights give the same audio.
        """
        options = _load_options(device, dtype, attention, padding_mode, text_dtype, autoencoder_dtype)
        checkpoint, text_encoder = Path(checkpoint), Path(text_encoder)
        config, source = single_file.checkpoint_config(checkpoint, variant)
        same_cfg = same_config(config, source)  # a sidecar's SAME part, named as the sidecar's problem
        single_file.check_text_encoder_file(text_encoder)  # before any weight is read
        logger.info("Stable Audio 3: %s uses the config of %s", checkpoint, source)

        def load_text(text_dtype_: torch.dtype | None) -> TextEncoder:
            return single_file.load_text_encoder_file(text_encoder, config.text, dtype=text_dtype_)

        return cls._assemble(config, same_cfg, checkpoint, load_text, None, options, low_memory=low_memory, ops=ops)

    @classmethod
    def _assemble(cls, config: ModelConfig, same_cfg: SAMEConfig, weights: Path,
                  load_text: Callable[[torch.dtype | None], TextEncoder], model_dir: Path | None,
                  options: _LoadOptions, *, low_memory: bool, ops: type | None = None) -> StableAudioModel:
        """Build the model of ``config`` (its SAME part ``same_cfg``, parsed and checked once by the
        caller) from a checkpoint file and a text-encoder loader (shared by both ways of loading,
        so the same weights give the same modules)."""
        device, attention, backend, model_dtype, padding_mode, text_dtype, autoencoder_dtype = options
        # weights kept in the file's dtype stay memory-mapped; converted ones are read straight into
        # their new dtype (no transient fp32 copy); the autoencoder is converted below if asked.
        # Core's DiT prefix (model.diffusion_model.) is converted like ours, then renamed.
        dit_prefixes = (CHECKPOINT_PREFIXES["dit"], *single_file.DIT_ALIASES)
        convert = {} if device.type != "cpu" else {
            **dict.fromkeys(dit_prefixes, model_dtype), CHECKPOINT_PREFIXES["conditioner"]: model_dtype}
        state = single_file.canonical_keys(read_checkpoint(weights, dtype_by_prefix=convert))
        parts = split_checkpoint(state, weights)

        with torch.device("meta"):
            dit = DiT(config.dit, ops=ops)
            conditioner = Conditioner(config.text, config.seconds, config.cond_dim)
            autoencoder = SAMEAutoencoder(same_cfg, ops=ops)
        load_strict(dit, parts["dit"], "diffusion transformer", weights)
        load_strict(conditioner, parts["conditioner"], "conditioner", weights)
        load_strict(autoencoder, parts["autoencoder"], "SAME autoencoder", weights)
        dit.to(device, model_dtype).set_attention(backend, padding_mode)
        conditioner.to(device, model_dtype)
        autoencoder.to_precision(device, autoencoder_dtype)
        autoencoder.attention_backend = attention

        text_encoder = load_text(text_dtype)
        text_encoder.to(device)
        logger.info("Stable Audio 3: loaded %s (%s, %s, attention=%s)", weights, config.family, model_dtype, backend)
        return cls(config, dit, conditioner, text_encoder, autoencoder, device, model_dir, low_memory)

    # -- generation --

    def generate(self, prompt: str | Sequence[str] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 duration: float | Sequence[float] = 120, steps: int = 8, cfg_scale: float = 1.0, seed: int = -1,
                 batch_size: int = 1, init_audio: AudioInput | None = None, init_noise_level: float = 1.0,
                 inpaint_audio: AudioInput | None = None, inpaint_mask_start_seconds=None,
                 inpaint_mask_end_seconds=None, apg_scale: float = 1.0, sampler_type: str | None = None,
                 return_latents: bool = False, chunked_decode: bool | None = None,
                 truncate_output_to_duration: bool = True, duration_padding_sec: float = DURATION_PADDING_SEC,
                 dist_shift: dict | None = None, device_parity: bool = False,
                 callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                 on_decode_chunk: Callable[[int, int], None] | None = None, **sampler_kwargs) -> torch.Tensor:
        """Generate audio; returns (B, 2, S) float32 in [-1, 1] at 44.1 kHz, or (B, C, L) latents.

        Mirrors the official ``generate()``. A single value of a per-item argument (prompt,
        negative_prompt, duration) is used for every batch item; a list gives one per item.

        Args:
            prompt: the text to generate from; a string or one string per batch item (required).
            negative_prompt: what to steer away from, same shapes as ``prompt``; only used when
                ``cfg_scale`` != 1 (it replaces the empty unconditional branch of CFG).
            duration: seconds of audio, in (0, the model's maximum] (about 120 s for small, 380 s
                for medium: ``config.max_duration``); one number or one per item. Items share one
                latent length (the longest duration + ``duration_padding_sec``).
            steps: sampler steps, an integer >= 1 (8 is the official default for the post-trained
                models); cost grows linearly with it.
            cfg_scale: classifier-free guidance strength; 1.0 (default) runs one DiT pass per step
                without guidance, values > 1 follow the prompt more closely at twice the cost.
            seed: noise seed in [0, 2**63 - 1], or -1 for a random one; the same seed and inputs
                give the same audio on the same device and dtype.
            batch_size: clips generated together, an integer >= 1.
            init_audio: ``(sample_rate, audio)`` for audio-to-audio; audio is a tensor (channels,
                samples) or a NumPy array (samples, channels), float in [-1, 1] or int16/int32; it is
                resampled to 44.1 kHz, made stereo and cut or zero-padded to the latent length.
            init_noise_level: how much of ``init_audio`` is replaced by noise, in [0, 1]: 1.0
                ignores it (plain text-to-audio), lower keeps more of its structure.
            inpaint_audio: ``(sample_rate, audio)`` to edit (same formats as ``init_audio``); the
                regions below are regenerated and everything else is kept.
            inpaint_mask_start_seconds, inpaint_mask_end_seconds: region starts and ends in
                seconds, two numbers or two equal-length lists, 0 <= start < end (an end past the
                audio continues it); both None to use no regions.
            apg_scale: with ``cfg_scale`` != 1, the share of adaptive projected guidance: 1.0
                (default) keeps only the guidance orthogonal to the prediction, 0.0 is vanilla CFG.
            sampler_type: one of ``SAMPLERS`` ("pingpong", "euler", "dpmpp", "rk4"); None picks
                the model's own (pingpong for post-trained models, euler for -base).
            return_latents: return the sampled latents (B, C, L) instead of decoding them.
            chunked_decode: decode SAME in overlapping chunks (bounds its memory for long audio);
                None follows the checkpoint's setting.
            truncate_output_to_duration: cut each item to its own duration (True), else return the
                whole latent length for every item.
            duration_padding_sec: seconds of headroom added after the longest duration (6 s, as
                official); a non-negative number. Changing it changes the result.
            dist_shift: the sampling schedule's time shift for this call instead of the model's,
                in the official config format: ``{"type": "none"}``, ``{"type": "flux", "min_length",
                "max_length", "alpha_min", "alpha_max"}``, ``{"type": "full", "base_shift",
                "max_shift", "min_length", "max_length"}`` or ``{"type": "logsnr", "anchor_length",
                "anchor_logsnr", "rate", "logsnr_end"}`` (lengths in latent frames; parameters left
                out take the official defaults); None (default) keeps the model's.
            device_parity: reproduce the official run on this model's device rather than the
                official CPU stream: the random stream drawn on the device (``sa3.rng``) and, on
                CUDA, the official numeric settings (TF32 and fp16 reduced-precision reductions
                off) during this call only (``sa3.devices.official_numerics``). False (default):
                the generator lives on the CPU, so a seed gives the same noise on every device.
            callback: ``callback(step, x, denoised)`` after every sampler step (step from 0; x and
                denoised are (B, C, L) latents), e.g. for progress or previews.
            on_decode_chunk: ``on_decode_chunk(i, n)`` after SAME decodes chunk i of n (1-based).
            **sampler_kwargs: as officially, ``cfg_interval`` (a ``(min, max)`` pair of noise
                levels in [0, 1], default (0, 1): with ``cfg_scale`` != 1 guidance runs only in the
                DiT calls whose noise level, batch item 0's, lies inside it, both ends included),
                ``scale_phi`` (0..1, rescales the guided velocity towards the conditional one's
                spread) and ``cfg_norm_threshold`` (> 0 caps the guidance difference's norm);
                anything else is a TypeError.

        Every argument is checked before any model work (ValueError naming it and its range).
        """
        # 0. check everything before any heavy work
        unknown = set(sampler_kwargs) - {"scale_phi", "cfg_norm_threshold", "cfg_interval"}
        if unknown:
            raise TypeError(f"Stable Audio 3: generate() got unexpected argument(s) {sorted(unknown)}.")
        if not isinstance(device_parity, bool):
            raise TypeError(f"Stable Audio 3: device_parity must be True or False (got {device_parity!r}).")
        request = check_request(
            self.config, prompt=prompt, negative_prompt=negative_prompt, duration=duration, steps=steps,
            cfg_scale=cfg_scale, seed=seed, batch_size=batch_size, init_audio=init_audio,
            init_noise_level=init_noise_level, inpaint_audio=inpaint_audio,
            inpaint_mask_start_seconds=inpaint_mask_start_seconds, inpaint_mask_end_seconds=inpaint_mask_end_seconds,
            apg_scale=apg_scale, sampler_type=sampler_type, duration_padding_sec=duration_padding_sec,
            dist_shift=dist_shift, **sampler_kwargs)
        seed = random_seed() if seed == -1 else seed
        with official_numerics(self.device) if device_parity else contextlib.nullcontext():
            return self._generate(request, seed=seed, stream=stream_device(self.device, device_parity), steps=steps,
                                  cfg_scale=cfg_scale, batch_size=batch_size, init_noise_level=init_noise_level,
                                  apg_scale=apg_scale, sampler_type=sampler_type, return_latents=return_latents,
                                  chunked_decode=chunked_decode, truncate=truncate_output_to_duration,
                                  dist_shift=dist_shift, callback=callback, on_decode_chunk=on_decode_chunk,
                                  **sampler_kwargs)

    def _generate(self, request: Request, *, seed: int, stream: torch.device, steps, cfg_scale, batch_size,
                  init_noise_level, apg_scale, sampler_type, return_latents, chunked_decode, truncate, dist_shift,
                  callback, on_decode_chunk, **sampler_kwargs) -> torch.Tensor:
        """Steps 1-4 of ``generate()`` for a checked request, the generator on ``stream``."""
        prompts, negatives, durations, regions = request.prompts, request.negatives, request.durations, request.regions
        plan, init_wav, inpaint_wav = request.plan, request.init_wav, request.inpaint_wav
        sr = self.config.sample_rate
        generator = make_generator(seed, stream)

        # 1. text and duration conditioning (no random draw)
        text = encode_text(self.text_encoder, self.conditioner, prompts, durations, negatives)
        self._release(self.text_encoder)
        self._release(self.conditioner)
        # 2. initial noise, then the sources' latents (init first, then inpaint: the official draw order)
        start = prepare_sampling(self.autoencoder, self.config, plan, generator, batch_size=batch_size,
                                 init_audio=None if init_wav is None else [init_wav],
                                 inpaint_audio=None if inpaint_wav is None else [inpaint_wav],
                                 inpaint_regions=regions, device=self.device)
        if init_wav is not None or inpaint_wav is not None:
            self._release(self.autoencoder)
        # 3. sample
        latents = sample(self.dit, start.noise, text, plan, cfg=self.config, steps=steps, cfg_scale=cfg_scale,
                         apg_scale=apg_scale, sampler_type=sampler_type, init_latents=start.init_latents,
                         init_noise_level=init_noise_level, local_cond=start.local_cond, generator=generator,
                         callback=callback, step_hooks=self.step_hooks(), dist_shift=dist_shift, **sampler_kwargs)
        self._release(self.dit)
        if return_latents:
            return latents
        # 4. decode
        chunked = self.autoencoder.config.chunked if chunked_decode is None else bool(chunked_decode)
        audio = decode(self.autoencoder, latents, plan, chunked=chunked, generator=generator, on_chunk=on_decode_chunk)
        self._release(self.autoencoder)
        return trim_to_duration(audio, durations, sr) if truncate else audio

    def _release(self, part: torch.nn.Module) -> None:
        if self.low_memory and self.device.type == "cpu":
            release_mapped_weights(part)

    def step_hooks(self) -> list[Callable[[torch.Tensor], None]]:
        return [self.lora.on_step] if self.lora is not None else []

    # -- LoRA (implemented in sa3.lora) --

    def load_lora(self, paths: str | Path | Sequence[str | Path], svd_bases_path: str | Path | None = None) -> None:
        """Stack LoRA files (official .safetensors or Lightning .ckpt) in order, after any loaded
        before. A failed call leaves the model exactly as it was."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self._lora_stack().load(list(paths), svd_bases_path=svd_bases_path or self.config.svd_bases_path)

    def prepare_lora(self, path: str | Path, svd_bases_path: str | Path | None = None):
        """Read one LoRA file and check it against this model without applying it: the returned
        ``sa3.lora.PreparedLoRA`` holds its tensors in memory for ``apply_loras`` (no file read there)."""
        return self._lora_stack().prepare([path], svd_bases_path=svd_bases_path or self.config.svd_bases_path)[0]

    def apply_loras(self, links) -> None:
        """Make the model carry exactly the chain ``links`` (``sa3.lora.LoRALink``: a prepared LoRA
        with its strengths and options), replacing any LoRA loaded before; weights no longer
        adapted return to their base values bit for bit. A no-op when the model already carries it."""
        self._lora_stack().set_chain(links)

    def _lora_stack(self):
        from .lora import LoRAStack

        if self.lora is None:
            self.lora = LoRAStack(self.dit, self.conditioner)
        return self.lora

    def set_lora_strength(self, strength: float, lora_index: int | None = None, target: str | None = None) -> None:
        """Set the strength of one LoRA (``lora_index``) or all, for the DiT, the conditioner
        (``target="dit"`` / ``"conditioner"``) or both. Applies from the next generation."""
        self._require_lora().set_strength(strength, lora_index=lora_index, target=target)

    def set_lora_options(self, lora_index: int, interval: tuple[float, float] | None = None,
                         layer_filter: str | None = None) -> None:
        """Per-LoRA extras of the official UI: active only while ``interval[0] <= t <= interval[1]``;
        layers whose name contains any comma-separated ``layer_filter`` entry are disabled."""
        self._require_lora().set_options(lora_index, interval=interval, layer_filter=layer_filter)

    def unload_lora(self) -> None:
        """Remove every LoRA and restore the base weights."""
        if self.lora is not None:
            self.lora.unload()
        self.lora = None

    def _require_lora(self):
        if self.lora is None or len(self.lora) == 0:
            raise ValueError("Stable Audio 3: no LoRA is loaded; call load_lora() first.")
        return self.lora
