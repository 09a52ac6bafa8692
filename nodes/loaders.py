"""Loader nodes: the SA3 model (official folders under ``models/stable_audio_3``), LoRA stacking
and LoRA strengths."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from . import comfy_models
from ._adapters import error
from ._handle import SA3Handle
from ._sa3 import (
    CONFIG_FILE,
    MODEL_REPOS,
    TEXT_FOLDER,
    WEIGHTS_FILE,
    LoRALink,
    ModelConfig,
    attention,
    check_rule,
    checks,
    expand_brackets,
    loading,
    precision,
    read_config,
)
from ._validate import checked, widget_error
from .search import schema_aliases
from .types import CATEGORY, SA3Model

logger = logging.getLogger(__name__)

FOLDER = "stable_audio_3"  # models/stable_audio_3/<name>/{model_config.json, model.safetensors, t5gemma-b-b-ul2/}
PRECISIONS = list(precision.PRECISIONS)
AUTOENCODER_PRECISIONS = list(precision.AUTOENCODER_PRECISIONS)
ATTENTIONS = list(attention.BACKENDS)
PADDING_MODES = list(attention.PADDING_MODES)
LORA_TARGETS = {"dit and conditioner": None, "dit": "dit", "conditioner": "conditioner"}
STRENGTH = checks.MAX_LORA_STRENGTH  # |strength| the library accepts
ALWAYS = (0.0, 1.0)  # t_from, t_to of a LoRA active at every step
SVD_BASES_FILE = "svd_bases.safetensors"  # -XS LoRA bases, looked up beside the LoRA file


# --- model folders ----------------------------------------------------------------------------


def register_folder() -> None:
    """Add ``models/stable_audio_3`` to ComfyUI's folders (kept beside any extra_model_paths entry)."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


def _model_folders() -> dict[str, Path]:
    """Official-layout folders (one or two levels deep) in every stable_audio_3 path, by name."""
    register_folder()
    found: dict[str, Path] = {}
    for base in folder_paths.get_folder_paths(FOLDER):
        base = Path(base)
        if not base.is_dir():
            continue
        for config in sorted(list(base.glob(f"*/{CONFIG_FILE}")) + list(base.glob(f"*/*/{CONFIG_FILE}"))):
            name = config.parent.relative_to(base).as_posix()
            found.setdefault(name, config.parent)
    return found


def model_choices() -> list[str]:
    found = _model_folders()
    return sorted(found) + [name for name in MODEL_REPOS if name not in found]


def _download_target(name: str) -> Path:
    return Path(folder_paths.models_dir) / FOLDER / name


def _check_model_name(model_name: str, download: bool) -> str | None:
    """None when the choice can be loaded, else the message for the user."""
    folder = _model_folders().get(model_name)
    if folder is None:
        if model_name not in MODEL_REPOS:
            return error("Model Loader", f"model_name {model_name!r} is not a model folder (got {model_name!r}, "
                                         f"expected a folder in models/{FOLDER}/ or one of {list(MODEL_REPOS)}). "
                                         "Refresh the node list after adding files.")
        if not download:
            return error("Model Loader", f"model_name {model_name!r} is not downloaded (got no "
                                         f"{_download_target(model_name)}/{CONFIG_FILE}, expected {CONFIG_FILE}, "
                                         f"{WEIGHTS_FILE} and {TEXT_FOLDER}/ there). Put the files of "
                                         f"huggingface.co/{MODEL_REPOS[model_name]} there, or turn on download.")
        return None
    try:
        config, _ = read_config(folder / CONFIG_FILE)  # the whole config, SAME part included
    except (ValueError, RuntimeError) as e:
        return error("Model Loader", f"model_name {model_name!r} is not a Stable Audio 3 model (got "
                                     f"{folder / CONFIG_FILE}: {e}). Pick an official SA3 folder.")
    if not (folder / WEIGHTS_FILE).is_file():
        return error("Model Loader", f"model_name {model_name!r} has no weights (got no {folder / WEIGHTS_FILE}, "
                                     f"expected {WEIGHTS_FILE} beside {CONFIG_FILE}). Copy the checkpoint there.")
    text, repo = _text_folder(folder, config)
    if not (text / "config.json").is_file() and not (download and repo):
        where = f" of huggingface.co/{repo}" if repo else ""
        return error("Model Loader", f"model_name {model_name!r} has no text encoder (got no {text}/config.json, "
                                     f"expected the {text.name}/ folder{where} beside {WEIGHTS_FILE}). Copy that "
                                     f"folder there{', or turn on download' if repo else ''}.")
    return None


def _text_folder(folder: Path, config) -> tuple[Path, str | None]:
    """The T5Gemma folder the model reads and the hub repo that holds it (None: local only)."""
    return folder / (config.text.subfolder or TEXT_FOLDER), config.text.model_path or config.text.repo_id


def _resolve(model_name: str, download: bool) -> Path:
    message = _check_model_name(model_name, download)
    if message is not None:
        raise ValueError(message)
    folder = _model_folders().get(model_name)
    if folder is not None:
        text, repo = _text_folder(folder, ModelConfig.from_file(folder / CONFIG_FILE))
        if not (text / "config.json").is_file():  # download is on (checked above): fetch it into the folder
            logger.info("Stable Audio 3: downloading the text encoder of %s into %s", repo, text)
            with loading.staged_download(folder) as stage:
                loading.resolve_text_dir(folder, repo, text.name, local_dir=stage)
        return folder
    target = _download_target(model_name)
    logger.info("Stable Audio 3: downloading %s into %s", MODEL_REPOS[model_name], target)
    return _hub_download(model_name, target)


def _hub_download(name: str, target: Path) -> Path:
    """Fetch an official model into ``target`` in the official layout (needs huggingface_hub); the
    folder appears only once every file is there (a failed download leaves nothing behind)."""
    with loading.staged_download(target) as stage:
        folder = loading.resolve_model_dir(name, local_dir=stage)
        config = ModelConfig.from_file(folder / CONFIG_FILE)
        loading.resolve_text_dir(folder, config.text.model_path or config.text.repo_id, config.text.subfolder,
                                 local_dir=stage)
    return target


def load_option_inputs() -> list:
    """precision, attention and padding_mode: the load options of both model loaders."""
    return [
        io.Combo.Input("precision", options=PRECISIONS, default="auto",
                       tooltip="DiT and conditioner precision. auto: ComfyUI's choice for the device (fp32 on CPU, "
                               "fp16/bf16 on GPU). Fastest on a CPU: bf16 where it has AVX512-BF16 or AMX (recent "
                               "Xeon, AMD Zen 4/5), fp32 without them (e.g. AVX2): bf16 still runs there, slower, "
                               "and the log says so. fp16 is for GPUs. SAME stays fp32 unless "
                               "--fp16-vae/--bf16-vae."),
        io.Combo.Input("attention", options=ATTENTIONS, default="auto",
                       tooltip="Attention backend. auto: flash-attn on CUDA when installed, else PyTorch SDPA. math "
                               "is the slow dense reference."),
        io.Combo.Input("padding_mode", options=PADDING_MODES, default="exact",
                       tooltip="How padded frames are masked: exact (as trained, flash semantics) or reference (the "
                               "official CPU behaviour, for bit-level comparisons)."),
    ]


def optional_load_inputs() -> list:
    """low_memory and autoencoder_precision: the optional switches of both model loaders."""
    return [
        io.Boolean.Input("low_memory", default=False, optional=True,
                         tooltip="For small-RAM CPU machines: after each node, drop the weights of the parts it "
                                 "used from RAM (text encoder, DiT, SAME), so the peak is the largest part instead "
                                 "of all three. They are read back from the disk cache at the next use (well under "
                                 "a second for small). Also skips the prepacked weight copy bf16 keeps on CPUs "
                                 "(faster, about 1 GB more for small)."),
        io.Combo.Input("autoencoder_precision", options=AUTOENCODER_PRECISIONS, default="auto", optional=True,
                       tooltip="SAME (decoder/encoder) precision. auto: ComfyUI's choice (fp32 unless "
                               "--fp16-vae/--bf16-vae). fp32: exact. bf16-mixed: faster on CPUs with AVX512-BF16 "
                               "or AMX (slower than fp32 without them, e.g. AVX2), bf16 matrix products with fp32 "
                               "norms, attention and noise; changes the audio slightly (about 2e-2 relative L2 on "
                               "test models)."),
    ]


class SA3ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3ModelLoader",
            **schema_aliases("SA3ModelLoader"),
            display_name="SA3 Model Loader",
            category=CATEGORY,
            description="Loads a Stable Audio 3 model (DiT, T5Gemma text encoder, SAME autoencoder) from "
                        f"models/{FOLDER}/<name>/ in the official layout, or downloads one of the six official "
                        "models there when download is on. Each part is managed by ComfyUI's model management.",
            inputs=[
                io.Combo.Input("model_name", options=model_choices(),
                               tooltip=f"A folder in models/{FOLDER}/ holding {CONFIG_FILE}, {WEIGHTS_FILE} and "
                                       f"{TEXT_FOLDER}/, or an official name (small-music, small-sfx, medium and "
                                       "their -base versions)."),
                *load_option_inputs(),
                io.Boolean.Input("download", default=False,
                                 tooltip=f"Allow downloading an official model from Hugging Face into "
                                         f"models/{FOLDER}/<name>/ when it is missing (gated: accept the license "
                                         "and set HF_TOKEN)."),
                *optional_load_inputs(),
            ],
            outputs=[SA3Model.Output(display_name="model",
                                     tooltip="The loaded Stable Audio 3 model for the SA3 nodes.")],
        )

    @classmethod
    def validate_inputs(cls, model_name=None) -> bool | str:
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py);
        # the download switch is read in execute (a missing folder with download on is fetched there)
        if model_name is None:
            return True
        return _check_model_name(model_name, download=True) or True

    @classmethod
    @checked("Model Loader", skip=("model_name",))
    def execute(cls, model_name, precision, attention, padding_mode, download, low_memory=False,
                autoencoder_precision="auto") -> io.NodeOutput:
        folder = _resolve(model_name, download)
        return io.NodeOutput(comfy_models.load_model(folder, model_name, precision, attention, padding_mode,
                                                     bool(low_memory), autoencoder_precision))


# --- LoRA -------------------------------------------------------------------------------------


def _require_model(model, node: str) -> SA3Handle:
    if not isinstance(model, SA3Handle):
        raise ValueError(error(node, f"model is not an SA3 model (got {type(model).__name__}, expected the "
                                     "output of SA3 Model Loader). Connect SA3 Model Loader."))
    return model


def _lora_interval(t_from: float, t_to: float) -> tuple[float, float] | None:
    """The LoRA's active noise interval; None for the whole range (no per-step switching)."""
    if (float(t_from), float(t_to)) == ALWAYS:
        return None
    return (float(t_from), float(t_to))


def _unmatched_filters(dit, layer_filter: str) -> list[str]:
    """layer_filter entries (as written) that match no layer name of the DiT (sa3's matching:
    lower-cased substrings, [a-b] ranges expanded)."""
    names = [name for name, _ in dit.named_modules() if name]
    entries = [check_rule("layer_filter", e.strip(), "LoRA Loader") for e in layer_filter.split(",") if e.strip()]
    return [e for e in entries if not any(x in n for x in expand_brackets(e.lower()) for n in names)]


class SA3LoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3LoraLoader",
            **schema_aliases("SA3LoraLoader"),
            display_name="SA3 LoRA Loader",
            category=CATEGORY,
            description="Adds a LoRA from models/loras to the model's LoRA chain (chain several of these nodes to "
                        "stack LoRAs in order). Returns a new model; the loader's output is left unchanged. "
                        "Optionally limit the LoRA to part of the sampling (t_from..t_to) or keep it off some layers "
                        "(layer_filter).",
            inputs=[
                SA3Model.Input("model", tooltip="The SA3 model (from the loader or another LoRA node)."),
                io.Combo.Input("lora_name", options=lora_choices(),
                               tooltip="A Stable Audio 3 LoRA file (.safetensors or Lightning .ckpt) in models/loras. "
                                       "-XS LoRAs use svd_bases.safetensors from the same folder."),
                io.Float.Input("strength_dit", default=1.0, min=-STRENGTH, max=STRENGTH, step=0.01,
                               tooltip="Strength on the diffusion transformer (the sound itself); 1 = as trained, "
                                       "0 = off, negative values push away from the LoRA's style."),
                io.Float.Input("strength_conditioner", default=1.0, min=-STRENGTH, max=STRENGTH, step=0.01,
                               tooltip="Strength on the conditioner (how the requested seconds are embedded); "
                                       "1 = as trained, 0 = off."),
                io.Float.Input("t_from", default=ALWAYS[0], min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Start of the noise range where this LoRA is active (t runs from 1 = pure "
                                       "noise at the first step to 0 = finished audio; the LoRA applies while "
                                       "t_from <= t <= t_to). Raise it (e.g. 0.5) to apply the LoRA only early in "
                                       "sampling (high t), where it shapes the structure: rhythm, arrangement, "
                                       "form. 0 with t_to 1 = always."),
                io.Float.Input("t_to", default=ALWAYS[1], min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="End of the noise range where this LoRA is active (0..1, at least t_from). "
                                       "Lower it (e.g. 0.5) to apply the LoRA only late in sampling (low t), where "
                                       "it shapes the texture: timbre, mix, detail, over the base model's "
                                       "structure. 1 = from the first step."),
                io.String.Input("layer_filter", default="", optional=True,
                                tooltip="Layers of the diffusion transformer where this LoRA is switched off: "
                                        "comma-separated parts of layer names, e.g. 'cross_attn' (the base model "
                                        "reads the prompt), 'self_attn', 'ff', or 'transformer.layers.[0-3]' (the "
                                        "first four blocks; [a-b] is a range). Empty: every layer."),
            ],
            outputs=[SA3Model.Output(display_name="model", tooltip="The model with this LoRA appended to its chain.")],
        )

    @classmethod
    def validate_inputs(cls, lora_name=None) -> bool | str:
        # lora_name is taken here so that every ComfyUI gives this message (newer releases check io.Combo
        # values at queue time themselves unless validate_inputs takes the input), and only it: ComfyUI
        # labels the message with every input named here (nodes/_validate.py). The numbers are
        # range-checked by ComfyUI per input; NaN and the t_from/t_to order first thing in execute.
        if lora_name is None:
            return True
        return _check_lora_name(lora_name) or True

    @classmethod
    @checked("LoRA Loader", skip=("lora_name",))
    def execute(cls, model, lora_name, strength_dit, strength_conditioner, t_from=ALWAYS[0], t_to=ALWAYS[1],
                layer_filter="") -> io.NodeOutput:
        handle = _require_model(model, "LoRA Loader")
        message = _check_lora_name(lora_name)
        if message is not None:
            raise ValueError(message)
        if t_from > t_to:
            raise ValueError(_interval_message(t_from, t_to))
        unmatched = _unmatched_filters(handle.model.dit, layer_filter or "")
        if unmatched:
            raise ValueError(error("LoRA Loader", f"layer_filter entry {unmatched[0]!r} matches no layer of the "
                                                  f"model (got {layer_filter!r}, expected parts of layer names such "
                                                  "as 'cross_attn', 'self_attn', 'ff' or 'transformer.layers.0'). "
                                                  "Fix the spelling or clear layer_filter."))
        path = Path(folder_paths.get_full_path("loras", lora_name))
        bases = path.parent / SVD_BASES_FILE
        try:  # read once here; every run of this branch applies it from memory
            lora = handle.model.prepare_lora(path, svd_bases_path=bases if bases.is_file() else None)
        except (ValueError, RuntimeError) as e:  # sa3's LoRALoadError is a RuntimeError
            raise ValueError(error("LoRA Loader", f"lora_name {lora_name!r} does not fit {handle.name!r} ({e}). "
                                                  "Use a LoRA trained for this model.")) from e
        link = LoRALink(lora, float(strength_dit), float(strength_conditioner), interval=_lora_interval(t_from, t_to),
                        layer_filter=(layer_filter or "").strip())
        return io.NodeOutput(comfy_models.with_loras(handle, (*handle.loras, link)))


def lora_choices() -> list[str]:
    """The files of models/loras that can be LoRAs: the -XS bases file (svd_bases.safetensors,
    read beside -XS LoRAs) is not one, so it is not offered."""
    return [name for name in folder_paths.get_filename_list("loras") if Path(name).name != SVD_BASES_FILE]


def _check_lora_name(lora_name: str) -> str | None:
    if lora_name in lora_choices() and folder_paths.get_full_path("loras", lora_name) is not None:
        return None
    available = lora_choices()
    if Path(lora_name).name == SVD_BASES_FILE:
        got = f"{lora_name!r}, the -XS bases file that -XS LoRAs read beside them"
    else:
        got = f"{lora_name!r}"
    if not available:
        fix = ("models/loras has no LoRA file yet: put a Stable Audio 3 LoRA there (.safetensors or Lightning .ckpt), "
               "refresh the node list (press R), then pick it here; or bypass this node (Ctrl+B) to run without it.")
    else:
        listed = ", ".join(repr(n) for n in available[:5]) + (", ..." if len(available) > 5 else "")
        fix = (f"Pick one of your LoRA files in lora_name ({listed}); a template's LoRA names are placeholders. "
               "Refresh the node list (press R) after adding files.")
    return error("LoRA Loader", f"lora_name {lora_name!r} is not a LoRA in models/loras (got {got}, expected one of "
                                f"the listed files). {fix}")


def _interval_message(t_from: float, t_to: float) -> str:
    return error("LoRA Loader", f"t_from {t_from:g} is above t_to {t_to:g} (got t_from {t_from:g}, t_to {t_to:g}, "
                                "expected t_from <= t_to). Swap the two values.")


class SA3LoraStrength(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3LoraStrength",
            **schema_aliases("SA3LoraStrength"),
            display_name="SA3 LoRA Strength",
            category=CATEGORY,
            description="Changes the strength of one LoRA of the chain (or all) for the DiT, the conditioner or "
                        "both. Returns a new model; upstream outputs are left unchanged.",
            inputs=[
                SA3Model.Input("model", tooltip="An SA3 model with at least one LoRA."),
                io.Int.Input("lora_index", default=0, min=0, max=64,
                              tooltip="Position in the chain: 1 = the first LoRA loaded, 2 = the second...; 0 = all."),
                io.Combo.Input("target", options=list(LORA_TARGETS), default="dit and conditioner",
                               tooltip="Which strengths to set: the DiT's, the conditioner's, or both."),
                io.Float.Input("strength", default=1.0, min=-STRENGTH, max=STRENGTH, step=0.01,
                               tooltip="The new strength; 1 = as trained, 0 = off."),
            ],
            outputs=[SA3Model.Output(display_name="model", tooltip="The model with the new LoRA strength(s).")],
        )

    @classmethod
    def validate_inputs(cls, target=None) -> bool | str:
        return widget_error(cls, "LoRA Strength", target=target) or True

    @classmethod
    @checked("LoRA Strength")
    def execute(cls, model, lora_index, target, strength) -> io.NodeOutput:
        handle = _require_model(model, "LoRA Strength")
        n = len(handle.loras)
        if n == 0:
            raise ValueError(error("LoRA Strength", "model has no LoRA (got 0 LoRAs, expected at least 1). Put SA3 "
                                                    "LoRA Loader before this node."))
        if not 0 <= lora_index <= n:
            raise ValueError(error("LoRA Strength", f"lora_index {lora_index} is out of range (got {lora_index}, "
                                                    f"expected 0..{n} for {n} LoRA(s)). Use 0 for all."))
        part = LORA_TARGETS[target]
        loras = list(handle.loras)
        for i, spec in enumerate(loras):
            if lora_index in (0, i + 1):
                dit = float(strength) if part in (None, "dit") else spec.strength_dit
                conditioner = float(strength) if part in (None, "conditioner") else spec.strength_conditioner
                loras[i] = replace(spec, strength_dit=dit, strength_conditioner=conditioner)  # options stay
        return io.NodeOutput(comfy_models.with_loras(handle, loras))
