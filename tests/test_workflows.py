"""Lint of the shipped workflows: ``workflows/*.json`` (UI format) and
``workflows/api/*.json`` (API format) against the pack's node schemas (imported inside the
real ComfyUI of ``COMFYUI_PATH``; skipped without one) and the checked-in list of core nodes
(``tests/data/core_nodes.json``).

Every file parses; only known node types are used; every input has a value of the right type and
range (combo values valid, links type-compatible, the nodes' own ``validate_inputs`` pass); the UI
and API files of a pair describe the same graph. The conversion itself is tested on small graphs.
After changing a UI workflow, regenerate its API twin with ``python tools/check_workflows.py --write``.
"""

from __future__ import annotations

import copy
import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import check_workflows as cw

# the templates, in the order (and with the titles) ComfyUI's template browser shows
MODES = ["01 Text to audio", "02 Text to audio from core model files", "03 Text to audio with a negative prompt",
         "04 Batch of prompts and durations", "05 Audio to audio", "06 Inpaint one region", "07 Inpaint two regions",
         "08 Continue a clip", "09 LoRA stack", "10 Train a LoRA", "11 Base model with euler at 50 steps",
         "12 Prompt Assistant to text to audio"]
CORE_FILES = "02 Text to audio from core model files"  # SA3 Checkpoint Loader on core ComfyUI's single files
BASE = "11 Base model with euler at 50 steps"
ON_BASE_MODEL = {BASE, "10 Train a LoRA"}  # templates that load small-music-base
TAKES_AUDIO = {"05 Audio to audio", "06 Inpaint one region", "07 Inpaint two regions", "08 Continue a clip"}


@pytest.fixture(scope="module")
def pack_nodes():
    try:
        return cw.load_pack_nodes()
    except cw.NoComfyUI as e:
        pytest.skip(f"workflow lint needs the pack's schemas: {e}")


@pytest.fixture(scope="module")
def schemas(pack_nodes):
    return cw.local_schemas(pack_nodes)


def ui(name: str) -> dict:
    return cw.read_json(cw.WORKFLOWS / f"{name}.json")


def api(name: str) -> dict:
    return cw.read_json(cw.API_DIR / f"{name}.json")


def nodes_of(workflow: dict, kind: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == kind]


def widgets(workflow: dict, schemas: dict, kind: str) -> dict:
    """Widget name -> value of the (first) node of this type in a UI workflow."""
    node = nodes_of(workflow, kind)[0]
    return {name: value for name, value in zip(cw.widget_layout(schemas[kind]), node["widgets_values"], strict=False)
            if name not in (cw.CONTROL, cw.EXTRA)}


# --- the shipped files ------------------------------------------------------------------------


def test_template_names_are_numbered_titles():
    """ComfyUI shows a pack template's file name as its title: a number that sorts them, then words."""
    assert sorted(MODES) == MODES
    for number, name in enumerate(MODES, start=1):
        assert name.startswith(f"{number:02d} ") and name[3].isupper() and "_" not in name


def test_every_mode_has_a_ui_and_an_api_workflow():
    assert cw.workflow_names() == sorted(MODES)
    assert sorted(p.stem for p in cw.API_DIR.glob("*.json")) == sorted(MODES)


@pytest.mark.parametrize("name", MODES)
def test_files_parse_as_their_format(name):
    data = ui(name)
    assert data["version"] == cw.UI_VERSION and isinstance(data["nodes"], list) and isinstance(data["links"], list)
    prompt = api(name)
    assert prompt and all(isinstance(n, dict) and "class_type" in n and "inputs" in n for n in prompt.values())


@pytest.mark.parametrize("name", MODES)
def test_only_known_node_types(name, schemas):
    known = set(schemas) | cw.FRONTEND_ONLY
    assert {n["type"] for n in ui(name)["nodes"]} <= known
    assert {n["class_type"] for n in api(name).values()} <= set(schemas)


@pytest.mark.parametrize("name", MODES)
def test_ui_workflow_matches_the_schemas(name, schemas):
    data = ui(name)
    assert cw.validate_ui(data, schemas) + cw.validate_ui_outputs(data) == []


@pytest.mark.parametrize("name", MODES)
def test_api_workflow_values_are_valid(name, schemas, pack_nodes):
    assert cw.validate_api(api(name), schemas, pack_nodes) == []


@pytest.mark.parametrize("name", MODES)
def test_ui_and_api_describe_the_same_graph(name, schemas):
    assert cw.ui_to_api(ui(name), schemas) == api(name), "run: python tools/check_workflows.py --write"


def test_check_all_reports_no_problem(schemas, pack_nodes):
    report = cw.check_all(schemas, pack_nodes)
    assert report and all(problems == [] for problems in report.values()), report


# --- what each workflow is for ----------------------------------------------------------------


@pytest.mark.parametrize("name", [m for m in MODES if m != CORE_FILES])
def test_defaults_point_at_the_official_model(name, schemas):
    loader = widgets(ui(name), schemas, "SA3ModelLoader")
    assert loader["model_name"] == ("small-music-base" if name in ON_BASE_MODEL else "small-music")
    assert loader["download"] is True  # a new user's first run fetches the model


def test_core_files_template_names_cores_files(schemas):
    loader = widgets(ui(CORE_FILES), schemas, "SA3CheckpointLoader")
    assert loader["ckpt_name"] == "stable_audio_3_small_music.safetensors"
    assert loader["text_encoder_name"] == "t5gemma_b_b_ul2.safetensors"
    assert loader["variant"] == "auto"


@pytest.mark.parametrize("name", MODES)
def test_audio_goes_in_and_out_through_core_nodes(name, schemas):
    data = ui(name)
    outs = nodes_of(data, "SaveAudio") + nodes_of(data, "PreviewAudio")
    assert len(outs) == 1
    takes_audio = name in TAKES_AUDIO
    assert len(nodes_of(data, "LoadAudio")) == (1 if takes_audio else 0)
    assert nodes_of(data, "Note"), "a short note on the canvas explains what to change"
    if "SA3Spectrogram" in schemas:
        assert len(nodes_of(data, "SA3Spectrogram")) == 1 and len(nodes_of(data, "PreviewImage")) == 1


@pytest.mark.parametrize("name", MODES)
def test_one_duration_per_workflow(name, schemas):
    """The durations are set on SA3 Text Encode only: no (deprecated) SA3 Empty Latent, and the
    sampler sizes the latent from the conditioning."""
    data, prompt = ui(name), api(name)
    assert not nodes_of(data, "SA3EmptyLatent")
    with_duration = [n for n in prompt.values() if {"duration", "durations"} & set(n["inputs"])]
    assert [n["class_type"] for n in with_duration] == ["SA3TextEncode"]
    assert all("latent" not in n["inputs"] for n in prompt.values() if n["class_type"] != "SA3Decode")


def test_mode_specific_settings(schemas):
    negative = "03 Text to audio with a negative prompt"
    neg = widgets(ui(negative), schemas, "SA3Sampler")
    assert neg["cfg"] > 1 and widgets(ui(negative), schemas, "SA3TextEncode")["negative_prompt"]
    assert "negative" in api("03 Text to audio with a negative prompt")["4"]["inputs"]

    text = widgets(ui("04 Batch of prompts and durations"), schemas, "SA3TextEncode")
    lines = [line for line in text["prompt"].splitlines() if line.strip()]
    assert text["one_prompt_per_line"] and text["batch_size"] == 1 and len(lines) == len(text["durations"].split(","))

    assert widgets(ui("05 Audio to audio"), schemas, "SA3Sampler")["init_noise_level"] < 1
    assert "init_audio" in api("05 Audio to audio")["4"]["inputs"]  # encoded by the sampler, as generate() does

    one = widgets(ui("06 Inpaint one region"), schemas, "SA3InpaintMask")
    two = widgets(ui("07 Inpaint two regions"), schemas, "SA3InpaintMask")
    cont = widgets(ui("08 Continue a clip"), schemas, "SA3InpaintMask")
    assert one["mode"] == two["mode"] == "regions" and cont["mode"] == "continuation"
    assert len(one["regions"].split(",")) == 1 and len(two["regions"].split(",")) == 2
    for name in ("06 Inpaint one region", "07 Inpaint two regions", "08 Continue a clip"):
        inputs = api(name)["4"]["inputs"]
        assert "inpaint_mask" in inputs and "inpaint_audio" in inputs

    loras = nodes_of(ui("09 LoRA stack"), "SA3LoraLoader")
    assert len(loras) == 2
    first, second = sorted(loras, key=lambda n: n["id"])
    assert api("09 LoRA stack")[str(second["id"])]["inputs"]["model"] == [str(first["id"]), 0]
    layout = cw.widget_layout(schemas["SA3LoraLoader"])
    strengths = [dict(zip(layout, n["widgets_values"], strict=False)) for n in (first, second)]
    assert any(s["strength_dit"] != s["strength_conditioner"] for s in strengths)  # per-target strengths

    base = widgets(ui(BASE), schemas, "SA3Sampler")
    assert (base["sampler"], base["steps"], base["cfg"]) == ("euler", 50, 7.0)


def test_prompt_assistant_feeds_text_encode(schemas):
    """The assistant's prompt and duration outputs are linked into SA3 Text Encode's widgets (the
    frontend turns a widget into a socket when a link is dropped on it); the loader's model caps it."""
    name = "12 Prompt Assistant to text to audio"
    prompt = api(name)
    (assistant_id,) = [k for k, n in prompt.items() if n["class_type"] == "SA3PromptAssistant"]
    (text,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "SA3TextEncode"]
    assert text["prompt"] == [assistant_id, 0] and text["duration"] == [assistant_id, 1]
    assistant = prompt[assistant_id]["inputs"]
    assert assistant["model"] == text["model"]
    assert (assistant["language_model"], assistant["download"], assistant["category"]) == ("Qwen3.5-2B", True, "auto")
    assert assistant["prompt"].strip()


def test_seed_keeps_its_frontend_control_value(schemas):
    node = nodes_of(ui("01 Text to audio"), "SA3Sampler")[0]
    layout = cw.widget_layout(schemas["SA3Sampler"])
    assert layout[:2] == ["seed", cw.CONTROL]
    assert node["widgets_values"][1] in cw.CONTROL_VALUES
    assert "control_after_generate" not in json.dumps(api("01 Text to audio"))


def test_a_seed_without_control_gets_no_control_slot(schemas):
    """The frontend reads ``control_after_generate ?? name is seed``: SA3 Train LoRA's seed says
    False, so no control widget follows it (nor SA3 Decode's decoder_seed, which is not named seed)."""
    assert cw.widget_layout(schemas["SA3TrainLoRA"])[8:10] == ["seed", "include"]
    assert cw.CONTROL not in cw.widget_layout(schemas["SA3Decode"])
    assert cw.has_control_widget("INT", "noise_seed", {})  # the legacy name rule when the schema says nothing
    assert not cw.has_control_widget("INT", "seed", {"control_after_generate": False})
    assert not cw.has_control_widget("FLOAT", "seed", {})


def test_a_control_value_the_schema_does_not_create_is_caught(schemas):
    """The training template once carried a "fixed" after SA3 Train LoRA's seed: in the browser
    every later widget took its neighbour's value (include "fixed", base_precision 0, ...)."""
    data = copy.deepcopy(ui("10 Train a LoRA"))
    trainer = nodes_of(data, "SA3TrainLoRA")[0]
    trainer["widgets_values"].insert(9, "fixed")
    problems = cw.validate_ui(data, schemas)
    layout = cw.widget_layout(schemas["SA3TrainLoRA"])
    assert problems == [f"node {trainer['id']} (SA3TrainLoRA): {len(layout) + 1} widgets_values, expected "
                        f"{len(layout)} for {layout}"]
    assert not cw.same_prompt(cw.ui_to_api(data, schemas), api("10 Train a LoRA"))


# --- the checker catches what it should ---------------------------------------------------------


def test_widget_layout_follows_input_order_and_frontend_extras(schemas):
    assert cw.widget_layout(schemas["SaveAudio"]) == ["filename_prefix", cw.EXTRA]
    assert cw.widget_layout(schemas["LoadAudio"]) == ["audio", cw.EXTRA, cw.EXTRA]
    assert cw.widget_layout(schemas["PreviewImage"]) == []
    layout = cw.widget_layout(schemas["SA3TextEncode"])
    assert layout == ["prompt", "negative_prompt", "duration", "one_prompt_per_line", "durations", "batch_size"]
    assert "model" not in layout  # sockets take no slot


def test_ui_to_api_drops_notes_and_frontend_values(schemas):
    prompt = cw.ui_to_api(ui("01 Text to audio"), schemas)
    assert not any(n["class_type"] in cw.FRONTEND_ONLY for n in prompt.values())
    save = next(n for n in prompt.values() if n["class_type"] == "SaveAudio")
    assert set(save["inputs"]) == {"audio", "filename_prefix"}


def test_ui_to_api_takes_a_widget_turned_into_a_linked_input(schemas):
    data = copy.deepcopy(ui("01 Text to audio"))
    sampler = nodes_of(data, "SA3Sampler")[0]
    data["last_link_id"] += 1
    link_id = data["last_link_id"]
    sampler["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": link_id})
    data["links"].append([link_id, 2, 0, sampler["id"], len(sampler["inputs"]) - 1, "INT"])
    prompt = cw.ui_to_api(data, schemas)
    assert prompt[str(sampler["id"])]["inputs"]["steps"] == ["2", 0]


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["4"]["inputs"].update(steps=0), "smaller than the minimum"),
    (lambda p: p["4"]["inputs"].update(steps=8.5), "is not an INT"),
    (lambda p: p["4"]["inputs"].update(cfg=True), "is not a FLOAT"),
    (lambda p: p["4"]["inputs"].update(sampler="ddim"), "not in"),
    (lambda p: p["2"]["inputs"].update(duration=1000.0), "bigger than the maximum"),
    (lambda p: p["4"]["inputs"].update(latent=["2", 0]), "is linked to a SA3_CONDITIONING output"),
    (lambda p: p["4"]["inputs"].update(latent=["99", 0]), "links to missing node"),
    (lambda p: p["4"]["inputs"].update(latent=["4", 5]), "which has 1"),
    (lambda p: p["4"]["inputs"].pop("steps"), "required input 'steps' is missing"),
    (lambda p: p["4"]["inputs"].update(stepz=8), "unknown input 'stepz'"),
    (lambda p: p["2"]["inputs"].update(prompt="  "), "validate_inputs says"),
    (lambda p: p["4"].update(class_type="SA3Nope"), "unknown node type"),
    (lambda p: [p.pop(k) for k in ("6", "8") if k in p], "no output node"),
])
def test_validate_api_reports_bad_values(schemas, pack_nodes, edit, expected):
    prompt = copy.deepcopy(api("01 Text to audio"))
    edit(prompt)
    problems = cw.validate_api(prompt, schemas, pack_nodes)
    assert any(expected in p for p in problems), problems


def test_validate_ui_reports_broken_structure(schemas):
    data = copy.deepcopy(ui("01 Text to audio"))
    sampler = nodes_of(data, "SA3Sampler")[0]
    sampler["widgets_values"] = sampler["widgets_values"][:-2]
    assert any("widgets_values" in p for p in cw.validate_ui(data, schemas))

    data = copy.deepcopy(ui("01 Text to audio"))
    data["links"][0][5] = "AUDIO"
    assert any("type" in p for p in cw.validate_ui(data, schemas))

    data = copy.deepcopy(ui("01 Text to audio"))
    nodes_of(data, "SA3Sampler")[0]["widgets_values"][1] = "sometimes"
    assert any("control_after_generate" in p for p in cw.validate_ui(data, schemas))

    data = copy.deepcopy(ui("01 Text to audio"))
    data["last_node_id"] = 1
    assert any("last_node_id" in p for p in cw.validate_ui(data, schemas))


def as_frontend_1_58_saves(data: dict, schemas: dict) -> dict:
    """A UI workflow the way comfyui-frontend-package 1.58.1 re-saves it (its LGraphNode.serialize /
    serialiseWidgetValues and workflowSchema.ts, read from the package's source maps): a top-level
    ``id`` and ``revision``, ``extra.frontendVersion``, ``widgets_values_named`` (widget name ->
    value, the seed's control widget included) beside ``widgets_values``, and neither on a node
    without widgets."""
    data = copy.deepcopy(data)
    data.update(id="6f1c1d1e-8a4b-4c55-9d0e-3b2a1f0e9c77", revision=0)
    data.setdefault("extra", {})["frontendVersion"] = "1.58.1"
    for node in data["nodes"]:
        if node["type"] in cw.FRONTEND_ONLY:
            continue
        layout = cw.widget_layout(schemas[node["type"]])
        if not layout:
            del node["widgets_values"]
        else:
            names = ["control_after_generate" if k == cw.CONTROL else f"frontend_widget_{n}" if k == cw.EXTRA else k
                     for n, k in enumerate(layout)]
            node["widgets_values_named"] = dict(zip(names, node["widgets_values"], strict=False))
    return data


def as_frontend_1_58_exports(prompt: dict) -> dict:
    """An API export of frontend 1.58.1: ``_meta`` also names the node's pack and version."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        pack = "comfy-core" if node["class_type"] in cw.core_schemas() else "comfyui-stable-audio-3"
        node["_meta"].update(cnr_id=pack, ver="0.3.64" if pack == "comfy-core" else "0.1.0")
    return prompt


@pytest.mark.parametrize("name", MODES)
def test_files_saved_by_frontend_1_58_pass(name, schemas, pack_nodes):
    saved = as_frontend_1_58_saves(ui(name), schemas)
    assert any("widgets_values" not in n for n in saved["nodes"])  # PreviewImage has no widget
    assert cw.validate_ui(saved, schemas) + cw.validate_ui_outputs(saved) == []
    assert cw.ui_to_api(saved, schemas) == api(name)
    exported = as_frontend_1_58_exports(api(name))
    assert cw.validate_api(exported, schemas, pack_nodes) == []
    assert cw.same_prompt(exported, cw.ui_to_api(saved, schemas))


def test_a_missing_widgets_values_is_still_caught_where_widgets_exist(schemas):
    data = as_frontend_1_58_saves(ui("01 Text to audio"), schemas)
    del nodes_of(data, "SA3Sampler")[0]["widgets_values"]
    assert any("SA3Sampler" in p and "widgets_values" in p for p in cw.validate_ui(data, schemas))


def test_named_widget_values_must_agree_with_the_positional_ones(schemas):
    data = as_frontend_1_58_saves(ui("01 Text to audio"), schemas)
    nodes_of(data, "SA3Sampler")[0]["widgets_values_named"]["steps"] = 99
    assert any("widgets_values_named['steps'] is 99" in p for p in cw.validate_ui(data, schemas))


def test_same_prompt_sees_a_changed_input_or_title():
    prompt = api("01 Text to audio")
    changed = copy.deepcopy(prompt)
    changed["4"]["inputs"]["steps"] += 1
    assert not cw.same_prompt(prompt, changed)
    retitled = copy.deepcopy(prompt)
    retitled["4"]["_meta"]["title"] = "another title"
    assert not cw.same_prompt(prompt, retitled)


def test_ui_to_api_refuses_unknown_nodes(schemas):
    data = copy.deepcopy(ui("01 Text to audio"))
    nodes_of(data, "SA3Decode")[0]["type"] = "SA3Nope"
    with pytest.raises(cw.WorkflowError, match="unknown node type"):
        cw.ui_to_api(data, schemas)


def test_core_node_list_is_what_the_workflows_use(schemas):
    used = {n["type"] for name in MODES for n in ui(name)["nodes"]}
    core = set(cw.core_schemas())
    assert used - set(cw.load_pack_nodes()) - cw.FRONTEND_ONLY <= core
    listed = json.loads(cw.CORE_NODES.read_text())
    assert set(listed["frontend_only"]) == cw.FRONTEND_ONLY
