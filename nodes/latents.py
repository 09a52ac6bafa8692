"""Latent nodes: empty latent (the plan of a generation), audio -> latent, inpaint regions."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import comfy_models
from ._adapters import (
    DURATIONS,
    SOURCE,
    check_durations,
    check_regions,
    error,
    make_latent,
    one_or_each,
    parse_durations,
    parse_regions,
    read_audio,
    read_latent,
)
from ._sa3 import pipeline
from ._validate import require_widgets, widget_error
from .conditioning import MAX_SECONDS
from .loaders import _require_model
from .types import CATEGORY, SA3Model
from .types import SA3InpaintMask as SA3InpaintMaskType

MASK_MODES = ["regions", "continuation"]
ENCODE_SEED = 0  # the encode node's own SAME-L noise; the sampler re-draws it from the seed's stream


def _batch_durations(duration: float, batch_size: int, durations: str, node: str) -> list[float]:
    seconds = parse_durations(durations, node, "durations") or [float(duration)]
    return one_or_each(seconds, batch_size, error(
        node, f"durations has {len(seconds)} values but batch_size is {batch_size} (expected 1 or {batch_size}). "
              "Give one duration per item or set batch_size."))


class SA3EmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3EmptyLatent",
            display_name="SA3 Empty Latent",
            category=CATEGORY,
            description="An empty audio latent sized exactly as the official generate() sizes it: the longest "
                        "duration + 6 s headroom, rounded to 8192 samples. Sets the batch size and the durations "
                        "the sampler and decoder use.",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model (sets the channels and the maximum length)."),
                io.Float.Input("duration", default=30.0, min=0.1, max=MAX_SECONDS, step=0.1,
                               tooltip="Seconds of audio per item; must equal the SA3 Text Encode duration."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="How many clips to generate at once. A single prompt is used for every item."),
                io.String.Input("durations", default="",
                                tooltip="Optional per-item seconds, comma-separated (e.g. '10, 20'); overrides "
                                        "duration. Empty: duration for every item."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="Zeros (batch, channels, frames) with the SA3 durations; connect to SA3 "
                                              "Sampler's latent input.")],
        )

    @classmethod
    def validate_inputs(cls, durations=None):
        if durations is None:
            return True
        try:
            check_durations(parse_durations(durations, "Empty Latent", "durations"), MAX_SECONDS, "Empty Latent",
                            "durations")
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, duration, batch_size, durations) -> io.NodeOutput:
        handle = _require_model(model, "Empty Latent")
        seconds = _batch_durations(duration, batch_size, durations, "Empty Latent")
        check_durations(seconds, handle.config.max_duration, "Empty Latent", "duration")
        plan = pipeline.plan_latents(handle.config, seconds)
        samples = torch.zeros(len(seconds), handle.config.latent_channels, plan.latents,
                              device=comfy_models.intermediate_device())
        return io.NodeOutput(make_latent(samples, seconds, handle.sample_rate))


def encode_sources(handle, sources, plan, generator) -> torch.Tensor:
    """Encode source audio items ``[(sr, (C, S))]`` at the plan's length, as ``generate()`` does:
    prepare (resample, pad/crop, stereo), then SAME encode drawing from ``generator``."""
    model, cfg = handle.model, handle.config
    chunked = model.autoencoder.config.chunked
    comfy_models.load_parts(handle, "autoencoder")
    out = []
    for source in sources:
        wav = pipeline.prepare_audio(source, cfg.sample_rate, plan.audio_samples)
        out.append(pipeline.encode_audio(model.autoencoder, wav, chunked=chunked, generator=generator))
    comfy_models.release_parts(handle, "autoencoder")
    return torch.cat(out)


class SA3EncodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3EncodeAudio",
            display_name="SA3 Encode Audio",
            category=CATEGORY,
            description="Encodes audio (any sample rate, mono or stereo) to an SA3 latent with SAME, for "
                        "audio-to-audio (SA3 Sampler init_latent) and inpainting/continuation (inpaint_source).",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model whose SAME autoencoder encodes the audio."),
                io.Audio.Input("audio", tooltip="Source audio; resampled to 44.1 kHz, mono is duplicated to stereo."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional: the SA3 Empty Latent of the generation. The source is then cut or "
                                        "zero-padded to exactly that length, as generate() does. Without it the "
                                        "audio's own length is used."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="SAME latents (batch, channels, frames) plus the source audio, so the "
                                              "sampler can reproduce generate() exactly.")],
        )

    @classmethod
    def execute(cls, model, audio, latent=None) -> io.NodeOutput:
        handle = _require_model(model, "Encode Audio")
        cfg = handle.config
        sources = read_audio(audio, "Encode Audio", "audio")
        if latent is not None:
            _, durations = read_latent(latent, "Encode Audio", "latent", cfg.latent_channels)
        else:
            seconds = sources[0][1].shape[-1] / sources[0][0]
            durations = [min(seconds, cfg.max_duration)] * len(sources)
        plan = pipeline.plan_latents(cfg, durations)
        generator = pipeline.make_generator(ENCODE_SEED, handle.patchers["autoencoder"].load_device)
        samples = encode_sources(handle, sources, plan, generator).to(comfy_models.intermediate_device(), torch.float32)
        batch = samples.shape[0]
        if len(durations) != batch:
            durations = [max(durations)] * batch
        source = [{"waveform": wav, "sample_rate": sr} for sr, wav in sources]
        return io.NodeOutput(make_latent(samples, durations, handle.sample_rate, **{SOURCE: source}))


class SA3InpaintMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3InpaintMask",
            display_name="SA3 Inpaint Mask",
            category=CATEGORY,
            description="Chooses what the sampler regenerates: one or several regions in seconds (the rest of "
                        "the source is kept), or continuation (keep the first seconds of the source and generate "
                        "everything after it, also past the source's end).",
            inputs=[
                io.Latent.Input("latent", tooltip="The SA3 Empty Latent of the generation (gives the duration)."),
                io.Combo.Input("mode", options=MASK_MODES, default="regions",
                               tooltip="regions: regenerate the listed regions. continuation: keep 0..keep_seconds of "
                                       "the source and generate the rest."),
                io.String.Input("regions", default="2-4",
                                tooltip="Regions to regenerate as start-end in seconds, separated by commas or new "
                                        "lines, e.g. '2-4, 8.5-10'. Used in regions mode."),
                io.Float.Input("keep_seconds", default=10.0, min=0.0, max=MAX_SECONDS, step=0.1,
                               tooltip="Continuation mode: seconds of the source to keep from the start; everything "
                                       "after is generated up to the latent's duration."),
            ],
            outputs=[SA3InpaintMaskType.Output(display_name="inpaint_mask",
                                               tooltip="The regions to regenerate; connect to SA3 Sampler's "
                                                       "inpaint_mask together with inpaint_source.")],
        )

    @classmethod
    def validate_inputs(cls, mode=None, regions=None):
        message = widget_error(cls, "Inpaint Mask", mode=mode)
        if message is not None:
            return message
        if mode != "regions" or regions is None:
            return True
        try:
            check_regions(parse_regions(regions, "Inpaint Mask", "regions"), float("inf"), "Inpaint Mask", "regions")
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, latent, mode, regions, keep_seconds) -> io.NodeOutput:
        require_widgets(cls, "Inpaint Mask", mode=mode)
        if not isinstance(latent, dict) or DURATIONS not in latent:
            raise ValueError(error("Inpaint Mask", "latent carries no SA3 durations (expected the output of SA3 Empty "
                                                   "Latent). Connect SA3 Empty Latent."))
        duration = max(float(d) for d in latent[DURATIONS])
        if mode == "continuation":
            if not 0 <= keep_seconds < duration:
                raise ValueError(error("Inpaint Mask", f"keep_seconds {keep_seconds:g} leaves nothing to generate (got "
                                                       f"{keep_seconds:g} s, expected < the {duration:g} s duration). "
                                                       "Lower keep_seconds or lengthen the duration."))
            spans = [(float(keep_seconds), duration)]
        else:
            spans = parse_regions(regions, "Inpaint Mask", "regions")
            check_regions(spans, duration, "Inpaint Mask", "regions")
        return io.NodeOutput({"regions": spans, "durations": [float(d) for d in latent[DURATIONS]]})
