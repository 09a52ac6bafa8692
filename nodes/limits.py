"""Each model choice's longest duration (SA3 Model Loader's folders and official names, SA3
Checkpoint Loader's files), served to the web extension
(``web/js/duration_limits.js``), which sets the maximum of the duration widgets of the nodes
connected to a model loader to the maximum of the model selected there.

ComfyUI checks a number widget against one static ``max`` from the schema (the longest official
model's, 380.4 s) and gives ``validate_inputs`` only the node's own values, never the model
chosen on another node; the browser sees the whole graph, so the per-model maximum is shown and
enforced there. The model's own limit is checked again when SA3 Text Encode runs, before it
encodes anything.
"""

from __future__ import annotations

import logging

import folder_paths

from ._sa3 import CONFIG_FILE, MODEL_SAMPLE_SIZES, SAMPLE_RATE, ModelConfig, single_file
from .loaders import _model_folders, model_choices

logger = logging.getLogger(__name__)

ROUTE = "/sa3/max_durations"
_registered = False


def max_durations() -> dict[str, float]:
    """Model choice -> longest duration in seconds: from the folder's own config, or the official
    config's for a model not downloaded yet. Unreadable folders are left out (the loader reports
    them)."""
    folders = _model_folders()
    out = {}
    for name in model_choices():
        folder = folders.get(name)
        if folder is None:
            if name in MODEL_SAMPLE_SIZES:
                out[name] = MODEL_SAMPLE_SIZES[name] / SAMPLE_RATE
            continue
        try:
            out[name] = ModelConfig.from_file(folder / CONFIG_FILE).max_duration
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            continue
    for name in folder_paths.get_filename_list("checkpoints"):  # header reads only; other models are skipped
        if not name.endswith(".safetensors"):
            continue
        try:
            config, _ = single_file.checkpoint_config(folder_paths.get_full_path("checkpoints", name))
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            continue
        out[name] = config.max_duration
    return out


def register_route() -> None:
    """Add ``GET /sa3/max_durations`` (and ``/api/...``) to ComfyUI's server, once; nothing when
    no server runs (the pack imported by tests or scripts)."""
    global _registered
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if _registered or instance is None:
        return

    @instance.routes.get(ROUTE)
    async def _max_durations(request):
        return web.json_response(max_durations())

    _registered = True
