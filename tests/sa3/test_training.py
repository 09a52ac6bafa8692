"""LoRA training on the tiny fixture model: the recipe learns, files are official and
deterministic, resuming is exact, and bad inputs are refused before any work."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sa3.audio import write_audio
from sa3.training import (
    LoRATrainingOptions,
    TrainingError,
    state_path,
    train_lora,
    validation_loss,
)
from sa3.training_data import TrainingDataError, encode_dataset, load_training_folder
from tests.conftest import load_model

TINY = "tiny-small"
CLIP_SECONDS = 2.0


def _sine(path: Path, freq: float, seconds: float, rate: int = 44100, amp: float = 0.5) -> None:
    t = torch.arange(int(seconds * rate)) / rate
    write_audio(path, amp * torch.sin(2 * math.pi * freq * t)[None].repeat(2, 1), rate)


def make_dataset(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (freq, secs) in enumerate([(220, 1.5), (330, 2.5), (440, 1.0), (550, 3.0)][:n]):
        _sine(folder / f"clip{i}.wav", freq, secs)
        (folder / f"clip{i}.txt").write_text(f"a sine tone at {freq} hz")
    return folder


@pytest.fixture(scope="module")
def model():
    m = load_model(TINY)
    yield m
    m.unload_lora()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("clips"))


def opts(**kw) -> LoRATrainingOptions:
    base = {"steps": 4, "rank": 4, "clip_seconds": CLIP_SECONDS, "batch_size": 2, "learning_rate": 1e-3, "seed": 7}
    return LoRATrainingOptions(**{**base, **kw})


def test_loss_falls_and_trained_file_changes_audio(model, data_dir, tmp_path):
    clips = load_training_folder(data_dir)
    data = encode_dataset(model, clips, opts().crop_latents(), torch.Generator().manual_seed(0))
    before = validation_loss(model, data, CLIP_SECONDS)
    audio_before = model.generate("a sine tone", duration=1.0, steps=2, seed=3)
    result = train_lora(model, data, tmp_path / "tone.safetensors", opts(steps=40))
    assert len(result.losses) == 40 and result.steps_done == 40 and not result.stopped
    model.load_lora(result.path)  # our loader, as SA3 LoRA Loader uses it
    try:
        after = validation_loss(model, data, CLIP_SECONDS)
        audio_after = model.generate("a sine tone", duration=1.0, steps=2, seed=3)
    finally:
        model.unload_lora()
    assert after < 0.9 * before, (before, after)
    assert (audio_after - audio_before).abs().max() > 1e-3
    assert torch.equal(model.generate("a sine tone", duration=1.0, steps=2, seed=3), audio_before)  # model untouched


def test_file_is_the_official_layout(model, data_dir, tmp_path):
    path = train_lora(model, data_dir, tmp_path / "f.safetensors", opts(steps=1, adapter_type="bora",
                                                                         include=["transformer.layers.[0-1].ff",
                                                                                  "seconds_total"])).path
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["lora_config"])
        keys = list(f.keys())
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert config == {"rank": 4, "alpha": 4, "adapter_type": "bora", "dropout": 0.0,
                      "include": ["transformer.layers.[0-1].ff", "seconds_total"], "exclude": None}
    assert dtypes == {torch.float16}
    assert "model.transformer.layers.1.ff.ff.2.parametrizations.weight.0.magnitude_c" in keys
    assert "conditioners.seconds_total.embedder.embedding.1.parametrizations.weight.0.lora_A" in keys
    assert {k.rsplit(".", 1)[1] for k in keys} == {"lora_A", "lora_B", "magnitude_r", "magnitude_c"}
    assert not any("self_attn" in k for k in keys)
    assert state_path(path).is_file()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=oct)
def test_files_get_the_usual_mode(model, data_dir, tmp_path, umask):
    """The LoRA, its state, its log and its checkpoints are written atomically (nothing left beside them)
    with the mode any new file gets, 0666 less the umask, as ComfyUI's other outputs."""
    old = os.umask(umask)
    try:
        result = train_lora(model, data_dir, tmp_path / "m.safetensors", opts(steps=2, checkpoint_every=1))
    finally:
        os.umask(old)
    written = sorted(tmp_path.iterdir())
    assert [p.name for p in written] == ["m-step000001.sa3state", "m-step000001.safetensors", "m.csv",
                                         "m.sa3state", "m.safetensors"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o666 & ~umask}
    assert result.path == tmp_path / "m.safetensors"


@pytest.mark.parametrize("adapter_type", ["lora", "dora-rows", "dora-cols", "bora", "lora-xs", "dora-rows-xs",
                                          "dora-cols-xs", "bora-xs"])
def test_every_adapter_type_trains_and_loads(model, data_dir, tmp_path, adapter_type):
    result = train_lora(model, data_dir, tmp_path / "a.safetensors",
                        opts(steps=2, adapter_type=adapter_type, dropout=0.2, batch_size=1))
    model.load_lora(result.path)
    try:
        info = model.lora.describe()[0]
        assert (info.adapter_type, info.rank, info.conditioner_layers) == (adapter_type, 4, 1)
    finally:
        model.unload_lora()


def test_same_seed_same_file_bit_for_bit(model, data_dir, tmp_path):
    a = train_lora(model, data_dir, tmp_path / "a.safetensors", opts()).path.read_bytes()
    b = train_lora(model, data_dir, tmp_path / "b.safetensors", opts()).path.read_bytes()
    c = train_lora(model, data_dir, tmp_path / "c.safetensors", opts(seed=8)).path.read_bytes()
    assert a == b and a != c


def test_resume_continues_where_it_stopped(model, data_dir, tmp_path):
    straight = train_lora(model, data_dir, tmp_path / "straight.safetensors", opts(steps=6, checkpoint_every=2))
    assert [p.name for p in straight.checkpoints] == ["straight-step000002.safetensors",
                                                      "straight-step000004.safetensors"]
    calls = []
    stopped = train_lora(model, data_dir, tmp_path / "part.safetensors", opts(steps=6),
                         should_stop=lambda: len(calls) >= 3, on_step=lambda s, n, loss: calls.append((s, n, loss)))
    assert stopped.stopped and stopped.steps_done == 3 and [c[0] for c in calls] == [1, 2, 3]
    resumed = train_lora(model, data_dir, tmp_path / "resumed.safetensors", opts(steps=6), resume_from=stopped.path)
    assert resumed.steps_done == 6 and len(resumed.losses) == 3
    assert resumed.losses == straight.losses[3:]
    assert resumed.path.read_bytes() == straight.path.read_bytes()
    # from a checkpoint too
    again = train_lora(model, data_dir, tmp_path / "again.safetensors", opts(steps=6),
                       resume_from=straight.checkpoints[1])
    assert again.path.read_bytes() == straight.path.read_bytes()
    # stopped before the first step: nothing is written, an existing file is kept
    before = stopped.path.read_bytes()
    none = train_lora(model, data_dir, stopped.path, opts(steps=6), resume_from=stopped.path, should_stop=lambda: True)
    assert none.path is None and none.stopped and none.steps_done == 3 and stopped.path.read_bytes() == before
    # without the state file (e.g. an official LoRA): starts from its weights, fresh optimizer
    state_path(stopped.path).unlink()
    fresh = train_lora(model, data_dir, tmp_path / "fresh.safetensors", opts(steps=2), resume_from=stopped.path)
    assert fresh.steps_done == 2


def test_bf16_base_runs(model, data_dir, tmp_path):
    result = train_lora(model, data_dir, tmp_path / "h.safetensors", opts(steps=1, base_precision="bf16"))
    assert math.isfinite(result.losses[0])


def test_training_under_inference_mode(data_dir, tmp_path):
    """ComfyUI runs nodes under inference mode, with the model's weights created in it."""
    from sa3 import StableAudioModel
    from tests.conftest import require_fixtures

    with torch.inference_mode():
        m = StableAudioModel.from_pretrained(require_fixtures() / TINY, device="cpu", padding_mode="reference")
        result = train_lora(m, data_dir, tmp_path / "i.safetensors", opts(steps=2))
    assert result.steps_done == 2 and result.path.is_file()


# --- bad inputs: refused before any work, nothing written ----------------------------------------


@pytest.mark.parametrize("kw, message", [
    ({"adapter_type": "dora"}, "adapter_type 'dora' is unknown"),
    ({"rank": 0}, "rank must be an integer in 1..1024 (got 0)"),
    ({"rank": 2.5}, "rank must be an integer"),
    ({"rank": 300}, "rank 300 exceeds the smallest adapted layer's dimension 32"),
    ({"alpha": -1.0}, "alpha must be a number above 0 and at most 4096, or None (got -1)"),
    ({"alpha": float("nan")}, "alpha must be a number above 0"),
    ({"alpha": 1e308}, "alpha must be a number above 0 and at most 4096, or None (got 1e+308)"),
    ({"dropout": 1.0}, "dropout must be in [0, 1) (got 1.0)"),
    ({"steps": 0}, "steps must be an integer in 1..1000000 (got 0)"),
    ({"steps": True}, "steps must be an integer"),
    ({"learning_rate": 0.0}, "learning_rate must be in (0, 1] (got 0.0)"),
    ({"learning_rate": float("inf")}, "learning_rate must be in (0, 1]"),
    ({"batch_size": 0}, "batch_size must be an integer in 1..64 (got 0)"),
    ({"batch_size": 4}, "batch_size 4 exceeds the 3 clip(s) of the dataset"),
    ({"clip_seconds": 0.01}, "clip_seconds must be in [0.093, 120.0] s for this model (got 0.01)"),
    ({"clip_seconds": 500.0}, "clip_seconds must be in [0.093, 120.0] s"),
    ({"seed": -1}, "seed must be an integer in [0, "),
    ({"base_precision": "int8"}, "base_precision 'int8' is unknown"),
    ({"checkpoint_every": -2}, "checkpoint_every must be an integer from 0 to 1000000 (got -2)"),
    ({"validate_every": 10**30}, "validate_every must be an integer from 0 to 1000000 (got 10000"),
    ({"include": ["transformer.layers.[0-999999]"]}, "include must be a layer-name rule expanding to at most 10,000 "
                                                     "names (got 'transformer.layers.[0-999999]', 1,000,000 names)"),
    ({"exclude": ["[0-999999].[0-999999]"]}, "1,000,000,000,000 names"),
    ({"include": ["layers.[3-"]}, "include must be a layer-name rule whose brackets are [a-b] ranges"),
    ({"exclude": ["x" * 10**6]}, "exclude must be a layer-name rule of at most 1,000 characters (got 1,000,000 "),
    ({"include": ["no_such_layer"]}, "no layer matches include=('no_such_layer',)"),
    ({"include": [""]}, "include must be a list of non-empty layer-name parts"),
    ({"exclude": [3]}, "exclude must be a list of non-empty layer-name parts"),
])
def test_bad_options_refused(model, data_dir, tmp_path, kw, message):
    out = tmp_path / "bad.safetensors"
    with pytest.raises(TrainingError) as e:
        train_lora(model, data_dir, out, opts(**kw))
    assert message in str(e.value)
    assert str(e.value).startswith("Stable Audio 3 training: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output, message", [
    ("nofolder/x.safetensors", "the folder of output"),
    ("x.ckpt", "must end in .safetensors"),
])
def test_bad_output_refused(model, data_dir, tmp_path, output, message):
    with pytest.raises(TrainingError, match=message):
        train_lora(model, data_dir, tmp_path / output, opts())


def _write(folder: Path, name: str, caption: str | None = "a tone", **sine):
    folder.mkdir(parents=True, exist_ok=True)
    _sine(folder / name, **{"freq": 220, "seconds": 1.0, **sine})
    if caption is not None:
        (folder / name).with_suffix(".txt").write_text(caption)


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist or is not a folder"),
    (lambda d: (d.mkdir(), (d / "notes.txt").write_text("x")), "holds no audio files (expected .wav, .flac"),
    (lambda d: _write(d, "a.wav", caption=None),
     "1 of 1 audio files have no caption (got 'a.wav', expected e.g. 'a.txt'"),
    (lambda d: _write(d, "a.wav", caption="  "), "is empty"),
    (lambda d: (d.mkdir(), (d / "a.wav").write_bytes(b"not audio at all"), (d / "a.txt").write_text("x")),
     "cannot be read"),
    (lambda d: _write(d, "a.wav", rate=4000), "has sample rate 4000 Hz (expected 8000..384000 Hz)"),
    (lambda d: _write(d, "a.wav", amp=0.0), "is silent (peak -inf dBFS, expected above -60 dBFS)"),
])
def test_bad_dataset_refused(model, tmp_path, setup, message):
    folder = tmp_path / "data"
    setup(folder)
    out = tmp_path / "x.safetensors"
    with pytest.raises(TrainingDataError) as e:
        train_lora(model, folder, out, opts(batch_size=1))
    assert message in str(e.value) and str(e.value).startswith("Stable Audio 3 training data: ")
    assert not out.exists()


def test_bad_resume_refused(model, data_dir, tmp_path):
    first = train_lora(model, data_dir, tmp_path / "first.safetensors", opts(steps=2)).path
    with pytest.raises(TrainingError, match="was trained with adapter_type 'dora-rows', but this run asks for 'lora'"):
        train_lora(model, data_dir, tmp_path / "x.safetensors", opts(adapter_type="lora"), resume_from=first)
    with pytest.raises(TrainingError, match="already holds 2 steps"):
        train_lora(model, data_dir, tmp_path / "x.safetensors", opts(steps=2), resume_from=first)
    with pytest.raises(TrainingError, match="does not exist"):
        train_lora(model, data_dir, tmp_path / "x.safetensors", opts(), resume_from=tmp_path / "nope.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def _nan_copy(path: Path, out: Path) -> Path:
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(out), metadata=meta)
    return out


def _wider_copy(path: Path, out: Path) -> Path:
    """The same rank and rules, one tensor of another layer width (a LoRA of another model)."""
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = next(k for k in sorted(tensors) if k.endswith("lora_B"))
    tensors[key] = torch.zeros(tensors[key].shape[0] + 3, tensors[key].shape[1])
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("make, message", [
    (lambda first, d: (d / "junk.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{garbage}") and
     d / "junk.safetensors", "resume_from '{d}/junk.safetensors' cannot be used (the safetensors file cannot be read"),
    (lambda first, d: _nan_copy(first, d / "nan.safetensors"),
     "resume_from '{d}/nan.safetensors' must hold finite numbers (got NaN or infinity in 1 tensor(s)"),
    (lambda first, d: _wider_copy(first, d / "wide.safetensors"), "must have shape"),
])
def test_unusable_resume_file_refused_naming_it(model, data_dir, tmp_path, make, message):
    first = train_lora(model, data_dir, tmp_path / "first.safetensors", opts(steps=2)).path
    first.with_name("first.sa3state").unlink()  # resume from the weights (a file trained elsewhere)
    bad = make(first, tmp_path)
    with pytest.raises(TrainingError) as e:
        train_lora(model, data_dir, tmp_path / "x.safetensors", opts(steps=4), resume_from=bad)
    assert message.replace("{d}", str(tmp_path)) in str(e.value)
    assert not (tmp_path / "x.safetensors").exists()


def test_model_with_lora_refused(model, data_dir, tmp_path):
    first = train_lora(model, data_dir, tmp_path / "first.safetensors", opts(steps=1)).path
    model.load_lora(first)
    try:
        with pytest.raises(TrainingError, match="the model has 1 LoRA"):
            train_lora(model, data_dir, tmp_path / "x.safetensors", opts())
    finally:
        model.unload_lora()


def test_cli_train(data_dir, tmp_path, capsys):
    from sa3.cli import main
    from tests.conftest import require_fixtures

    out = tmp_path / "cli.safetensors"
    args = ["train", "--model", str(require_fixtures() / TINY), "--data-dir", str(data_dir), "-o", str(out),
            "--steps", "2", "--rank", "4", "--clip-seconds", "2", "--validate-every", "2",
            "--svd-bases-path", str(require_fixtures() / "loras" / TINY / "svd_bases.safetensors"),
            "--adapter-type", "lora-xs"]
    assert main(args) == 0 and out.is_file()
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "step,loss,validation_loss" and rows[1].endswith(",") and not rows[2].endswith(",")
    assert main([*args, "--svd-bases-path", str(tmp_path / "none.pt")]) == 2
    assert "svd_bases_path" in capsys.readouterr().err
    official = tmp_path / "official.safetensors"
    assert main([*args[:5], "-o", str(official), "--official-defaults", "--steps", "2", "--rank", "4",
                 "--demo-every", "2", "--demo-prompt", "a tone", "--demo-seconds", "1", "--demo-steps", "1"]) == 0
    assert (tmp_path / "official_demo_2.flac").is_file()
    assert [r.split(",")[0] for r in official.with_suffix(".csv").read_text().splitlines()] == ["step", "1", "2"]
    assert main([*args[:-2], "--rank", "0"]) == 2
    assert "rank must be an integer in 1..1024 (got 0)" in capsys.readouterr().err


def test_cli_checks_data_and_output_before_loading_the_model(tmp_path, capsys):
    """The model name is bad too: the folder's message shows it was checked first."""
    from sa3.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.wav").touch()  # no caption
    base = ["train", "--model", "no-such-model", "-o", str(tmp_path / "x.safetensors")]
    assert main([*base, "--data-dir", str(tmp_path / "missing")]) == 2
    assert "folder '" in (err := capsys.readouterr().err) and "does not exist or is not a folder" in err
    assert main([*base, "--data-dir", str(tmp_path / "data")]) == 2
    assert "1 of 1 audio files have no caption" in capsys.readouterr().err
    _write(tmp_path / "good", "a.wav")
    assert main([*base[:-1], str(tmp_path / "x.ckpt"), "--data-dir", str(tmp_path / "good")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err
