"""Cost of one live sampler preview (nodes/visualize.py): SAME decode of the first N seconds of a
denoised estimate + spectrogram render, on full-size random-weight SAME-S (small models) and
SAME-L (medium models) built from the official configs in the spec.

    python bench/bench_preview.py [--device cuda] [--seconds 3 6 10] [--configs ../shared/spec/configs]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import file_module

from sa3.same import SAMEAutoencoder, SAMEConfig

pictures = file_module.load("nodes/pictures.py")  # the node layer's drawing, outside ComfyUI
SpectrogramOptions, preview_from_latents, render_spectrogram = (
    pictures.SpectrogramOptions, pictures.preview_from_latents, pictures.render_spectrogram)

PREVIEW = SpectrogramOptions(height=256, width=768, waveform=False)  # as nodes/visualize.py


def timed(fn, device: str, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 6.0])
    parser.add_argument("--configs", default=str(Path(__file__).resolve().parents[2] / "shared" / "spec" / "configs"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"device {args.device}, {torch.get_num_threads()} CPU threads")
    audio = torch.randn(1, 2, 6 * 44100) * 0.1
    print(f"render only (6 s, 768x256): {timed(lambda: render_spectrogram(audio, 44100, PREVIEW), 'cpu'):.3f} s")
    for name, family in (("small-music", "SAME-S"), ("medium", "SAME-L")):
        cfg = json.loads((Path(args.configs) / f"{name}.reconstructed_model_config.json").read_text())
        same = SAMEAutoencoder(SAMEConfig.from_official(cfg["model"]["pretransform"])).to(args.device).eval()
        latents = torch.randn(1, same.config.latent_dim, 362, device=args.device)  # a 30 s generation
        for seconds in args.seconds:
            cost = timed(partial(preview_from_latents, same, latents, seconds=seconds, options=PREVIEW), args.device)
            print(f"{family} ({name}): preview of {seconds:g} s = {cost:.3f} s")


if __name__ == "__main__":
    main()
