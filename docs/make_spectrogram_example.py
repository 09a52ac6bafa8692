"""Render docs/spectrogram_example.png with nodes/pictures.py from a synthetic signal.

0-4 s: a rising chirp (100 Hz -> 8 kHz) with its 2nd harmonic; 4-8 s: a 1 kHz tone with a 3 kHz
overtone and a soft noise bed; 8-10 s: silence. 5-6.5 s is shaded as an inpainted region.
Run from the repository root: ``python docs/make_spectrogram_example.py``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import file_module

pictures = file_module.load("nodes/pictures.py")  # the node layer's drawing, outside ComfyUI
render_spectrogram, save_png = pictures.render_spectrogram, pictures.save_png

SR = 44100


def signal(seconds: float = 10.0) -> torch.Tensor:
    """(2, S) stereo test signal; float64 phases keep the chirp clean."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f0, f1, span = 100.0, 8000.0, 4.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) / (2 * span) * t**2)
    chirp = (0.3 * torch.sin(phase) + 0.08 * torch.sin(2 * phase)) * (t < span)
    tone_part = (t >= 4) & (t < 8)
    tone = (0.4 * torch.sin(2 * math.pi * 1000 * t) + 0.1 * torch.sin(2 * math.pi * 3000 * t)) * tone_part
    noise = 0.01 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * tone_part
    mono = (chirp + tone + noise).float()
    return torch.stack([mono, mono * 0.8])


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "spectrogram_example.png"
    image = render_spectrogram(signal(), SR, regions=[(5.0, 6.5)], height=384, width=1024)
    save_png(image[0], out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
