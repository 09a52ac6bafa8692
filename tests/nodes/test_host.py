"""The test host itself: the real ComfyUI modules, inference mode, and a temporary ComfyUI base
directory, so that models installed in the ComfyUI the tests run in change nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO
from tests.nodes.conftest import BASE_DIRECTORY, ROOT, load_handle

SMALL = "tiny-small"


def _inside(path: str, folder: str) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def test_the_modules_are_comfyuis_own():
    import comfy.model_management
    import comfy.model_patcher
    import comfy_api.latest
    import folder_paths

    comfyui = Path(os.environ["COMFYUI_PATH"]).resolve()
    for module in (comfy.model_management, comfy.model_patcher, comfy_api.latest, folder_paths):
        assert _inside(module.__file__, comfyui), module.__file__
    assert comfy.model_management.get_torch_device().type == "cpu"


def test_tests_and_models_are_in_inference_mode():
    assert torch.is_inference_mode_enabled()
    h = load_handle(SMALL)
    assert all(p.is_inference() for p in h.model.dit.parameters())  # loaded as ComfyUI loads it


def test_comfyui_folders_are_a_temporary_base_directory():
    import folder_paths

    assert _inside(folder_paths.models_dir, BASE_DIRECTORY)
    for kind in ("output", "input", "temp"):
        assert _inside(folder_paths.get_directory_by_type(kind), BASE_DIRECTORY), kind
    comfyui_models = Path(os.environ["COMFYUI_PATH"], "models").resolve()
    for folder in ("stable_audio_3", "loras", "checkpoints"):
        paths = folder_paths.get_folder_paths(folder)
        assert not any(_inside(p, comfyui_models) for p in paths), (folder, paths)
    assert str(ROOT) in folder_paths.get_folder_paths("stable_audio_3")  # the fixtures, added


def test_a_folder_named_comfy_beside_the_checkout_changes_nothing(tmp_path):
    """The checkout is a package (ComfyUI's custom-node layout), so pytest puts its parent folder on
    sys.path; a ComfyUI clone there named ``comfy`` (or any folder of that name) must not pass for
    ComfyUI's package, neither to the pack's entry point nor to the test host."""
    checkout = tmp_path / "pack"
    checkout.mkdir()
    for name in ("__init__.py", "pyproject.toml"):
        shutil.copy(REPO / name, checkout / name)
    for folder in ("nodes", "sa3", "tools", "web"):
        shutil.copytree(REPO / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "tests" / "nodes").mkdir(parents=True)
    for source in [*REPO.glob("tests/*.py"), *REPO.glob("tests/nodes/*.py")]:
        shutil.copy(source, checkout / source.relative_to(REPO))
    (tmp_path / "comfy" / "comfy").mkdir(parents=True)  # a clone's root: its package one level down
    (tmp_path / "comfy" / "main.py").write_text("")

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/nodes/test_host.py::test_the_modules_are_comfyuis_own"],
                         cwd=checkout, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
