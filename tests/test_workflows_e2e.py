"""End to end: every API workflow of ``workflows/api`` on a real ComfyUI, on the tiny fixture models.

Needs a ComfyUI checkout (0.3.64 or newer) and an interpreter with its requirements:

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/comfy-venv/bin/python \\
        python -m pytest tests/test_workflows_e2e.py -v -rs

Skipped (with the reason) when COMFYUI_PATH is not set. The test starts its own server with
``--cpu`` on a free local port (``COMFYUI_E2E_PORT`` to choose one), loading only this checkout
as a custom node pack, with a temporary models folder where ``stable_audio_3/small-music`` and
``stable_audio_3/small-music-base`` are the tiny-small fixture, ``checkpoints/`` and ``text_encoders/``
hold its single-file twins under core's file names, the workflows' LoRA names are
fixture LoRAs and ``LLM/Qwen3.5-2B`` is a tiny random Qwen3.5 built in code, so the workflows
run unchanged (only durations are shortened, through the same ``--set`` overrides
``python workflows/run.py`` offers; ``SA3_E2E_FULL=1`` runs them exactly as
shipped). Each run must write audio of the planned
length (read from the FLAC header); bad graphs must come back as ComfyUI validation errors
(HTTP 400 with node_errors), not as tracebacks.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import stat
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
import wave
from pathlib import Path

import pytest
import websocket
from safetensors import safe_open

from tests.comfy_server import PACK_NAME, ComfyServer
from tests.conftest import REPO, fixture_root, load_model, requires_comfyui
from tests.prompt_model import copy_to
from tests.single_file_twins import make_twins

sys.path.insert(0, str(REPO / "tools"))
import check_workflows as cw
import file_module

from sa3 import prompt_assistant

client = file_module.load("workflows/run.py")
DESCRIPTIONS = file_module.load("nodes/templates.py").DESCRIPTIONS

SAMPLE_RATE = 44100
SOURCE_SECONDS = 12.0  # length of the generated LoadAudio input
E2E_SECONDS = "6"  # the durations the runs use (the workflows' own 10-30 s work too, only slower)
FULL = os.environ.get("SA3_E2E_FULL") == "1"  # run the workflows exactly as shipped (their own durations)
LORA_FILES = {"sa3-style-lora.safetensors": "lora.safetensors", "sa3-detail-lora.safetensors": "dora-cols.safetensors"}
MODEL_NAMES = ("small-music", "small-music-base")
RUN_TIMEOUT = 900

pytestmark = requires_comfyui


# --- helpers ----------------------------------------------------------------------------------


def flac_info(data: bytes) -> tuple[int, int, int]:
    """(sample_rate, channels, total samples per channel) from a FLAC file's STREAMINFO block."""
    if data[:4] != b"fLaC":
        raise ValueError(f"not a FLAC file (starts with {data[:4]!r})")
    header = data[4:8]
    if header[0] & 0x7F != 0:
        raise ValueError("the first FLAC metadata block is not STREAMINFO")
    info = data[8:8 + 34]
    # bytes 10..17: 20 bits sample rate, 3 bits channels - 1, 5 bits bits-per-sample - 1, 36 bits total samples
    packed = int.from_bytes(info[10:18], "big")
    sample_rate = packed >> 44
    channels = ((packed >> 41) & 0x7) + 1
    total = packed & ((1 << 36) - 1)
    return sample_rate, channels, total


def write_wav(path: Path, seconds: float, sample_rate: int = SAMPLE_RATE) -> None:
    """A stereo 16-bit test tone (two sines) for LoadAudio."""
    n = int(seconds * sample_rate)
    frames = bytearray()
    for i in range(n):
        t = i / sample_rate
        left = 0.3 * math.sin(2 * math.pi * 220.0 * t)
        right = 0.3 * math.sin(2 * math.pi * 330.0 * t)
        frames += struct.pack("<hh", int(left * 32767), int(right * 32767))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(bytes(frames))


def expected_samples(prompt: dict) -> list[int]:
    """Per output file, the length SA3 Decode gives: the duration when all items share it, else the
    padded plan length (``sa3.stages.plan_latents``)."""
    from sa3.config import ModelConfig
    from sa3.stages import plan_latents

    text = next(n["inputs"] for n in prompt.values() if n["class_type"] == "SA3TextEncode")
    lines = [p for p in text["prompt"].splitlines() if p.strip()] if text["one_prompt_per_line"] else [text["prompt"]]
    batch = text["batch_size"] if text["batch_size"] > 1 else len(lines)  # as SA3 Text Encode counts items
    durations = [float(d) for d in text["durations"].replace(",", " ").split()] or [_duration(prompt, text)]
    if len(durations) == 1:
        durations = durations * batch
    if len(set(durations)) == 1:
        return [int(durations[0] * SAMPLE_RATE)] * len(durations)
    config = ModelConfig.from_file(fixture_root() / "tiny-small" / "model_config.json")
    return [plan_latents(config, durations).audio_samples] * len(durations)


def _duration(prompt: dict, text: dict) -> float:
    """SA3 Text Encode's duration; from SA3 Prompt Assistant, music's typical length capped to its
    max_duration (the runs ask for music, and the tiny language model's text salad never states a length)."""
    if not isinstance(text["duration"], list):
        return float(text["duration"])
    source = prompt[text["duration"][0]]
    assert source["class_type"] == "SA3PromptAssistant" and source["inputs"]["category"] == "music"
    return prompt_assistant.cap_duration(prompt_assistant.TYPICAL_SECONDS["music"], source["inputs"]["max_duration"])


# --- the server -------------------------------------------------------------------------------


def prepare_models(root: Path) -> dict[str, Path]:
    """Model folders where the workflows' names are the tiny fixtures; writes the LoadAudio input."""
    fixtures = fixture_root()
    if fixtures is None or not (fixtures / "tiny-small").is_dir():
        pytest.skip("tiny-small fixture not found (set SA3_FIXTURES)")
    models = root / "models" / "stable_audio_3"
    models.mkdir(parents=True)
    for name in MODEL_NAMES:
        (models / name).symlink_to(fixtures / "tiny-small", target_is_directory=True)
    loras = root / "models" / "loras"
    loras.mkdir(parents=True)
    for name, source in LORA_FILES.items():
        shutil.copyfile(fixtures / "loras" / "tiny-small" / source, loras / name)
    # core's single files under the names the core-files template uses (tiny-small, with sidecars)
    twins = make_twins(fixtures / "tiny-small", root / "single_files", name="stable_audio_3_small_music",
                       text_encoder_name="t5gemma_b_b_ul2")
    language_models = copy_to(root / "models" / "LLM" / "Qwen3.5-2B").parent  # the tiny Qwen3.5, built in code
    return {"stable_audio_3": models, "loras": loras, "checkpoints": twins.checkpoint.parent,
            "text_encoders": twins.text_encoder.parent, "LLM": language_models}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui-e2e")
    srv = ComfyServer(root, prepare_models(root))
    write_wav(srv.dirs["input"] / "sa3_input.wav", SOURCE_SECONDS)
    clips = srv.dirs["input"] / "sa3_training"  # the training template's dataset folder
    clips.mkdir()
    for i in range(2):
        write_wav(clips / f"clip{i}.wav", 2.0 + i)
        (clips / f"clip{i}.txt").write_text(f"two sine tones, take {i}")
    try:
        yield srv.start()
    finally:
        srv.stop()
        if os.environ.get("SA3_E2E_KEEP_LOG"):
            shutil.copyfile(srv.log_path, os.environ["SA3_E2E_KEEP_LOG"])


# --- tests ------------------------------------------------------------------------------------


def test_pack_loads_without_errors(server):
    log = server.log()
    assert "IMPORT FAILED" not in log, log[-4000:]
    info = server.get("/object_info")
    pack = cw.load_pack_nodes()
    missing = sorted(set(pack) - set(info))
    assert not missing, f"nodes missing from /object_info: {missing}\n{log[-4000:]}"


def test_schemas_match_the_local_view(server):
    """What the workflow lint reads from the pack's schemas in-process equals what the real server serves
    (input order, types, options and ranges; file-list combos excepted)."""
    real = cw.server_schemas(server.address)
    local = cw.local_schemas()
    for name in cw.load_pack_nodes():
        assert real[name]["input_order"] == local[name]["input_order"], name
        assert real[name]["output"] == local[name]["output"], name
        assert real[name]["output_name"] == local[name]["output_name"], name
        for section in ("required", "optional"):
            for inp, (kind, opts) in local[name]["input"].get(section, {}).items():
                real_kind, real_opts = real[name]["input"][section][inp]
                assert real_kind == kind, (name, inp)
                for key in ("default", "min", "max", "control_after_generate", "forceInput"):
                    assert real_opts.get(key) == opts.get(key), (name, inp, key)
                if inp not in local[name].get("file_list", []) and inp != "model_name":
                    assert real_opts.get("options") == opts.get("options"), (name, inp)
    for name, entry in cw.core_schemas().items():
        assert real[name]["input_order"].get("required") == entry["input_order"]["required"], name
        assert real[name]["output"] == entry["output"], name


def test_every_workflow_pair_checks_against_the_server(server):
    report = cw.check_all(cw.server_schemas(server.address), None)
    assert report and all(not problems for problems in report.values()), report


def test_templates_list_the_ui_workflows_only(server):
    """In numeric order (core lists them in directory order; the pack's middleware sorts them),
    each with its description (GET /sa3/templates, read by web/js/template_descriptions.js)."""
    templates = server.get("/workflow_templates")
    assert templates.get(PACK_NAME) == cw.workflow_names()
    assert server.get("/api/workflow_templates") == templates
    described = server.get("/sa3/templates")
    assert described["pack"] == PACK_NAME
    assert [(t["name"], t["description"]) for t in described["templates"]] == [
        (name, DESCRIPTIONS[name]) for name in cw.workflow_names()]
    first = urllib.parse.quote(cw.workflow_names()[0])  # names are titles with spaces, as the frontend asks for them
    with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK_NAME}/{first}.json") as resp:
        assert "nodes" in json.loads(resp.read())
    for name in cw.workflow_names():  # the thumbnail the template browser asks for: <name>.jpg beside it
        url = f"{server.url}/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.jpg"
        with urllib.request.urlopen(url) as resp:
            assert resp.headers["Content-Type"] == "image/jpeg" and resp.read(3) == b"\xff\xd8\xff"


@pytest.mark.parametrize("name", cw.workflow_names())
def test_workflow_runs_to_audio_of_the_planned_length(server, name, tmp_path):
    run_and_check(server, name, tmp_path)


def test_low_memory_loader_runs_inpainting(server, tmp_path):
    """The loader's low_memory option on a real server: encode, sample and decode each release
    the part they used, and the next run reads the weights back."""
    for run in range(2):
        run_and_check(server, "06 Inpaint one region", tmp_path / str(run), ["1.low_memory=true", f"4.seed={run + 5}"])


def test_identical_rerun_is_served_from_the_cache(server, tmp_path):
    """Queueing the same prompt again finishes at once (every output cached); the runner connects
    its websocket before queueing, so it still sees the end and fetches the files."""
    for run in range(2):
        run_and_check(server, "01 Text to audio", tmp_path / str(run), ["4.seed=11"], progress=run == 0)


def test_interrupt_while_training_keeps_what_was_trained(server):
    """POST /interrupt (what the browser's Cancel sends) while the training template trains: the
    steps done are saved as a LoRA the library loads, with the mode of ComfyUI's own outputs; the
    run ends as interrupted, before the sampler; and the server runs the next prompt."""
    prompt = client.apply_overrides(client.load_workflow(cw.API_DIR / "10 Train a LoRA.json"),
                                       ["3.steps=100000", "3.clip_seconds=2", '3.output_name="cancelled_lora"'])
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://{server.address}/ws?clientId={client_id}", timeout=RUN_TIMEOUT)
    try:
        prompt_id = server.queue(prompt, client_id)
        seen = wait_for_progress(ws, prompt_id, node="3", value=2)
        status, _ = server.post("/interrupt", {})
        assert status == 200
    finally:
        ws.close()
    entry = server.wait(prompt_id, timeout=RUN_TIMEOUT)
    messages = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in messages and "execution_success" not in messages, entry["status"]
    assert "6" not in entry["outputs"] and "8" not in entry["outputs"]  # sampler and SaveAudio never ran
    lora = server.root / "models" / "loras" / "cancelled_lora.safetensors"
    with safe_open(str(lora.with_suffix(".sa3state")), framework="pt") as f:
        assert seen <= json.loads(f.metadata()["sa3_training"])["step"] < 100000
    prepared = load_model("tiny-small").prepare_lora(lora)  # the library's LoRA loader reads it
    assert (prepared.file.adapter_type, prepared.file.rank) == ("dora-rows", 16) and prepared.layers

    after = server.run(client.apply_overrides(cw.read_json(cw.API_DIR / "01 Text to audio.json"),
                                                 ["duration=2", "steps=2"]), timeout=RUN_TIMEOUT)
    assert after["status"]["status_str"] == "success", after["status"]
    (saved,) = next(out["audio"] for out in after["outputs"].values() if "audio" in out)
    audio = server.dirs["output"] / saved["subfolder"] / saved["filename"]
    assert stat.S_IMODE(lora.stat().st_mode) == stat.S_IMODE(audio.stat().st_mode)


def wait_for_progress(ws, prompt_id: str, node: str, value: int) -> int:
    """Read ComfyUI's websocket until ``node`` of ``prompt_id`` reports progress ``value`` or more;
    the value reported."""
    while True:
        message = ws.recv()
        if isinstance(message, bytes):  # previews
            continue
        event = json.loads(message)
        data = event.get("data", {})
        if event["type"] == "execution_error" and data.get("prompt_id") == prompt_id:
            pytest.fail(f"the prompt failed: {data.get('exception_message')}")
        if event["type"] == "progress" and data.get("prompt_id") == prompt_id and data.get("node") == node \
                and data["value"] >= value:
            return data["value"]


def run_and_check(server, name: str, tmp_path: Path, extra: list[str] = (), progress: bool = True) -> None:
    """Run an API workflow (durations shortened unless SA3_E2E_FULL) and check every file's length
    and, unless everything was cached, the progress printed from the websocket."""
    path = cw.API_DIR / f"{name}.json"
    prompt = client.load_workflow(path)
    overrides = list(extra)
    for node_id, node in prompt.items():
        if node["class_type"] == "SA3PromptAssistant":  # a category, so that the duration is known (_duration)
            overrides.append(f"{node_id}.category=music")
    for node_id, node in ([] if FULL else prompt.items()):
        inputs = node["inputs"]
        if "duration" in inputs and not isinstance(inputs["duration"], list):
            overrides.append(f"{node_id}.duration={E2E_SECONDS}")
        if inputs.get("durations"):  # per-item lists: keep them mixed, but short
            overrides.append(f'{node_id}.durations="3, 6, 4.5"')
        if node["class_type"] == "SA3TrainLoRA":  # a few short steps prove the graph; cost is in README
            overrides += [f"{node_id}.steps=2", f"{node_id}.clip_seconds=2"]
        if node["class_type"] == "SA3PromptAssistant":
            overrides.append(f"{node_id}.max_duration={E2E_SECONDS}")
        if node["class_type"] == "SA3InpaintMask":
            regions = "1-2" if "," not in inputs["regions"] else "1-2, 3.5-5"
            overrides += [f'{node_id}.regions="{regions}"', f"{node_id}.keep_seconds=2"]
    prompt = client.apply_overrides(prompt, overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    edited = tmp_path / f"{name}.json"
    edited.write_text(json.dumps(prompt))
    log = io.StringIO()
    saved = client.run(edited, server.address, [], tmp_path / "out", timeout=RUN_TIMEOUT, out=log)
    expected = expected_samples(prompt)
    assert len(saved) == len(expected), f"{name}: {len(saved)} files for {len(expected)} items\n{log.getvalue()}"
    for file, samples in zip(sorted(saved), expected, strict=True):
        rate, channels, total = flac_info(file.read_bytes())
        assert (rate, channels, total) == (SAMPLE_RATE, 2, samples), f"{name}: {file.name}"
    assert ("node" in log.getvalue()) == progress  # progress came through the websocket


def _queue(server, prompt: dict) -> tuple[int, dict]:
    return server.post("/prompt", {"prompt": prompt})


@pytest.mark.parametrize("node_id, field, value, error_type", [
    ("4", "steps", 0, "value_smaller_than_min"),
    ("4", "steps", 5000, "value_bigger_than_max"),
    ("2", "duration", 1000.0, "value_bigger_than_max"),
    ("2", "prompt", "  ", "custom_validation_failed"),
    ("11", "regions", "8-4", "custom_validation_failed"),
])
def test_bad_graph_gets_a_validation_error(server, node_id, field, value, error_type):
    prompt = cw.read_json(cw.API_DIR / ("06 Inpaint one region.json" if node_id == "11" else "01 Text to audio.json"))
    prompt[node_id]["inputs"][field] = value
    status, body = _queue(server, prompt)
    assert status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"][node_id]["errors"]
    # once, against the input it is about (each validate_inputs of the pack takes one input)
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [(error_type, field)], errors
    assert "Traceback" not in json.dumps(body)
    message = client.format_rejection(body)
    assert f"node {node_id} (" in message


def test_bad_link_and_missing_input_are_rejected(server):
    prompt = cw.read_json(cw.API_DIR / "01 Text to audio.json")
    prompt["4"]["inputs"]["latent"] = ["2", 0]  # SA3_CONDITIONING into LATENT
    del prompt["4"]["inputs"]["steps"]
    status, body = _queue(server, prompt)
    assert status == 400, body
    types = {e["type"] for e in body["node_errors"]["4"]["errors"]}
    assert types == {"return_type_mismatch", "required_input_missing"}, body


def test_bad_combo_value_is_refused(server, tmp_path):
    """ComfyUI 0.3.64 checks combo values only for V1 list-typed inputs, not for V3 io.Combo: a
    wrong sampler name is refused at validation by newer ComfyUI, else by the node when it runs;
    either way the user gets a message naming the input, not a traceback."""
    prompt = cw.read_json(cw.API_DIR / "01 Text to audio.json")
    prompt["4"]["inputs"]["sampler"] = "ddim"
    status, body = _queue(server, prompt)
    if status == 400:
        assert {e["type"] for e in body["node_errors"]["4"]["errors"]} <= {"value_not_in_list",
                                                                         "custom_validation_failed"}, body
        return
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    with pytest.raises(client.ComfyError, match="ddim"):
        client.run(path, server.address, [], tmp_path / "out", timeout=RUN_TIMEOUT, out=io.StringIO())


def test_runtime_error_is_reported_not_raised(server, tmp_path):
    """A region past the audio passes validation (the duration is on another node) and fails in the
    sampler before it encodes or samples: the runner reports ComfyUI's execution error in one line."""
    prompt = cw.read_json(cw.API_DIR / "06 Inpaint one region.json")
    prompt = client.apply_overrides(prompt, ["duration=4", "11.regions=\"8-9\""])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    with pytest.raises(client.ComfyError, match=r"SA3Sampler.*inpaint_mask region 8-9 s must start before "
                                                   r"the 4 s duration"):
        client.run(path, server.address, [], tmp_path / "out", timeout=RUN_TIMEOUT, out=io.StringIO())
