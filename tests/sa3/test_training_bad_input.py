"""Bad training data and layer-name rules, refused by the library before anything large is read,
decoded or expanded (issue #24): each case names the file or input, the rule and the value."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sa3 import lora, lora_files, training_data
from sa3.lora_files import LoRALoadError, expand_brackets, read_lora_file
from sa3.training_data import TrainingDataError, find_clips, load_clip, load_training_folder


def _clip(path: Path, seconds: float = 0.5, rate: int = 44100, caption: str | None = "a tone") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def _sparse_wav(path: Path, seconds: float, rate: int = 44100) -> Path:
    """A 16-bit stereo WAV whose header claims ``seconds`` (the data is a sparse file of zeros)."""
    data = int(seconds * rate) * 4
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 2, rate,
                                                                                  rate * 4, 4, 16)
    path.write_bytes(header + b"data" + struct.pack("<I", data))
    os.truncate(path, 44 + data)
    return path


def _refused_quickly(call, error: type, prefix: str, message: str, seconds: float = 5) -> None:
    """``call`` raises ``error`` starting with ``prefix`` and holding ``message``, within ``seconds``."""
    start = time.perf_counter()
    with pytest.raises(error) as e:
        call()
    assert time.perf_counter() - start < seconds
    assert message in str(e.value) and str(e.value).startswith(prefix)


def _no_decoding(monkeypatch):
    def refuse(path):
        raise AssertionError(f"{path} was decoded")
    monkeypatch.setattr(training_data, "_read", refuse)


# --- folders and captions -----------------------------------------------------------------------


def _huge_caption(d: Path):
    _clip(d / "a.wav")
    with open(d / "a.txt", "wb") as f:
        f.truncate(2_000_000_000)  # sparse: nothing is written, reading it would take 2 GB


def _linked_clip(d: Path):
    outside = _clip(d.parent / "outside" / "secret.wav")
    d.mkdir()
    (d / "a.wav").symlink_to(outside)
    (d / "a.txt").write_text("a tone")


def _linked_caption(d: Path):
    _clip(d / "a.wav", caption=None)
    (d.parent / "secret.txt").write_text("private notes")
    (d / "a.txt").symlink_to(d.parent / "secret.txt")


@pytest.mark.parametrize("setup, message", [
    (_huge_caption, "a.txt' must be at most 100,000 characters (got 2,000,000,000 bytes)"),
    (lambda d: (_clip(d / "a.wav"), (d / "a.txt").write_text("x" * 150_000)),
     "a.txt' must be at most 100,000 characters (got 150,000)"),
    (lambda d: (_clip(d / "a.wav"), (d / "a.txt").write_bytes(b"\xff\xfe caf\xe9")), "a.txt' cannot be read"),
    (_linked_clip, "a.wav' links outside the folder"),
    (_linked_caption, "a.txt' links outside the folder"),
])
def test_bad_folder_contents_refused_before_reading_them(tmp_path, setup, message):
    folder = tmp_path / "data"
    setup(folder)
    _refused_quickly(lambda: find_clips(folder), TrainingDataError, "Stable Audio 3 training data: ", message)


def test_filesystem_root_refused():
    with pytest.raises(TrainingDataError, match="folder '/' is the filesystem root"):
        find_clips("/")


def test_very_many_files_refused_after_a_bounded_walk(tmp_path, monkeypatch):
    monkeypatch.setattr(training_data, "MAX_FOLDER_ENTRIES", 50)
    for i in range(60):
        (tmp_path / f"{i}.txt").touch()
    with pytest.raises(TrainingDataError, match="holds more than 50 files and folders"):
        find_clips(tmp_path)


def test_many_audio_files_stop_the_walk(tmp_path, monkeypatch):
    """20,000 empty 'clips': refused by count, never opened."""
    _no_decoding(monkeypatch)
    for i in range(20_000):
        (tmp_path / f"{i:05d}.wav").touch()
    with pytest.raises(TrainingDataError, match="holds more than 10000 audio files"):
        find_clips(tmp_path)


def test_linked_folder_outside_is_not_entered(tmp_path):
    _clip(tmp_path / "outside" / "a.wav")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sub").symlink_to(tmp_path / "outside")
    with pytest.raises(TrainingDataError, match="holds no audio files"):
        find_clips(tmp_path / "data")


# --- clips: checked from the header before decoding ---------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda d: _sparse_wav(d / "long.wav", 6 * 3600), "long.wav' is 21600.0 s long (at most 380 s)"),
    (lambda d: _sparse_wav(d / "empty.wav", 0), "empty.wav' holds no samples (got 0 frames)"),
    (lambda d: _sparse_wav(d / "slow.wav", 10, rate=100), "slow.wav' has sample rate 100 Hz (expected 8000..384000"),
])
def test_bad_clip_refused_from_its_header(tmp_path, monkeypatch, make, message):
    path = make(tmp_path)
    _no_decoding(monkeypatch)
    with pytest.raises(TrainingDataError) as e:
        load_clip(path, "a tone")
    assert message in str(e.value)


def test_too_much_audio_refused_before_decoding_any(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(40):  # 40 x 380 s > 4 h
        _sparse_wav(folder / f"{i:02d}.wav", 380).with_suffix(".txt").write_text("a tone")
    _no_decoding(monkeypatch)
    with pytest.raises(TrainingDataError, match="holds more than 4 h of audio"):
        load_training_folder(folder)


def test_non_finite_samples_refused(tmp_path):
    path = tmp_path / "nan.wav"
    soundfile.write(path, np.full((4410, 2), np.nan, dtype=np.float32), 44100, subtype="FLOAT")
    with pytest.raises(TrainingDataError, match=r"nan\.wav' contains NaN or infinite samples"):
        load_clip(path, "a tone")


def test_good_folder_after_bad_ones_reads_the_same(tmp_path):
    good = tmp_path / "good"
    _clip(good / "a.wav")
    first = load_training_folder(good)
    _huge_caption(tmp_path / "bad")
    with pytest.raises(TrainingDataError):
        load_training_folder(tmp_path / "bad")
    again = load_training_folder(good)
    assert [c.caption for c in again] == [c.caption for c in first]
    assert all(a.audio.equal(b.audio) for a, b in zip(first, again, strict=True))


# --- layer-name rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, message", [
    ("layers.[0-999999]", "pattern must be a layer-name rule expanding to at most 10,000 names (got "
                          "'layers.[0-999999]', 1,000,000 names)"),
    ("[0-999999].[0-999999].[0-999999]", "1,000,000,000,000,000,000 names"),
    ("a" * 5000, "pattern must be a layer-name rule of at most 1,000 characters (got 5,000 characters)"),
])
def test_expansion_bounded_before_expanding(pattern, message):
    _refused_quickly(lambda: expand_brackets(pattern), ValueError, "Stable Audio 3: ", message)


def test_expansion_within_the_bound_is_unchanged():
    assert len(expand_brackets("layers.[0-9999]")) == lora_files.MAX_RULE_NAMES
    assert expand_brackets("a[2-1]b[0-1]") == ["a2b0", "a2b1", "a1b0", "a1b1"]


@pytest.mark.parametrize("layer_filter, message", [
    ("cross_attn, transformer.layers.[0-999999]", "layer_filter must be a layer-name rule expanding to at most "
                                                  "10,000 names"),
    ("layers.[1", "layer_filter must be a layer-name rule whose brackets are [a-b] ranges of whole numbers (got "
                  "'layers.[1')"),
])
def test_layer_filter_checked(layer_filter, message):
    with pytest.raises(ValueError) as e:
        lora._check_options(None, layer_filter)
    assert message in str(e.value) and str(e.value).startswith("Stable Audio 3 LoRA: ")


def test_lora_file_with_a_huge_rule_refused_when_read(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    path = tmp_path / "huge_rule.safetensors"
    config = {"rank": 1, "alpha": 1, "adapter_type": "lora", "include": ["[0-999999].[0-999999]"], "exclude": None}
    key = "dit.transformer.layers.0.self_attn.to_qkv.parametrizations.weight.0."
    save_file({key + "lora_A": torch.zeros(1, 4), key + "lora_B": torch.zeros(4, 1)}, str(path),
              metadata={"lora_config": json.dumps(config)})
    with pytest.raises(LoRALoadError, match=r"lora_config\['include'\] must be a layer-name rule expanding to at most"):
        read_lora_file(path)
