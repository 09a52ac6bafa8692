"""SA3 Model Loader's download path, with huggingface_hub's ``snapshot_download`` replaced by a
copy from the tiny fixture model (no network): an official name whose folder is missing is
fetched into ``models/stable_audio_3/<name>/`` only when download is on, and then loads; with
download off the message says where to put which files. A failed download (offline, an error
half-way, an interruption) leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub
import pytest

from tests.nodes.conftest import ROOT, folder_paths, nodes, require_model

NAME = "small-music"
REPO_ID = "stabilityai/stable-audio-3-small-music"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty ComfyUI models folder; its stable_audio_3 entry is removed again afterwards."""
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    paths = folder_paths.folder_names_and_paths["stable_audio_3"][0]
    before = list(paths)
    yield tmp_path
    paths[:] = before


class _Calls(list):
    """The fake hub's call log and its failure plan."""

    fail_on: str | None = None
    failure: BaseException = OSError("No space left on device")


@pytest.fixture
def fake_hub(monkeypatch):
    """``snapshot_download`` serving the tiny-small fixture files; records every call. ``fail_on``
    names a file at which it writes half the file and raises ``failure`` (an interrupted download)."""
    require_model("tiny-small")
    calls = _Calls()

    def snapshot_download(repo_id, *, allow_patterns=None, cache_dir=None, local_dir=None, token=None, **kw):
        calls.append({"repo_id": repo_id, "files": list(allow_patterns), "local_dir": local_dir})
        target = Path(local_dir)
        (target / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)  # as the real one does
        for rel in allow_patterns:
            source = ROOT / "tiny-small" / rel
            if not source.is_file():
                continue  # optional file the repo does not have
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            if rel == calls.fail_on:
                (target / rel).write_bytes(source.read_bytes()[: source.stat().st_size // 2])
                raise calls.failure
            shutil.copyfile(source, target / rel)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_download_on_fetches_into_the_models_folder_and_loads(models_dir, fake_hub):
    target = models_dir / "stable_audio_3" / NAME
    assert nodes.SA3ModelLoader.validate_inputs(model_name=NAME) is True
    (handle,) = nodes.SA3ModelLoader.execute(model_name=NAME, precision="fp32", attention="auto",
                                             padding_mode="exact", download=True).args
    assert {c["repo_id"] for c in fake_hub} == {REPO_ID}
    assert {Path(c["local_dir"]) for c in fake_hub} == {target.parent / f".{NAME}.download"}  # staged
    for rel in ["model_config.json", "model.safetensors", "t5gemma-b-b-ul2/config.json",
                "t5gemma-b-b-ul2/model.safetensors", "t5gemma-b-b-ul2/tokenizer.json"]:
        assert (target / rel).is_file(), rel
    assert sorted(p.name for p in target.parent.iterdir()) == [NAME]  # the staging folder is gone
    assert not (target / ".cache").exists()
    reference = nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp32", attention="auto",
                                             padding_mode="exact", download=False).args[0]
    assert handle.name == NAME and handle.config == reference.config
    ours, theirs = handle.model.dit.state_dict(), reference.model.dit.state_dict()
    for (key, a), (_, b) in zip(ours.items(), theirs.items(), strict=True):
        assert a.equal(b), key
    # now it is an ordinary local folder: found without download, nothing fetched again
    fake_hub.clear()
    assert nodes.SA3ModelLoader.validate_inputs(model_name=NAME) is True
    nodes.SA3ModelLoader.execute(model_name=NAME, precision="fp32", attention="auto", padding_mode="exact",
                                 download=False)
    assert fake_hub == []


def test_download_off_says_where_to_put_the_files(models_dir, fake_hub):
    target = models_dir / "stable_audio_3" / NAME
    message = (f"Stable Audio 3 Model Loader: model_name '{NAME}' is not downloaded (got no "
               f"{target}/model_config.json, expected model_config.json, model.safetensors and t5gemma-b-b-ul2/ "
               f"there). Put the files of huggingface.co/{REPO_ID} there, or turn on download.")
    # validate_inputs takes model_name only (one input, one label): the download switch is read here
    assert nodes.SA3ModelLoader.validate_inputs(model_name=NAME) is True
    with pytest.raises(ValueError) as e:
        nodes.SA3ModelLoader.execute(model_name=NAME, precision="fp32", attention="auto", padding_mode="exact",
                                     download=False)
    assert str(e.value) == message
    assert fake_hub == [] and not target.exists()


def test_missing_text_encoder_folder(models_dir, fake_hub):
    """A local folder without t5gemma-b-b-ul2/ would otherwise be completed from the hub behind the
    user's back: download off says what is missing, download on fetches it into the folder."""
    folder = models_dir / "stable_audio_3" / "my-model"
    folder.mkdir(parents=True)
    for name in ("model_config.json", "model.safetensors"):
        shutil.copyfile(ROOT / "tiny-small" / name, folder / name)
    nodes.loaders.register_folder()
    with pytest.raises(ValueError) as e:
        nodes.SA3ModelLoader.execute(model_name="my-model", precision="fp32", attention="auto", padding_mode="exact",
                                     download=False)
    assert str(e.value) == (
        f"Stable Audio 3 Model Loader: model_name 'my-model' has no text encoder (got no "
        f"{folder}/t5gemma-b-b-ul2/config.json, expected the t5gemma-b-b-ul2/ folder of huggingface.co/{REPO_ID} "
        "beside model.safetensors). Copy that folder there, or turn on download.")
    assert fake_hub == []
    assert nodes.SA3ModelLoader.validate_inputs(model_name="my-model") is True
    (handle,) = nodes.SA3ModelLoader.execute(model_name="my-model", precision="fp32", attention="auto",
                                             padding_mode="exact", download=True).args
    assert (folder / "t5gemma-b-b-ul2" / "config.json").is_file()
    assert {c["repo_id"] for c in fake_hub} == {REPO_ID}
    assert all(f.startswith("t5gemma-b-b-ul2/") for c in fake_hub for f in c["files"])
    assert handle.name == "my-model"


def _load(name: str):
    return nodes.SA3ModelLoader.execute(model_name=name, precision="fp32", attention="auto", padding_mode="exact",
                                        download=True)


@pytest.mark.parametrize("fail_on", ["model.safetensors", "t5gemma-b-b-ul2/model.safetensors"])
@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
def test_failed_download_leaves_nothing_behind(models_dir, fake_hub, fail_on, failure):
    """Half-way through the weights or the text encoder: no models/stable_audio_3/<name>/, no
    staging folder, no partial file; the next try starts clean and succeeds."""
    fake_hub.fail_on, fake_hub.failure = fail_on, failure
    with pytest.raises(type(failure)):
        _load(NAME)
    assert list(models_dir.iterdir()) == []  # not even models/stable_audio_3/, which was not there
    fake_hub.fail_on = None
    _load(NAME)
    assert (models_dir / "stable_audio_3" / NAME / "t5gemma-b-b-ul2" / "model.safetensors").is_file()


def test_offline_download_leaves_nothing_behind(models_dir, monkeypatch):
    """The real huggingface_hub in offline mode (HF_HUB_OFFLINE): a clear message, no folder."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (models_dir / "stable_audio_3").mkdir()  # an existing (empty) models folder stays as it was
    with pytest.raises(RuntimeError, match=r"of 'stabilityai/stable-audio-3-small-music' are not in the local "
                                           r"cache and downloading is not possible \(offline mode or no network\)"):
        _load(NAME)
    assert [p.name for p in models_dir.iterdir()] == ["stable_audio_3"]
    assert list((models_dir / "stable_audio_3").iterdir()) == []


def test_failed_text_encoder_download_leaves_the_folder_as_it_was(models_dir, fake_hub):
    folder = models_dir / "stable_audio_3" / "my-model"
    folder.mkdir(parents=True)
    for name in ("model_config.json", "model.safetensors"):
        shutil.copyfile(ROOT / "tiny-small" / name, folder / name)
    fake_hub.fail_on = "t5gemma-b-b-ul2/model.safetensors"
    with pytest.raises(OSError, match="No space left"):
        _load("my-model")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "model_config.json"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["my-model"]
