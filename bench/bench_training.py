"""Time LoRA training (``sa3.training.train_lora``): loading, the one-off encoding of the clips, and
the cost of one optimizer step, with peak memory.

    python bench/bench_training.py [--model tiny-small | small-music | <folder>] [--clips 4]
        [--clip-seconds 10] [--steps 5] [--batch 1] [--adapter dora-rows] [--rank 16]
        [--base-precision fp32] [--threads N] [--device cpu]

``tiny-small`` is the fixture model; ``small-music`` / ``medium`` build (once, under /tmp) a
full-size folder with random weights (``_random_model.py``), so the timings are those of the
real models while the sound is noise. The clips are synthetic tones of ``--clip-seconds`` each.
Reported: seconds per step (median after the first, which warms up the allocator), the encoding
time, and the process's peak resident memory (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import itertools
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._random_model import SHARED, random_model_dir  # noqa: E402
from sa3 import StableAudioModel  # noqa: E402
from sa3.audio import write_audio  # noqa: E402
from sa3.training import LoRATrainingOptions, train_lora  # noqa: E402
from sa3.training_data import encode_dataset, load_training_folder  # noqa: E402


def _folder(name: str) -> Path:
    if name in ("small-music", "medium"):
        return random_model_dir(name)
    fixture = SHARED / "fixtures" / name
    return fixture if fixture.is_dir() else Path(name)


def _clips(folder: Path, n: int, seconds: float) -> None:
    for i in range(n):
        t = torch.arange(int(seconds * 44100)) / 44100
        tone = 0.3 * torch.sin(2 * math.pi * (110 * (i + 2)) * t) * (1 + 0.5 * torch.sin(2 * math.pi * 2 * t))
        write_audio(folder / f"clip{i}.wav", tone[None].repeat(2, 1), 44100)
        (folder / f"clip{i}.txt").write_text(f"a synthetic tone number {i}")


@torch.no_grad()
def _inference_forward(model, options: LoRATrainingOptions, batch: int) -> float:
    """Median time of a no-grad DiT forward on a (batch, C, crop) input: the sampler's unit of cost."""
    from sa3.dit import DiTConditioning

    cfg, crop = model.config, options.crop_latents()
    device = next(model.dit.parameters()).device
    x = torch.randn(batch, cfg.latent_channels, crop, device=device)
    cond = DiTConditioning(cross=torch.randn(batch, 257, cfg.cond_dim, device=device),
                           global_cond=torch.randn(batch, cfg.cond_dim, device=device),
                           local=torch.zeros(batch, 1 + cfg.latent_channels, crop, device=device),
                           padding_mask=torch.ones(batch, crop, dtype=torch.bool, device=device))
    cache = model.dit.prepare(cond)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.dit(x, torch.full((batch,), 0.5, device=device), cond, cache=cache)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-small")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--adapter", default="dora-rows")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--base-precision", default="fp32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = StableAudioModel.from_pretrained(_folder(args.model), device=args.device, dtype="fp32")
    load = time.perf_counter() - t0
    options = LoRATrainingOptions(adapter_type=args.adapter, rank=args.rank, steps=args.steps, batch_size=args.batch,
                                  clip_seconds=args.clip_seconds, base_precision=args.base_precision)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "clips"
        data_dir.mkdir()
        _clips(data_dir, args.clips, args.clip_seconds)
        t0 = time.perf_counter()
        data = encode_dataset(model, load_training_folder(data_dir), options.crop_latents(), None)
        encode = time.perf_counter() - t0
        stamps = [time.perf_counter()]
        result = train_lora(model, data, Path(tmp) / "bench.safetensors", options,
                            on_step=lambda *_: stamps.append(time.perf_counter()))
        steps = [b - a for a, b in itertools.pairwise(stamps)]
        size = result.path.stat().st_size
    per_step = statistics.median(steps[1:]) if len(steps) > 1 else steps[0]
    forward = _inference_forward(model, options, args.batch)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"model {args.model} on {args.device}, {torch.get_num_threads()} thread(s); {args.adapter} rank {args.rank}, "
          f"base {args.base_precision}, batch {args.batch}, clips {args.clips} x {args.clip_seconds:g} s")
    print(f"load {load:.1f} s, encode {encode:.1f} s, first step {steps[0]:.2f} s, "
          f"step {per_step:.2f} s (median of {max(1, len(steps) - 1)}), file {size / 2**20:.1f} MiB, "
          f"peak RSS {peak_gb:.1f} GiB, losses {[round(x, 3) for x in result.losses]}")
    print(f"one inference DiT call on the same batch {forward:.2f} s: a training step costs {per_step / forward:.1f} "
          "of them (a yardstick that holds on a busy machine)")


if __name__ == "__main__":
    main()
