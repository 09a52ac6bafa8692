"""Registry-ready packaging: MIT license, one version source, the Comfy Registry fields, what
.comfyignore keeps out of the published package, and the transformers floor."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pathspec
import pytest
import tomllib

import sa3
from sa3 import conditioners

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REGISTRY_ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                         "GPU :: Apple Metal"}  # the values comfy-cli accepts


def test_license_is_mit_as_pyproject_says():
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")


def test_version_has_one_source():
    """pyproject holds no version of its own; setuptools and the Registry read sa3/_version.py."""
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sa3._version.__version__"}
    source = (REPO / comfy["version"]["path"]).read_text()
    assert re.findall(r'^__version__ = "(\d+\.\d+\.\d+)"$', source, re.MULTILINE) == [sa3.__version__]
    from setuptools.config.pyprojecttoml import read_configuration  # what pip's build reads

    assert read_configuration(REPO / "pyproject.toml")["project"]["version"] == sa3.__version__


def test_registry_fields():
    comfy = PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    accelerators = {c.removeprefix("Environment :: ") for c in PYPROJECT["project"]["classifiers"]
                    if c.startswith("Environment ::")}
    assert accelerators and accelerators <= REGISTRY_ACCELERATORS
    assert PYPROJECT["project"]["urls"]["Repository"] and comfy["PublisherId"] and comfy["DisplayName"]


def test_requirements_match_pyproject():
    """The Manager installs requirements.txt line by line, pip installs pyproject: same list; torch and
    torchaudio are left to ComfyUI."""
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines() if line.strip()]
    deps = [d for d in PYPROJECT["project"]["dependencies"] if not d.startswith("torch")]
    assert sorted(lines) == sorted(deps)
    assert "transformers>=4.56" in lines


def _published_files() -> tuple[list[str], list[str]]:
    """(git-tracked files, those .comfyignore keeps out), matched as comfy-cli does (gitwildmatch)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    patterns = [line.strip() for line in (REPO / ".comfyignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    spec = pathspec.PathSpec.from_lines("gitwildmatch", patterns)
    return tracked, [f for f in tracked if spec.match_file(f)]


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # the name comfy-cli still uses
def test_comfyignore_keeps_tests_bench_and_fixtures_out():
    tracked, ignored = _published_files()
    assert tracked, "not a git checkout"
    published = sorted(set(tracked) - set(ignored))
    assert not [f for f in published if f.startswith(("tests/", "bench/", ".ci/"))]
    assert not [f for f in published if f.endswith((".ckpt", ".pt", ".pth", ".pkl", ".bin"))]  # no pickles
    assert not [f for f in published if "fixtures" in f]
    for needed in ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md",
                   "sa3/__init__.py", "sa3/_version.py", "nodes/__init__.py"):
        assert needed in published, needed
    assert any(f.startswith("web/") for f in published)


@pytest.mark.parametrize(("installed", "shown"), [("4.55.2", "4.55.2"), (None, "none installed")])
def test_old_or_missing_transformers_is_a_clear_error(monkeypatch, installed, shown):
    def version(name):
        assert name == "transformers"
        if installed is None:
            raise metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(conditioners.metadata, "version", version)
    message = (f"Stable Audio 3: the T5Gemma text encoder needs transformers >= 4.56 (got {shown}). Update it in "
               'the Python that runs ComfyUI: python -m pip install -U "transformers>=4.56".')
    with pytest.raises(RuntimeError) as e:
        conditioners.require_transformers()
    assert str(e.value) == message

    def no_weights(*args, **kwargs):
        raise AssertionError("weights read before the transformers check")

    monkeypatch.setattr(sa3.model, "read_checkpoint", no_weights)
    with pytest.raises(RuntimeError) as e:
        sa3.StableAudioModel.from_pretrained(REPO / "tests" / "fixtures" / "tiny-small", device="cpu")
    assert str(e.value) == message


def test_current_transformers_passes():
    conditioners.require_transformers()  # the installed one (>= 4.56) is accepted
