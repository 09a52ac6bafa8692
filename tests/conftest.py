"""Shared test helpers: where the golden fixtures are, and loading their models and cases.

The full fixture pack lives in ``../shared/fixtures`` (beside the repository, as in CI); a lean
subset of it is committed in ``tests/fixtures`` so the suite also runs from a bare clone.
``SA3_FIXTURES`` overrides both.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOLDEN_ATOL = 1.5e-5  # fixtures README section 7: thread-count rounding of the reference itself
GOLDEN_ATOL_XS = 1e-3  # -XS LoRA cases with our own SVD (ill-conditioned bases, same README)


def fixture_root() -> Path | None:
    candidates = [os.environ.get("SA3_FIXTURES"), REPO.parent / "shared" / "fixtures", REPO / "tests" / "fixtures"]
    for c in candidates:
        if c and (Path(c) / "manifest.json").is_file():
            return Path(c)
    return None


@cache
def manifest() -> dict:
    root = fixture_root()
    return json.loads((root / "manifest.json").read_text()) if root else {"cases": [], "models": {}, "loras": {}}


def cases(kind: str | None = None, model: str | None = None) -> list[dict]:
    return [c for c in manifest()["cases"]
            if (kind is None or c["kind"] == kind) and (model is None or c["model"] == model)]


def case_id(case: dict) -> str:
    return f"{case['model']}/{case['case']}"


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


def generate_kwargs(case: dict) -> dict:
    """The case's generate() kwargs with audio references replaced by (sample_rate, tensor)."""
    from safetensors.torch import load_file

    root = fixture_root()
    kwargs = dict(case["generate_kwargs"])
    inputs = None
    for key in ("init_audio", "inpaint_audio"):
        if key in kwargs:
            inputs = inputs or load_file(root / case["dir"] / "inputs.safetensors")
            ref = kwargs[key]
            kwargs[key] = (ref["sample_rate"], inputs[ref["audio"].split(":", 1)[1]])
    return kwargs


def expected_outputs(case: dict) -> list[tuple[str, torch.Tensor, slice | None, int | None]]:
    """(key, tensor, sample slice, item) for every stored output tensor of a case."""
    from safetensors.torch import load_file

    stored = {s["key"]: s for s in case["output"].get("stored", [])}
    out = []
    for key, tensor in load_file(fixture_root() / case["dir"] / "output.safetensors").items():
        if key in stored:
            s = stored[key]
            item = s.get("item", "all")
            item = None if item == "all" else int(item)
            out.append((key, tensor, slice(s["start"], s["stop"]), item))
        else:
            out.append((key, tensor, None, None))
    return out


def assert_matches_golden(case: dict, result: torch.Tensor, atol: float = GOLDEN_ATOL) -> float:
    """Compare a generate() result with every stored slice; returns the max abs error."""
    assert list(result.shape) == case["output"]["shape"], f"shape {tuple(result.shape)} != {case['output']['shape']}"
    worst = 0.0
    for key, ref, sl, item in expected_outputs(case):
        got = result
        if item is not None:
            got = got[item]
        if sl is not None:
            got = got[..., sl]
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
