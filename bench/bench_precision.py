"""Deviation of reduced precision (``dtype="bf16"`` / ``"fp16"``) from fp32, next to its speed.

    python bench/bench_precision.py [--models tiny-small tiny-medium random] [--dtypes bf16 fp16 bf16/bf16-mixed]
                                    [--duration 5] [--random-duration 30] [--steps 8]

For each model and dtype it generates the same prompt and seed as fp32 with the deterministic
``euler`` sampler (the default ``pingpong`` draws fresh noise per step in the model dtype, so
reduced precision gives a different piece, not a perturbed one) and prints the relative L2 error
and max abs error of the latents and of the audio, and the generate() time of each run. The tiny
models come from the golden fixtures (``SA3_FIXTURES`` or ../shared/fixtures); "random" is the
random full-size small-music folder of ``_random_model.py``. SAME stays fp32 unless a dtype
names its precision after a slash: ``fp32/bf16-mixed`` (the SAME mode alone), ``bf16/bf16-mixed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_generate import PROMPT, fmt_table  # noqa: E402


def fixture_dir(name: str) -> Path:
    root = Path(os.environ.get("SA3_FIXTURES", REPO.parent / "shared" / "fixtures"))
    if not (root / name).is_dir():
        root = REPO / "tests" / "fixtures"
    return root / name


def errors(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    got, ref = got.double(), ref.double()
    return ((got - ref).norm() / ref.norm()).item(), (got - ref).abs().max().item()


def run(model_dir: Path, dtype: str, duration: float, steps: int):
    """Latents, audio and seconds of one euler generation. ``dtype`` is the DiT's, optionally
    followed by SAME's after a slash ("bf16/bf16-mixed"); SAME is fp32 otherwise."""
    from sa3 import StableAudioModel

    dit_dtype, _, same_dtype = dtype.partition("/")
    model = StableAudioModel.from_pretrained(model_dir, device="cpu", dtype=dit_dtype,
                                             autoencoder_dtype=same_dtype or "fp32")
    kw = dict(prompt=PROMPT, duration=duration, steps=steps, seed=7, sampler_type="euler")
    model.generate(**{**kw, "duration": min(duration, 2.0), "steps": 1})  # warm-up
    t0 = time.perf_counter()
    latents = model.generate(**kw, return_latents=True)
    audio = model.generate(**kw)
    seconds = time.perf_counter() - t0
    return latents.float(), audio.float(), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-small", "tiny-medium", "random"])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32/bf16-mixed", "bf16/bf16-mixed"])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds for the tiny models")
    parser.add_argument("--random-duration", type=float, default=30.0, help="seconds for the random model")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = [("model", "duration_s", "dtype", "latents_rel_l2", "latents_max_abs", "audio_rel_l2", "audio_max_abs",
             "time_s (latents + audio)", "speed-up")]
    for name in args.models:
        if name == "random":
            from _random_model import random_model_dir

            model_dir, duration = random_model_dir("small-music"), args.random_duration
        else:
            model_dir, duration = fixture_dir(name), args.duration
        ref_latents, ref_audio, ref_time = run(model_dir, "fp32", duration, args.steps)
        rows.append((name, f"{duration:g}", "fp32", "", "", "", "", f"{ref_time:.2f}", ""))
        for dtype in args.dtypes:
            latents, audio, seconds = run(model_dir, dtype, duration, args.steps)
            rows.append((name, f"{duration:g}", dtype, *(f"{e:.2e}" for e in errors(latents, ref_latents)),
                         *(f"{e:.2e}" for e in errors(audio, ref_audio)), f"{seconds:.2f}",
                         f"{ref_time / seconds:.2f}x"))
    print(f"euler, {args.steps} steps, threads {torch.get_num_threads()}, dtype = DiT[/SAME] (SAME fp32 unless "
          f"named); errors relative to fp32, load average {os.getloadavg()[0]:.1f}")
    print(fmt_table(rows))


if __name__ == "__main__":
    main()
