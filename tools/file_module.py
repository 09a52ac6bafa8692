"""Load one self-contained file of the pack by its path: ``nodes/pictures.py``, ``workflows/run.py``.

Neither can be imported by package name outside ComfyUI: ``nodes/__init__.py`` imports
``comfy_api`` (and inside ComfyUI a top-level ``import nodes`` is ComfyUI's own ``nodes.py``), and
``workflows/`` is a folder of templates, not a package. Both files import nothing of the pack, so
the scripts and tests that use them outside ComfyUI load them from their file, through here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load(relative_path: str) -> ModuleType:
    """The module in ``REPO / relative_path``, imported once per process as ``sa3_pack_<stem>``."""
    path = REPO / relative_path
    name = f"sa3_pack_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
