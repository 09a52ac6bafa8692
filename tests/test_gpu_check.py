"""``bench/gpu_check.py``: its CPU smoke run covers every check here (the CUDA run needs a GPU);
without CUDA the default run says so and exits 0; it runs from a bare copy without pytest."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import GOLDEN_ATOL, REPO, require_fixtures, requires_comfyui

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


def test_without_mps_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert _module().main(["--device", "mps"]) == 0
    assert "no MPS device here" in capsys.readouterr().out


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    """The CPU smoke run, with the node graph in the real ComfyUI of COMFYUI_PATH."""
    require_fixtures()
    out = tmp_path_factory.mktemp("gpu_check") / "rows.jsonl"
    env = {**os.environ, "SA3_OFFICIAL_PATH": ""}
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--json", str(out),
                          "--comfyui", os.environ["COMFYUI_PATH"]],
                         capture_output=True, text=True, timeout=1200, cwd=REPO, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]  # one JSON line per check


def _of(rows: list[dict], check: str) -> list[dict]:
    return [r for r in rows if r["check"] == check]


@requires_comfyui
def test_cpu_smoke_run_judges_every_check(rows):
    module = _module()
    assert rows[0] == {"check": "run", "device": "cpu", "name": module.describe("cpu"), "fp32_atol": GOLDEN_ATOL,
                       "xs_atol": module.GOLDEN_ATOL_XS, "checks": list(module.CHECKS)}
    fp32 = _of(rows, "fp32")
    assert {r["attention"] for r in fp32} == {"sdpa", "math"} and {r["ran"] for r in fp32} == {"sdpa", "math"}
    assert all(r["status"] == "ok" and r["max_abs_error"] <= GOLDEN_ATOL for r in fp32)
    lora = _of(rows, "lora")
    assert lora[-1]["case"] == "tiny-small/interval_stack" and len(lora) >= 2
    assert all(r["status"] == "ok" for r in lora)
    half = _of(rows, "half")
    assert {r["dtype"] for r in half} == {"fp16", "bf16"}
    assert all(r["status"] == "ok" and 0 < r["rel_l2_vs_fp32"] <= r["bound"] for r in half)  # measured, not fp32
    assert _of(rows, "sync") == [{"check": "sync", "status": "skipped (sync debug mode is CUDA only; device cpu)"}]


@requires_comfyui
def test_cpu_smoke_run_drives_the_node_graph_and_times_decoding_both_ways(rows):
    default, novram = _of(rows, "nodes")
    assert default["vram"] == "default" and default["status"] == "ok" and default["max_abs_error"] <= default["bound"]
    assert novram == {"check": "nodes", "vram": "novram", "status": "skipped (ComfyUI refuses --novram with --cpu)"}
    medium = _of(rows, "medium")
    ours = [r for r in medium if r["impl"] == "sa3"]
    assert [(r["duration_s"], r["chunked_decode"]) for r in ours] == [(30.0, False), (30.0, True)]
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in ours)
    assert medium[-1]["impl"] == "official" and medium[-1]["status"].startswith("skipped (no official checkout")


def test_half_request_has_padded_keys():
    """The half rows are only a varlen check if the batch items' lengths differ."""
    durations = _module().HALF_REQUEST["duration"]
    assert len(set(durations)) == len(durations) == _module().HALF_REQUEST["batch_size"]


def test_runs_without_pytest_or_shared():
    """The GPU machine gets a copy of the repository: the script needs neither pytest nor ../shared
    (the committed fixture subset is found, the random models' configs ship with the library)."""
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('pytest', '_pytest'): raise ImportError('no pytest here')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            f"sys.argv = ['gpu_check']\nimport runpy; g = runpy.run_path({str(SCRIPT)!r}, run_name='not_main')\n"
            "import tests.comfy_server, _random_model\n"
            "print(g['fixture_root'](), _random_model.official_config('medium')['model_type'])\n")
    env = {**os.environ, "SA3_FIXTURES": ""}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "diffusion_cond_inpaint"
