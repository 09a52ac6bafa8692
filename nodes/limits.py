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

import asyncio
import logging
import os
from pathlib import Path

import folder_paths

from ._sa3 import CONFIG_FILE, MODEL_SAMPLE_SIZES, SAMPLE_RATE, ModelConfig, single_file
from ._server import install_once
from .loaders import _model_folders, model_choices

logger = logging.getLogger(__name__)

ROUTE = "/sa3/max_durations"


# (path, size, mtime) -> the file's longest duration, or None for a file that is no SA3 model: each
# config or checkpoint header is read once, and again only when the file changes
_known: dict[tuple[str, int, int], float | None] = {}
_computing = asyncio.Lock()  # one computation at a time, however many requests arrive


def _cached(path: Path, read) -> float | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _known:
        try:
            _known[key] = read(path)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            _known[key] = None
    return _known[key]


def _config_duration(path: Path) -> float:
    return ModelConfig.from_file(path).max_duration


def _checkpoint_duration(path: Path) -> float:
    return single_file.checkpoint_config(path)[0].max_duration


def max_durations() -> dict[str, float]:
    """Model choice -> longest duration in seconds: from the folder's own config, or the official
    config's for a model not downloaded yet. Unreadable folders and files that are no SA3 model are
    left out (the loaders report them). Only files in the folders ComfyUI lists are read, each once
    until it changes."""
    folders = _model_folders()
    out = {}
    for name in model_choices():
        folder = folders.get(name)
        if folder is None:
            if name in MODEL_SAMPLE_SIZES:
                out[name] = MODEL_SAMPLE_SIZES[name] / SAMPLE_RATE
            continue
        seconds = _cached(folder / CONFIG_FILE, _config_duration)
        if seconds is not None:
            out[name] = seconds
    for name in folder_paths.get_filename_list("checkpoints"):  # header reads only; other models are skipped
        if name.endswith(".safetensors"):
            seconds = _cached(Path(folder_paths.get_full_path("checkpoints", name)), _checkpoint_duration)
            if seconds is not None:
                out[name] = seconds
    return out


def register_route() -> None:
    """Add ``GET /sa3/max_durations`` (and ``/api/...``) to ComfyUI's server, once; nothing when
    no server runs (the pack imported by tests or scripts)."""
    install_once(ROUTE, _install)


def _install(server) -> None:
    from aiohttp import web  # ComfyUI's server library

    @server.routes.get(ROUTE)
    async def _max_durations(request):
        # the file reads run off ComfyUI's event loop, one computation at a time (the query is ignored)
        async with _computing:
            durations = await asyncio.get_running_loop().run_in_executor(None, max_durations)
        return web.json_response(durations)
