"""SAME decode: peak memory and time versus duration, chunked and unchunked, on CPU.

    python bench/bench_same.py [--variant medium] [--durations 30 120 380] [--threads 2]
                               [--precisions fp32 bf16-mixed]

Builds a random full-size SAME (SAME-L for ``medium``, SAME-S for ``small-music``) in memory
(``bench/_random_model.py``) and decodes random latents of the length ``generate()`` uses for each
duration (duration + 6 s headroom, aligned to 8192 samples, capped at the config's sample_size).
Memory is the peak RSS during the decode minus the RSS just before it (the weights and runtime),
so it shows what the decode itself allocates: linear in length with the windowed attention
(query chunks over a key halo, never an N x N mask), not quadratic. With several
``--precisions`` each decode is repeated in each (same latents, same generator seed) and its
audio compared with the first precision's: relative L2 and max abs difference.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _random_model import official_config, random_same
from bench_generate import StageMonitor, fmt_table, rss_bytes

SR, PER_LATENT, ALIGN = 44100, 4096, 8192


def latents_for(duration: float, sample_size: int) -> int:
    n = math.ceil(int((duration + 6) * SR) / ALIGN) * ALIGN
    return min(n, sample_size // ALIGN * ALIGN) // PER_LATENT


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="medium", help="medium (SAME-L) or small-music (SAME-S)")
    parser.add_argument("--durations", type=float, nargs="+", default=[30, 120, 380])
    parser.add_argument("--modes", nargs="+", default=["chunked", "unchunked"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precisions", nargs="+", default=["fp32"], help="fp32, bf16-mixed, bf16, fp16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample_size = official_config(args.variant)["sample_size"]
    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    models = {}
    for p in args.precisions:  # each from the same fp32 random weights
        models[p] = random_same(args.variant).to_precision("cpu", names.get(p, p))
    monitor = StageMonitor(interval=0.005)
    rows = [("mode", "precision", "duration_s", "latents", "tokens", "time_s", "peak_extra_GB", "extra_MB_per_latent",
             f"rel_l2_vs_{args.precisions[0]}", "max_abs_diff")]
    with torch.inference_mode():
        for same in models.values():  # warm-up
            same.decode(torch.randn(1, 256, 8), chunked=False, generator=torch.Generator().manual_seed(0))
        for mode in args.modes:
            for d in args.durations:
                n = latents_for(d, sample_size)
                z = torch.randn(1, 256, n, generator=torch.Generator().manual_seed(1))
                ref = None
                for precision, same in models.items():
                    gc.collect()
                    base = rss_bytes()
                    monitor.reset()
                    monitor.stage("decode")
                    t0 = time.perf_counter()
                    audio = same.decode(z, chunked=mode == "chunked", generator=torch.Generator().manual_seed(2))
                    elapsed = time.perf_counter() - t0
                    monitor.stage(None)
                    extra = monitor.peak["decode"] - base
                    audio = audio.double()
                    if ref is None:
                        ref, dev = audio, ("", "")
                    else:
                        diff = audio - ref
                        dev = (f"{(diff.norm() / ref.norm()).item():.2e}", f"{diff.abs().max().item():.2e}")
                    rows.append((mode, precision, f"{d:g}", n, n * 17, f"{elapsed:.2f}", f"{extra / 1e9:.2f}",
                                 f"{extra / 1e6 / n:.2f}", *dev))
                    print(fmt_table(rows[:1] + rows[-1:]), flush=True)
                    del audio
                del z, ref
    monitor.close()
    print(f"SAME decode ({args.variant}), random full-size weights, CPU, threads {torch.get_num_threads()}")
    print(fmt_table(rows))


if __name__ == "__main__":
    main()
