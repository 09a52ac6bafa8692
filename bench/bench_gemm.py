"""GEMM rates of the linear layers of a 30 s small-model generation, per route: what bounds the
fp32 and bf16 speed-ups on a given CPU.

    python bench/bench_gemm.py [--threads 2] [--weights 8]

Routes (``sa3.cpu_gemm``): fp32 ``F.linear`` (MKL, what the official code gets), fp32 oneDNN,
bf16 ``F.linear`` (ATen's bf16 GEMM), bf16 as the fp32 route's GEMM on upcast operands (what
CPUs without oneDNN bf16 take), bf16 oneDNN on the plain weight (reordered at every call) and on
the prepacked weight (``sa3.cpu_gemm.set_weight_packing``); a route this CPU cannot run prints
"n/a". The first line names the routes ``cpu_routes()`` chose here. Each shape cycles through
``--weights`` copies of the weight, so most calls read it from memory as a generation does (a
generation uses each weight once per step), instead of from the cache. Prints milliseconds per call and GFLOPS.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sa3 import cpu_gemm

# (rows, in, out): the DiT at 30 s (452 tokens) and SAME-S's decoder blocks (34-token chunks x 65)
SHAPES = {
    "DiT GLU in": (452, 1024, 8192),
    "DiT FF out": (452, 4096, 1024),
    "DiT qkv": (452, 1024, 3072),
    "DiT out / cross q": (452, 1024, 1024),
    "SAME qkv": (2210, 768, 3840),
    "SAME GLU in (512-row block)": (512, 768, 4608),
    "SAME FF out (512-row block)": (512, 2304, 768),
}


def _time(fn, weights, reps: int) -> float:
    for w in weights:
        fn(w)  # warm-up: primitives made, pages touched
    t0 = time.perf_counter()
    for _ in range(reps):
        for w in weights:
            fn(w)
    return (time.perf_counter() - t0) / (reps * len(weights))


def _cell(seconds: float, flops: int) -> str:
    return f"{seconds * 1e3:.2f} ms {flops / seconds / 1e9:.0f} GF"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--weights", type=int, default=8, help="weight copies cycled per shape")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    routes = cpu_gemm.cpu_routes()
    onednn, reorder = cpu_gemm.onednn_linear_op(), cpu_gemm.onednn_reorder_op()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.weights} weight copies per shape")
    print(routes.describe())
    header = ("shape", "rows x in x out", "fp32 F.linear", "fp32 oneDNN", "bf16 F.linear", "bf16 upcast",
              "bf16 oneDNN", "bf16 packed")
    rows = [header]
    with torch.inference_mode():
        for name, (m, k, n) in SHAPES.items():
            flops = 2 * m * k * n
            g = torch.Generator().manual_seed(0)
            x32 = torch.randn(m, k, generator=g)
            w32 = [torch.randn(n, k, generator=g) * k ** -0.5 for _ in range(args.weights)]
            x16, w16 = x32.bfloat16(), [w.bfloat16() for w in w32]
            packed = [reorder(w) for w in w16] if routes.packed_bf16 else None
            timed = (
                (True, lambda w, x=x32: F.linear(x, w), w32),
                (routes.onednn_fp32, lambda w, x=x32: cpu_gemm.onednn_call(onednn, x, w, None), w32),
                (True, lambda w, x=x16: F.linear(x, w), w16),
                (True, lambda w, x=x16: cpu_gemm.upcast_linear(x, w, None, cpu_gemm._fp32_linear), w16),
                (routes.onednn_bf16, lambda w, x=x16: cpu_gemm.onednn_call(onednn, x, w, None), w16),
                (routes.packed_bf16, lambda w, x=x16: cpu_gemm.onednn_call(onednn, x, w, None), packed),
            )
            cells = [_cell(_time(fn, ws, args.reps), flops) if runs else "n/a" for runs, fn, ws in timed]
            rows.append((name, f"{m}x{k}x{n}", *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
