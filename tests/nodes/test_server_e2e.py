"""The pack in a real ComfyUI server: loads without import errors, every node is in /object_info,
a text-to-audio graph queued with POST /prompt writes an audio file, a rerun reuses the loaded
model, a bad widget value is refused at validation, and POST /interrupt stops a long run and
leaves the server usable.

Needs a ComfyUI checkout: ``COMFYUI_PATH=/path/to/ComfyUI`` and, when ComfyUI lives in another
virtual environment, ``COMFYUI_PYTHON=/path/to/venv/bin/python``. Skipped otherwise. The server
runs on the CPU on a free loopback port with its own output folder; the pack is linked into a
temporary custom_nodes folder and the tiny fixture models are found through
``--extra-model-paths-config``.
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
import uuid
import wave

import pytest

from tests.comfy_server import PACK_NAME, ComfyServer
from tests.conftest import fixture_root, requires_comfyui

NODE_IDS = ["SA3ModelLoader", "SA3LoraLoader", "SA3LoraStrength", "SA3TextEncode", "SA3EmptyLatent",
            "SA3EncodeAudio", "SA3InpaintMask", "SA3Sampler", "SA3Decode", "SA3Spectrogram"]

pytestmark = requires_comfyui


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = fixture_root()
    if root is None or not (root / "tiny-small").is_dir():
        pytest.skip("tiny-small fixture model not found (set SA3_FIXTURES)")
    srv = ComfyServer(tmp_path_factory.mktemp("comfyui"), {"stable_audio_3": root, "loras": root / "loras"})
    try:
        yield srv.start()
    finally:
        srv.stop()


def t2a_graph(seed: int = 7, steps: int = 4, duration: float = 2.0, prompt: str = "a dog barking",
              per_line: bool = False) -> dict:
    return {
        "1": {"class_type": "SA3ModelLoader", "inputs": {"model_name": "tiny-small", "precision": "auto",
                                                          "attention": "auto", "padding_mode": "exact",
                                                          "download": False}},
        "2": {"class_type": "SA3TextEncode", "inputs": {"model": ["1", 0], "prompt": prompt, "negative_prompt": "",
                                                         "duration": duration, "one_prompt_per_line": per_line,
                                                         "durations": ""}},
        "4": {"class_type": "SA3Sampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 1],
                                                      "seed": seed, "steps": steps, "cfg": 1.0,
                                                      "sampler": "default for the model", "apg_scale": 1.0,
                                                      "init_noise_level": 1.0}},
        "5": {"class_type": "SA3Decode", "inputs": {"model": ["1", 0], "latent": ["4", 0], "chunked": "auto",
                                                     "trim": True}},
        "6": {"class_type": "SaveAudio", "inputs": {"audio": ["5", 0], "filename_prefix": "sa3_e2e"}},
    }


def test_pack_loads_and_every_node_is_listed(server):
    log = server.log()
    assert "IMPORT FAILED" not in log, log[-4000:]
    assert PACK_NAME in log  # listed in the import-times summary
    info = server.get("/object_info")
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, f"not in /object_info: {missing}"
    for node_id in NODE_IDS:
        assert info[node_id]["category"] == "audio/stable audio 3"
    page = server.get(f"/extensions/{PACK_NAME}/docs/SA3Sampler.md")  # per-node help (WEB_DIRECTORY)
    assert page.startswith(b"# SA3 Sampler")
    kind, options = info["SA3ModelLoader"]["input"]["required"]["model_name"]
    assert "tiny-small" in (options["options"] if kind == "COMBO" else kind)  # V3 combo / V1 list layout


def test_text_to_audio_writes_a_file_and_reruns_without_reloading(server):
    entry = server.run(t2a_graph(seed=7))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    (saved,) = entry["outputs"]["6"]["audio"]
    path = server.dirs["output"] / saved.get("subfolder", "") / saved["filename"]
    assert path.is_file() and path.stat().st_size > 1000
    data = server.get(f"/view?filename={saved['filename']}&subfolder={saved.get('subfolder', '')}&type=output")
    assert data[:4] == b"fLaC"
    # a new seed re-runs sampler + decode only: the loader's cached output is reused
    entry = server.run(t2a_graph(seed=8))
    assert entry["status"]["status_str"] == "success"
    cached = next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")
    assert {"1", "2"} <= set(cached)
    assert server.log().count("Stable Audio 3: loaded") == 1


def test_bad_input_is_refused_at_validation_naming_the_input(server):
    status, body = server.post("/prompt", {"prompt": t2a_graph(prompt="\n  \n", per_line=True)})
    assert status == 400
    (error,) = body["node_errors"]["2"]["errors"]  # once, against the input it is about
    assert error["type"] == "custom_validation_failed" and error["extra_info"]["input_name"] == "prompt"
    assert "Stable Audio 3 Text Encode: prompt is empty" in error["details"]


def test_core_empty_latent_audio_sets_batch_and_length(server):
    """Core's EmptyLatentAudio (0.3.64: 64 channels at 2048 samples per frame) into SA3 Sampler:
    its batch size and length are used; the durations stay SA3 Text Encode's."""
    graph = t2a_graph(duration=2.0)
    graph["3"] = {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 4.0, "batch_size": 2}}
    graph["4"]["inputs"]["latent"] = ["3", 0]
    graph["5"]["inputs"]["trim"] = False
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    assert len(entry["outputs"]["6"]["audio"]) == 2  # one file per item
    graph["3"]["inputs"]["seconds"] = 1.0  # shorter than the 2 s duration: refused before sampling
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    (error,) = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_id"] == "4" and error["exception_message"].startswith(
        "Stable Audio 3 Sampler: latent is 1.02 s long, but positive asks for 2 s")


def test_graph_saved_with_the_old_empty_latent_still_runs(server):
    """A workflow saved before the durations moved to SA3 Text Encode alone: SA3 Empty Latent
    (deprecated, still listed) repeats them and feeds the sampler, SA3 Encode Audio and SA3
    Inpaint Mask's latent input, exactly as those files were written."""
    info = server.get("/object_info/SA3EmptyLatent")["SA3EmptyLatent"]
    assert info["deprecated"] is True
    wav = server.dirs["input"] / "old_graph.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\x10\x00" * 22050 * 2)
    graph = t2a_graph(duration=2.0)
    graph["3"] = {"class_type": "SA3EmptyLatent", "inputs": {"model": ["1", 0], "duration": 2.0, "batch_size": 1,
                                                              "durations": ""}}
    graph["9"] = {"class_type": "LoadAudio", "inputs": {"audio": "old_graph.wav"}}
    graph["10"] = {"class_type": "SA3EncodeAudio", "inputs": {"model": ["1", 0], "audio": ["9", 0],
                                                               "latent": ["3", 0]}}
    graph["11"] = {"class_type": "SA3InpaintMask", "inputs": {"latent": ["3", 0], "mode": "regions",
                                                               "regions": "0.5-1", "keep_seconds": 10.0}}
    graph["4"]["inputs"].update(latent=["3", 0], inpaint_mask=["11", 0], inpaint_source=["10", 0])
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    (saved,) = entry["outputs"]["6"]["audio"]
    assert (server.dirs["output"] / saved.get("subfolder", "") / saved["filename"]).stat().st_size > 1000


def test_duration_widgets_follow_the_selected_model(server):
    """web/js/duration_limits.js is served and reads each model choice's maximum from the pack's
    route: the folder's own config, or the official one for a model not downloaded."""
    assert f"/extensions/{PACK_NAME}/js/duration_limits.js" in server.get("/extensions")
    limits = server.get("/sa3/max_durations")
    assert limits == server.get("/api/sa3/max_durations")
    config = json.loads((fixture_root() / "tiny-small" / "model_config.json").read_text())
    assert limits["tiny-small"] == config["sample_size"] / config["sample_rate"]
    assert round(limits["medium"], 1) == 380.4 and round(limits["small-music"], 1) == 120.0


def test_duration_over_every_model_is_refused_at_validation(server):
    status, body = server.post("/prompt", {"prompt": t2a_graph(duration=400.0)})
    assert status == 400, body
    (error,) = body["node_errors"]["2"]["errors"]
    assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "duration"


def test_unknown_combo_value_is_refused_at_validation(server):
    """ComfyUI 0.3.64 does not check V3 combo values itself; the node's validate_inputs does."""
    graph = t2a_graph()
    graph["4"]["inputs"]["sampler"] = "ddim"
    status, body = server.post("/prompt", {"prompt": graph})
    assert status == 400, body
    (error,) = body["node_errors"]["4"]["errors"]
    assert error["type"] == "custom_validation_failed" and error["extra_info"]["input_name"] == "sampler"
    assert error["details"] == (
        "sampler - Stable Audio 3 Sampler: sampler must be one of 'default for the model', 'pingpong', 'euler', "
        "'dpmpp', 'rk4' (got 'ddim'). Pick a value from the list.")


def _execution_error(entry: dict) -> dict:
    (error,) = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    return error


SPECTROGRAM = {"height": 256, "width": 512, "px_per_second": 50.0, "colormap": "magma", "fmin": 0.0, "fmax": 0.0,
               "db_floor": -80.0, "normalize": True, "waveform": False, "regions": ""}


@pytest.mark.parametrize("seed, change, message", [  # a seed each: no sampler output cached from another case
    (11, {"width": 64}, "width 64 is too small (got 64, expected 0 or >= 128)"),
    (12, {"fmin": 5000.0, "fmax": 2000.0}, "fmin must be below fmax (got fmin 5000 Hz, fmax 2000 Hz"),
    (13, {"colormap": "jet"}, "colormap must be one of 'magma', 'viridis', 'gray' (got 'jet')"),
])
def test_spectrogram_settings_are_refused_before_the_sampler_runs(server, seed, change, message):
    """issue 24: SA3 Spectrogram's width, fmin/fmax and colormap (one queue-time input per node, see
    nodes/_validate.py) are refused when the run starts: its audio input is lazy, so ComfyUI checks
    the node before running the sampler that feeds it. Nothing is sampled or saved."""
    graph = t2a_graph(seed=seed)
    graph["7"] = {"class_type": "SA3Spectrogram", "inputs": {"audio": ["5", 0], **SPECTROGRAM, **change}}
    graph["8"] = {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    error = _execution_error(entry)
    assert error["node_type"] == "SA3Spectrogram" and error["exception_type"] == "ValueError"
    assert error["exception_message"].startswith(f"Stable Audio 3 Spectrogram: {message}"), error
    cached = [n for m in entry["status"]["messages"] if m[0] == "execution_cached" for n in m[1]["nodes"]]
    assert not {"4", "5", "6"} & {*error["executed"], *cached}, error["executed"]  # the sampler never ran
    graph["7"]["inputs"].update(SPECTROGRAM)  # the same graph with good settings draws the picture
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    assert len(entry["outputs"]["8"]["images"]) == 1


@pytest.mark.parametrize("rule, message", [
    ("transformer.layers.[0-", "include must be a layer-name rule whose brackets are [a-b] ranges of whole numbers "
                               "(got 'transformer.layers.[0-')"),
    ("[0-999].[0-999].[0-999]", "include must be a layer-name rule expanding to at most"),
])
def test_train_lora_rules_are_refused_before_the_model_loads(server, rule, message):
    """issue 24: SA3 Train LoRA's include/exclude (validate_inputs takes output_name only) are checked
    by the library's rule check when the run starts: model and dataset are lazy, so neither the
    model loader nor the dataset node runs first. Nothing is written to models/loras."""
    from tests.sa3.test_training import make_dataset

    make_dataset(server.dirs["input"] / "sa3_rules")
    graph = {
        "1": {"class_type": "SA3ModelLoader", "inputs": {"model_name": "tiny-small", "precision": "fp32",
                                                          "attention": "math", "padding_mode": "reference",
                                                          "download": False}},
        "2": {"class_type": "SA3TrainingDataset", "inputs": {"folder": "sa3_rules"}},
        "3": {"class_type": "SA3TrainLoRA", "inputs": {
            "model": ["1", 0], "dataset": ["2", 0], "output_name": "rules_lora", "adapter_type": "lora", "rank": 4,
            "alpha": 0.0, "steps": 2, "learning_rate": 1e-3, "batch_size": 1, "clip_seconds": 1.0, "seed": 0,
            "include": f"cross_attn, {rule}", "exclude": ""}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    error = _execution_error(entry)
    assert error["node_type"] == "SA3TrainLoRA" and error["exception_type"] == "ValueError"
    assert error["exception_message"].startswith(f"Stable Audio 3 Train LoRA: {message}"), error
    assert not {"1", "2"} & set(error["executed"]), error["executed"]  # no model loaded, no clip read
    assert not list((server.root / "models" / "loras").glob("rules_lora*"))


def _lora_graph(**options) -> dict:
    graph = t2a_graph(seed=3)
    inputs = {"model": ["1", 0], "lora_name": "tiny-small/lora.safetensors", "strength_dit": 1.0,
              "strength_conditioner": 1.0, **options}
    graph["7"] = {"class_type": "SA3LoraLoader", "inputs": inputs}
    for node in ("2", "4", "5"):
        graph[node]["inputs"]["model"] = ["7", 0]
    return graph


def test_lora_interval_and_layer_filter(server):
    if not (fixture_root() / "loras" / "tiny-small" / "lora.safetensors").is_file():
        pytest.skip("no LoRA fixtures")
    entry = server.run(_lora_graph(t_from=0.9, t_to=0.2))  # a two-input rule: checked when the node runs
    assert entry["status"]["status_str"] == "error"
    assert "t_from 0.9 is above t_to 0.2" in _execution_error(entry)["exception_message"]
    entry = server.run(_lora_graph(t_from=0.5, t_to=1.0, layer_filter="cross_attn"))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    assert entry["outputs"]["6"]["audio"]


def test_missing_lora_file_is_refused_at_validation_with_the_packs_message(server):
    """validate_inputs takes lora_name, so ComfyUI (0.3.64, and newer releases that check io.Combo
    values themselves unless validate_inputs takes them) answers with the pack's message."""
    status, body = server.post("/prompt", {"prompt": _lora_graph(lora_name="no-such-lora.safetensors")})
    assert status == 400, body
    (error,) = body["node_errors"]["7"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert "Stable Audio 3 LoRA Loader: lora_name 'no-such-lora.safetensors' is not a LoRA in models/loras" \
        in error["details"]


def test_interrupt_stops_a_long_run_and_the_server_stays_usable(server):
    status, body = server.post("/prompt", {"prompt": t2a_graph(seed=21, steps=1000, duration=60.0)})
    assert status == 200, body
    prompt_id = body["prompt_id"]
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it runs, then give it time to reach the sampler
        running = server.get("/queue")["queue_running"]
        if any(item[1] == prompt_id for item in running):
            break
        time.sleep(0.1)
    time.sleep(3.0)
    started = time.time()
    server.post("/interrupt", {})
    history = {}
    while time.time() < deadline and prompt_id not in history:
        history = server.get(f"/history/{prompt_id}")
        time.sleep(0.1)
    stopped_after = time.time() - started
    status = history[prompt_id]["status"]
    assert any(m[0] == "execution_interrupted" for m in status["messages"]), status
    assert stopped_after < 10, f"interrupt took {stopped_after:.1f} s"
    entry = server.run(t2a_graph(seed=22))
    assert entry["status"]["status_str"] == "success"


# --- bad input through the real server (issue 13) ----------------------------------------------


def _wav_bytes(sample_rate: int, frames: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(b"\x00\x10" * frames)
    return buffer.getvalue()


def _upload(server, name: str, data: bytes) -> str:
    """POST /upload/image (ComfyUI's upload route for every input file, audio included)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server.url + "/upload/image", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["name"]


def _encode_graph(audio_name: str) -> dict:
    graph = t2a_graph()
    for node in ("2", "4"):
        del graph[node]
    graph["8"] = {"class_type": "LoadAudio", "inputs": {"audio": audio_name}}
    graph["9"] = {"class_type": "SA3EncodeAudio", "inputs": {"model": ["1", 0], "audio": ["8", 0]}}
    graph["5"]["inputs"]["latent"] = ["9", 0]
    return graph


@pytest.mark.parametrize("rate, frames, message", [
    (1, 65_000, "audio sample rate must be an integer from 1000 to 384000 Hz (got 1)"),  # a 130 KB file
    (44101, 4410, "audio sample rate 44101 Hz cannot be converted to 44100 Hz at a sane cost"),
])
def test_bad_wav_upload_is_refused_and_the_server_stays_up(server, rate, frames, message):
    name = _upload(server, f"bad_{rate}.wav", _wav_bytes(rate, frames))
    started = time.time()
    entry = server.run(_encode_graph(name), timeout=120)
    assert entry["status"]["status_str"] == "error"
    error = _execution_error(entry)
    assert error["node_type"] == "SA3EncodeAudio" and message in error["exception_message"], error
    assert time.time() - started < 60  # refused before any resampling
    good = server.run(t2a_graph(seed=5), timeout=300)  # the server is up and answers the next request
    assert good["status"]["status_str"] == "success", json.dumps(good["status"])[-3000:]


def test_nan_reaches_execute_and_is_named_once(server):
    """NaN passes ComfyUI's own min/max check (JSON allows it); the node refuses it by name."""
    graph = t2a_graph()
    graph["4"]["inputs"]["cfg"] = float("nan")
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "error"
    error = _execution_error(entry)
    assert error["node_type"] == "SA3Sampler"
    assert error["exception_message"].startswith(
        "Stable Audio 3 Sampler: cfg must be a number from 0 to 30 (got nan).")


def test_problems_in_two_nodes_are_each_reported_once(server):
    graph = t2a_graph(prompt="   ")
    graph["4"]["inputs"]["sampler"] = "ddim"
    graph["4"]["inputs"]["steps"] = 5000  # ComfyUI's own max check, per input
    status, body = server.post("/prompt", {"prompt": graph})
    assert status == 400
    labels = sorted((node, e["extra_info"]["input_name"]) for node, v in body["node_errors"].items()
                    for e in v["errors"])
    assert labels == [("2", "prompt"), ("4", "sampler"), ("4", "steps")], labels
