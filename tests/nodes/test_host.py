"""The test host itself: the real ComfyUI modules, inference mode, and a temporary ComfyUI base
directory, so that models installed in the ComfyUI the tests run in change nothing."""

from __future__ import annotations

import os
from pathlib import Path

import torch

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
