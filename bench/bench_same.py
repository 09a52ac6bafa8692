"""SAME decode: peak memory and time versus duration, chunked and unchunked, on CPU.

    python bench/bench_same.py [--variant medium] [--durations 30 120 380] [--threads 2]

Builds a random full-size SAME (SAME-L for ``medium``, SAME-S for ``small-music``) in memory
(``bench/_random_model.py``) and decodes random latents of the length ``generate()`` uses for each
duration (duration + 6 s headroom, aligned to 8192 samples, capped at the config's sample_size).
Memory is the peak RSS during the decode minus the RSS just before it (the weights and runtime),
so it shows what the decode itself allocates: linear in length with the windowed attention
(query chunks over a key halo, never an N x N mask), not quadratic.
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample_size = official_config(args.variant)["sample_size"]
    same = random_same(args.variant)
    monitor = StageMonitor(interval=0.005)
    rows = [("mode", "duration_s", "latents", "tokens", "time_s", "peak_extra_GB", "extra_MB_per_latent")]
    with torch.no_grad():
        same.decode(torch.randn(1, 256, 8), chunked=False, generator=torch.Generator().manual_seed(0))  # warm-up
        for mode in args.modes:
            for d in args.durations:
                n = latents_for(d, sample_size)
                z = torch.randn(1, 256, n, generator=torch.Generator().manual_seed(1))
                gc.collect()
                base = rss_bytes()
                monitor.reset()
                monitor.stage("decode")
                t0 = time.perf_counter()
                audio = same.decode(z, chunked=mode == "chunked", generator=torch.Generator().manual_seed(2))
                elapsed = time.perf_counter() - t0
                monitor.stage(None)
                extra = monitor.peak["decode"] - base
                rows.append((mode, f"{d:g}", n, n * 17, f"{elapsed:.1f}", f"{extra / 1e9:.2f}",
                             f"{extra / 1e6 / n:.2f}"))
                print(fmt_table(rows[:1] + rows[-1:]), flush=True)
                del audio, z
    monitor.close()
    print(f"SAME decode ({args.variant}), random full-size weights, fp32, CPU, threads {torch.get_num_threads()}")
    print(fmt_table(rows))


if __name__ == "__main__":
    main()
