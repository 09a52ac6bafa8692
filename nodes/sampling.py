"""The sampler node, owner of the generation's random stream.

One ``torch.Generator`` seeded with ``seed`` makes every random draw of a generation in the
official order (``StableAudioModel.generate``): initial noise, SAME encoder noise (init source
then inpaint source), sampler noise; its state after sampling rides in the output LATENT
(``sa3_rng``) and SA3 Decode continues it for the decoder noise. Source audio therefore reaches
the sampler with its waveform (``sa3_source`` from SA3 Encode Audio): when the SAME encoder draws
noise (SAME-L) or the source was encoded at another length, the sampler encodes it here at the
right point of the stream, so the graph gives the same audio as ``generate()`` bit for bit.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import comfy_models
from ._adapters import (
    RNG,
    SOURCE,
    InpaintRegions,
    LatentIn,
    check_regions,
    error,
    fit_frames,
    make_latent,
    one_or_each,
    read_latent,
    read_regions,
    save_generator,
)
from ._handle import ConditioningSide, sync_loras
from ._sa3 import SAMPLERS, SAMPLES_PER_LATENT, pipeline
from ._validate import require_widgets, widget_error
from .latents import encode_sources
from .loaders import _require_model
from .search import schema_aliases
from .types import CATEGORY, SA3Conditioning, SA3InpaintRegions, SA3Model
from .visualize import PREVIEW_SECONDS, make_preview_callback

NODE = "Sampler"
DEFAULT_SAMPLER = "default for the model"


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


def plan_generation(config, positive, latent: LatentIn | None) -> tuple[int, list[float], pipeline.LatentPlan]:
    """(batch, per-item durations, plan). The durations are the ones SA3 Text Encode conditioned
    on; the latent input (optional) sets the batch size, and a core latent also the length."""
    positive = _side(positive, "positive", ("positive",))
    if latent is None:  # the official sizing, from the conditioning: the usual graph
        durations = list(positive.durations)
        return len(durations), durations, pipeline.plan_latents(config, durations)
    if latent.kind == "sa3":  # SA3 Empty Latent (deprecated) or a re-used SA3 latent: its own plan
        plan = pipeline.plan_latents(config, latent.durations)
        if latent.frames != plan.latents:
            raise ValueError(error(NODE, f"latent has {latent.frames} frames but {latent.durations} s needs "
                                         f"{plan.latents} (expected an SA3 latent of this model). Leave latent "
                                         "unconnected: the sampler sizes it from SA3 Text Encode."))
        return latent.batch, latent.durations, plan
    durations = _broadcast(positive.durations, latent.batch, "positive")
    try:
        plan = pipeline.plan_latents(config, durations, latents=latent.frames)
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


def text_conditioning(handle, positive, negative, durations: list[float], batch: int) -> pipeline.TextConditioning:
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
        return pipeline.TextConditioning(
            cross=positive.cross, global_cond=positive.global_cond, durations=durations, prompts=prompts,
            negative_cross=negative.cross if has_negative else None,
            negative_mask=negative.mask if has_negative else None)
    sync_loras(handle)
    comfy_models.load_parts(handle, "text")
    model = handle.model
    text = pipeline.encode_text(model.text_encoder, model.conditioner, prompts, durations, negatives)
    comfy_models.release_parts(handle, "text")
    return text


def source_latents(handle, latent, plan, generator, name: str) -> torch.Tensor:
    """(1 or B, C, L) latents of a source, encoded here from its waveform when needed (see module
    doc); a core-encoded source (no waveform) is cut or zero-padded to the plan's length."""
    cfg, autoencoder = handle.config, handle.model.autoencoder
    source = read_latent(latent, NODE, name, cfg.latent_channels)
    if source.kind == "empty":
        raise ValueError(error(NODE, f"{name} is an empty latent (got all zeros, expected encoded audio). Connect "
                                     "the source audio through SA3 Encode Audio."))
    waveforms = latent.get(SOURCE)
    draws = autoencoder.config.encoder.mask_noise > 0  # SAME-L: the encoder takes noise from the stream
    if waveforms is not None and (draws or source.frames != plan.latents):
        return encode_sources(handle, [(s["sample_rate"], s["waveform"]) for s in waveforms], plan, generator)
    samples = source.samples
    if source.kind == "encoded":
        samples = fit_frames(samples, plan.latents)
    elif source.frames != plan.latents:
        raise ValueError(error(NODE, f"{name} has {source.frames} frames but the latent has {plan.latents} "
                                     "(expected the same). Encode the source with SA3 Encode Audio."))
    return samples.to(generator.device, autoencoder.dtype)


def inpaint_regions(mask: InpaintRegions, duration: float) -> list[tuple[float, float]]:
    """The regions of SA3 Inpaint Regions for a generation of ``duration`` seconds, checked."""
    if mask.continue_from is not None and not mask.continue_from < duration:
        raise ValueError(error(NODE, f"inpaint_mask keeps {mask.continue_from:g} s of the source, which leaves "
                                     f"nothing to generate (got keep_seconds {mask.continue_from:g}, expected < the "
                                     f"{duration:g} s duration). Lower keep_seconds on SA3 Inpaint Regions or "
                                     "lengthen the duration on SA3 Text Encode."))
    regions = mask.spans(duration)
    check_regions(regions, duration, NODE, "inpaint_mask")
    return regions


class SA3Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3Sampler",
            **schema_aliases("SA3Sampler"),
            display_name="SA3 Sampler",
            category=CATEGORY,
            description="Rectified-flow sampling of Stable Audio 3: text-to-audio from an empty latent, "
                        "audio-to-audio with init_latent, inpainting/continuation with inpaint_mask + "
                        "inpaint_source. With the same inputs and seed the audio equals the official generate().",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model (with its LoRAs)."),
                SA3Conditioning.Input("positive", tooltip="Positive conditioning from SA3 Text Encode: the prompts "
                                                          "and the durations, which also size the latent."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional. Unconnected (usual): one item per prompt, sized from the "
                                        "durations as the official generate() sizes it. Core's EmptyLatentAudio: "
                                        "its batch size and length are used (as core's samplers do). Its values "
                                        "are not used; audio-to-audio takes init_latent."),
                io.Int.Input("seed", default=0, min=0, max=pipeline.MAX_SEED, control_after_generate=True,
                             tooltip="Seed of every random draw (noise, SAME, sampler, decoder)."),
                io.Int.Input("steps", default=8, min=1, max=1000,
                             tooltip="Sampling steps. Distilled models (small-music, small-sfx, medium): 8. Base "
                                     "models (*-base): about 50."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance scale; 1 = off (distilled models). Base models: "
                                       "about 7. Above 1 the negative prompt is used."),
                io.Combo.Input("sampler", options=[DEFAULT_SAMPLER, *SAMPLERS], default=DEFAULT_SAMPLER,
                               tooltip="Sampler. Default: pingpong for distilled models, euler for base models."),
                io.Float.Input("apg_scale", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Adaptive projected guidance (used when cfg > 1). 1 = APG, the official "
                                       "default: only the part of the guidance orthogonal to the prediction is "
                                       "applied, which avoids harsh over-saturation at high cfg; 0 = plain CFG; "
                                       "values in between blend the two."),
                SA3Conditioning.Input("negative", optional=True,
                                      tooltip="Negative conditioning from SA3 Text Encode (used when cfg > 1). "
                                              "Unconnected: no negative prompt."),
                io.Latent.Input("init_latent", optional=True,
                                tooltip="Audio-to-audio: the source from SA3 Encode Audio (or core's VAEEncodeAudio "
                                        "with the SA3 VAE). The sampler starts from it, noised to init_noise_level."),
                io.Float.Input("init_noise_level", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Audio-to-audio strength: 1 = ignore init_latent, 0 = keep it as is; about "
                                       "0.5-0.8 keeps the structure and changes the style."),
                SA3InpaintRegions.Input("inpaint_mask", optional=True,
                                        tooltip="Regions to regenerate, from SA3 Inpaint Regions (needs "
                                                "inpaint_source)."),
                io.Latent.Input("inpaint_source", optional=True,
                                tooltip="Inpainting/continuation: the source from SA3 Encode Audio. Without "
                                        "inpaint_mask the whole source is kept up to the duration."),
                io.Int.Input("preview_every", default=0, min=0, max=1000, optional=True,
                             tooltip=f"Live preview: every N steps, show a spectrogram of the first "
                                     f"{PREVIEW_SECONDS:g} s of the current estimate on this node. 0 = off. Costs "
                                     "one short SAME decode per preview; the result is identical either way."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="The sampled latents, plus the random stream's state for SA3 Decode.")],
        )

    @classmethod
    def validate_inputs(cls, sampler=None) -> bool | str:
        return widget_error(cls, NODE, sampler=sampler) or True

    @classmethod
    def execute(cls, model, positive, seed, steps, cfg, sampler, apg_scale, latent=None, negative=None,
                init_latent=None, init_noise_level=1.0, inpaint_mask=None, inpaint_source=None,
                preview_every=0) -> io.NodeOutput:
        handle = _require_model(model, NODE)
        require_widgets(cls, NODE, sampler=sampler)
        config = handle.config
        if inpaint_mask is not None and inpaint_source is None:
            raise ValueError(error(NODE, "inpaint_mask is connected but inpaint_source is not (expected both). Connect "
                                         "the source audio through SA3 Encode Audio to inpaint_source."))
        shape = read_latent(latent, NODE, "latent", config.latent_channels) if latent is not None else None
        batch, durations, plan = plan_generation(config, positive, shape)
        regions = []
        if inpaint_mask is not None:
            regions = inpaint_regions(read_regions(inpaint_mask, NODE, "inpaint_mask"), max(durations))
        text = text_conditioning(handle, positive, negative, durations, batch)

        device = handle.patchers["dit"].load_device
        generator = pipeline.make_generator(seed, device)
        noise = pipeline.make_noise(batch, config.latent_channels, plan.latents, generator, device)
        init = inpaint = mask = None
        if init_latent is not None:
            init = source_latents(handle, init_latent, plan, generator, "init_latent")
        if inpaint_source is not None:
            inpaint = source_latents(handle, inpaint_source, plan, generator, "inpaint_source")
            mask = pipeline.build_inpaint_mask(plan, regions, config.sample_rate, device)
        local = pipeline.local_conditioning(batch, plan.latents, config.latent_channels, inpaint, mask, device)

        sync_loras(handle)
        comfy_models.load_parts(handle, "dit")
        bar = comfy_models.progress_bar(steps)
        hooks = [lambda t: comfy_models.check_interrupt(), *handle.model.step_hooks()]
        out = pipeline.sample(
            handle.model.dit, noise, text, plan, cfg=config, steps=steps, cfg_scale=cfg, apg_scale=apg_scale,
            sampler_type=None if sampler == DEFAULT_SAMPLER else sampler, init_latents=init,
            init_noise_level=init_noise_level, local_cond=local, generator=generator,
            callback=make_preview_callback(handle, preview_every, steps, bar), step_hooks=hooks)
        comfy_models.release_parts(handle, "dit", "autoencoder")  # the autoencoder: sources, previews
        result = out.to(comfy_models.intermediate_device(), torch.float32)
        return io.NodeOutput(make_latent(result, durations, **{RNG: save_generator(generator)}))
