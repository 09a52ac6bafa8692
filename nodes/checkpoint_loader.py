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


# What belongs in each folder and where it comes from, for the message when a file is not there
WANTED = {
    "checkpoints": ("a Stable Audio 3 checkpoint",
                    "core ComfyUI's Stable Audio 3 templates download one per variant, "
                    "stable_audio_3_<variant>.safetensors; the official model.safetensors from "
                    "huggingface.co/stabilityai/stable-audio-3-small-music (or another variant's page) works too"),
    "text_encoders": ("the T5Gemma-b-b-ul2 text encoder",
                      "core ComfyUI's Stable Audio 3 templates download it; without core's files, SA3 Model Loader "
                      "downloads the official model folder instead"),
}


def _folders(kind: str) -> str:
    """The folders ComfyUI reads ``models/<kind>`` from (extra_model_paths.yaml included)."""
    return " or ".join(map(repr, folder_paths.get_folder_paths(kind)))


def _where_to_get(kind: str) -> str:
    what, source = WANTED[kind]
    return f"put {what} in {_folders(kind)} ({source})"


def _not_listed(kind: str, input_name: str, name) -> str:
    """The message for a name ``models/<kind>`` does not list: where the file belongs and where to get
    it, never another name to pick (the name picked may be the very file that is missing)."""
    return str(checks.fail(input_name, f"one of the files listed in models/{kind}", name, NODE,
                           f"No such file there: {_where_to_get(kind)}, then refresh the node list (R)."))


def _is_listed(kind: str, name) -> bool:
    return isinstance(name, str) and name in folder_paths.get_filename_list(kind)  # cached by ComfyUI


def _listed_path(kind: str, input_name: str, name) -> str:
    """The full path of ``name``, a file ComfyUI lists in ``models/<kind>``; anything else (a
    path that leaves the folder, an unlisted file, a name with NUL, a non-string from the API) is
    refused before the file system is touched."""
    if not _is_listed(kind, name):
        raise ValueError(_not_listed(kind, input_name, name))
    path = folder_paths.get_full_path(kind, name)
    if path is None:  # listed a moment ago, removed since
        raise checks.fail(input_name, f"a file in models/{kind}", name, NODE, "Refresh the node list.")
    return path


def _missing_files(ckpt_name, text_encoder_name) -> str | None:
    """One message naming every file the node was given that its folder does not list, else None."""
    missing = [_not_listed(kind, input_name, name) for kind, input_name, name in (
        ("checkpoints", "ckpt_name", ckpt_name), ("text_encoders", "text_encoder_name", text_encoder_name))
        if not _is_listed(kind, name)]
    if not missing:
        return None
    return " Also: ".join([missing[0], *(m.removeprefix(error(NODE, "")) for m in missing[1:])])


def _file_problem(kind: str, input_name: str, name, check, fix: str) -> str | None:
    """None when ``name`` is a listed file of ``models/<kind>`` that passes ``check(path)``, else the
    node's message naming the input."""
    try:
        path = _listed_path(kind, input_name, name)
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
                         "Pick the T5Gemma-b-b-ul2 file of core's Stable Audio 3 templates "
                         "(t5gemma_b_b_ul2.safetensors).")


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
        # A missing text encoder on a fresh install usually comes with an empty models/checkpoints: the
        # message names both, though only this input is known here (the checkpoint's name is not).
        if text_encoder_name is None:
            return True
        message = _check_text_encoder(text_encoder_name)
        if (message is not None and not _is_listed("text_encoders", text_encoder_name)
                and not folder_paths.get_filename_list("checkpoints")):
            message += f" Also: models/checkpoints holds no file: {_where_to_get('checkpoints')}."
        return message or True

    @classmethod
    @checked(NODE, skip=("ckpt_name", "text_encoder_name"))
    def execute(cls, ckpt_name, text_encoder_name, variant, precision, attention, padding_mode,
                low_memory=False, autoencoder_precision="auto") -> io.NodeOutput:
        message = (_missing_files(ckpt_name, text_encoder_name) or _check_checkpoint(ckpt_name, variant)
                   or _check_text_encoder(text_encoder_name))
        if message is not None:
            raise ValueError(message)
        return io.NodeOutput(comfy_models.load_single_file(
            _listed_path("checkpoints", "ckpt_name", ckpt_name),
            _listed_path("text_encoders", "text_encoder_name", text_encoder_name),
            variant, ckpt_name, precision, attention, padding_mode, bool(low_memory), autoencoder_precision))
