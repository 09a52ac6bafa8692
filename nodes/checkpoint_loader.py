"""SA3 Checkpoint Loader: core ComfyUI's single-file models (``models/checkpoints`` +
``models/text_encoders``) as the same SA3_MODEL SA3 Model Loader gives."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from . import comfy_models
from ._adapters import error
from ._sa3 import checks, single_file
from ._validate import checked
from .loaders import load_option_inputs, optional_load_inputs
from .search import schema_aliases
from .types import CATEGORY, SA3Model

NODE = "Checkpoint Loader"
VARIANTS = [single_file.AUTO, *single_file.VARIANTS]


def _reason(e: Exception) -> str:
    """The library's message without its 'Stable Audio 3: ' lead, to sit inside the node's."""
    return str(e).removeprefix("Stable Audio 3: ")


def _listed_path(kind: str, input_name: str, name, example: str = "") -> str:
    """The full path of ``name``, a file ComfyUI lists in ``models/<kind>``; anything else (a
    path that leaves the folder, an unlisted file, a name with NUL, a non-string from the API) is
    refused before the file system is touched."""
    if not isinstance(name, str) or name not in folder_paths.get_filename_list(kind):  # cached by ComfyUI
        raise checks.fail(input_name, f"one of the files listed in models/{kind}{example}", name, NODE,
                          "Refresh the node list after adding files.")
    path = folder_paths.get_full_path(kind, name)
    if path is None:  # listed a moment ago, removed since
        raise checks.fail(input_name, f"a file in models/{kind}", name, NODE, "Refresh the node list.")
    return path


def _file_problem(kind: str, input_name: str, name, check, fix: str, example: str = "") -> str | None:
    """None when ``name`` is a listed file of ``models/<kind>`` that passes ``check(path)``, else the
    node's message naming the input."""
    try:
        path = _listed_path(kind, input_name, name, example)
    except ValueError as e:
        return str(e)
    try:
        check(path)
    except (RuntimeError, ValueError) as e:
        return error(NODE, f"{input_name} {name!r} cannot be loaded ({_reason(e)}). {fix}")
    return None


def _check_checkpoint(ckpt_name, variant: str) -> str | None:
    """None when the checkpoint can be loaded as ``variant`` (header only), else the message."""
    return _file_problem("checkpoints", "ckpt_name", ckpt_name,
                         lambda path: single_file.checkpoint_config(path, variant),
                         "Pick a Stable Audio 3 checkpoint, or fix the variant.")


def _check_text_encoder(text_encoder_name) -> str | None:
    """None when the text-encoder file fits (header and tokenizer, cached per file), else the message."""
    return _file_problem("text_encoders", "text_encoder_name", text_encoder_name, single_file.check_text_encoder_file,
                         "Pick t5gemma_b_b_ul2.safetensors (the T5Gemma-b-b-ul2 file of core's Stable Audio 3 "
                         "templates).", ", e.g. t5gemma_b_b_ul2.safetensors")


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
            _listed_path("checkpoints", "ckpt_name", ckpt_name),
            _listed_path("text_encoders", "text_encoder_name", text_encoder_name),
            variant, ckpt_name, precision, attention, padding_mode, bool(low_memory), autoencoder_precision))
