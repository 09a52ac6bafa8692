"""How much a set of weights amplifies fp32 rounding: the same generation under perturbations
that only change the order of floating-point sums, ours and the official side by side.

    SA3_OFFICIAL_PATH=/path/to/stable-audio-3 python bench/rounding_sensitivity.py --model DIR [--duration 5]

Runs (fp32, 8 steps, seed 0, ``padding_mode="reference"``): ours with 2 threads (the baseline),
ours with 1 thread (GEMM/reduction split changes), ours with MKL linears (``F.linear``, as the
official code) and, with ``SA3_OFFICIAL_PATH``, the official code with 2 and 1 threads. Printed:
relative L2 of each run's latents and audio against ours at 2 threads, and official 1 vs 2
threads. If ours-vs-official sits at the level of the official code's own thread-count change,
the difference between implementations is rounding, amplified by these weights, not a defect.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import PROMPT, StageMonitor, fmt_table, load_ours, wrap
from compare_reference import import_official, latents_rel_l2, load_official, rel_l2


def generate(model, monitor: StageMonitor, duration: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio, latents) of one generation; the latents are what the decoder received."""
    audio = model.generate(prompt=PROMPT, duration=duration, steps=steps, seed=0)
    return audio.float(), monitor.decoded.float()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    model_dir = Path(args.model)
    monitor = StageMonitor()
    from sa3.cpu_gemm import set_onednn_linear

    runs = {}
    ours, _, _ = load_ours(model_dir, "fp32", monitor, padding_mode="reference", attention="sdpa")
    for label, threads, onednn in (("ours, 2 threads", 2, True), ("ours, 1 thread", 1, True),
                                   ("ours, MKL linears", 2, False)):
        torch.set_num_threads(threads)
        set_onednn_linear(onednn)
        runs[label] = generate(ours, monitor, args.duration, args.steps)
    set_onednn_linear(True)
    del ours
    if import_official():
        official, _, _ = load_official(model_dir, monitor)
        wrap(official, "generate", monitor, "sampling", None)
        for label, threads in (("official, 2 threads", 2), ("official, 1 thread", 1)):
            torch.set_num_threads(threads)
            runs[label] = generate(official, monitor, args.duration, args.steps)
    monitor.close()

    def row(label, ref_label):
        (a, za), (b, zb) = runs[label], runs[ref_label]
        return (label, ref_label, f"{latents_rel_l2(za, zb):.2e}", f"{rel_l2(a, b):.2e}")

    base = "ours, 2 threads"
    rows = [("run", "against", "latents_rel_l2", "audio_rel_l2")]
    rows += [row(label, base) for label in runs if label != base]
    if "official, 1 thread" in runs:
        rows.append(row("official, 1 thread", "official, 2 threads"))
    print(f"{model_dir}, {args.duration:g} s, {args.steps} steps, fp32, padding_mode=reference")
    print(fmt_table(rows))


if __name__ == "__main__":
    main()
