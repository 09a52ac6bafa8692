"""GPU check: the golden cases per attention backend and precision, and a medium 120 s timing.

    python bench/gpu_check.py                   # on a CUDA machine: every check (no CUDA: says so, exits 0)
    python bench/gpu_check.py --device cpu      # the same checks on the CPU, a fast subset (run by the tests)
    python bench/gpu_check.py --json out.json   # also write the measurements

1. **fp32 golden cases** (the official outputs of the tiny fixture models) with ``attention="sdpa"``
   and ``"flash"``; each must match within ``GOLDEN_ATOL`` (the tests' tolerance) on the CPU and
   ``CUDA_FP32_ATOL`` on CUDA (TF32 off; cuBLAS/cuDNN sum in other orders than the CPU). flash-attn
   has no float32 kernels, so an fp32 part given ``"flash"`` runs SDPA (``sa3.attention.
   resolve_backend``): the table shows the backend that ran. Without flash-attn installed the flash
   rows say so.
2. **fp16 / bf16** DiT (SAME stays fp32) with ``"auto"`` attention (flash-attn on CUDA when
   installed) and ``"sdpa"``: the measured max abs deviation from the official fp32 outputs,
   reported, not judged (only non-finite audio fails).
3. **Timing**: ``medium`` generating 120 s in 8 steps with random full-size weights
   (``bench/_random_model.py``, built once under /tmp), bf16 on CUDA; with ``--device cpu`` the
   tiny-medium fixture instead (tiny-small from the committed subset; a full-size medium takes
   minutes per step there).

The official outputs were drawn from a CPU random stream; generation draws from a CPU generator on
every device (``sa3.rng``), so on CUDA only the arithmetic differs. With ``--json`` one JSON line
per check is appended as soon as it is measured (a crash keeps every row before it); the fixtures
are the repository's own subset unless ``SA3_FIXTURES`` or ``../shared/fixtures`` give more.
Exit status: 0 when every fp32 case is within its tolerance and every output is finite, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sa3 import StableAudioModel  # noqa: E402
from sa3.attention import flash_available  # noqa: E402
from sa3.devices import official_numerics  # noqa: E402
from tests.golden_io import (  # noqa: E402  (no pytest: the fixtures' reader only)
    GOLDEN_ATOL,
    case_id,
    cases,
    expected_outputs,
    fixture_root,
    generate_kwargs,
)

CUDA_FP32_ATOL = 1e-4  # fp32 on CUDA with TF32 off; the CPU tolerance is the tests' GOLDEN_ATOL
CPU_SUBSET = ("t2a_euler", "a2a_noise0.5_sr48k")  # --device cpu: these cases of each tiny model (fast)
TIMING_SECONDS, TIMING_STEPS = 120.0, 8
PROMPT = "warm analog synth arpeggio over a slow house beat, 120 bpm"


# --- checks -----------------------------------------------------------------------------------


def max_error(case: dict, result: torch.Tensor) -> float:
    """Max abs difference between a generate() result and every stored slice of the case."""
    worst = 0.0
    result = result.float().cpu()
    for key, ref, sl, item in expected_outputs(case):
        got = result if item is None else result[item]
        got = got if sl is None else got[..., sl]
        if got.shape != ref.shape:
            raise RuntimeError(f"{case_id(case)} {key}: shape {tuple(got.shape)} != {tuple(ref.shape)}")
        worst = max(worst, (got - ref).abs().max().item())
    return worst


def golden_cases(device: str) -> list[dict]:
    chosen = [c for c in cases() if c["kind"] != "lora"]
    if device == "cpu":
        chosen = [c for c in chosen if c["case"] in CPU_SUBSET]
    return chosen


def run_case(model: StableAudioModel, case: dict) -> tuple[float, bool]:
    with torch.inference_mode():
        result = model.generate(**generate_kwargs(case))
    return max_error(case, result), bool(torch.isfinite(result).all())


class Rows:
    """The report: rows kept in memory and, with a path, appended as JSON lines as they come."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rows: list[dict] = []
        if path is not None:
            path.write_text("")

    def add(self, kind: str, row: dict) -> dict:
        row = {"check": kind, **row}
        self.rows.append(row)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.rows if r["check"] == kind]


def golden_rows(device: str, dtype: str, attentions: tuple[str, ...], atol: float | None, out: Rows,
                kind: str) -> list[dict]:
    """One row per (case, attention): the backend that ran, the max abs error and the verdict."""
    rows = []
    models: dict[tuple[str, str], StableAudioModel] = {}
    for case in golden_cases(device):
        for attention in attentions:
            row = {"case": case_id(case), "dtype": dtype, "attention": attention}
            if attention == "flash" and not flash_available():
                skipped = "skipped (flash-attn not installed / no CUDA)"
                rows.append(out.add(kind, {**row, "ran": "-", "status": skipped}))
                continue
            key = (case["model"], attention)
            if key not in models:
                models[key] = StableAudioModel.from_pretrained(fixture_root() / case["model"], device=device,
                                                               dtype=dtype, attention=attention,
                                                               padding_mode="reference")
            model = models[key]
            err, finite = run_case(model, case)
            ok = finite and (atol is None or err <= atol)
            rows.append(out.add(kind, {**row, "ran": _dit_backend(model), "max_abs_error": err, "finite": finite,
                                       "status": "ok" if ok else "FAIL"}))
    return rows


def _dit_backend(model: StableAudioModel) -> str:
    from sa3.attention import Attention

    return next(m.backend for m in model.dit.modules() if isinstance(m, Attention))


def timing_row(device: str) -> dict:
    """Seconds for one generate() of TIMING_SECONDS (after a warm-up run of 10 s)."""
    if device == "cpu":
        name = "tiny-medium" if (fixture_root() / "tiny-medium").is_dir() else "tiny-small"  # the committed subset
        folder, dtype, what = fixture_root() / name, "fp32", f"{name} fixture"
    else:
        sys.path.insert(0, str(REPO / "bench"))
        from _random_model import random_model_dir

        folder, dtype, what = random_model_dir("medium"), "bf16", "medium, random full-size weights"
    model = StableAudioModel.from_pretrained(folder, device=device, dtype=dtype)
    kw = dict(steps=TIMING_STEPS, seed=1)
    with torch.inference_mode():
        model.generate(PROMPT, duration=10.0, **kw)  # warm-up: kernels, caches
        _sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        audio = model.generate(PROMPT, duration=TIMING_SECONDS, **kw)
        _sync(device)
        seconds = time.perf_counter() - start
    row = {"model": what, "dtype": dtype, "duration_s": TIMING_SECONDS, "steps": TIMING_STEPS,
           "seconds": seconds, "finite": bool(torch.isfinite(audio).all())}
    if device == "cuda":
        row["peak_gpu_GB"] = torch.cuda.max_memory_allocated() / 1e9
    return row


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- report -----------------------------------------------------------------------------------


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}")
    for r in rows:
        err = f"{r['max_abs_error']:.3g}" if "max_abs_error" in r else "-"
        print(f"  {r['case']:<34} {r['dtype']:<5} {r['attention']:<6} ran {r['ran']:<6} max abs err {err:<9} "
              f"{r['status']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default; exits 0 with a note when there is none) or cpu (the fast subset)")
    parser.add_argument("--json", type=Path, help="also write the measurements, one JSON line per check")
    parser.add_argument("--no-timing", action="store_true", help="skip the 120 s timing")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check. "
              "Run it on a CUDA machine, or with --device cpu for the CPU subset.")
        return 0
    if fixture_root() is None:
        print("gpu_check: golden fixtures not found (set SA3_FIXTURES or provide ../shared/fixtures)", file=sys.stderr)
        return 1
    if args.device == "cuda":
        print(f"gpu_check on {torch.cuda.get_device_name()} (torch {torch.__version__}, "
              f"flash-attn {'installed' if flash_available() else 'not installed'})")
    else:
        print(f"gpu_check on the CPU (torch {torch.__version__}): the fast subset {CPU_SUBSET}")
    atol = CUDA_FP32_ATOL if args.device == "cuda" else GOLDEN_ATOL
    out = Rows(args.json)
    out.add("run", {"device": args.device, "fp32_atol": atol, "torch": torch.__version__})
    # TF32 and fp16 reduced-precision reductions off (the official settings), for this run only
    with official_numerics(args.device):
        print_rows(f"fp32 golden cases (tolerance {atol:g})",
                   golden_rows(args.device, "fp32", ("sdpa", "flash"), atol, out, "fp32"))
        for dtype in ("fp16", "bf16"):
            golden_rows(args.device, dtype, ("auto", "sdpa"), None, out, "half")
        print_rows("fp16 / bf16 DiT: deviation from the official fp32 outputs (reported, not judged)", out.of("half"))
        if not args.no_timing:
            t = out.add("timing", timing_row(args.device))
            print(f"\n## timing\n  {t['model']} ({t['dtype']}): {t['duration_s']:g} s of audio in {t['steps']} steps: "
                  f"{t['seconds']:.2f} s" + (f", peak {t['peak_gpu_GB']:.2f} GB" if "peak_gpu_GB" in t else ""))
    failed = [r for r in out.of("fp32") + out.of("half") if r["status"] == "FAIL"]
    failed += [t for t in out.of("timing") if not t["finite"]]
    print(f"\ngpu_check: {'FAILED: ' + str(len(failed)) + ' problem(s)' if failed else 'all checks passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
