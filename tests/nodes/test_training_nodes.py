"""SA3 Training Dataset + SA3 Train LoRA under inference mode, as ComfyUI runs nodes: the file
lands in models/loras, the returned model carries it as SA3 LoRA Loader would, Cancel saves what
was trained, and bad inputs are refused before any work."""

from __future__ import annotations

import importlib
import json
import math
import stat
from dataclasses import replace

import folder_paths
import pytest
import torch
from safetensors import safe_open

from tests.conftest import fixture_root
from tests.nodes.conftest import PACK, load_handle, nodes
from tests.sa3.test_training import make_dataset

MODEL = "tiny-small"


def _pack_module(name: str):
    return importlib.import_module(f"{PACK}.nodes.{name}")


TRAIN = {"output_name": "node_lora", "adapter_type": "lora", "rank": 4, "alpha": 0.0, "steps": 3,
         "learning_rate": 1e-3, "batch_size": 1, "clip_seconds": 2.0, "seed": 5, "include": "", "exclude": ""}


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """A private input folder and a private first loras folder (nothing written into ComfyUI)."""
    inp, loras = tmp_path / "input", tmp_path / "loras"
    inp.mkdir(), loras.mkdir()
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(inp))
    monkeypatch.setattr(folder_paths, "get_temp_directory", lambda: str(tmp_path / "temp"))
    paths, exts = folder_paths.folder_names_and_paths["loras"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(loras), *list(paths)], exts))
    make_dataset(inp / "clips")
    return inp, loras


def _settings(loras) -> list:
    """A LoRA chain without its in-memory tensors (each LoRA node reads its own copy)."""
    return [replace(link, lora=None) for link in loras]


def _dataset(folder="clips"):
    return nodes.SA3TrainingDataset.execute(folder=folder).args[0]


def test_train_node_writes_file_and_applies_it(dirs, record):
    _, loras = dirs
    handle = load_handle(MODEL)
    with torch.inference_mode():
        data = _dataset()
        out = nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **TRAIN)
    model, curve, demos = out.args
    assert (loras / "node_lora.safetensors").is_file() and (loras / "node_lora.sa3state").is_file()
    assert [s.name for s in model.loras] == ["node_lora.safetensors"]
    via_loader = nodes.SA3LoraLoader.execute(model=handle, lora_name="node_lora.safetensors", strength_dit=1.0,
                                             strength_conditioner=1.0).args[0]
    assert _settings(model.loras) == _settings(via_loader.loras)  # held exactly as the LoRA loader holds it
    assert handle.loras == ()  # the input handle is unchanged
    assert curve.shape == (1, 320, 768, 3) and curve.dtype == torch.float32 and 0 <= curve.min() <= curve.max() <= 1
    assert record.progress[-1] == (3, 3) and len(record.progress) == 3
    assert demos["waveform"].shape == (1, 2, 4410)  # no demo asked for


def test_train_node_matches_library(dirs, tmp_path):
    """The node trains exactly what sa3.training.train_lora trains from the same folder."""
    from sa3.training import LoRATrainingOptions, train_lora

    inp, loras = dirs
    handle = load_handle(MODEL)
    with torch.inference_mode():
        nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **TRAIN)
        handle.model.apply_loras(())  # the shared modules back to no LoRA, as the node starts
        lib = train_lora(handle.model, inp / "clips", tmp_path / "lib.safetensors",
                         LoRATrainingOptions(adapter_type="lora", rank=4, steps=3, learning_rate=1e-3, batch_size=1,
                                             clip_seconds=2.0, seed=5))
    assert (loras / "node_lora.safetensors").read_bytes() == lib.path.read_bytes()


class NewerInterrupt(BaseException):
    """ComfyUI's interrupt as newer releases define it: a BaseException, not an Exception."""


@pytest.mark.parametrize("cancel_at", [2, 3])
@pytest.mark.parametrize("newer", [False, True], ids=["Exception", "BaseException"])
def test_cancel_through_comfyuis_interrupt_saves_what_was_trained(dirs, monkeypatch, cancel_at, newer):
    """Cancel as ComfyUI delivers it: the request sets its flag (interrupt_current_processing) and
    the progress hook its server installs (main.py's hijack_progress) raises the interrupt from the
    next progress update. The steps done are saved, loadable and readable like ComfyUI's other
    files, and the run still ends as interrupted (also when Cancel comes during the last step)."""
    import comfy.model_management as mm
    import comfy.utils

    if newer:
        monkeypatch.setattr(mm, "InterruptProcessingException", NewerInterrupt)

    def hook(value, total, preview, node_id=None):
        if value == cancel_at:
            mm.interrupt_current_processing()  # the user's Cancel, while this step ran
        mm.throw_exception_if_processing_interrupted()  # what main.py's hook does first

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    _, loras = dirs
    handle = load_handle(MODEL)
    with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
        nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **TRAIN)
    path = loras / "node_lora.safetensors"
    prepared = handle.model.prepare_lora(path)  # the library's LoRA loader reads it for this model
    assert (prepared.file.adapter_type, prepared.file.rank) == ("lora", 4) and prepared.layers
    with safe_open(str(loras / "node_lora.sa3state"), framework="pt") as f:
        assert json.loads(f.metadata()["sa3_training"])["step"] == cancel_at
    probe = loras / "probe.txt"
    probe.touch()  # a file created the ordinary way: the mode ComfyUI's own outputs get
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(probe.stat().st_mode)
    assert not mm.processing_interrupted()  # the request was consumed, as ComfyUI consumes it


def test_resume_and_checkpoints_from_node(dirs):
    _, loras = dirs
    handle = load_handle(MODEL)
    with torch.inference_mode():
        data = _dataset()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "steps": 4}, checkpoint_every=2)
        assert (loras / "node_lora-step000002.safetensors").is_file()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "steps": 4, "output_name": "resumed"},
                                   resume_from="node_lora-step000002.safetensors")
    assert (loras / "resumed.safetensors").read_bytes() == (loras / "node_lora.safetensors").read_bytes()


@pytest.mark.parametrize("folder, message", [
    ("", "folder is empty"),
    ("../elsewhere", "points outside the input folder"),
    ("{tmp}/loras", "points outside the input folder (got '/tmp/"),  # an absolute path elsewhere
    ("/", "folder '/' points outside the input folder (got '/', resolving to '/', expected"),  # the root
    ("linked", "folder 'linked' points outside the input folder (got 'linked', resolving to '{tmp}/loras'"),
    ("a\0b", "folder must be a folder name of at most 4096 characters without NUL"),
    ("x" * 5000, "folder must be a folder name of at most 4096 characters without NUL (got 'xxx"),
])
def test_dataset_name_refused_at_queue_time(dirs, tmp_path, folder, message):
    (dirs[0] / "linked").symlink_to(tmp_path / "loras")
    folder, message = folder.replace("{tmp}", str(tmp_path)), message.replace("{tmp}", str(tmp_path))
    assert message in nodes.SA3TrainingDataset.validate_inputs(folder=folder)
    assert nodes.SA3TrainingDataset.validate_inputs(folder=folder).count("Stable Audio 3") == 1
    with pytest.raises(ValueError) as e:
        nodes.SA3TrainingDataset.execute(folder=folder)
    assert message in str(e.value) and str(e.value).count("Stable Audio 3") == 1


def test_dataset_fingerprint_walk_is_bounded(dirs, monkeypatch):
    inp, _ = dirs
    monkeypatch.setattr(_pack_module("training").training_data, "MAX_FOLDER_ENTRIES", 5)
    for i in range(10):
        (inp / "clips" / f"extra{i}.txt").touch()
    assert nodes.SA3TrainingDataset.fingerprint_inputs(folder="clips") == "clips|more than 5 entries"
    with pytest.raises(ValueError, match="holds more than 5 files and folders"):
        nodes.SA3TrainingDataset.execute(folder="clips")


def test_dataset_absolute_path_inside_input_accepted(dirs):
    inp, _ = dirs
    assert nodes.SA3TrainingDataset.validate_inputs(folder=str(inp / "clips")) is True
    assert len(nodes.SA3TrainingDataset.execute(folder=str(inp / "clips")).args[0]) == len(_dataset())


def test_missing_dataset_refused_when_it_runs(dirs):
    assert nodes.SA3TrainingDataset.validate_inputs(folder="missing") is True  # the user fills it later
    with pytest.raises(ValueError, match=r"Stable Audio 3 Training Dataset: folder .* does not exist"):
        nodes.SA3TrainingDataset.execute(folder="missing")


def test_dataset_missing_caption_and_fingerprint(dirs):
    inp, _ = dirs
    before = nodes.SA3TrainingDataset.fingerprint_inputs(folder="clips")
    (inp / "clips" / "clip0.txt").unlink()
    assert nodes.SA3TrainingDataset.fingerprint_inputs(folder="clips") != before
    assert nodes.SA3TrainingDataset.validate_inputs(folder="clips") is True  # contents: checked when it runs
    with pytest.raises(ValueError, match="1 of 3 audio files have no caption"):
        nodes.SA3TrainingDataset.execute(folder="clips")


@pytest.mark.parametrize("name, message", [
    ("../evil", "output_name '../evil' is not a plain file name"),
    ("", "is not a plain file name"),
])
def test_output_name_refused_at_queue_time(name, message):
    """validate_inputs takes output_name only (ComfyUI labels its message with every parameter);
    ComfyUI range-checks the numbers per input, and execute checks everything again."""
    got = nodes.SA3TrainLoRA.validate_inputs(output_name=name)
    assert isinstance(got, str) and message in got and got.startswith("Stable Audio 3 Train LoRA: ")


@pytest.mark.parametrize("change, message", [
    ({"rank": 0}, "rank must be an integer from 1 to"),
    ({"steps": 0}, "steps must be an integer from 1 to"),
    ({"learning_rate": 2.0}, "learning_rate must be a number from"),
    ({"learning_rate": math.nan}, "(got nan)"),
    ({"alpha": math.inf}, "alpha must be a number from"),
    ({"clip_seconds": 0.0}, "clip_seconds must be a number from"),
    ({"adapter_type": "nope"}, "adapter_type must be one of 'lora'"),
    ({"resume_from": "absent.safetensors"}, "resume_from 'absent.safetensors' is not in models/loras"),
    ({"clip_seconds": 200.0}, "clip_seconds must be in [0.093, 120.0] s for this model (got 200.0)"),
    ({"batch_size": 4}, "batch_size 4 exceeds the 3 clip(s)"),
    ({"include": "nothing_matches"}, "no layer matches include=('nothing_matches',)"),
    ({"output_name": "../evil"}, "is not a plain file name"),
    # mistyped values through the API (the old training template's shifted widgets, one by one)
    ({"resume_from": 0}, "resume_from must be a file name from the list (got 0). Pick a file from the list."),
    ({"include": 5}, "include must be text (got 5). Enter text."),
    ({"output_name": 7}, "output_name must be text (got 7)."),
    ({"dropout": ""}, "dropout must be a number from 0 to 0.95 (got '')"),
    ({"base_precision": 0}, "base_precision must be one of 'fp32', 'bf16', 'fp16' (got 0)"),
    ({"checkpoint_every": math.nan}, "checkpoint_every must be an integer from 0 to 1000000 (got nan)"),
])
def test_execute_refuses_before_work(dirs, change, message):
    _, loras = dirs
    handle = load_handle(MODEL)
    with torch.inference_mode(), pytest.raises(ValueError) as e:
        nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **{**TRAIN, **change})
    assert message in str(e.value) and str(e.value).startswith("Stable Audio 3 Train LoRA: ")
    assert list(loras.iterdir()) == []


def test_settings_are_checked_before_the_model_is_asked_for():
    """check_lazy_status (ComfyUI calls it when the run reaches the node, before the model loader
    and the dataset node ran): output_name, every number and combo, and include/exclude through the
    library's rule check; good settings ask for the model and the clips."""
    lazy = nodes.SA3TrainLoRA.check_lazy_status
    assert lazy(model=None, dataset=None, **TRAIN) == ["model", "dataset"]
    for change, message in (({"include": "cross_attn, layers.[0-"}, "include must be a layer-name rule whose "
                                                                    "brackets are [a-b] ranges of whole numbers "
                                                                    "(got 'layers.[0-')"),
                            ({"exclude": "[0-999].[0-999].[0-999]"}, "exclude must be a layer-name rule expanding "
                                                                     "to at most"),
                            ({"output_name": "../evil"}, "output_name '../evil' is not a plain file name"),
                            ({"rank": 0}, "rank must be an integer from 1 to"),
                            ({"adapter_type": "nope"}, "adapter_type must be one of 'lora'")):
        with pytest.raises(ValueError) as e:
            lazy(model=None, dataset=None, **{**TRAIN, **change})
        assert str(e.value).startswith(f"Stable Audio 3 Train LoRA: {message}"), e.value


def test_model_with_lora_and_wrong_inputs_refused(dirs):
    handle = load_handle(MODEL)
    lora = handle.model.prepare_lora(fixture_root() / "loras" / MODEL / "lora.safetensors")
    with_lora = _pack_module("comfy_models").with_loras(handle, (_pack_module("_sa3").LoRALink(lora),))
    data = _dataset()
    with pytest.raises(ValueError, match="model already has 1 LoRA"):
        nodes.SA3TrainLoRA.execute(model=with_lora, dataset=data, **TRAIN)
    with pytest.raises(ValueError, match="model is not an SA3 model"):
        nodes.SA3TrainLoRA.execute(model="x", dataset=data, **TRAIN)
    with pytest.raises(ValueError, match="dataset is not a training dataset"):
        nodes.SA3TrainLoRA.execute(model=handle, dataset=[1], **TRAIN)


def test_loss_curve_image():
    img = _pack_module("training").loss_curve_image([3.0, 2.0, math.nan, 1.0], 10)
    assert img.shape == (1, 320, 768, 3)
    assert img.min() < 0.5  # something is drawn


def test_training_after_a_packed_bf16_generation(dirs, monkeypatch):
    """A bf16 model that generated on the CPU holds prepacked weights where oneDNN packs bf16
    (every layer qualifies here, the size threshold set to 0; none on AVX2); training then copies
    the frozen base, which must not trip on them."""
    from tests.nodes.test_graph_parity import run_graph

    monkeypatch.setattr(importlib.import_module(f"{PACK}.sa3.cpu_gemm"), "ONEDNN_MIN_WEIGHTS", 0)
    _, loras = dirs
    (handle,) = nodes.SA3ModelLoader.execute(model_name=MODEL, precision="bf16", attention="auto",
                                             padding_mode="exact", download=False).args
    with torch.inference_mode():
        run_graph(handle, steps=2)
        routes = importlib.import_module(f"{PACK}.sa3.cpu_gemm").cpu_routes()
        assert any("_packed" in m.__dict__ for m in handle.model.dit.modules()) == routes.packed_bf16
        nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **TRAIN)
    assert (loras / "node_lora.safetensors").is_file()


def test_validation_log_and_its_path_shown(dirs, monkeypatch):
    """validate_every writes the official validation loss into the CSV log beside the LoRA, whose
    path is shown under the node when training ends."""
    _, loras = dirs
    shown = []
    monkeypatch.setattr(_pack_module("comfy_models"), "progress_text", lambda node, text: shown.append(text))
    handle = load_handle(MODEL)
    with torch.inference_mode():
        nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **TRAIN, validate_every=2)
    rows = [line.split(",") for line in (loras / "node_lora.csv").read_text().splitlines()]
    assert rows[0] == ["step", "loss", "validation_loss"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert [r[2] != "" for r in rows[1:]] == [False, True, True]  # every 2nd step and the last
    assert math.isfinite(float(rows[2][2]))
    assert shown[-1].endswith(f"log {loras / 'node_lora.csv'}") and "saved node_lora.safetensors" in shown[-1]


def test_cache_encoded_skips_encoding_on_a_rerun(dirs, monkeypatch):
    """With cache_encoded (the default) a second run on the same clips runs no encoder and trains
    the same file; off, every run encodes."""
    _, loras = dirs
    handle = load_handle(MODEL)
    data_module = importlib.import_module(f"{PACK}.sa3.training_data")
    with torch.inference_mode():
        data = _dataset()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **TRAIN)
        cache = folder_paths.get_temp_directory() + "/sa3_encoded"
        assert len(list(importlib.import_module("pathlib").Path(cache).iterdir())) == 1

        def no_encoding(*args, **kwargs):
            raise AssertionError("encoded again")

        monkeypatch.setattr(data_module, "encode_captions", no_encoding)  # the text encoder
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "output_name": "again"})
        assert (loras / "again.safetensors").read_bytes() == (loras / "node_lora.safetensors").read_bytes()
        with pytest.raises(AssertionError, match="encoded again"):
            nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "output_name": "off"},
                                       cache_encoded=False)


def test_cache_keeps_bf16_prompt_states_apart(dirs):
    """base_precision bf16 encodes the prompt states as the official bf16 step (under bf16
    autocast): its cache entry is its own, recorded as bf16, beside the fp32 run's."""
    from pathlib import Path

    handle = load_handle(MODEL)
    data_module = importlib.import_module(f"{PACK}.sa3.training_data")
    with torch.inference_mode():
        data = _dataset()
        for precision in ("bf16", "fp32"):
            nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "steps": 1, "base_precision": precision,
                                                                      "output_name": precision})
    cache = Path(folder_paths.get_temp_directory()) / "sa3_encoded"
    entries = sorted(data_module.load_cached(e).prompt_precision for e in cache.iterdir())
    assert entries == ["bf16", "fp32"]


def test_svd_bases_from_models_loras(dirs, tmp_path):
    """svd_bases: an -XS LoRA trained with the file beside it is the library's with the same file;
    a bases file elsewhere (SA3 LoRA Loader would not find it) is refused before any work."""
    from sa3.training import LoRATrainingOptions, train_lora

    inp, loras = dirs
    bases = fixture_root() / "loras" / MODEL / "svd_bases.safetensors"
    (loras / "svd_bases.safetensors").write_bytes(bases.read_bytes())
    (loras / "sub").mkdir()
    (loras / "sub" / "svd_bases.safetensors").write_bytes(bases.read_bytes())
    schema = nodes.SA3TrainLoRA.define_schema()
    choices = next(i for i in schema.inputs if i.id == "svd_bases").options
    assert choices[0] == "none" and {"svd_bases.safetensors", "sub/svd_bases.safetensors"} <= set(choices)
    handle = load_handle(MODEL)
    xs = {**TRAIN, "adapter_type": "lora-xs"}
    with torch.inference_mode():
        data = _dataset()
        with pytest.raises(ValueError, match="is not beside the LoRA written"):
            nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **xs, svd_bases="sub/svd_bases.safetensors")
        assert not (loras / "node_lora.safetensors").exists()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **xs, svd_bases="svd_bases.safetensors")
        handle.model.apply_loras(())
        lib = train_lora(handle.model, inp / "clips", tmp_path / "lib.safetensors",
                         LoRATrainingOptions(adapter_type="lora-xs", rank=4, steps=3, learning_rate=1e-3,
                                             batch_size=1, clip_seconds=2.0, seed=5), svd_bases_path=bases)
    assert (loras / "node_lora.safetensors").read_bytes() == lib.path.read_bytes()


DEMO = {"demo_every": 2, "demo_prompt": "a sine tone", "demo_seconds": 1.0, "demo_seed": 3}


def test_demo_clips_from_node(dirs, record):
    """Demo clips every 2 steps: files beside the LoRA and the demos output, each generated with the
    LoRA as trained up to its step (ComfyUI's loading of the parts does not drop it)."""
    _, loras = dirs
    handle = load_handle(MODEL)
    train = _pack_module("training")
    with torch.inference_mode():
        out = nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **{**TRAIN, "steps": 4},
                                         checkpoint_every=2, **DEMO)
        demos = out.args[2]
        assert demos["sample_rate"] == 44100 and demos["waveform"].shape[:2] == (2, 2)
        assert (loras / "node_lora_demo_2.flac").is_file() and (loras / "node_lora_demo_4.flac").is_file()
        handle.model.apply_loras(())
        handle.model.load_lora(loras / "node_lora-step000002.safetensors")
        try:
            again = handle.model.generate("a sine tone", duration=1.0, steps=train.training.DEMO_STEPS_DEFAULT,
                                          cfg_scale=train.training.DEMO_CFG, seed=3)[0]
        finally:
            handle.model.unload_lora()
    assert torch.equal(demos["waveform"][0], again.float())
    assert record.progress[-1] == (4, 4)


def test_demo_off_gives_a_short_silence(dirs):
    handle = load_handle(MODEL)
    with torch.inference_mode():
        demos = nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **TRAIN).args[2]
    assert demos["waveform"].shape == (1, 2, 4410) and not demos["waveform"].any()


def test_cancel_with_demos_saves_what_was_trained(dirs, monkeypatch):
    """Cancel while demos are on: the steps done are saved and the demo made before it is kept."""
    import comfy.model_management as mm
    import comfy.utils

    def hook(value, total, preview, node_id=None):
        if value == 3:
            mm.interrupt_current_processing()
        mm.throw_exception_if_processing_interrupted()

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    _, loras = dirs
    handle = load_handle(MODEL)
    with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
        nodes.SA3TrainLoRA.execute(model=handle, dataset=_dataset(), **{**TRAIN, "steps": 10}, **DEMO)
    with safe_open(str(loras / "node_lora.sa3state"), framework="pt") as f:
        assert json.loads(f.metadata()["sa3_training"])["step"] == 3
    assert (loras / "node_lora_demo_2.flac").is_file() and not (loras / "node_lora_demo_4.flac").exists()
    assert handle.model.lora is None or len(handle.model.lora) == 0


def test_replacing_an_existing_lora_is_said_before_training(dirs, monkeypatch, caplog):
    """issue 24: an output name that overwrites an existing file says so when the run starts (under
    the node and in the log) and again when it is saved; a first run and a resume into the same
    file (what resume_from is for) say nothing."""
    _, loras = dirs
    shown = []
    monkeypatch.setattr(_pack_module("comfy_models"), "progress_text", lambda node, text: shown.append(text))
    handle = load_handle(MODEL)
    output = loras / "node_lora.safetensors"
    warning = (f"output_name 'node_lora' names an existing file ({str(output)!r}): it is replaced when training "
               "finishes or is cancelled. Rename output_name to keep it.")
    with torch.inference_mode():
        data = _dataset()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **TRAIN)
        assert warning not in shown and not [r for r in caplog.records if r.levelname == "WARNING"]
        first = output.read_bytes()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "seed": 6})
        assert shown.count(warning) == 1 and shown.index(warning) < len(shown) - 1  # before the run's own lines
        assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
            f"Stable Audio 3 Train LoRA: {warning}"]
        assert "saved node_lora.safetensors (replaced the earlier file)" in shown[-1]
        assert output.read_bytes() != first
        shown.clear()
        caplog.clear()
        nodes.SA3TrainLoRA.execute(model=handle, dataset=data, **{**TRAIN, "steps": 4},
                                   resume_from="node_lora.safetensors")
        assert warning not in shown and not [r for r in caplog.records if r.name.endswith("nodes.training")]
        assert "(replaced" not in shown[-1]
