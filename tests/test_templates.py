"""The template browser's view of the pack (nodes/templates.py): the names in numeric order, a
description per template that says more than its title, and the thumbnails answered by the pack
itself, also where the core handler serves only ``.json`` files (as a newer core does).

nodes/templates.py imports nothing of ComfyUI at the top, so it is loaded by its file path here;
its middleware runs on a plain aiohttp server whose catch-all handler stands in for that newer
core. The same, inside the real ComfyUI 0.3.64: tests/test_workflows_e2e.py and
tests/nodes/test_frontend_e2e.py (the browser's cards).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import urllib.parse

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import check_workflows as cw
import file_module

templates = file_module.load("nodes/templates.py")
PACK = templates.PACK_DIR.name
NAMES = cw.workflow_names()


def test_names_are_the_ui_workflows_in_numeric_order():
    assert templates.template_names() == NAMES
    assert [int(name[:2]) for name in NAMES] == list(range(1, len(NAMES) + 1))


def test_every_template_has_its_own_description():
    assert sorted(templates.DESCRIPTIONS) == NAMES
    listing = templates.listing()
    assert [entry["name"] for entry in listing] == NAMES
    descriptions = [entry["description"] for entry in listing]
    assert len(set(descriptions)) == len(NAMES)
    for name, text in zip(NAMES, descriptions, strict=True):
        title = name[3:].lower()
        assert text.endswith(".") and len(text) >= 40, (name, text)
        assert title not in text.lower(), f"the description of {name!r} repeats its title: {text!r}"


def test_a_workflow_added_by_hand_is_listed_under_its_name(tmp_path, monkeypatch):
    """A user's own file in the pack's workflows/ folder: listed in order, its name as its
    description (as core shows it), never a server error."""
    for name in (NAMES[0], "00 My own take"):
        (tmp_path / f"{name}.json").write_text("{}")
    monkeypatch.setattr(templates, "TEMPLATE_DIR", tmp_path)
    assert templates.listing() == [{"name": "00 My own take", "description": "00 My own take"},
                                   {"name": NAMES[0], "description": templates.DESCRIPTIONS[NAMES[0]]}]


def test_in_order_sorts_only_this_pack():
    shuffled = random.Random(0).sample(NAMES, len(NAMES))
    other = ["b", "a"]
    answer = templates.in_order({PACK: shuffled, "other_pack": other})
    assert answer == {PACK: NAMES, "other_pack": ["b", "a"]}
    assert templates.in_order({"other_pack": other}) == {"other_pack": other}


@pytest.mark.parametrize("path", [
    f"/workflow_templates/{PACK}/../pyproject.jpg",  # only the templates' own pictures
    f"/workflow_templates/{PACK}/01 Text to audio.json",
    f"/workflow_templates/{PACK}/api/01 Text to audio.jpg",
    "/workflow_templates/other_pack/01 Text to audio.jpg",
])
def test_thumbnail_answers_only_the_packs_pictures(path):
    assert templates.thumbnail(path) is None


async def _newer_core(request):
    """A core that serves only .json from template folders and lists them in directory order."""
    if request.path.removeprefix("/api") == "/workflow_templates":
        return web.json_response({PACK: random.Random(1).sample(NAMES, len(NAMES)), "other_pack": ["z", "y"]})
    if request.path.endswith(".json"):
        return web.FileResponse(REPO / "workflows" / request.path.rsplit("/", 1)[1])
    raise web.HTTPNotFound()


async def _fetch_all():
    app = web.Application(middlewares=[templates.middleware()])
    app.router.add_route("GET", "/{tail:.*}", _newer_core)
    async with TestClient(TestServer(app)) as client:
        listing = await (await client.get("/api/workflow_templates")).json()
        pictures = {}
        for name in NAMES:
            response = await client.get(f"/api/workflow_templates/{PACK}/{urllib.parse.quote(name)}.jpg")
            pictures[name] = (response.status, response.content_type, await response.read())
        workflow = await client.get(f"/api/workflow_templates/{PACK}/{urllib.parse.quote(NAMES[0])}.json")
        other = await client.get("/api/workflow_templates/other_pack/x.jpg")
        return listing, pictures, (workflow.status, json.loads(await workflow.read())), other.status


def test_middleware_on_a_core_that_serves_only_json():
    listing, pictures, (status, workflow), other = asyncio.run(_fetch_all())
    assert listing == {PACK: NAMES, "other_pack": ["z", "y"]}
    for name, (code, kind, body) in pictures.items():
        assert (code, kind) == (200, "image/jpeg"), name
        assert body == (REPO / "workflows" / f"{name}.jpg").read_bytes()
    assert status == 200 and "nodes" in workflow
    assert other == 404  # other packs' requests reach core unchanged
