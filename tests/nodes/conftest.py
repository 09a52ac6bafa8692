"""Node tests: the pack inside the real ComfyUI, loaded and run the way ComfyUI does it.

ComfyUI comes from ``COMFYUI_PATH`` (its requirements installed in this interpreter; ``.ci/run``
sets it up from ``../shared/comfyui``), forced onto the CPU. Without it every module here is
skipped with the reason; ``tests/sa3`` and ``tests/golden`` do not need it.

As in ComfyUI's executor, every test runs under ``torch.inference_mode()``. ComfyUI's base
directory (models, input, output, temp, user) is an empty temporary folder, with the fixture
models added as extra ``stable_audio_3`` and ``loras`` paths, so nothing installed in that ComfyUI
changes what the tests see.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import pytest
import torch

from tests.conftest import REPO, fixture_root

sys.path.insert(0, str(REPO / "tools"))
import check_workflows as cw  # the one place that imports the pack inside ComfyUI

PACK = cw.PACK
# pytest imports this file under a name derived from the checkout folder (the repository root is a
# package, ComfyUI's custom-node layout); the test modules import it as tests.nodes.conftest: one module
sys.modules.setdefault("tests.nodes.conftest", sys.modules[__name__])
BASE_DIRECTORY = tempfile.mkdtemp(prefix="sa3-comfyui-base-")

try:
    cw.import_comfyui(base_directory=BASE_DIRECTORY)
    MISSING = None
except cw.NoComfyUI as e:
    MISSING = f"node tests run inside the real ComfyUI: {e}"

ROOT = fixture_root()


class NeedsComfyUI(pytest.Module):
    """A test module collected without ComfyUI: reported as skipped, with the reason, not imported."""

    def collect(self):
        pytest.skip(MISSING)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    if MISSING is not None:
        return NeedsComfyUI.from_parent(parent, path=module_path)
    return None


def pytest_sessionfinish(session):
    shutil.rmtree(BASE_DIRECTORY, ignore_errors=True)


if MISSING is None:
    import folder_paths

    if ROOT is not None:
        folder_paths.add_model_folder_path("stable_audio_3", str(ROOT))
        folder_paths.add_model_folder_path("loras", str(ROOT / "loras"))
    pack = cw.load_pack()
    nodes = importlib.import_module(f"{PACK}.nodes")


@pytest.fixture(autouse=True)
def comfyui_inference_mode():
    """ComfyUI executes every node under ``torch.inference_mode()`` (execution.py); so does every test here."""
    with torch.inference_mode():
        yield


@dataclass
class Recorder:
    """What the nodes asked of ComfyUI during a test."""

    loads: list = field(default_factory=list)  # the patchers of each load_models_gpu call
    progress: list = field(default_factory=list)  # (value, total) of each progress update
    interrupt_after_checks: int | None = None  # interrupt at the N-th interrupt check
    checks: int = 0


@pytest.fixture
def record(monkeypatch):
    """Progress updates, model loads and interrupt checks as the nodes make them, through the real
    ComfyUI functions (an interrupt is raised the way ComfyUI raises it, at a chosen check)."""
    import comfy.model_management as mm
    import comfy.utils

    rec = Recorder()
    real_check = mm.throw_exception_if_processing_interrupted
    real_load = mm.load_models_gpu

    def check():
        rec.checks += 1
        if rec.interrupt_after_checks is not None and rec.checks >= rec.interrupt_after_checks:
            rec.interrupt_after_checks = None
            mm.interrupt_current_processing(True)
        real_check()

    class Bar(comfy.utils.ProgressBar):
        def update_absolute(self, value, total=None, preview=None):
            super().update_absolute(value, total, preview)
            rec.progress.append((self.current, self.total))

    def load_models_gpu(models, *args, **kwargs):
        rec.loads.append(list(models))
        return real_load(models, *args, **kwargs)

    monkeypatch.setattr(comfy.utils, "ProgressBar", Bar)
    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu)
    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", check)
    yield rec
    mm.interrupt_current_processing(False)


def require_model(name: str) -> None:
    if ROOT is None or not (ROOT / name).is_dir():
        pytest.skip(f"fixture model {name} not available (set SA3_FIXTURES)")


_HANDLES: dict = {}
_REFERENCES: dict = {}


def load_handle(name: str):
    """The SA3 Model Loader output for a fixture model (fp32, exact padding), loaded once."""
    require_model(name)
    if name not in _HANDLES:
        out = nodes.SA3ModelLoader.execute(model_name=name, precision="fp32", attention="auto",
                                           padding_mode="exact", download=False)
        _HANDLES[name] = out.args[0]
    return _HANDLES[name]


def load_reference(name: str):
    """The same model through the library's own ``from_pretrained`` (for ``generate()``)."""
    require_model(name)
    if name not in _REFERENCES:
        from sa3 import StableAudioModel

        _REFERENCES[name] = StableAudioModel.from_pretrained(ROOT / name, device="cpu", dtype="fp32",
                                                             padding_mode="exact")
    return _REFERENCES[name]
