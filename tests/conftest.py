"""Shared test helpers: where the golden fixtures are, and loading their models and cases.

The full fixture pack lives in ``../shared/fixtures`` (beside the repository, as in CI); a lean
subset of it is committed in ``tests/fixtures`` so the suite also runs from a bare clone.
``SA3_FIXTURES`` overrides both.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

from tests.golden_io import (  # noqa: F401  (re-exported for the tests)
    GOLDEN_ATOL,
    GOLDEN_ATOL_XS,
    case_id,
    cases,
    fixture_root,
    generate_kwargs,
    manifest,
    stored_parts,
)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


requires_comfyui = pytest.mark.skipif(
    not os.environ.get("COMFYUI_PATH") or not Path(os.environ["COMFYUI_PATH"], "main.py").is_file(),
    reason="end-to-end test against a real ComfyUI server: set COMFYUI_PATH to a ComfyUI checkout (and "
           "COMFYUI_PYTHON to an interpreter with its requirements; .ci/run does both)",
)


def require_fixtures() -> Path:
    root = fixture_root()
    if root is None:
        pytest.skip("golden fixtures not found (set SA3_FIXTURES or provide ../shared/fixtures)")
    return root


@cache
def load_model(name: str, padding_mode: str = "reference"):
    """A fixture model on CPU in fp32. ``reference`` padding reproduces the official CPU numbers."""
    from sa3 import StableAudioModel

    root = require_fixtures()
    if not (root / name).is_dir():
        pytest.skip(f"fixture model {name} not present in {root}")
    return StableAudioModel.from_pretrained(root / name, device="cpu", padding_mode=padding_mode)


def assert_matches_golden(case: dict, result: torch.Tensor, atol: float = GOLDEN_ATOL) -> float:
    """Compare a generate() result with every stored slice; returns the max abs error."""
    assert list(result.shape) == case["output"]["shape"], f"shape {tuple(result.shape)} != {case['output']['shape']}"
    worst = 0.0
    for key, got, ref in stored_parts(case, result):
        assert got.shape == ref.shape, f"{key}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
        err = (got - ref).abs().max().item()
        worst = max(worst, err)
        assert err <= atol, f"{case_id(case)} {key}: max abs error {err:.3g} > {atol:g}"
    return worst


def resident_bytes(tensors) -> tuple[int, int]:
    """(resident, mapped) bytes of the file mappings that hold these tensors' data, from
    /proc/self/smaps (Linux): what a memory-mapped model keeps in this process's RAM, out of the
    mapped size. Each mapping counts once, however many tensors it holds."""
    mappings, current = [], None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
                current = [start, end, 0]
                mappings.append(current)
            elif head == "Rss:":
                current[2] = int(line.split()[1]) * 1024
    held = {}
    for t in tensors:
        ptr = t.data_ptr()
        for start, end, rss in mappings:
            if start <= ptr < end:
                held[start] = (rss, end - start)
    return sum(r for r, _ in held.values()), sum(m for _, m in held.values())
