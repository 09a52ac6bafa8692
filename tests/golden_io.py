"""The golden fixtures without pytest: where they are, their cases and stored outputs (used by the
tests through ``tests.conftest`` and by ``bench/gpu_check.py``, which must run without pytest).

The full fixture pack lives in ``../shared/fixtures`` (beside the repository, as in CI); a lean
subset of it is committed in ``tests/fixtures`` so the suite also runs from a bare clone.
``SA3_FIXTURES`` overrides both.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

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
