"""Latent nodes: audio -> latent, inpaint regions, and the deprecated SA3 Empty Latent.

SA3 Empty Latent asked for the durations a second time (SA3 Text Encode already has them); the
sampler now sizes the latent from the conditioning, so the node is kept, deprecated and hidden
from the node search, only so that workflows saved with it still load and run unchanged.
"""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io

from . import comfy_models
from ._adapters import (
    InpaintRegions,
    error,
    make_latent,
    one_or_each,
    parse_durations,
    parse_regions,
    read_audio,
    read_latent,
)
from ._sa3 import checks, rng, stages
from ._validate import checked
from .conditioning import MAX_SECONDS
from .loaders import _require_model
from .search import schema_aliases
from .types import CATEGORY, SA3InpaintRegions, SA3Model

MASK_MODES = ["regions", "continuation"]
NODE_MASK = "Inpaint Regions"
ENCODE_SEED = 0  # SAME-L's encoder noise here (the sampler's init_audio / inpaint_audio draw it from the seed)


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
            **schema_aliases("SA3EmptyLatent"),
            display_name="SA3 Empty Latent (deprecated)",
            category=CATEGORY,
            description="Deprecated: SA3 Sampler now sizes the latent from SA3 Text Encode's durations (leave its "
                        "latent input unconnected; batch_size is on SA3 Text Encode). Kept so that saved workflows "
                        "run; its durations must equal SA3 Text Encode's.",
            is_deprecated=True,
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model (sets the channels and the maximum length)."),
                io.Float.Input("duration", default=30.0, min=0.1, max=MAX_SECONDS, step=0.1,
                               tooltip="Seconds of audio per item; must equal the SA3 Text Encode duration."),
                io.Int.Input("batch_size", default=1, min=1, max=checks.MAX_BATCH,
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
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py);
        # the count against batch_size is checked first thing in execute
        if durations is None:
            return True
        try:
            checks.check_durations("durations", parse_durations(durations, "Empty Latent", "durations"), MAX_SECONDS,
                                   "Empty Latent")
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    @checked("Empty Latent")
    def execute(cls, model, duration, batch_size, durations) -> io.NodeOutput:
        handle = _require_model(model, "Empty Latent")
        seconds = _batch_durations(duration, batch_size, durations, "Empty Latent")
        checks.check_durations("durations" if durations.strip() else "duration", seconds, handle.config.max_duration,
                               "Empty Latent")
        plan = stages.plan_latents(handle.config, seconds)
        samples = torch.zeros(len(seconds), handle.config.latent_channels, plan.latents,
                              device=comfy_models.intermediate_device())
        return io.NodeOutput(make_latent(samples, seconds))


class SA3EncodeAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3EncodeAudio",
            **schema_aliases("SA3EncodeAudio"),
            display_name="SA3 Encode Audio",
            category=CATEGORY,
            description="Encodes audio (any sample rate, mono or stereo) to an SA3 latent with SAME, for "
                        "audio-to-audio (SA3 Sampler init_latent) and inpainting/continuation (inpaint_source).",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model whose SAME autoencoder encodes the audio."),
                io.Audio.Input("audio", tooltip="Source audio; resampled to 44.1 kHz, mono is duplicated to stereo."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional (older workflows): the SA3 Empty Latent of the generation, to encode "
                                        "at its length. Unconnected: the audio's own length; the sampler cuts or "
                                        "zero-pads the latents to the generation's length."),
            ],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="SAME latents (batch, channels, frames). SAME-L (medium) adds a little "
                                              "noise while encoding, from seed 0 here: for generate()'s exact "
                                              "audio connect the audio to SA3 Sampler's init_audio / inpaint_audio "
                                              "instead.")],
        )

    @classmethod
    @checked("Encode Audio")
    def execute(cls, model, audio, latent=None) -> io.NodeOutput:
        handle = _require_model(model, "Encode Audio")
        cfg = handle.config
        sources = read_audio(audio, "Encode Audio", "audio")
        shape = read_latent(latent, "Encode Audio", "latent", cfg.latent_channels) if latent is not None else None
        if shape is not None and shape.durations is not None:
            durations = shape.durations
        else:  # no plan given (core latents carry none): the audio's own length
            seconds = sources[0][1].shape[-1] / sources[0][0]
            durations = [min(seconds, cfg.max_duration)] * len(sources)
        plan = stages.plan_latents(cfg, durations)
        waveforms = [stages.prepare_audio(source, cfg.sample_rate, plan.audio_samples, "audio", "Encode Audio")
                     for source in sources]  # checked before the autoencoder is loaded
        comfy_models.load_parts(handle, "autoencoder")
        generator = rng.make_generator(ENCODE_SEED)  # on the CPU (sa3.rng)
        autoencoder = handle.model.autoencoder
        samples = stages.encode_sources(autoencoder, waveforms, chunked=autoencoder.config.chunked,
                                          generator=generator)
        comfy_models.release_parts(handle, "autoencoder")
        samples = samples.to(comfy_models.intermediate_device(), torch.float32)
        batch = samples.shape[0]
        if len(durations) != batch:
            durations = [max(durations)] * batch
        return io.NodeOutput(make_latent(samples, durations))


class SA3InpaintMask(io.ComfyNode):
    """Node id kept from when it was called SA3 Inpaint Mask (saved workflows name it)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3InpaintMask",
            **schema_aliases("SA3InpaintMask"),
            display_name="SA3 Inpaint Regions",
            category=CATEGORY,
            description="Chooses what the sampler regenerates: one or several regions in seconds (the rest of "
                        "the source is kept), or continuation (keep the first seconds of the source and generate "
                        "everything after it, up to SA3 Text Encode's duration, also past the source's end).",
            inputs=[
                io.Combo.Input("mode", options=MASK_MODES, default="regions",
                               tooltip="regions: regenerate the listed regions. continuation: keep 0..keep_seconds of "
                                       "the source and generate the rest."),
                io.String.Input("regions", default="2-4",
                                tooltip="Regions to regenerate as start-end in seconds, separated by commas or new "
                                        "lines, e.g. '2-4, 8.5-10'. Used (and shown) in regions mode."),
                io.Float.Input("keep_seconds", default=10.0, min=0.0, max=MAX_SECONDS, step=0.1,
                               tooltip="Continuation mode (shown there): seconds of the source to keep from the "
                                       "start; everything after is generated up to the duration set on SA3 Text "
                                       "Encode."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional (older workflows; shown in continuation mode or while "
                                        "connected): an SA3 Empty Latent, to check keep_seconds or the regions "
                                        "against its duration here. The sampler checks them in any case."),
            ],
            outputs=[SA3InpaintRegions.Output(display_name="inpaint_regions",
                                              tooltip="The regions to regenerate; connect to SA3 Sampler's "
                                                      "inpaint_mask together with inpaint_source.")],
        )

    @classmethod
    def validate_inputs(cls, regions=None):
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py).
        # The text must parse in either mode; that there is a region is checked in execute (regions mode).
        if regions is None:
            return True
        try:
            checks.check_regions("regions", parse_regions(regions, NODE_MASK, "regions"), math.inf, NODE_MASK)
        except ValueError as e:
            return str(e)
        return True

    @classmethod
    @checked(NODE_MASK)
    def execute(cls, mode, regions, keep_seconds, latent=None) -> io.NodeOutput:
        if mode == "continuation":
            out = InpaintRegions(continue_from=float(keep_seconds))
        else:
            spans = parse_regions(regions, NODE_MASK, "regions")
            if not spans:
                raise ValueError(error(NODE_MASK, "regions is empty (got no region, expected at least one "
                                                  "'start-end'). Add a region such as '2-4'."))
            out = InpaintRegions(regions=tuple(checks.check_regions("regions", spans, math.inf, NODE_MASK)))
        shape = read_latent(latent, NODE_MASK, "latent", None) if latent is not None else None
        if shape is not None and shape.durations is not None:  # an old graph's plan: check now, not after encoding
            duration = max(shape.durations)
            if out.continue_from is not None and not out.continue_from < duration:
                raise ValueError(error(NODE_MASK, f"keep_seconds {keep_seconds:g} leaves nothing to generate (got "
                                                  f"{keep_seconds:g} s, expected < the {duration:g} s duration). "
                                                  "Lower keep_seconds or lengthen the duration."))
            checks.check_regions("regions", out.spans(duration), duration, NODE_MASK)
        return io.NodeOutput(out)
