"""The windowed-sinc filter behind ``sa3.audio.resample``: its size and its taps.

Kept apart from ``audio`` so that ``checks`` can bound a rate pair's filter (``check_resample``)
while ``audio`` checks its inputs through ``checks``, with no import cycle between the two.

Legend: S samples.
"""

from __future__ import annotations

import math

import torch

LOWPASS_WIDTH = 6  # zero crossings of the windowed sinc (torchaudio default)
ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist (torchaudio default)


def sinc_kernel(orig: int, new: int, device=None) -> tuple[torch.Tensor, int]:
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


def reduced_rates(orig_sr: int, new_sr: int) -> tuple[int, int, int]:
    """(orig, new, width): the rates divided by their gcd and the filter's half width in input samples."""
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    return orig, new, math.ceil(LOWPASS_WIDTH * orig / (min(orig, new) * ROLLOFF))


def resample_taps(orig_sr: int, new_sr: int) -> int:
    """Size of the polyphase filter ``resample`` builds (new phases x taps); 0 when the rates match."""
    if orig_sr == new_sr:
        return 0
    orig, new, width = reduced_rates(orig_sr, new_sr)
    return new * (2 * width + orig)
