"""The pack's templates in ComfyUI's template browser: listed in their numeric order, each card
with a description of what the template does, each thumbnail reachable on any ComfyUI.

What the frontend reads for a custom node pack's templates (comfyui-frontend-package 1.27.10 and
the current Comfy-Org/ComfyUI_frontend alike): ``GET /workflow_templates`` answers
``{pack folder: [file names]}`` and the browser shows that list in the order it comes; each
card's title is the file name and its description is the file name again; its picture is
``/api/workflow_templates/<pack folder>/<name>.jpg``. Core fills the list with ``glob`` (directory
order, so 02, 05, 06, 01, ...), and a newer core serves only ``.json`` files from template folders.

So the pack adds, inside ComfyUI's server:
- a middleware that puts this pack's names of ``GET /workflow_templates`` in numeric order
  (other packs' entries untouched) and answers this pack's ``<name>.jpg`` thumbnail requests
  from ``workflows/`` itself, whatever core serves there;
- ``GET /sa3/templates``: the names in order with their descriptions, which
  ``web/js/template_descriptions.js`` writes into the pack's cards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# the folder as ComfyUI sees it (not resolved: a symlinked pack is listed under the link's name)
PACK_DIR = Path(os.path.abspath(__file__)).parents[1]
TEMPLATE_DIR = PACK_DIR / "workflows"
LISTING = "/workflow_templates"  # core's route (also under /api)
ROUTE = "/sa3/templates"
THUMBNAIL_SUFFIX = ".jpg"  # the frontend asks for <name>.jpg (mediaSubtype "jpg", fixed for custom nodes)

DESCRIPTIONS = {
    "01 Text to audio": "30 s of music from a text prompt with small-music (8 steps, cfg 1), saved as FLAC, "
                        "with its spectrogram.",
    "02 Text to audio from core model files": "Text to audio from ComfyUI's single-file models "
                                              "(stable_audio_3_small_music + t5gemma_b_b_ul2) through "
                                              "SA3 Checkpoint Loader.",
    "03 Text to audio with a negative prompt": "A negative prompt steers away from muffled, noisy sound; cfg 3 "
                                               "makes the distilled model listen to it. Previews, does not save.",
    "04 Batch of prompts and durations": "Three prompts, one per line, generated as one batch, each with its own "
                                         "duration (10, 20 and 15 s).",
    "05 Audio to audio": "Re-styles an input clip from a prompt; init noise level 0.7 keeps its structure.",
    "06 Inpaint one region": "Regenerates 10-15 s of an input clip from the prompt and keeps the rest as it was.",
    "07 Inpaint two regions": "Regenerates two spans of an input clip (4-8 s and 18-24 s) in one pass.",
    "08 Continue a clip": "Keeps the first 10 s of an input clip and lets the model continue it to 30 s.",
    "09 LoRA stack": "Two LoRAs on one model, each with its own strength on the DiT and on the text conditioner.",
    "10 Train a LoRA": "Trains a DoRA on small-music-base from a folder of captioned clips, shows the loss "
                       "curve, then generates with the new LoRA.",
    "11 Base model with euler at 50 steps": "The undistilled small-music-base: euler, 50 steps, cfg 7 and a "
                                            "negative prompt.",
    "12 Prompt Assistant to text to audio": "A local language model (Qwen3.5-2B) turns a short idea into a full "
                                            "prompt and a duration, then generates it.",
}


def template_names() -> list[str]:
    """The UI workflows ComfyUI offers as templates (top-level ``*.json``), in their numeric order:
    every name starts with its two-digit number, so sorting the names sorts the numbers."""
    return sorted(path.stem for path in TEMPLATE_DIR.glob("*.json"))


def listing() -> list[dict[str, str]]:
    """``GET /sa3/templates``: each template's name and description, in order."""
    return [{"name": name, "description": DESCRIPTIONS.get(name, name)}  # a file added by hand: its name, as core
            for name in template_names()]


def in_order(templates: dict, pack: str = PACK_DIR.name) -> dict:
    """Core's ``GET /workflow_templates`` answer with ``pack``'s names sorted; the rest as it was."""
    if not isinstance(templates.get(pack), list):
        return templates
    return {**templates, pack: sorted(templates[pack])}


def thumbnail(path: str, pack: str = PACK_DIR.name) -> Path | None:
    """The thumbnail file a request path (without ``/api``) asks for, if it is one of this pack's."""
    prefix = f"{LISTING}/{pack}/"
    if not path.startswith(prefix) or not path.endswith(THUMBNAIL_SUFFIX):
        return None
    name = path[len(prefix):-len(THUMBNAIL_SUFFIX)]
    return TEMPLATE_DIR / f"{name}{THUMBNAIL_SUFFIX}" if name in template_names() else None


def middleware():
    """The aiohttp middleware: this pack's thumbnails answered from ``workflows/`` (before core's
    handler, which may serve only ``.json``), and its names of the template list put in order."""
    from aiohttp import web

    @web.middleware
    async def sa3_templates(request, handler):
        path = request.path.removeprefix("/api")
        if request.method in ("GET", "HEAD"):
            file = thumbnail(path)
            if file is not None and file.is_file():
                return web.FileResponse(file)
        response = await handler(request)
        if path == LISTING and response.status == 200 and getattr(response, "text", None) is not None:
            return web.json_response(in_order(json.loads(response.text)))
        return response

    return sa3_templates


def register_routes() -> None:
    """Add the middleware and ``GET /sa3/templates`` (and ``/api/...``) to ComfyUI's server, once;
    nothing when no server runs (the pack imported by tests or scripts)."""
    from ._server import install_once  # (here: the module is also loaded by file path, outside the package)

    install_once(ROUTE, _install)


def _install(server) -> None:
    from aiohttp import web  # ComfyUI's server library

    @server.routes.get(ROUTE)
    async def _templates(request):
        return web.json_response({"pack": PACK_DIR.name, "templates": listing()})

    server.app.middlewares.append(middleware())
