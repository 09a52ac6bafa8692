"""The encoded-dataset cache: later runs and resumes reuse a folder's encoding while the clips,
the model and the encoding options are the same, and encode afresh when any changes."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch

from sa3 import training_data
from sa3.training import train_lora
from tests.conftest import load_model, require_fixtures
from tests.sa3.test_training import TINY, make_dataset, opts


@pytest.fixture
def counted(monkeypatch):
    """Counts the encodings the cached path runs."""
    calls = []
    real = training_data.encode_dataset

    def encode(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(training_data, "encode_dataset", encode)
    return calls


def test_second_run_reuses_the_encoding(counted, tmp_path):
    model = load_model(TINY)
    clips, cache = make_dataset(tmp_path / "clips"), tmp_path / "cache"
    first = train_lora(model, clips, tmp_path / "a.safetensors", opts(steps=2), cache_dir=cache)
    (entry,) = cache.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["dataset.json", "latents.safetensors"]
    assert len(counted) == 1
    second = train_lora(model, clips, tmp_path / "b.safetensors", opts(steps=2), cache_dir=cache)
    assert len(counted) == 1  # nothing encoded again
    assert second.path.read_bytes() == first.path.read_bytes()
    uncached = train_lora(model, clips, tmp_path / "c.safetensors", opts(steps=2))
    assert uncached.path.read_bytes() == first.path.read_bytes()  # the cache changes nothing
    resumed = train_lora(model, clips, tmp_path / "b.safetensors", opts(steps=3), cache_dir=cache,
                         resume_from=second.path)
    assert resumed.steps_done == 3 and len(counted) == 1  # the resume did not encode either


@pytest.mark.parametrize("change", ["audio", "caption", "seed", "clip_seconds"])
def test_any_change_encodes_afresh(change, counted, tmp_path):
    model = load_model(TINY)
    clips, cache = make_dataset(tmp_path / "clips"), tmp_path / "cache"
    train_lora(model, clips, tmp_path / "a.safetensors", opts(steps=1), cache_dir=cache)
    kw = {}
    if change == "audio":
        shutil.copy(clips / "clip1.wav", clips / "clip0.wav")
        os.utime(clips / "clip0.wav", ns=(1, 1))
    elif change == "caption":
        (clips / "clip0.txt").write_text("another prompt")
    else:
        kw = {"seed": 8} if change == "seed" else {"clip_seconds": 1.5}
    train_lora(model, clips, tmp_path / "b.safetensors", opts(steps=1, **kw), cache_dir=cache)
    assert len(counted) == 2 and len(list(cache.iterdir())) == 2


def test_cli_pre_encode_only_then_train(counted, tmp_path):
    from sa3.cli import main

    clips, cache = make_dataset(tmp_path / "clips"), tmp_path / "cache"
    base = ["train", "--model", str(require_fixtures() / TINY), "--data-dir", str(clips), "--steps", "1",
            "--rank", "4", "--clip-seconds", "2", "--encoded-dir", str(cache)]
    assert main([*base, "--pre-encode-only"]) == 0 and len(counted) == 1 and len(list(cache.iterdir())) == 1
    assert main([*base, "-o", str(tmp_path / "l.safetensors")]) == 0 and len(counted) == 1
    assert (tmp_path / "l.safetensors").is_file()
    assert main(["train", "--model", "x", "--data-dir", str(clips), "--pre-encode-only"]) == 2


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=oct)
def test_a_cache_entry_gets_the_usual_mode(tmp_path, umask):
    """The entry folder and its files get the mode any new one gets (0777 / 0666 less the umask),
    and writing them leaves the process's umask as it was (other threads write files too)."""
    data = training_data.EncodedDataset(
        clips=[training_data.EncodedClip(name="a.wav", latents=torch.zeros(4, 3), prompt=torch.zeros(2, 5),
                                         seconds_total=1)],
        silence=torch.zeros(4, 2))
    old = os.umask(umask)
    try:
        entry = training_data.save_cached(data, tmp_path / "cache" / "key")
        assert os.umask(umask) == umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in entry.iterdir()} == {0o666 & ~umask}
    assert torch.equal(training_data.load_cached(entry).clips[0].latents, data.clips[0].latents)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["key"]  # no temporary left beside it
