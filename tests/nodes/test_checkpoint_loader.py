"""SA3 Checkpoint Loader in the real ComfyUI: core's single files give the same SA3_MODEL, and
the same audio bit for bit, as SA3 Model Loader with the official folder; bad files are refused
at queue time naming the file."""

from __future__ import annotations

import importlib
import json
import os
import shutil

import folder_paths
import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3.checks import shown
from tests.comfy_server import ComfyServer
from tests.conftest import require_fixtures, requires_comfyui
from tests.nodes.conftest import PACK, nodes
from tests.nodes.test_graph_parity import assert_same, run_graph
from tests.nodes.test_server_e2e import _execution_error, t2a_graph
from tests.single_file_twins import make_twins, train_spiece

OPTIONS = {"variant": "auto", "precision": "fp32", "attention": "auto", "padding_mode": "exact"}


@pytest.fixture(scope="module")
def twin_root(tmp_path_factory):
    """Twins of both tiny models under one models folder registered with ComfyUI."""
    root = tmp_path_factory.mktemp("models")
    proto = train_spiece()
    twins = {}
    for name in ("tiny-small", "tiny-medium"):
        fixture = require_fixtures() / name
        if fixture.is_dir():
            twins[name] = make_twins(fixture, root, proto, name=f"twin-{name}")
    for kind in ("stable_audio_3", "checkpoints", "text_encoders"):
        folder_paths.add_model_folder_path(kind, str(root / kind))
    return root, twins


def _twin(twin_root, name):
    _, twins = twin_root
    if name not in twins:
        pytest.skip(f"fixture model {name} not present")
    return twins[name]


@pytest.mark.parametrize("name", ["tiny-small", "tiny-medium"])
def test_checkpoint_graph_equals_model_loader_graph(twin_root, name):
    twins = _twin(twin_root, name)
    ckpt, text = twins.checkpoint.name, twins.text_encoder.name
    with torch.inference_mode():  # as ComfyUI runs every node
        assert nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=text) is True
        (single,) = nodes.SA3CheckpointLoader.execute(ckpt_name=ckpt, text_encoder_name=text, **OPTIONS).args
        (folder,) = nodes.SA3ModelLoader.execute(model_name=twins.folder.name, precision="fp32", attention="auto",
                                                 padding_mode="exact", download=False).args
        assert type(single) is type(folder) and set(single.patchers) == set(folder.patchers)
        for part in ("text", "dit", "autoencoder"):
            assert type(single.patchers[part].model) is type(folder.patchers[part].model)
        kwargs = {"prompt": "ambient piano with rain", "negative_prompt": "noise", "cfg": 2.0, "duration": 2.0,
                  "steps": 2, "seed": 5}
        audio = run_graph(single, **kwargs)
        assert_same(audio, run_graph(folder, **kwargs)["waveform"])
        assert audio["waveform"].abs().sum() > 0


def test_lists_offer_core_folders(twin_root):
    twins = _twin(twin_root, "tiny-small")
    inputs = {i.id: i for i in nodes.SA3CheckpointLoader.GET_SCHEMA().inputs}
    assert twins.checkpoint.name in inputs["ckpt_name"].options
    assert twins.text_encoder.name in inputs["text_encoder_name"].options
    assert inputs["variant"].options[0] == "auto" and "small-sfx" in inputs["variant"].options


def _validate(**overrides):
    """The node's refusal: validate_inputs takes text_encoder_name only (one input, one label, see
    nodes/_validate.py); the checkpoint (which needs the variant) and the combos are checked first
    thing in execute, before any weight is read."""
    args = {**OPTIONS, **overrides}
    queued = nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=args["text_encoder_name"])
    if queued is not True:
        return queued
    try:
        with torch.inference_mode():
            nodes.SA3CheckpointLoader.execute(**args)
    except ValueError as e:
        return str(e)
    return True


def test_queue_time_refusals_name_the_file(twin_root):
    root, _ = twin_root
    twins = _twin(twin_root, "tiny-small")
    text = twins.text_encoder.name
    assert _validate(ckpt_name="nope.safetensors", text_encoder_name=text).startswith(
        "Stable Audio 3 Checkpoint Loader: ckpt_name must be one of the files listed in models/checkpoints (got "
        "'nope.safetensors'). No such file there: put a Stable Audio 3 checkpoint in ")
    other = root / "checkpoints" / "sdxl_base.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, other)
    message = _validate(ckpt_name=other.name, text_encoder_name=text)
    assert message.startswith("Stable Audio 3 Checkpoint Loader: ckpt_name 'sdxl_base.safetensors' cannot be loaded (")
    assert "sdxl_base.safetensors' is not a Stable Audio 3 checkpoint" in message
    bare = root / "checkpoints" / "finetune.safetensors"
    shutil.copyfile(twins.checkpoint, bare)  # tiny shapes without a sidecar
    assert "finetune.safetensors' matches the shapes of no official" in _validate(ckpt_name=bare.name,
                                                                                  text_encoder_name=text)
    message = _validate(ckpt_name=twins.checkpoint.name, text_encoder_name=text, variant="small-sfx")
    assert "has a sidecar config 'twin-tiny-small.json'" in message
    message = _validate(ckpt_name=twins.checkpoint.name, text_encoder_name=twins.checkpoint.name.replace(
        ".safetensors", "-missing.safetensors"))
    assert ("text_encoder_name must be one of the files listed in models/text_encoders (got 'twin-tiny-small-missing"
            ".safetensors'). No such file there: put the T5Gemma-b-b-ul2 text encoder in ") in message
    wrong = root / "text_encoders" / "clip_l.safetensors"
    shutil.copyfile(twins.checkpoint, wrong)
    message = _validate(ckpt_name=twins.checkpoint.name, text_encoder_name=wrong.name)
    assert message.startswith("Stable Audio 3 Checkpoint Loader: text_encoder_name 'clip_l.safetensors' cannot be "
                              "loaded (") and "is not a T5Gemma-b-b-ul2 text encoder" in message
    assert _validate(ckpt_name=twins.checkpoint.name, text_encoder_name=text, variant="large").startswith(
        "Stable Audio 3 Checkpoint Loader: variant must be one of 'auto', ")
    with torch.inference_mode(), pytest.raises(ValueError, match=r"clip_l\.safetensors' cannot be loaded"):
        nodes.SA3CheckpointLoader.execute(ckpt_name=twins.checkpoint.name, text_encoder_name=wrong.name, **OPTIONS)


def test_duration_limits_cover_checkpoint_files(twin_root):
    """GET /sa3/max_durations (the web extension's source) knows SA3 Checkpoint Loader's files;
    a file that is not an SA3 checkpoint is left out."""
    twin = _twin(twin_root, "tiny-small")
    limits = importlib.import_module(f"{PACK}.nodes.limits")
    config = json.loads((require_fixtures() / "tiny-small" / "model_config.json").read_text())
    other = twin.checkpoint.parent / "not_sa3.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    try:
        durations = limits.max_durations()
    finally:
        other.unlink()
    assert durations[twin.checkpoint.name] == config["sample_size"] / config["sample_rate"]
    assert "not_sa3.safetensors" not in durations


def test_duration_limits_read_each_file_once_until_it_changes(twin_root, monkeypatch):
    """The route runs in ComfyUI's event loop's process: each checkpoint header is read once, and
    again only when the file changes (size or modification time)."""
    twin = _twin(twin_root, "tiny-small")
    limits = importlib.import_module(f"{PACK}.nodes.limits")
    reads = []
    real = limits.single_file.checkpoint_config
    monkeypatch.setattr(limits.single_file, "checkpoint_config", lambda path: reads.append(path) or real(path))
    monkeypatch.setattr(limits, "_known", {})
    first = limits.max_durations()
    assert limits.max_durations() == first
    assert [p for p in reads if p.name == twin.checkpoint.name] == [twin.checkpoint]
    stat = twin.checkpoint.stat()
    os.utime(twin.checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert limits.max_durations() == first
    assert [p for p in reads if p.name == twin.checkpoint.name] == [twin.checkpoint, twin.checkpoint]


CHECKPOINT_SOURCE = ("core ComfyUI's Stable Audio 3 templates download one per variant, stable_audio_3_<variant>."
                     "safetensors; the official model.safetensors from huggingface.co/stabilityai/stable-audio-3-"
                     "small-music (or another variant's page) works too")
TEXT_ENCODER_SOURCE = ("core ComfyUI's Stable Audio 3 templates download it; without core's files, SA3 Model "
                       "Loader downloads the official model folder instead")


def test_with_core_files_missing_every_missing_file_is_named_where_it_belongs(tmp_path, monkeypatch):
    """A fresh install with template 02 loaded: neither of core's files is there. The refusal names
    each missing file, the folder it belongs in and where it comes from, and never suggests picking a
    name that is missing."""
    folders = {}
    for kind in ("checkpoints", "text_encoders"):
        folders[kind] = tmp_path / "models" / kind
        folders[kind].mkdir(parents=True)
        monkeypatch.setitem(folder_paths.folder_names_and_paths, kind,
                            ([str(folders[kind])], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    ckpt, text = "stable_audio_3_small_music.safetensors", "t5gemma_b_b_ul2.safetensors"
    missing_ckpt = ("ckpt_name must be one of the files listed in models/checkpoints (got "
                    f"'{ckpt}'). No such file there: put a Stable Audio 3 checkpoint in '{folders['checkpoints']}' "
                    f"({CHECKPOINT_SOURCE}), then refresh the node list (R).")
    missing_text = ("text_encoder_name must be one of the files listed in models/text_encoders (got "
                    f"'{text}'). No such file there: put the T5Gemma-b-b-ul2 text encoder in "
                    f"'{folders['text_encoders']}' ({TEXT_ENCODER_SOURCE}), then refresh the node list (R).")
    lead = "Stable Audio 3 Checkpoint Loader: "

    queued = nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=text)
    assert queued == (f"{lead}{missing_text} Also: models/checkpoints holds no file: put a Stable Audio 3 "
                      f"checkpoint in '{folders['checkpoints']}' ({CHECKPOINT_SOURCE}).")
    with pytest.raises(ValueError) as both:
        nodes.SA3CheckpointLoader.execute(ckpt_name=ckpt, text_encoder_name=text, **OPTIONS)
    assert str(both.value) == f"{lead}{missing_ckpt} Also: {missing_text}"

    (folders["text_encoders"] / text).write_bytes(b"")  # listed now (its contents are checked later)
    folder_paths.filename_list_cache.clear()
    assert nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=text) != queued
    with pytest.raises(ValueError) as one:
        nodes.SA3CheckpointLoader.execute(ckpt_name=ckpt, text_encoder_name=text, **OPTIONS)
    assert str(one.value) == f"{lead}{missing_ckpt}"
    for message in (queued, str(both.value)):
        assert message.count(ckpt) <= 1 and message.count(text) == 1  # only as the value got, never as a fix


# --- hostile names and files (issue 24) --------------------------------------------------------------

OUTSIDE = ["../secret.safetensors", "../../../../etc/passwd", "/etc/passwd", "x/../{listed}", "{listed}\0.txt",
           "{stem}.json", "", "."]
NOT_TEXT = [5, ["a"], {"a": 1}]


def _named(value, listed: str):
    return value.format(listed=listed, stem=listed.removesuffix(".safetensors")) if isinstance(value, str) else value


@pytest.fixture
def looked_up(twin_root, monkeypatch):
    """The names the node asked ``folder_paths.get_full_path`` for, with a readable file just outside
    the models folders."""
    root, _ = twin_root
    twins = _twin(twin_root, "tiny-small")
    (root / "secret.safetensors").write_bytes(twins.text_encoder.read_bytes())
    looked = []
    real_full_path = folder_paths.get_full_path
    monkeypatch.setattr(folder_paths, "get_full_path",
                        lambda kind, name: looked.append(name) or real_full_path(kind, name))
    return twins, looked


@pytest.mark.parametrize("value", OUTSIDE, ids=repr)
def test_names_outside_the_listed_files_are_refused_before_the_file_system(looked_up, value):
    """API-sent names: paths out of (or around) the models folders, unlisted files, NUL. ComfyUI 0.3.64
    does not compare V3 combos with their options; the node does, before any path is built or any
    file read."""
    twins, looked = looked_up
    ckpt, text = twins.checkpoint.name, twins.text_encoder.name
    message = _validate(ckpt_name=_named(value, ckpt), text_encoder_name=text)
    assert message.startswith("Stable Audio 3 Checkpoint Loader: ckpt_name must be one of the files listed in "
                              "models/checkpoints (got "), message
    message = nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=_named(value, text))
    assert message.startswith("Stable Audio 3 Checkpoint Loader: text_encoder_name must be one of the files "
                              "listed in models/text_encoders (got "), message
    assert set(looked) <= {ckpt, text}  # only the good, listed files were ever looked up


@pytest.mark.parametrize("value", NOT_TEXT, ids=repr)
def test_names_that_are_not_text_are_refused_naming_the_input(looked_up, value):
    """Numbers, lists and objects sent through the API for a file name: refused by the pack's check of
    file-list inputs (nodes/_validate.py) before the node builds any path."""
    twins, looked = looked_up
    ckpt, text = twins.checkpoint.name, twins.text_encoder.name
    message = _validate(ckpt_name=value, text_encoder_name=text)
    assert message.startswith("Stable Audio 3 Checkpoint Loader: ckpt_name must be a file name from the list (got "
                              f"{shown(value)}). Pick a file from the list."), message
    assert nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=value).startswith(
        "Stable Audio 3 Checkpoint Loader: text_encoder_name must be one of the files listed in "
        "models/text_encoders")
    assert set(looked) <= {ckpt, text}


def test_a_linked_text_encoder_is_checked_when_the_node_runs(looked_up):
    twins, looked = looked_up
    assert nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=None) is True  # known at execution only
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Checkpoint Loader: text_encoder_name must be a file name "
                                         r"from the list \(got None\)"):
        nodes.SA3CheckpointLoader.execute(ckpt_name=twins.checkpoint.name, text_encoder_name=None, **OPTIONS)
    assert set(looked) <= {twins.checkpoint.name}


def _hostile_text_encoder(twins, folder):
    """A text encoder whose tokenizer has more pieces than its embedding has rows."""
    tensors = load_file(twins.text_encoder)
    tensors["spiece_model"] = torch.frombuffer(bytearray(train_spiece(400)), dtype=torch.uint8)
    bad = folder / "big_vocab.safetensors"
    save_file(tensors, bad)
    shutil.copyfile(twins.text_encoder.with_suffix(".json"), bad.with_suffix(".json"))
    return bad


def test_hostile_files_are_refused_before_any_load_and_the_next_graph_is_identical(twin_root, monkeypatch):
    root, _ = twin_root
    twins = _twin(twin_root, "tiny-small")
    ckpt, text = twins.checkpoint.name, twins.text_encoder.name
    kwargs = {"prompt": "ambient piano with rain", "negative_prompt": "", "cfg": 1.0, "duration": 1.0, "steps": 1,
              "seed": 3}
    (reference,) = nodes.SA3CheckpointLoader.execute(ckpt_name=ckpt, text_encoder_name=text, **OPTIONS).args
    expected = run_graph(reference, **kwargs)["waveform"]
    bad_text = _hostile_text_encoder(twins, root / "text_encoders")
    truncated = root / "checkpoints" / "truncated.safetensors"
    truncated.write_bytes(twins.checkpoint.read_bytes()[:-1])
    shutil.copyfile(twins.checkpoint.with_suffix(".json"), truncated.with_suffix(".json"))
    loads = []
    real_load = nodes.comfy_models.load_single_file
    monkeypatch.setattr(nodes.comfy_models, "load_single_file", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    try:
        message = nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=bad_text.name)
        assert message.startswith("Stable Audio 3 Checkpoint Loader: text_encoder_name 'big_vocab.safetensors' cannot "
                                  "be loaded ("), message
        assert "must have a tokenizer of 1 to 260 pieces" in message and "(got 400 pieces)" in message
        message = _validate(ckpt_name=truncated.name, text_encoder_name=text)
        assert "ckpt_name 'truncated.safetensors' cannot be loaded (" in message
        assert "is not a readable safetensors file" in message
        assert loads == []
        (again,) = nodes.SA3CheckpointLoader.execute(ckpt_name=ckpt, text_encoder_name=text, **OPTIONS).args
        assert_same(run_graph(again, **kwargs), expected)
    finally:
        for path in (bad_text, truncated):
            path.unlink()
            path.with_suffix(".json").unlink()


def test_queue_time_check_reads_each_file_once(twin_root, monkeypatch):
    """validate_inputs runs in ComfyUI's event loop: the text encoder's header, tokenizer and config
    are read (and its encoder built on the meta device) once per file version, not per queued prompt."""
    twins = _twin(twin_root, "tiny-small")
    single_file = nodes.checkpoint_loader.single_file
    text = twins.text_encoder.name
    nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=text)
    reads = []
    real_open = single_file.safe_open
    monkeypatch.setattr(single_file, "safe_open", lambda path, **k: reads.append(path) or real_open(path, **k))
    monkeypatch.setattr(single_file, "_encoder_model_class", lambda: reads.append("build"))
    for _ in range(5):
        assert nodes.SA3CheckpointLoader.validate_inputs(text_encoder_name=text) is True
    assert reads == []


@requires_comfyui
def test_server_refuses_hostile_names_and_files_and_stays_usable(tmp_path_factory):
    """Through the API of a real ComfyUI server: a text encoder name out of the folder and a hostile
    text-encoder file are refused at validation (400, against text_encoder_name); a checkpoint name
    out of the folder fails its run naming ckpt_name, reading nothing; the next good prompt runs."""
    root = require_fixtures()
    models = tmp_path_factory.mktemp("server_models")
    twins = make_twins(root / "tiny-small", models, train_spiece(), name="twin")
    _hostile_text_encoder(twins, models / "text_encoders")
    server = ComfyServer(tmp_path_factory.mktemp("comfyui"), {"checkpoints": models / "checkpoints",
                                                              "text_encoders": models / "text_encoders"}).start()
    try:
        def graph(ckpt=twins.checkpoint.name, text=twins.text_encoder.name):
            prompt = t2a_graph(steps=1, duration=1.0)
            prompt["1"] = {"class_type": "SA3CheckpointLoader", "inputs": {
                "ckpt_name": ckpt, "text_encoder_name": text, **OPTIONS, "precision": "auto"}}
            return prompt

        for text, detail in (("../../../../etc/passwd", "must be one of the files listed in models/text_encoders"),
                             ("big_vocab.safetensors", "must have a tokenizer of 1 to 260 pieces")):
            status, body = server.post("/prompt", {"prompt": graph(text=text)})
            assert status == 400, body
            (error,) = body["node_errors"]["1"]["errors"]
            assert error["extra_info"]["input_name"] == "text_encoder_name" and detail in error["details"]
        failed = server.run(graph(ckpt="/etc/passwd"))
        assert failed["status"]["status_str"] == "error"
        message = _execution_error(failed)["exception_message"]
        assert message.startswith("Stable Audio 3 Checkpoint Loader: ckpt_name must be one of the files listed in "
                                  "models/checkpoints (got '/etc/passwd')"), message
        assert server.run(graph())["status"]["status_str"] == "success"
    finally:
        server.stop()
