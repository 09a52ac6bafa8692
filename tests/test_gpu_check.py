"""``bench/gpu_check.py``: its CPU subset runs here (the CUDA run needs a GPU) and, without CUDA,
the default run says so and exits 0."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import GOLDEN_ATOL, REPO, fixture_root

SCRIPT = REPO / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _module().main([]) == 0
    assert "no CUDA device here" in capsys.readouterr().out


def test_cpu_subset_matches_the_goldens_and_times_120_s(tmp_path):
    if fixture_root() is None:
        pytest.skip("golden fixtures not found")
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--json", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = out.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # one JSON line per check, written as it went
    by = lambda kind: [r for r in rows if r["check"] == kind]  # noqa: E731
    assert by("run")[0]["device"] == "cpu" and rows[0]["check"] == "run"
    ran = [r for r in by("fp32") if r["ran"] != "-"]  # "-": flash-attn not installed (skipped)
    assert ran and all(r["ran"] == "sdpa" and r["max_abs_error"] <= GOLDEN_ATOL for r in ran)
    assert {r["attention"] for r in by("fp32")} == {"sdpa", "flash"}
    assert {r["dtype"] for r in by("half")} == {"fp16", "bf16"}
    assert all(r["finite"] and r["max_abs_error"] > 0 for r in by("half"))  # measured, and not fp32
    (timing,) = by("timing")
    assert timing["duration_s"] == 120 and timing["seconds"] > 0 and timing["finite"]


def test_runs_without_pytest():
    """The GPU machine gets a copy of the repository: the script needs neither pytest nor ../shared."""
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('pytest', '_pytest'): raise ImportError('no pytest here')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            f"sys.argv = ['gpu_check']\nimport runpy; runpy.run_path({str(SCRIPT)!r}, run_name='not_main')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
