"""The README's run command works from a plain Python: ``python workflows/run.py`` imports only
the standard library (without websocket-client the runner follows the prompt through ``/history``)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

HEAVY = {"torch", "torchaudio", "numpy", "safetensors", "transformers", "huggingface_hub", "websocket"}


def _run(args, tmp_path):
    blocker = tmp_path / "blocked"
    for name in HEAVY:  # any import of these fails loudly
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} imported by the runner')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_runner_imports_only_the_standard_library(tmp_path):
    code = ("import runpy, sys; runpy.run_path('workflows/run.py'); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r}))")
    result = _run(["-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_readme_run_command_starts_without_torch(tmp_path):
    result = _run(["workflows/run.py", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: python workflows/run.py" in result.stdout


def test_package_still_exports_the_models():
    import sa3

    assert sa3.StableAudioModel.__name__ == "StableAudioModel"
    assert sa3.AutoencoderModel.__name__ == "AutoencoderModel"
