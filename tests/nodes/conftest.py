"""Node tests: the pack loaded the way ComfyUI loads it, on the tiny fixture checkpoints.

Without ComfyUI (CI) a faithful stand-in of the ComfyUI modules the pack uses is installed
(``comfy_stub.py``). With ``COMFYUI_PATH`` set (and that ComfyUI's dependencies in the running
interpreter) the same tests run against the real ComfyUI modules, forced onto the CPU.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, fixture_root
from tests.nodes import comfy_stub

PACK = "sa3_pack"  # module name the pack is imported under (ComfyUI uses the folder path)


def _use_real_comfyui() -> bool:
    """Real ComfyUI modules when importable here (directly or from COMFYUI_PATH with its
    dependencies installed in this interpreter); otherwise the stand-in."""
    path = os.environ.get("COMFYUI_PATH")
    added = bool(path) and importlib.util.find_spec("comfy") is None and Path(path, "comfy").is_dir()
    if added:
        sys.path.append(path)
    if importlib.util.find_spec("comfy") is None:
        return False
    try:
        from comfy.cli_args import args

        args.cpu = True  # before comfy.model_management is imported: decides its devices
        import comfy.model_management  # noqa: F401
        import comfy_api.latest  # noqa: F401
        import folder_paths  # noqa: F401
    except ImportError as e:  # ComfyUI's own dependencies are missing in this interpreter
        print(f"tests/nodes: ComfyUI at {path} is not importable here ({e}); using the stand-in modules")
        for name in [m for m in sys.modules if m.split(".")[0] in ("comfy", "comfy_api", "comfy_execution",
                                                                  "folder_paths", "utils", "app")]:
            del sys.modules[name]
        if added:
            sys.path.remove(path)
        return False
    return True


REAL_COMFYUI = _use_real_comfyui()
if not REAL_COMFYUI:
    comfy_stub.install(tempfile.mkdtemp(prefix="sa3-comfy-models-"))

import folder_paths  # noqa: E402  (the real module or the stand-in, as decided above)

ROOT = fixture_root()
if ROOT is not None:
    folder_paths.add_model_folder_path("stable_audio_3", str(ROOT))
    folder_paths.add_model_folder_path("loras", str(ROOT / "loras"))


def _load_pack():
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


pack = _load_pack()
nodes = importlib.import_module(f"{PACK}.nodes")


@pytest.fixture
def record(monkeypatch):
    """Progress and interrupt checks as the nodes make them (real or stand-in ComfyUI)."""
    import comfy.model_management as mm
    import comfy.utils

    rec = comfy_stub.Recorder()
    exc = mm.InterruptProcessingException

    def check():
        rec.checks += 1
        if rec.interrupt_after_checks is not None and rec.checks >= rec.interrupt_after_checks:
            rec.interrupt_after_checks = None
            raise exc()

    class Bar(comfy_stub.ProgressBar):
        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            rec.progress.append((self.current, self.total))

    original_load = mm.load_models_gpu

    def load_models_gpu(models, *args, **kwargs):
        rec.loads.append(list(models))
        return original_load(models, *args, **kwargs)

    monkeypatch.setattr(comfy.utils, "ProgressBar", Bar)
    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu)
    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", check)
    return rec


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
