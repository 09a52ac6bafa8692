"""The sampler node, owner of the generation's random stream.

One ``torch.Generator`` seeded with ``seed`` makes every random draw of a generation in the
official order: ``stages.prepare_sampling`` (the stage ``generate()`` calls too) draws the
initial noise and SAME-encodes the sources given as AUDIO (``init_audio``, ``inpaint_audio``:
SAME-L's encoder noise comes from the stream, init before inpaint), then sampling draws its noise;
the generator's state after sampling goes into the output LATENT (``sa3_rng``) for SA3 Decode.
Sources given as LATENT (``init_latent``, ``inpaint_source``: SA3 Encode Audio, core latents)
are used as they are (cut or zero-padded to the generation's length) and never encoded again, so
only the AUDIO inputs give ``generate()``'s audio bit for bit for every model and length.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import comfy_models
from ._adapters import (
    PADDING,
    RNG,
    InpaintRegions,
    LatentIn,
    error,
    fit_frames,
    make_latent,
    one_or_each,
    read_audio,
    read_latent,
    read_regions,
    save_generator,
)
from ._handle import ConditioningSide
from ._sa3 import SAMPLERS, SAMPLES_PER_LATENT, checks, estimates, rng, stages
from ._validate import checked, widget_error
from .loaders import _require_model
from .sampling_options import DEFAULTS, read_options
from .search import schema_aliases
from .types import CATEGORY, SA3Conditioning, SA3InpaintRegions, SA3Model, SA3Options
from .visualize import PREVIEW_SECONDS, make_preview_callback, preview_parts

NODE = "Sampler"
DEFAULT_SAMPLER = "default for the model"
AUDIO_INPUT = {"init_latent": "init_audio", "inpaint_source": "inpaint_audio"}  # the AUDIO twin of each LATENT source


def _side(cond, name: str, kinds: tuple[str, ...]) -> ConditioningSide:
    if not isinstance(cond, ConditioningSide) or cond.kind not in kinds:
        got = cond.kind if isinstance(cond, ConditioningSide) else type(cond).__name__
        raise ValueError(error(NODE, f"{name} is not {'/'.join(kinds)} SA3 conditioning (got {got}). Connect the "
                                     f"{name} output of SA3 Text Encode."))
    return cond


def _broadcast(values: tuple, batch: int, name: str) -> list:
    return one_or_each(values, batch, error(
        NODE, f"{name} has {len(values)} items but the latent has {batch} (expected 1 or {batch}). Set the "
              f"latent's batch size to {len(values)}, or leave latent unconnected to generate one item per prompt."))


def plan_generation(config, positive, latent: LatentIn | None,
                    padding_sec: float = DEFAULTS.duration_padding_sec) -> tuple[int, list[float], stages.LatentPlan]:
    """(batch, per-item durations, plan). The durations are the ones SA3 Text Encode conditioned
    on; the latent input (optional) sets the batch size, and a core latent also the length;
    ``padding_sec`` is the headroom after the longest duration (SA3 Sampling Options)."""
    positive = _side(positive, "positive", ("positive",))
    if latent is None:  # the official sizing, from the conditioning: the usual graph
        durations = list(positive.durations)
        return len(durations), durations, stages.plan_latents(config, durations, padding_sec)
    if latent.kind == "sa3":  # SA3 Empty Latent (deprecated) or a re-used SA3 latent: its own plan
        plan = stages.plan_latents(config, latent.durations, padding_sec)
        if latent.frames != plan.latents:
            raise ValueError(error(NODE, f"latent has {latent.frames} frames but {latent.durations} s needs "
                                         f"{plan.latents} (expected an SA3 latent of this model). Leave latent "
                                         "unconnected: the sampler sizes it from SA3 Text Encode."))
        return latent.batch, latent.durations, plan
    durations = _broadcast(positive.durations, latent.batch, "positive")
    try:
        plan = stages.plan_latents(config, durations, padding_sec, latents=latent.frames)
    except ValueError:
        seconds = latent.frames * SAMPLES_PER_LATENT / config.sample_rate
        what = (f"longer than this model makes (expected at most {config.max_duration:.2f} s)"
                if latent.frames > config.max_latents else
                f"but positive asks for {max(durations):g} s (expected a latent of {max(durations):g} to "
                f"{config.max_duration:.2f} s)")
        raise ValueError(error(NODE, f"latent is {seconds:.2f} s long, {what}. Set the latent's seconds to the SA3 "
                                     "Text Encode duration, or leave latent unconnected: the sampler sizes it from "
                                     "SA3 Text Encode.")) from None
    return latent.batch, durations, plan


def text_conditioning(handle, positive, negative, durations: list[float], batch: int) -> stages.TextConditioning:
    """Both sides for ``batch`` items. A side encoded for one item is encoded again for the whole
    batch (as ``generate(batch_size=...)`` does; repeating the tensors would differ in the last bits)."""
    positive = _side(positive, "positive", ("positive",))
    negative = _side(negative, "negative", ("negative", "none")) if negative is not None else None
    for side in (positive, negative):
        if side is not None and _broadcast(side.durations, batch, side.kind) != durations:
            raise ValueError(error(NODE, f"the {side.kind} conditioning was encoded for {list(side.durations)} s but "
                                         f"the latent is planned for {durations} s (expected the same). Leave latent "
                                         "unconnected: the sampler then sizes it from SA3 Text Encode."))
    prompts = _broadcast(positive.prompts, batch, "positive")
    has_negative = negative is not None and negative.kind == "negative"
    negatives = _broadcast(negative.prompts, batch, "negative") if has_negative else None
    if positive.batch_size == batch and (not has_negative or negative.batch_size == batch):
        return stages.TextConditioning(
            cross=positive.cross, global_cond=positive.global_cond, durations=durations, prompts=prompts,
            negative_cross=negative.cross if has_negative else None,
            negative_mask=negative.mask if has_negative else None)
    comfy_models.load_parts(handle, "text")
    model = handle.model
    text = stages.encode_text(model.text_encoder, model.conditioner, prompts, durations, negatives)
    comfy_models.release_parts(handle, "text")
    return text


def source_latents(handle, latent, plan, name: str) -> torch.Tensor:
    """(1 or B, C, L) latents of a source given as LATENT (SA3 Encode Audio, core's VAEEncodeAudio),
    used as they are: cut or zero-padded to the plan's length, never encoded again."""
    source = read_latent(latent, NODE, name, handle.config.latent_channels)
    if source.kind == "empty":
        raise ValueError(error(NODE, f"{name} is an empty latent (got all zeros, expected encoded audio). Connect "
                                     f"the source audio to {AUDIO_INPUT[name]}, or through SA3 Encode Audio."))
    samples = fit_frames(source.samples, plan.latents)
    return samples.to(dtype=handle.model.autoencoder.dtype)  # as generate()'s encoder output


def source_audio(handle, audio, plan, name: str) -> list[torch.Tensor]:
    """One prepared (1, 2, S) waveform per AUDIO item: resampled, cut or padded to the plan, stereo."""
    return [stages.prepare_audio(item, handle.config.sample_rate, plan.audio_samples, name, NODE)
            for item in read_audio(audio, NODE, name)]


def inpaint_regions(mask: InpaintRegions, duration: float) -> list[tuple[float, float]]:
    """The regions of SA3 Inpaint Regions for a generation of ``duration`` seconds, checked."""
    if mask.continue_from is not None and not mask.continue_from < duration:
        raise ValueError(error(NODE, f"inpaint_mask keeps {mask.continue_from:g} s of the source, which leaves "
                                     f"nothing to generate (got keep_seconds {mask.continue_from:g}, expected < the "
                                     f"{duration:g} s duration). Lower keep_seconds on SA3 Inpaint Regions or "
                                     "lengthen the duration on SA3 Text Encode."))
    return checks.check_regions("inpaint_mask", mask.spans(duration), duration, NODE)


class SA3Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3Sampler",
            **schema_aliases("SA3Sampler"),
            display_name="SA3 Sampler",
            category=CATEGORY,
            description="Rectified-flow sampling of Stable Audio 3: text-to-audio, audio-to-audio with init_audio "
                        "(or init_latent), inpainting/continuation with inpaint_mask + inpaint_audio (or "
                        "inpaint_source). With the same inputs and seed the audio equals the official generate().",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model (with its LoRAs)."),
                SA3Conditioning.Input("positive", tooltip="Positive conditioning from SA3 Text Encode: the prompts "
                                                          "and the durations, which also size the latent."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional. Unconnected (usual): one item per prompt, sized from the "
                                        "durations as the official generate() sizes it. Core's EmptyLatentAudio: "
                                        "its batch size and length are used (as core's samplers do). Its values "
                                        "are not used; audio-to-audio takes init_latent."),
                io.Int.Input("seed", default=0, min=0, max=checks.MAX_SEED, control_after_generate=True,
                             tooltip="Seed of every random draw (noise, SAME, sampler, decoder)."),
                io.Int.Input("steps", default=8, min=1, max=checks.MAX_STEPS,
                             tooltip="Sampling steps. Distilled models (small-music, small-sfx, medium): 8. Base "
                                     "models (*-base): about 50."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=checks.MAX_CFG_SCALE, step=0.1,
                               tooltip="Classifier-free guidance scale; 1 = off (distilled models). Base models: "
                                       "about 7. Above 1 the negative prompt is used."),
                io.Combo.Input("sampler", options=[DEFAULT_SAMPLER, *SAMPLERS], default=DEFAULT_SAMPLER,
                               tooltip="Sampler. Default: pingpong for distilled models, euler for base models."),
                io.Float.Input("apg_scale", default=1.0, min=0.0, max=checks.MAX_APG_SCALE, step=0.05,
                               tooltip="Adaptive projected guidance (used when cfg > 1). 1 = APG, the official "
                                       "default: only the part of the guidance orthogonal to the prediction is "
                                       "applied, which avoids harsh over-saturation at high cfg; 0 = plain CFG; "
                                       "values in between blend the two."),
                SA3Conditioning.Input("negative", optional=True,
                                      tooltip="Negative conditioning from SA3 Text Encode (used when cfg > 1). "
                                              "Unconnected: no negative prompt."),
                io.Latent.Input("init_latent", optional=True,
                                tooltip="Audio-to-audio from latents: SA3 Encode Audio (or core's VAEEncodeAudio with "
                                        "the SA3 VAE), used as they are, cut or padded to the generation's length. "
                                        "The sampler starts from them, noised to init_noise_level. For generate()'s "
                                        "exact audio connect the audio to init_audio instead."),
                io.Audio.Input("init_audio", optional=True,
                               tooltip="Audio-to-audio from audio (e.g. LoadAudio), instead of init_latent: encoded "
                                       "here at the generation's length and at the seed's point of the random "
                                       "stream, so the result equals generate(init_audio=...)."),
                io.Float.Input("init_noise_level", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Audio-to-audio strength: 1 = ignore init_latent, 0 = keep it as is; about "
                                       "0.5-0.8 keeps the structure and changes the style."),
                SA3InpaintRegions.Input("inpaint_mask", optional=True,
                                        tooltip="Regions to regenerate, from SA3 Inpaint Regions (needs "
                                                "inpaint_audio or inpaint_source)."),
                io.Latent.Input("inpaint_source", optional=True,
                                tooltip="Inpainting/continuation from latents (SA3 Encode Audio), used as they are, "
                                        "cut or padded to the generation's length. Without inpaint_mask the whole "
                                        "source is kept up to the duration. For generate()'s exact audio connect the "
                                        "audio to inpaint_audio instead."),
                io.Audio.Input("inpaint_audio", optional=True,
                               tooltip="Inpainting/continuation from audio, instead of inpaint_source: encoded here "
                                       "(after init_audio, as generate() does), so the result equals "
                                       "generate(inpaint_audio=...)."),
                io.Int.Input("preview_every", default=0, min=0, max=checks.MAX_STEPS, optional=True,
                             tooltip=f"Live preview: every N steps, show a spectrogram of the first "
                                     f"{PREVIEW_SECONDS:g} s of the current estimate on this node. 0 = off. Costs "
                                     "one short SAME decode per preview; the result is identical either way."),
                SA3Options.Input("options", optional=True,
                                 tooltip="Optional advanced controls from SA3 Sampling Options (CFG interval, CFG "
                                         "rescale, norm threshold, schedule shift, duration padding). Unconnected: "
                                         "the official defaults."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="The sampled latents, plus the random stream's state for SA3 Decode.")],
        )

    @classmethod
    def validate_inputs(cls, sampler=None) -> bool | str:
        return widget_error(cls, NODE, sampler=sampler) or True

    @classmethod
    @checked(NODE)
    def execute(cls, model, positive, seed, steps, cfg, sampler, apg_scale, latent=None, negative=None,
                init_latent=None, init_audio=None, init_noise_level=1.0, inpaint_mask=None, inpaint_source=None,
                inpaint_audio=None, preview_every=0, options=None) -> io.NodeOutput:
        handle = _require_model(model, NODE)
        config = handle.config
        options = read_options(options, NODE)
        pairs = (("init_latent", init_latent, "init_audio", init_audio),
                 ("inpaint_source", inpaint_source, "inpaint_audio", inpaint_audio))
        for latent_name, as_latent, audio_name, as_audio in pairs:
            if as_latent is not None and as_audio is not None:
                raise ValueError(error(NODE, f"both {latent_name} and {audio_name} are connected (expected one "
                                             f"{audio_name.split('_')[0]} source). Disconnect one of them."))
        if inpaint_mask is not None and inpaint_source is None and inpaint_audio is None:
            raise ValueError(error(NODE, "inpaint_mask is connected but no inpaint source is (expected inpaint_audio "
                                         "or inpaint_source too). Connect the source audio to inpaint_audio."))
        shape = read_latent(latent, NODE, "latent", config.latent_channels) if latent is not None else None
        batch, durations, plan = plan_generation(config, positive, shape, options.duration_padding_sec)
        regions = []
        if inpaint_mask is not None:
            regions = inpaint_regions(read_regions(inpaint_mask, NODE, "inpaint_mask"), max(durations))
        sources = {
            "init_latents": None if init_latent is None else source_latents(handle, init_latent, plan, "init_latent"),
            "inpaint_latents": (None if inpaint_source is None
                                else source_latents(handle, inpaint_source, plan, "inpaint_source")),
            "init_audio": None if init_audio is None else source_audio(handle, init_audio, plan, "init_audio"),
            "inpaint_audio": (None if inpaint_audio is None
                              else source_audio(handle, inpaint_audio, plan, "inpaint_audio")),
        }
        text = text_conditioning(handle, positive, negative, durations, batch)

        device = handle.patchers["dit"].load_device
        generator = rng.make_generator(seed)  # on the CPU, whatever the device (sa3.rng)
        encodes = init_audio is not None or inpaint_audio is not None
        if encodes:
            comfy_models.load_parts(handle, "autoencoder")
        start = stages.prepare_sampling(handle.model.autoencoder, config, plan, generator, batch_size=batch,
                                          inpaint_regions=regions, device=device, **sources)
        if encodes:
            comfy_models.release_parts(handle, "autoencoder")

        needed = estimates.dit_sampling_bytes(config.dit, start.noise.shape[-1], start.noise.shape[0],
                                              dtype=handle.model.dit.dtype)
        # once: nothing loads in the loop
        comfy_models.load_parts(handle, "dit", *preview_parts(preview_every), memory_required=needed)
        bar = comfy_models.progress_bar(steps)
        hooks = [lambda t: comfy_models.check_interrupt(), *handle.model.step_hooks()]
        out = comfy_models.run_guarded("diffusion transformer (sampling)", needed, lambda: stages.sample(
            handle.model.dit, start.noise, text, plan, cfg=config, steps=steps, cfg_scale=cfg, apg_scale=apg_scale,
            sampler_type=None if sampler == DEFAULT_SAMPLER else sampler, init_latents=start.init_latents,
            init_noise_level=init_noise_level, local_cond=start.local_cond, generator=generator,
            callback=make_preview_callback(handle, preview_every, steps, bar), step_hooks=hooks,
            **options.sample_kwargs()))
        comfy_models.release_parts(handle, "dit", "autoencoder")  # the autoencoder: previews
        result = out.to(comfy_models.intermediate_device(), torch.float32)
        extra = {RNG: save_generator(generator)}
        if options.duration_padding_sec != DEFAULTS.duration_padding_sec:
            extra[PADDING] = options.duration_padding_sec
        return io.NodeOutput(make_latent(result, durations, **extra))
