"""Audio plumbing: resampling (bit-compatible with torchaudio's default ``Resample``), channel
layout, pad/crop, and WAV files through the standard library.

Legend: C channels, S samples.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

LOWPASS_WIDTH = 6  # zero crossings of the windowed sinc (torchaudio default)
ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist (torchaudio default)


def _sinc_kernel(orig: int, new: int, device=None) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc polyphase kernel (new, 1, taps) for reduced rates ``orig -> new``."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_WIDTH * orig / base)
    # float64 taps positions, float32 phases, float64 product: the arithmetic torchaudio uses
    idx = torch.arange(-width, width + orig, dtype=torch.float64, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, device=device)[:, None, None] / new + idx
    t = (t * base).clamp(-LOWPASS_WIDTH, LOWPASS_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_WIDTH / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernel = kernel * (window * (base / orig))
    return kernel.to(torch.float32), width


def resample(audio: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (..., S) from ``orig_sr`` to ``new_sr``; same numbers as
    ``torchaudio.transforms.Resample(orig_sr, new_sr)`` in float32."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"Stable Audio 3: sample rates must be positive (got {orig_sr} -> {new_sr}).")
    if orig_sr == new_sr:
        return audio
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, width = _sinc_kernel(orig, new, audio.device)
    shape = audio.shape
    flat = audio.reshape(-1, shape[-1])  # (..., S) -> (C, S)
    length = flat.shape[-1]
    padded = F.pad(flat, (width, width + orig))
    out = F.conv1d(padded[:, None], kernel.to(audio.dtype), stride=orig)  # (C, new, frames)
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


def as_channels_first(audio) -> torch.Tensor:
    """Accept a tensor (C, S) or (S,), or a NumPy array (S, C) / (S,) as the official interface
    does (int16 / int32 scaled to [-1, 1]); returns float (C, S)."""
    if isinstance(audio, np.ndarray):
        if audio.dtype == np.int16:
            t = torch.from_numpy(audio.astype(np.float32) / 32767)
        elif audio.dtype == np.int32:
            t = torch.from_numpy(audio.astype(np.float32) / 2147483647)
        elif audio.dtype in (np.float32, np.float64):
            t = torch.from_numpy(audio.astype(np.float32))
        else:
            raise ValueError(f"Stable Audio 3: unsupported NumPy audio dtype {audio.dtype} "
                             "(use float32, int16 or int32).")
        return t[None] if t.dim() == 1 else t.T  # (S, C) -> (C, S)
    if not torch.is_tensor(audio):
        raise ValueError(f"Stable Audio 3: audio must be a torch.Tensor or numpy.ndarray, got {type(audio).__name__}.")
    if audio.dim() == 1:
        return audio[None]
    if audio.dim() != 2:
        raise ValueError(f"Stable Audio 3: audio tensor must be (channels, samples), got shape {tuple(audio.shape)}.")
    return audio


def write_wav(path: str | Path, audio: torch.Tensor, sample_rate: int) -> None:
    """Write (C, S) float audio in [-1, 1] as 16-bit PCM."""
    pcm = (audio.detach().float().clamp(-1, 1) * 32767).round().to(torch.int16).T.contiguous().cpu().numpy()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(audio.shape[0])
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[int, torch.Tensor]:
    """Read a PCM WAV file (8/16/24/32-bit) as ``(sample_rate, (C, S) float32)``. Other formats
    are read through torchaudio when it is installed."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"Stable Audio 3: audio file {str(path)!r} does not exist.")
    try:
        with wave.open(str(path), "rb") as f:
            sr, channels, width = f.getframerate(), f.getnchannels(), f.getsampwidth()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError):
        try:
            import torchaudio
        except ImportError as e:
            raise RuntimeError(f"Stable Audio 3: {str(path)!r} is not a PCM WAV file; "
                               "install torchaudio to read it.") from e
        audio, sr = torchaudio.load(str(path))
        return sr, audio
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        ints = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        data = ((ints << 8) >> 8).astype(np.float32) / 8388608
    else:
        dtype, scale = {1: (np.uint8, 128), 2: (np.int16, 32768), 4: (np.int32, 2147483648)}[width]
        data = np.frombuffer(raw, dtype=dtype).astype(np.float32)
        data = (data - 128) / scale if width == 1 else data / scale
    return sr, torch.from_numpy(data.reshape(-1, channels).T.copy())
