"""SA3 Checkpoint Loader: core ComfyUI's single-file models (``models/checkpoints`` +
``models/text_encoders``) as the same SA3_MODEL SA3 Model Loader gives."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from . import comfy_models
from ._adapters import error
from ._sa3 import single_file
from ._validate import checked
from .loaders import load_option_inputs, optional_load_inputs
from .search import schema_aliases
from .types import CATEGORY, SA3Model

NODE = "Checkpoint Loader"
VARIANTS = [single_file.AUTO, *single_file.VARIANTS]


def _reason(e: Exception) -> str:
    """The library's message without its 'Stable Audio 3: ' lead, to sit inside the node's."""
    return str(e).removeprefix("Stable Audio 3: ")


def _check_checkpoint(ckpt_name: str, variant: str) -> str | None:
    """None when the checkpoint can be loaded as ``variant`` (header only), else the message."""
    checkpoint = folder_paths.get_full_path("checkpoints", ckpt_name)
    if checkpoint is None:
        return error(NODE, f"ckpt_name {ckpt_name!r} is not in models/checkpoints (got {ckpt_name!r}, expected one of "
                           "the listed files). Refresh the node list after adding files.")
    try:
        single_file.checkpoint_config(checkpoint, variant)
    except (RuntimeError, ValueError) as e:
        return error(NODE, f"ckpt_name {ckpt_name!r} cannot be loaded ({_reason(e)}). Pick a Stable Audio 3 "
                           "checkpoint, or fix the variant.")
    return None


def _check_text_encoder(text_encoder_name: str) -> str | None:
    """None when the text-encoder file fits (header only), else the message."""
    text_encoder = folder_paths.get_full_path("text_encoders", text_encoder_name)
    if text_encoder is None:
        return error(NODE, f"text_encoder_name {text_encoder_name!r} is not in models/text_encoders (got "
                           f"{text_encoder_name!r}, expected one of the listed files, e.g. t5gemma_b_b_ul2.safetensors)"
                           ". Refresh the node list after adding files.")
    try:
        single_file.check_text_encoder_file(text_encoder)
    except (RuntimeError, ValueError) as e:
        return error(NODE, f"text_encoder_name {text_encoder_name!r} cannot be loaded ({_reason(e)}). Pick "
                           "t5gemma_b_b_ul2.safetensors (the T5Gemma-b-b-ul2 file of core's Stable Audio 3 templates).")
    return None


class SA3CheckpointLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3CheckpointLoader",
            **schema_aliases("SA3CheckpointLoader"),
            display_name="SA3 Checkpoint Loader",
            category=CATEGORY,
            description="Loads a Stable Audio 3 model from core ComfyUI's single files: a checkpoint from "
                        "models/checkpoints (e.g. stable_audio_3_small_music.safetensors) and the T5Gemma text "
                        "encoder from models/text_encoders (t5gemma_b_b_ul2.safetensors). Gives the same model, and "
                        "the same audio, as SA3 Model Loader with the official folder.",
            inputs=[
                io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("checkpoints"),
                               tooltip="A Stable Audio 3 checkpoint in models/checkpoints (the official "
                                       "model.safetensors or core's stable_audio_3_*.safetensors; fp32, fp16 or bf16). "
                                       "A <name>.json beside it (the official model_config.json) sets its config."),
                io.Combo.Input("text_encoder_name", options=folder_paths.get_filename_list("text_encoders"),
                               tooltip="The T5Gemma-b-b-ul2 text encoder with its tokenizer in models/text_encoders "
                                       "(t5gemma_b_b_ul2.safetensors)."),
                io.Combo.Input("variant", options=VARIANTS, default=single_file.AUTO,
                               tooltip="Which official model the checkpoint is; it sets the default sampler and "
                                       "steps and the longest duration. auto: small or medium from the weights, "
                                       "music/sfx and -base from the file name (small-music when it does not say)."),
                *load_option_inputs(),
                *optional_load_inputs(),
            ],
            outputs=[SA3Model.Output(display_name="model",
                                     tooltip="The loaded Stable Audio 3 model for the SA3 nodes.")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder_name=None) -> bool | str:
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py).
        # The checkpoint's check needs the variant (another input), so it runs first thing in execute,
        # with the combos and numbers (the loader is the graph's first node: nothing ran before it).
        if text_encoder_name is None:
            return True
        return _check_text_encoder(text_encoder_name) or True

    @classmethod
    @checked(NODE, skip=("ckpt_name", "text_encoder_name"))
    def execute(cls, ckpt_name, text_encoder_name, variant, precision, attention, padding_mode,
                low_memory=False, autoencoder_precision="auto") -> io.NodeOutput:
        message = _check_checkpoint(ckpt_name, variant) or _check_text_encoder(text_encoder_name)
        if message is not None:
            raise ValueError(message)
        return io.NodeOutput(comfy_models.load_single_file(
            folder_paths.get_full_path("checkpoints", ckpt_name), folder_paths.get_full_path("text_encoders",
                                                                                            text_encoder_name),
            variant, ckpt_name, precision, attention, padding_mode, bool(low_memory), autoencoder_precision))
