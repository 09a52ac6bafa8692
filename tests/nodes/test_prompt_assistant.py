"""SA3 Prompt Assistant inside the real ComfyUI (under inference mode, as the executor runs it),
with a tiny random Qwen3.5 built in code in a temporary ``models/LLM/`` (no download)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import huggingface_hub
import pytest

from tests.nodes.conftest import PACK, folder_paths, load_handle, nodes
from tests.prompt_model import copy_to, one_thread, tiny_prompt_model  # noqa: F401 (one_thread: autouse)

node_module = importlib.import_module(f"{PACK}.nodes.prompt_assistant")
comfy_models = importlib.import_module(f"{PACK}.nodes.comfy_models")
pa = importlib.import_module(f"{PACK}.sa3.prompt_assistant")
Node = nodes.SA3PromptAssistant
NAME = "Qwen3.5-2B"
ARGS = dict(prompt="warm piano loop", category="music", seed=5, max_duration=30.0, language_model=NAME,
            download=False)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty ComfyUI models folder (its LLM entries removed again afterwards), no model kept."""
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    node_module.register_folder()
    paths = folder_paths.folder_names_and_paths[node_module.FOLDER][0]
    before = [p for p in paths if p != str(tmp_path / node_module.FOLDER)]
    node_module._LOADED.clear()
    yield tmp_path
    paths[:] = before
    node_module._LOADED.clear()


@pytest.fixture
def installed(models_dir):
    """The tiny model as models/LLM/Qwen3.5-2B."""
    return copy_to(models_dir / "LLM" / NAME)


def run(**changes):
    return Node.execute(**{**ARGS, **changes}).args


def test_outputs_a_prompt_and_a_duration_for_text_encode(installed, record):
    import comfy.model_management as mm

    prompt, duration = run()
    assert isinstance(prompt, str) and prompt.startswith("TrackType: Music, VocalType: Instrumental, ")
    assert isinstance(duration, float) and 1.0 <= duration <= 30.0
    (loads,) = record.loads  # one load, of the language model only, then offloaded at once
    (patcher,) = loads
    assert isinstance(patcher.model, comfy_models.SA3PromptLanguageModel)
    assert type(patcher.model.language_model).__name__ == "Qwen3_5ForCausalLM"
    assert patcher not in mm.loaded_models()
    assert {p.device for p in patcher.model.parameters()} == {patcher.offload_device}
    schema = Node.GET_SCHEMA()
    assert [o.get_io_type() for o in schema.outputs] == ["STRING", "FLOAT"]


def test_same_inputs_same_outputs_and_the_model_is_kept(installed, record):
    first = run()
    kept = dict(node_module._LOADED)
    assert run() == first
    assert node_module._LOADED == kept  # not loaded again
    assert len(record.loads) == 2 and record.loads[0][0] is record.loads[1][0]


def test_duration_is_capped_to_the_connected_model(installed, monkeypatch):
    handle = load_handle("tiny-small")
    monkeypatch.setattr(pa, "TYPICAL_SECONDS", {**pa.TYPICAL_SECONDS, "sfx": 1000.0})
    _, duration = run(category="sfx", max_duration=380.0, model=handle)
    assert duration == pa.cap_duration(1000.0, handle.config.max_duration)
    # and SA3 Text Encode takes it as its duration
    positive, _ = nodes.SA3TextEncode.execute(model=handle, prompt="rain", negative_prompt="", duration=duration,
                                              one_prompt_per_line=False, durations="").args
    assert positive.durations == (duration,)


def test_empty_prompt_needs_no_model(models_dir, record):
    prompt, duration = run(prompt="  ", category="auto", language_model="missing-folder")
    assert prompt.startswith("TrackType: Music, ") and 1.0 <= duration <= 30.0
    assert record.loads == [] and node_module._LOADED == {}


def test_a_folder_of_models_llm_is_offered(installed):
    copy_to(installed.parent / "my-chat-model")
    assert node_module.language_model_choices() == [NAME, "my-chat-model"]
    prompt, _ = run(language_model="my-chat-model", category="one-shot")
    assert prompt and not prompt.startswith("TrackType")  # one-shot: no tags


def test_missing_model_with_download_off(models_dir):
    target = models_dir / "LLM" / NAME
    assert Node.validate_inputs(language_model=NAME) is True  # the download switch is read when it runs
    with pytest.raises(ValueError) as e:
        run()
    assert str(e.value) == (
        f"Stable Audio 3 Prompt Assistant: language_model '{NAME}' is not downloaded (got no {target}/config.json, "
        "expected the files of huggingface.co/Qwen/Qwen3.5-2B there). Put them there, or turn on download.")
    assert not target.exists()


def test_unknown_folder_is_refused_when_queued(models_dir):
    message = Node.validate_inputs(language_model="gone")
    assert message == ("Stable Audio 3 Prompt Assistant: language_model 'gone' is not a model folder (got 'gone', "
                       f"expected a folder in models/LLM/ or '{NAME}'). Refresh the node list after adding files.")


def test_download_fetches_into_models_llm(models_dir, monkeypatch):
    calls = []

    def snapshot_download(repo_id, *, allow_patterns, local_dir, token, local_files_only, **kwargs):
        calls.append((repo_id, Path(local_dir)))
        shutil.copytree(tiny_prompt_model(), local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    prompt, _ = run(download=True)
    target = models_dir / "LLM" / NAME
    assert calls == [("Qwen/Qwen3.5-2B", target.parent / f".{NAME}.download")]
    assert (target / "config.json").is_file() and sorted(p.name for p in target.parent.iterdir()) == [NAME]
    assert prompt.startswith("TrackType: Music")


def test_offline_download_leaves_nothing_behind(models_dir, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"'Qwen/Qwen3.5-2B' are not in the local cache and downloading is not "
                                           r"possible \(offline mode or no network\)"):
        run(download=True)
    assert not (models_dir / "LLM" / NAME).exists()
    assert not list((models_dir / "LLM").glob(".*download"))


@pytest.mark.parametrize("changes, message", [
    (dict(category=""), "category must be one of 'auto', 'music', 'instrument', 'sfx', 'one-shot' (got '')"),
    (dict(max_duration=float("nan")), "max_duration must be a number from 1 to 380.4 (got nan)"),
    (dict(max_duration=0.5), "max_duration must be a number from 1 to 380.4 (got 0.5)"),
    (dict(seed=-3), "seed must be an integer from 0 to"),
    (dict(prompt="x" * 2001), "prompt must be a short text of at most 2,000 characters (got 2,001 characters)"),
    (dict(model="not a model"), "model is not an SA3 model (got str"),
])
def test_bad_input_is_refused_before_any_work(installed, record, changes, message):
    with pytest.raises(ValueError) as e:
        run(**changes)
    assert str(e.value).startswith("Stable Audio 3 Prompt Assistant: ") and message in str(e.value)
    assert record.loads == []
