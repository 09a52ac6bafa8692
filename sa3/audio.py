"""Audio plumbing: resampling (bit-compatible with torchaudio's default ``Resample``), channel
layout, pad/crop, and audio files through ``soundfile`` (libsndfile: WAV, FLAC, OGG, MP3).

The resampler is ours for a measured reason: the official code resamples with
``torchaudio.transforms.Resample``, and ours gives the same numbers bit for bit
(tests/sa3/test_audio.py; ``torchaudio.functional.resample`` does not), while ``sa3`` cannot
require torchaudio: its last release (2.11) pins torch 2.11, and there is none for newer torch.
The filter itself (its taps and size) is built in ``sa3.sinc``.

Legend: C channels, S samples.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.nn.functional as F

from .checks import check_resample, check_sample_rate
from .sinc import reduced_rates, sinc_kernel


def samples_needed(length: int, orig_sr: int, new_sr: int) -> int:
    """Input samples that determine the first ``length`` output samples of ``resample``: cropping the
    input to this many gives those outputs unchanged (bounded work for a long file)."""
    if orig_sr == new_sr:
        return length
    orig, new, width = reduced_rates(orig_sr, new_sr)
    return math.ceil(length / new) * orig + width + orig + 1


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (..., S) from ``orig_sr`` to ``new_sr``; same numbers as
    ``torchaudio.transforms.Resample(orig_sr, new_sr)`` in float32. Rate pairs whose filter would be
    huge (``sa3.checks.MAX_RESAMPLE_TAPS``) are refused before anything is allocated."""
    check_resample("audio", check_sample_rate("audio", orig_sr), check_sample_rate("target", new_sr))
    if orig_sr == new_sr:
        return audio
    orig, new, _ = reduced_rates(orig_sr, new_sr)
    kernel, width = sinc_kernel(orig, new)  # on the CPU: its float64 steps cannot run on MPS
    shape = audio.shape
    flat = audio.reshape(-1, shape[-1])  # (..., S) -> (C, S)
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(audio.device, audio.dtype), stride=orig)  # (C, new, frames)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)  # interleave phases -> (C, S')
    target = math.ceil(new * length / orig)
    return out[:, :target].reshape(*shape[:-1], -1)


def to_stereo(audio: torch.Tensor) -> torch.Tensor:
    """(B, C, S) with any C >= 1 -> (B, 2, S): mono is duplicated, extra channels dropped."""
    if audio.shape[1] == 1:
        return audio.repeat(1, 2, 1)
    return audio[:, :2]


def pad_crop(audio: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the first ``length`` samples of (..., S), zero-padding when shorter."""
    out = audio.new_zeros(*audio.shape[:-1], length)
    n = min(length, audio.shape[-1])
    out[..., :n] = audio[..., :n]
    return out


def as_channels_first(audio, name: str = "audio") -> torch.Tensor:
    """Accept a float tensor (C, S) or (S,), or a NumPy array (S, C) / (S,) as the official interface
    does (int16 / int32 scaled to [-1, 1]); returns float (C, S). ``name`` is the input in messages."""
    if isinstance(audio, np.ndarray):
        if audio.ndim not in (1, 2):
            raise ValueError(f"Stable Audio 3: {name} array must be (samples, channels) or (samples,) (got shape "
                             f"{audio.shape}).")
        if audio.dtype == np.int16:
            t = torch.from_numpy(audio.astype(np.float32) / 32767)
        elif audio.dtype == np.int32:
            t = torch.from_numpy(audio.astype(np.float32) / 2147483647)
        elif audio.dtype in (np.float32, np.float64):
            t = torch.from_numpy(audio.astype(np.float32))
        else:
            raise ValueError(f"Stable Audio 3: {name} must be float32, int16 or int32 audio (got NumPy dtype "
                             f"{audio.dtype}).")
        return t[None] if t.dim() == 1 else t.T  # (S, C) -> (C, S)
    if not torch.is_tensor(audio):
        raise ValueError(f"Stable Audio 3: {name} must be a torch.Tensor or numpy.ndarray (got "
                         f"{type(audio).__name__}).")
    if not audio.dtype.is_floating_point:
        raise ValueError(f"Stable Audio 3: {name} tensor must be floating point in [-1, 1] (got {audio.dtype}).")
    if audio.dim() == 1:
        return audio[None]
    if audio.dim() != 2:
        raise ValueError(f"Stable Audio 3: {name} tensor must be (channels, samples) (got shape "
                         f"{tuple(audio.shape)}).")
    return audio


def write_audio(path: str | Path, audio: torch.Tensor, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write (C, S) float audio in [-1, 1]; the format follows the file name (``.wav``, ``.flac``,
    ``.ogg``), ``subtype`` is libsndfile's sample format (``PCM_16``, ``PCM_24``, ``FLOAT``, ...)."""
    samples = audio.detach().float().clamp(-1, 1).T.contiguous().cpu().numpy()  # (C, S) -> (S, C)
    try:
        soundfile.write(str(path), samples, sample_rate, subtype=subtype)
    except (soundfile.LibsndfileError, TypeError, ValueError) as e:
        raise RuntimeError(f"Stable Audio 3: cannot write audio file {str(path)!r} ({e}).") from e


def read_audio(path: str | Path) -> tuple[int, torch.Tensor]:
    """Read an audio file (WAV of any PCM/float width, FLAC, OGG, MP3) as
    ``(sample_rate, (C, S) float32)``; integer samples are scaled to [-1, 1) by libsndfile."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"Stable Audio 3: audio file {str(path)!r} does not exist.")
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    except soundfile.LibsndfileError as e:
        raise RuntimeError(f"Stable Audio 3: cannot read audio file {str(path)!r} ({e}); "
                           "supported: WAV, FLAC, OGG, MP3.") from e
    return sample_rate, torch.from_numpy(np.ascontiguousarray(data.T))  # (S, C) -> (C, S)
