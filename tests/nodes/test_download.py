"""SA3 Model Loader's download path, with huggingface_hub's ``hf_hub_download`` replaced by a
copy from the tiny fixture model (no network): an official name whose folder is missing is
fetched into ``models/stable_audio_3/<name>/`` only when download is on, and then loads; with
download off the message says where to put which files."""

from __future__ import annotations

import shutil
from pathlib import Path

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


@pytest.fixture
def fake_hub(monkeypatch):
    """``hf_hub_download`` serving the tiny-small fixture files; records every call."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import EntryNotFoundError

    require_model("tiny-small")
    calls = []

    def hf_hub_download(repo_id, filename, *, subfolder=None, cache_dir=None, local_dir=None, token=None, **kw):
        calls.append({"repo_id": repo_id, "filename": filename, "subfolder": subfolder, "local_dir": local_dir})
        rel = Path(subfolder or "") / filename
        source = ROOT / "tiny-small" / rel
        if not source.is_file():
            raise EntryNotFoundError(f"404: {rel} not in {repo_id}")
        target = Path(local_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def test_download_on_fetches_into_the_models_folder_and_loads(models_dir, fake_hub):
    target = models_dir / "stable_audio_3" / NAME
    assert nodes.SA3ModelLoader.validate_inputs(model_name=NAME, download=True) is True
    (handle,) = nodes.SA3ModelLoader.execute(model_name=NAME, precision="fp32", attention="auto",
                                             padding_mode="exact", download=True).args
    assert {c["repo_id"] for c in fake_hub} == {REPO_ID}
    assert {Path(c["local_dir"]) for c in fake_hub} == {target}
    for rel in ["model_config.json", "model.safetensors", "t5gemma-b-b-ul2/config.json",
                "t5gemma-b-b-ul2/model.safetensors", "t5gemma-b-b-ul2/tokenizer.json"]:
        assert (target / rel).is_file(), rel
    reference = nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp32", attention="auto",
                                             padding_mode="exact", download=False).args[0]
    assert handle.name == NAME and handle.config == reference.config
    ours, theirs = handle.model.dit.state_dict(), reference.model.dit.state_dict()
    for (key, a), (_, b) in zip(ours.items(), theirs.items(), strict=True):
        assert a.equal(b), key
    # now it is an ordinary local folder: found without download, nothing fetched again
    fake_hub.clear()
    assert nodes.SA3ModelLoader.validate_inputs(model_name=NAME, download=False) is True
    nodes.SA3ModelLoader.execute(model_name=NAME, precision="fp32", attention="auto", padding_mode="exact",
                                 download=False)
    assert fake_hub == []


def test_download_off_says_where_to_put_the_files(models_dir, fake_hub):
    target = models_dir / "stable_audio_3" / NAME
    message = (f"Stable Audio 3 Model Loader: model_name '{NAME}' is not downloaded (got no "
               f"{target}/model_config.json, expected model_config.json, model.safetensors and t5gemma-b-b-ul2/ "
               f"there). Put the files of huggingface.co/{REPO_ID} there, or turn on download.")
    assert nodes.SA3ModelLoader.validate_inputs(model_name=NAME, download=False) == message
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
    assert nodes.SA3ModelLoader.validate_inputs(model_name="my-model", download=False) == (
        f"Stable Audio 3 Model Loader: model_name 'my-model' has no text encoder (got no "
        f"{folder}/t5gemma-b-b-ul2/config.json, expected the t5gemma-b-b-ul2/ folder of huggingface.co/{REPO_ID} "
        "beside model.safetensors). Copy that folder there, or turn on download.")
    assert nodes.SA3ModelLoader.validate_inputs(model_name="my-model", download=True) is True
    (handle,) = nodes.SA3ModelLoader.execute(model_name="my-model", precision="fp32", attention="auto",
                                             padding_mode="exact", download=True).args
    assert (folder / "t5gemma-b-b-ul2" / "config.json").is_file()
    assert {(c["repo_id"], c["subfolder"]) for c in fake_hub} == {(REPO_ID, "t5gemma-b-b-ul2")}
    assert handle.name == "my-model"
