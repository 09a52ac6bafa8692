"""How far one implementation lands from the golden fixtures on this CPU: the official code's own
spread (what the golden tolerance must allow on a CPU kind) or ours, case by case.

    SA3_OFFICIAL_PATH=/path/to/official python bench/golden_spread.py --side official
    python bench/golden_spread.py --side ours [--models tiny-small] [--cases t2a_cfg7_apg0]
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-avx2 \
        python bench/golden_spread.py ...  # an AVX2 CPU, simulated

    python bench/golden_spread.py --compare DIR_A DIR_B  # two --save'd runs, case by case

Runs every non-LoRA case of the fixture pack except the ``ctl_*`` ones (2 threads, as the
fixtures were made), each side the way the golden tests run it (ours: ``padding_mode="reference"``).
Prints the capability line, per case the max abs error over the stored slices and the relative
L2 of the full output where stored, then the worst case and how many were bit-identical.
tests/conftest.py derives ``GOLDEN_ATOL`` from these figures (bench/RESULTS.md). Under a capped
ISA, give the official side a fresh ``TORCHINDUCTOR_CACHE_DIR``: tiny-medium's SAME-L attention
runs compiled ``flex_attention``, and kernels cached for the uncapped CPU decode garbage (measured:
relative L2 0.96) when ATen is capped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from bench_generate import StageMonitor  # noqa: E402
from compare_reference import import_official, load_official  # noqa: E402

from sa3.cpu_gemm import cpu_routes  # noqa: E402
from tests.conftest import case_id, cases, fixture_root, generate_kwargs, load_model, stored_parts  # noqa: E402


def deviation(case: dict, result: torch.Tensor) -> tuple[float, float | None]:
    """(max abs error over the stored slices, relative L2 of the whole output or None when only
    slices are stored)."""
    worst, rel = 0.0, None
    for _, got, ref in stored_parts(case, result):
        worst = max(worst, (got - ref).abs().max().item())
        if got.shape == result.shape:
            rel = ((got.double() - ref.double()).norm() / ref.double().norm()).item()
    return worst, rel


def compare_saved(a: Path, b: Path) -> None:
    """Max abs and relative L2 between two ``--save``'d runs (e.g. ours and the official code on
    one CPU: the part of our golden deviation that is ours)."""
    worst = 0.0
    for path in sorted(a.glob("*.pt")):
        x, y = torch.load(path).double(), torch.load(b / path.name).double()
        err, rel = (x - y).abs().max().item(), ((x - y).norm() / y.norm()).item()
        worst = max(worst, err)
        print(f"{path.stem.replace('__', '/'):45s} max abs {err:.3g}  rel L2 {rel:.3g}")
    print(f"worst max abs {worst:.3g}")


def official_model(name: str):
    model, _, _ = load_official(fixture_root() / name, StageMonitor())
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("ours", "official"))
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("DIR_A", "DIR_B"))
    parser.add_argument("--models", default="tiny-small,tiny-medium")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--json", type=Path, help="also write the per-case figures here")
    parser.add_argument("--save", type=Path, help="also save each output here (<case>.pt), to compare sides")
    args = parser.parse_args()
    if args.compare:
        return compare_saved(*args.compare)
    if not args.side:
        parser.error("--side or --compare is required")
    torch.set_num_threads(2)
    if args.side == "official" and not import_official():
        sys.exit("set SA3_OFFICIAL_PATH to a working copy of the official code")
    print(f"torch {torch.__version__}; {cpu_routes().describe()}; side {args.side}")
    wanted = set(filter(None, args.cases.split(",")))
    rows = {}
    for name in args.models.split(","):
        model = official_model(name) if args.side == "official" else load_model(name)
        for case in cases(model=name):
            if case["kind"] == "lora" or case["case"].startswith("ctl_") or (wanted and case["case"] not in wanted):
                continue
            t0 = time.perf_counter()
            with torch.inference_mode():
                result = model.generate(**generate_kwargs(case))
            err, rel = deviation(case, result.float())
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                torch.save(result, args.save / f"{case_id(case).replace('/', '__')}.pt")
            rows[case_id(case)] = {"max_abs": err, "rel_l2": rel}
            print(f"{case_id(case):45s} max abs {err:.3g}  rel L2 {'-' if rel is None else f'{rel:.3g}'}  "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    worst = max(rows.items(), key=lambda kv: kv[1]["max_abs"])
    rels = [r["rel_l2"] for r in rows.values() if r["rel_l2"] is not None]
    print(f"{len(rows)} cases: worst max abs {worst[1]['max_abs']:.3g} ({worst[0]}), worst rel L2 "
          f"{max(rels):.3g}, bit-identical {sum(r['max_abs'] == 0 for r in rows.values())}/{len(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"routes": cpu_routes().describe(), "side": args.side, "cases": rows}))


if __name__ == "__main__":
    main()
