"""Audio files through soundfile (round trips per sample format, an independent WAV writer, clear
errors) and the resampler against torchaudio's ``Resample``, which the official code uses."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from sa3 import audio as audio_utils

SR = 44100


def _signal(channels: int = 2, samples: int = 4410) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(channels, samples, generator=g) * 2 - 1) * 0.9  # (C, S) in [-0.9, 0.9]


@pytest.mark.parametrize(("name", "subtype", "step"), [
    ("a.wav", "PCM_16", 2.0 ** -15), ("a.wav", "PCM_24", 2.0 ** -23), ("a.wav", "PCM_32", 2.0 ** -31),
    ("a.wav", "FLOAT", 0.0), ("a.flac", "PCM_16", 2.0 ** -15), ("a.flac", "PCM_24", 2.0 ** -23),
])
def test_round_trip(tmp_path, name, subtype, step):
    """What write_audio stores, read_audio gives back within one quantisation step (float: exactly)."""
    x = _signal()
    path = tmp_path / name
    audio_utils.write_audio(path, x, SR, subtype=subtype)
    assert soundfile.info(str(path)).subtype == subtype
    sr, y = audio_utils.read_audio(path)
    assert sr == SR and y.dtype == torch.float32 and y.shape == x.shape
    if step == 0.0:
        assert torch.equal(y, x)
    else:
        assert (y - x).abs().max().item() <= step


@pytest.mark.parametrize(("width", "dtype", "scale"), [(2, np.int16, 2 ** 15), (4, np.int32, 2 ** 31)])
def test_reads_integer_wav_exactly(tmp_path, width, dtype, scale):
    """A WAV from the standard library's writer: each integer sample reads as int / 2**(bits-1)."""
    ints = np.array([[0, 1], [-1, 7], [np.iinfo(dtype).max, np.iinfo(dtype).min], [12345, -12345]], dtype=dtype)
    path = tmp_path / "ints.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(width)
        f.setframerate(22050)
        f.writeframes(ints.tobytes())
    sr, y = audio_utils.read_audio(path)
    assert sr == 22050
    expected = torch.from_numpy(ints.T.astype(np.float64) / scale).float()  # (S, C) -> (C, S)
    assert torch.equal(y, expected)


def test_24_bit_samples_keep_their_sign(tmp_path):
    """24-bit PCM (the width the old reader unpacked by hand): negative values and full scale."""
    ints = np.array([[-(2 ** 23)], [2 ** 23 - 1], [-1], [1], [0]], dtype=np.int32) << 8  # 24-bit in int32
    path = tmp_path / "24.wav"
    soundfile.write(str(path), ints, SR, subtype="PCM_24")
    _, y = audio_utils.read_audio(path)
    assert torch.equal(y[0], torch.tensor([-1.0, (2 ** 23 - 1) / 2 ** 23, -(2.0 ** -23), 2.0 ** -23, 0.0]))


def test_mono_is_one_channel(tmp_path):
    path = tmp_path / "mono.flac"
    audio_utils.write_audio(path, _signal(channels=1), SR)
    _, y = audio_utils.read_audio(path)
    assert y.shape == (1, 4410)


def test_write_clamps_to_full_scale(tmp_path):
    path = tmp_path / "loud.wav"
    audio_utils.write_audio(path, torch.tensor([[2.0, -2.0, 0.5]]), SR)
    _, y = audio_utils.read_audio(path)
    assert torch.allclose(y, torch.tensor([[32767 / 32768, -32767 / 32768, 0.5]]), atol=2.0 ** -15)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(RuntimeError, match=r"audio file '.*missing\.wav' does not exist"):
        audio_utils.read_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(RuntimeError, match=r"cannot read audio file '.*bad\.wav' .*supported: WAV, FLAC"):
        audio_utils.read_audio(bad)
    with pytest.raises(RuntimeError, match=r"cannot write audio file '.*x\.unknown'"):
        audio_utils.write_audio(tmp_path / "x.unknown", _signal(), SR)


@pytest.mark.parametrize("orig", [8000, 16000, 22050, 32000, 48000, 96000])
def test_resampler_equals_torchaudio_resample_bit_for_bit(orig):
    """The reason the resampler is ours: the official encode resamples with
    torchaudio.transforms.Resample, and ours gives exactly its numbers without torchaudio."""
    x = _signal(samples=orig // 2)
    ours = audio_utils.resample(x, orig, SR)
    assert torch.equal(ours, torchaudio.transforms.Resample(orig, SR)(x))
