"""Decode node: SA3 latent -> ComfyUI AUDIO.

SAME's decoder draws noise. ``decoder_seed`` -1 continues the random stream SA3 Sampler stored
in its LATENT (``sa3_rng``), as ``generate()`` does, so the graph equals ``generate()`` bit for
bit. A latent without that stream (SA3 Encode Audio, LoadLatent, a node that rebuilt the dict) is
decoded with seed 0 and the node logs it; a decoder_seed >= 0 always starts a fresh stream.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from . import comfy_models
from ._adapters import RNG, error, make_audio, read_latent, read_padding, restore_generator
from ._sa3 import SAMPLES_PER_LATENT, checks, estimates, rng, stages
from ._validate import checked, widget_error
from .loaders import _require_model
from .search import schema_aliases
from .types import CATEGORY, SA3Model

logger = logging.getLogger(__name__)

NODE = "Decode"
FROM_SAMPLER = -1  # decoder_seed value: continue the stream stored by SA3 Sampler
NO_STREAM_SEED = 0  # decoder seed of a latent that carries no sampler stream, at -1
CHUNKING = {"auto": None, "on": True, "off": False}


class SA3Decode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3Decode",
            **schema_aliases("SA3Decode"),
            display_name="SA3 Decode",
            category=CATEGORY,
            description="Decodes SA3 latents to 44.1 kHz stereo AUDIO with SAME, silencing each item past its "
                        "duration and trimming to the duration. Continues the sampler's random stream, so the "
                        "result equals the official generate().",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model whose SAME autoencoder decodes."),
                io.Latent.Input("latent", tooltip="Latents from SA3 Sampler (or SA3 Encode Audio, or core's "
                                                  "VAEEncodeAudio with the SA3 VAE, for a round trip)."),
                io.Combo.Input("chunked", options=list(CHUNKING), default="auto",
                               tooltip="Decode in overlapping 128-frame chunks (less memory for long audio). auto: "
                                       "the model's setting, as generate() does."),
                io.Boolean.Input("trim", default=True,
                                 tooltip="Cut the 6 s headroom off when all items share one duration (as generate() "
                                         "does); mixed durations keep the padded length."),
                io.Int.Input("decoder_seed", default=FROM_SAMPLER, min=FROM_SAMPLER, max=checks.MAX_SEED,
                             optional=True, control_after_generate=False,
                             tooltip="The decoder's small random noise. -1: continue SA3 Sampler's random stream "
                                     "(stored in its latent), so the audio equals generate(); a latent without it "
                                     "(SA3 Encode Audio, Load Latent) decodes with seed 0, logged. 0 or more: "
                                     "decode with this seed."),
            ],
            outputs=[io.Audio.Output(display_name="audio",
                                     tooltip="AUDIO: float32 (batch, 2, samples) at 44100 Hz on the CPU.")],
        )

    @classmethod
    def validate_inputs(cls, chunked=None) -> bool | str:
        return widget_error(cls, NODE, chunked=chunked) or True

    @classmethod
    @checked(NODE)
    def execute(cls, model, latent, chunked, trim, decoder_seed=FROM_SAMPLER) -> io.NodeOutput:
        handle = _require_model(model, NODE)
        config = handle.config
        shape = read_latent(latent, NODE, "latent", config.latent_channels)
        if shape.kind == "empty":
            raise ValueError(error(NODE, "latent is empty (got all zeros, expected sampled or encoded latents). Decode "
                                         "the output of SA3 Sampler."))
        samples, durations = shape.samples, shape.durations
        if durations is None:  # core's VAEEncodeAudio: the whole latent is audio, nothing to silence or trim
            durations = [shape.frames * SAMPLES_PER_LATENT / config.sample_rate] * shape.batch
            trim = False
        padding = read_padding(latent, NODE, "latent")
        try:  # the latent's own length (the official plan's, or a core EmptyLatentAudio's)
            plan = stages.plan_latents(config, durations, padding, latents=shape.frames)
        except ValueError:  # longer than this model makes, or too short for its durations
            what = (f"more than this model makes (expected at most {config.max_latents} frames)"
                    if shape.frames > config.max_latents else f"too few for {max(durations):g} s")
            raise ValueError(error(NODE, f"latent has {shape.frames} frames, {what}. Decode the output of SA3 Sampler "
                                         "or SA3 Encode Audio with this model.")) from None
        autoencoder = handle.model.autoencoder
        use_chunks = CHUNKING[chunked]
        if use_chunks is None:
            use_chunks = autoencoder.config.chunked
        needed = estimates.same_decode_bytes(autoencoder.config, shape.frames, shape.batch, chunked=use_chunks,
                                             dtype=autoencoder.dtype)
        comfy_models.load_parts(handle, "autoencoder", memory_required=needed)
        saved = _decoder_generator(latent, decoder_seed).get_state()
        bar = comfy_models.progress_bar(1)

        def on_chunk(i: int, n: int) -> None:
            bar.update_absolute(i, n)
            comfy_models.check_interrupt()

        def run(chunks: bool):
            generator = torch.Generator().set_state(saved)  # the same stream for a retry
            return stages.decode(autoencoder, samples, plan, chunked=chunks, generator=generator,
                                   on_chunk=on_chunk)

        audio = comfy_models.run_guarded(
            "SAME autoencoder (decode)", needed, lambda: run(use_chunks),
            retry=None if use_chunks else (lambda: run(True)), retry_what="chunked decoding")
        comfy_models.release_parts(handle, "autoencoder")
        if trim:
            audio = stages.trim_to_duration(audio, durations, config.sample_rate)
        return io.NodeOutput(make_audio(audio, config.sample_rate))


def _decoder_generator(latent: dict, seed: int):
    """The decoder's stream: a CPU generator (sa3.rng), seeded or the sampler's, restored."""
    if seed != FROM_SAMPLER:
        return rng.make_generator(seed)
    saved = latent.get(RNG)
    if saved is None:
        logger.info("Stable Audio 3 %s: the latent carries no SA3 Sampler random stream (%r); decoding with seed %d. "
                    "Set SA3 Decode decoder_seed to choose another.", NODE, RNG, NO_STREAM_SEED)
        return rng.make_generator(NO_STREAM_SEED)
    return restore_generator(saved)
