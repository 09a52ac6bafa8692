"""SA3 Prompt Assistant: a short idea -> a full SA3 prompt and a suggested duration, written by a
small chat language model (Qwen3.5-2B, as the official app) with ``sa3.prompt_assistant``.

The language model lives in ``models/LLM/<name>/`` in Hugging Face layout (``config.json``,
``*.safetensors``, the tokenizer files with its chat template); ``Qwen3.5-2B`` is fetched there
from huggingface.co/Qwen/Qwen3.5-2B on first use when download is on. It is loaded once and kept
(one model at a time: another folder replaces it), wrapped in a ComfyUI ``ModelPatcher`` that
moves it to the text encoder's device for a run and back to the offload device right after.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from . import comfy_models
from ._adapters import error
from ._sa3 import loading, prompt_assistant
from ._validate import checked
from .conditioning import MAX_SECONDS
from .loaders import _require_model
from .search import schema_aliases
from .types import CATEGORY, SA3Model

logger = logging.getLogger(__name__)

NODE = "Prompt Assistant"
FOLDER = "LLM"  # models/LLM/<name>/ in Hugging Face layout
OFFICIAL = prompt_assistant.MODEL_NAME
_LOADED: dict[tuple, tuple] = {}  # (folder, its files' times) -> (patcher, PromptModel): the last one used


def register_folder() -> None:
    """Add ``models/LLM`` to ComfyUI's folders (kept beside any extra_model_paths entry)."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


def _language_models() -> dict[str, Path]:
    """Hugging Face folders (``config.json``, one or two levels deep) in every LLM path, by name."""
    register_folder()
    found: dict[str, Path] = {}
    for base in map(Path, folder_paths.get_folder_paths(FOLDER)):
        if base.is_dir():
            for config in sorted([*base.glob("*/config.json"), *base.glob("*/*/config.json")]):
                found.setdefault(config.parent.relative_to(base).as_posix(), config.parent)
    return found


def language_model_choices() -> list[str]:
    found = _language_models()
    return sorted(found) + ([] if OFFICIAL in found else [OFFICIAL])


def _download_target() -> Path:
    return Path(folder_paths.models_dir) / FOLDER / OFFICIAL


def _check_language_model(name: str, download: bool) -> str | None:
    """None when the choice can be loaded, else the message for the user."""
    if name in _language_models():
        return None
    if name != OFFICIAL:
        return error(NODE, f"language_model {name!r} is not a model folder (got {name!r}, expected a folder in "
                           f"models/{FOLDER}/ or {OFFICIAL!r}). Refresh the node list after adding files.")
    if not download:
        return error(NODE, f"language_model {name!r} is not downloaded (got no {_download_target()}/config.json, "
                           f"expected the files of huggingface.co/{prompt_assistant.REPO_ID} there). Put them "
                           "there, or turn on download.")
    return None


def _resolve(name: str, download: bool) -> Path:
    """The model's folder, downloaded into models/LLM/Qwen3.5-2B first when needed (staged: a
    failed download leaves nothing behind)."""
    message = _check_language_model(name, download)
    if message is not None:
        raise ValueError(message)
    folder = _language_models().get(name)
    if folder is not None:
        return folder
    target = _download_target()
    logger.info("Stable Audio 3: downloading %s into %s", prompt_assistant.REPO_ID, target)
    with loading.staged_download(target) as stage:
        prompt_assistant.resolve_prompt_model_dir(OFFICIAL, download=True, local_dir=stage)
    return target


def _loaded(folder: Path):
    """(patcher, PromptModel) for ``folder``: the kept one while its files are unchanged."""
    key = (str(folder), tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())))
    if key not in _LOADED:
        _LOADED.clear()  # one language model at a time
        _LOADED[key] = comfy_models.load_prompt_model(folder)
    return _LOADED[key]


class SA3PromptAssistant(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3PromptAssistant",
            **schema_aliases("SA3PromptAssistant"),
            display_name="SA3 Prompt Assistant",
            category=CATEGORY,
            description="Turns a short idea into a full Stable Audio 3 prompt with the official tags, and suggests "
                        "a duration, as the official app's Prompt Assistant does (Qwen3.5-2B from models/LLM). "
                        "Connect prompt and duration to SA3 Text Encode.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="A short idea, e.g. 'rainy lo-fi beat' or 'door slam'. Empty: one of the "
                                        "pack's example prompts for the category, picked by the seed (no model "
                                        f"needed). At most {prompt_assistant.MAX_IDEA_CHARS:,} characters."),
                io.Combo.Input("category", options=list(prompt_assistant.CATEGORIES), default="auto",
                               tooltip="What to write: music (an instrumental track), instrument (one instrument "
                                       "or stem), sfx (sound effects, ambience), one-shot (a single hit or note). "
                                       "auto: the language model decides (or the idea's TrackType tag)."),
                io.Int.Input("seed", default=0, min=0, max=prompt_assistant.checks.MAX_SEED,
                             control_after_generate=True,
                             tooltip="Seed of the language model's sampling: the same seed and inputs give the "
                                     "same prompt."),
                io.Float.Input("max_duration", default=120.0, min=1.0, max=MAX_SECONDS, step=1.0,
                               tooltip="The longest duration to suggest, in seconds (small models: 120, medium: "
                                       "380.4). With a model connected, its own maximum applies when lower."),
                io.Combo.Input("language_model", options=language_model_choices(), default=OFFICIAL,
                               tooltip=f"A chat model folder in models/{FOLDER}/ (Hugging Face layout), or "
                                       f"{OFFICIAL!r} (fetched into models/{FOLDER}/{OFFICIAL}/ when download is "
                                       "on, about 4.2 GB)."),
                io.Boolean.Input("download", default=False,
                                 tooltip=f"Allow downloading {OFFICIAL} from huggingface.co/"
                                         f"{prompt_assistant.REPO_ID} when it is missing (HF_TOKEN is used if set)."),
                SA3Model.Input("model", optional=True,
                               tooltip="Optional: the SA3 model the prompt is for; the duration is capped to its "
                                       "maximum."),
            ],
            outputs=[
                io.String.Output("full_prompt", display_name="prompt",
                                 tooltip="The full prompt, with the category's tags in front, for SA3 Text Encode's "
                                         "prompt input."),
                io.Float.Output("duration", display_name="duration",
                                tooltip="The suggested length in seconds (from the prompt's 'Length: N seconds'), "
                                        "for SA3 Text Encode's duration input."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, language_model=None) -> bool | str:
        # one input only (nodes/_validate.py); the download switch is read in execute
        if language_model is None:
            return True
        return _check_language_model(language_model, download=True) or True

    @classmethod
    @checked(NODE, skip=("language_model",))
    def execute(cls, prompt, category, seed, max_duration, language_model, download, model=None) -> io.NodeOutput:
        prompt_assistant.check_idea(prompt, NODE)
        cap = _cap(max_duration, model)
        if not prompt.strip():
            result = prompt_assistant.example(category, seed, cap)
        else:
            patcher, language = _loaded(_resolve(language_model, download))
            result = comfy_models.run_offloaded(patcher, lambda: prompt_assistant.suggest(
                language, prompt, category, seed=seed, max_duration=cap,
                check_interrupt=comfy_models.check_interrupt))
        logger.info("Stable Audio 3 Prompt Assistant: %s, %g s, %d answer(s): %s", result.category, result.duration,
                    result.attempts, result.prompt)
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
        comfy_models.progress_text(node_id, f"{result.category}, {result.duration:g} s: {result.prompt}")
        return io.NodeOutput(result.prompt, result.duration)


def _cap(max_duration: float, model) -> float:
    """max_duration, lowered to the connected model's maximum."""
    if model is None:
        return float(max_duration)
    return min(float(max_duration), _require_model(model, NODE).config.max_duration)

