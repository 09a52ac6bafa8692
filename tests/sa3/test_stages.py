"""What the goldens do not pin down: input validation, loading errors, the hub path (stubbed),
per-item lengths, rk4, batch inpainting, and RNG hygiene."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3 import StableAudioModel, loading, rng, stages
from sa3.config import ModelConfig
from tests.conftest import load_model, require_fixtures

SMALL = "tiny-small"


@pytest.fixture(scope="module")
def model():
    return load_model(SMALL)


def _gen(model, **kw):
    base = dict(prompt="x", duration=0.5, steps=2, seed=1)
    base.update(kw)
    return model.generate(**base)


# --- validation before any heavy work ---------------------------------------------------------


def test_unknown_generate_argument(model):
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['foo'\]"):
        _gen(model, foo=1)


def test_validation_leaves_rng_untouched(model):
    before = torch.random.get_rng_state()
    with pytest.raises(ValueError):
        _gen(model, duration=-1.0)
    _gen(model)
    assert torch.equal(before, torch.random.get_rng_state()), "generate() must not touch the global RNG"


# --- lengths, batching, samplers -----------------------------------------------------------------


def test_plan_matches_spec_examples():
    cfg = load_model(SMALL).config
    assert stages.plan_latents(cfg, [10.0]).latents == 174  # spec 6.2
    assert stages.plan_latents(cfg, [3.0]).latents == 98
    plan = stages.plan_latents(cfg, [2.0, 5.0])
    assert plan.audio_samples == 491520 and plan.effective == (22, 54) and plan.valid == (86, 118)
    capped = stages.plan_latents(cfg, [119.0])
    assert capped.latents == 1292  # clamped to the config's sample_size


def test_medium_is_not_capped_at_120s():
    cfg_dict = json.loads((require_fixtures() / SMALL / "model_config.json").read_text())
    cfg_dict["sample_size"] = 16777216  # the real medium value (spec 1.3): the cap comes from the config
    cfg = ModelConfig.from_official(cfg_dict)
    assert cfg.max_duration == pytest.approx(380.43, abs=0.01)
    assert stages.plan_latents(cfg, [300.0]).latents == 3296  # align8192(306 s) / 4096, beyond the 1292 cap


def test_mixed_durations_are_not_truncated_and_zeroed_past_each_item(model):
    audio = _gen(model, prompt=["a", "b"], duration=[0.5, 1.0], batch_size=2)
    plan = stages.plan_latents(model.config, [0.5, 1.0])
    assert audio.shape == (2, 2, plan.audio_samples)
    assert audio[0, :, plan.valid[0] * 4096:].abs().max() == 0
    assert audio.abs().max() <= 1


def test_rk4_samples_instead_of_returning_noise(model):
    latents = _gen(model, sampler_type="rk4", return_latents=True)
    plan = stages.plan_latents(model.config, [0.5])
    noise = rng.make_noise(1, model.config.latent_channels, plan.latents, rng.make_generator(1))
    assert not torch.allclose(latents, noise)
    assert torch.isfinite(latents).all()


def test_inpainting_with_batch_size_two(model):
    source = (44100, torch.randn(2, 44100) * 0.1)
    audio = _gen(model, prompt=["a", "b"], batch_size=2, duration=1.0, inpaint_audio=source,
                 inpaint_mask_start_seconds=0.2, inpaint_mask_end_seconds=0.6)
    assert audio.shape == (2, 2, 44100)


def test_same_seed_same_audio_and_seed_minus_one_random(model):
    a, b = _gen(model, seed=7), _gen(model, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(_gen(model, seed=-1, sampler_type="euler"), _gen(model, seed=-1, sampler_type="euler"))


def test_inpaint_mask_regions_and_zeroing():
    cfg = load_model(SMALL).config
    plan = stages.plan_latents(cfg, [1.0])
    mask = stages.build_inpaint_mask(plan, [(0.1, 0.2), (0.5, 0.6)], 44100)[0, 0]
    j = torch.arange(plan.latents)
    keep = ~(((j * 4096 >= 4410) & (j * 4096 < 8820)) | ((j * 4096 >= 22050) & (j * 4096 < 26460)))
    keep &= j * 4096 < 44100
    assert torch.equal(mask.bool(), keep)


# --- loading ---------------------------------------------------------------------------------


def _copy_model(tmp_path):
    src = require_fixtures() / SMALL
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def test_strict_load_and_key_set(model):
    state = load_file(require_fixtures() / SMALL / "model.safetensors")
    ours = ({f"model.model.{k}" for k in model.dit.state_dict()}
            | {f"conditioner.{k}" for k in model.conditioner.state_dict()}
            | {f"pretransform.model.{k}" for k in model.autoencoder.state_dict()})
    assert ours == set(state)


def test_missing_key_is_an_error(tmp_path):
    folder = _copy_model(tmp_path)
    state = load_file(folder / "model.safetensors")
    state.pop("model.model.transformer.layers.0.ff_norm.gamma")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"diffusion transformer weights .* 1 missing key\(s\) "
                                           r"\['transformer.layers.0.ff_norm.gamma'\]"):
        StableAudioModel.from_pretrained(folder, device="cpu")


def test_extra_key_is_an_error(tmp_path):
    folder = _copy_model(tmp_path)
    state = load_file(folder / "model.safetensors")
    state["model.model.transformer.layers.9.extra"] = torch.zeros(1)
    state["something.else"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"key\(s\) that belong to no SA3 part, e.g. \['something.else'\]"):
        StableAudioModel.from_pretrained(folder, device="cpu")
    state.pop("something.else")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(RuntimeError, match=r"1 unexpected key\(s\) \['transformer.layers.9.extra'\]"):
        StableAudioModel.from_pretrained(folder, device="cpu")


def test_folder_without_config(tmp_path):
    with pytest.raises(RuntimeError, match=r"has no model_config.json; expected an official model folder"):
        StableAudioModel.from_pretrained(tmp_path, device="cpu")


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'small-musik': neither a folder nor one of \["):
        StableAudioModel.from_pretrained("small-musik", device="cpu")


def test_non_sa3_config(tmp_path):
    (tmp_path / "model_config.json").write_text(json.dumps({"model_type": "autoencoder", "sample_rate": 44100,
                                                            "sample_size": 1, "model": {}}))
    with pytest.raises(ValueError, match=r"model_type 'autoencoder' is not a Stable Audio 3 generation model"):
        StableAudioModel.from_pretrained(tmp_path, device="cpu")


def test_bad_options():
    with pytest.raises(ValueError, match=r"padding_mode must be one of"):
        StableAudioModel.from_pretrained("small-music", padding_mode="zeros")
    with pytest.raises(ValueError, match=r"attention must be one of 'auto', 'sdpa', 'math', 'flash' "
                                         r"\(got 'xformers'\)"):
        StableAudioModel.from_pretrained("small-music", device="cpu", attention="xformers")
    with pytest.raises(ValueError, match=r"dtype must be one of 'auto', 'fp32', 'fp16', 'bf16' \(got 'fp8'\)"):
        StableAudioModel.from_pretrained(require_fixtures() / SMALL, device="cpu", dtype="fp8")
    with pytest.raises(ValueError, match=r"text_dtype must be one of .* \(got 'int8'\)"):
        StableAudioModel.from_pretrained(require_fixtures() / SMALL, device="cpu", text_dtype="int8")


def test_hub_download_is_used_for_names(tmp_path, monkeypatch):
    """A model name downloads the official files through huggingface_hub (network stubbed)."""
    folder = _copy_model(tmp_path)
    calls = []

    def fake_snapshot(repo_id, *, allow_patterns=None, cache_dir=None, local_dir=None, token=None,
                      local_files_only=False):
        calls.append((repo_id, tuple(allow_patterns), token))
        assert not local_files_only
        return str(folder)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    model = StableAudioModel.from_pretrained("small-music", device="cpu")
    assert calls == [("stabilityai/stable-audio-3-small-music", ("model_config.json", "model.safetensors"),
                      "hf_test")]  # the fixture folder has its text encoder: nothing more is fetched
    assert model.model_dir == folder
    assert _gen(model).shape == (1, 2, 22050)


def test_text_encoder_from_the_hub_and_missing_files(tmp_path, monkeypatch):
    """Without its t5gemma folder the text encoder comes from the config's repo (its subfolder);
    a snapshot that lacks a required file is reported by name."""
    import huggingface_hub

    folder = _copy_model(tmp_path)
    text = tmp_path / "hub" / "t5gemma-b-b-ul2"
    shutil.move(folder / "t5gemma-b-b-ul2", text)
    patterns = []

    def fake_snapshot(repo_id, *, allow_patterns=None, **kwargs):
        patterns.extend(allow_patterns)
        return str(text.parent)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    model = StableAudioModel.from_pretrained(folder, device="cpu")
    assert model.text_encoder is not None and set(patterns) == {f"t5gemma-b-b-ul2/{n}" for n in loading.TEXT_FILES}
    (text / "model.safetensors").unlink()
    with pytest.raises(RuntimeError, match=r"has no file 't5gemma-b-b-ul2/model\.safetensors'"):
        StableAudioModel.from_pretrained(folder, device="cpu")


def test_download_false_only_reads_the_local_cache(tmp_path):
    """download=False: the real huggingface_hub looks only in the (empty) cache, no network."""
    with pytest.raises(RuntimeError, match=r"not in the local cache and downloading is not possible"):
        StableAudioModel.from_pretrained("small-music", device="cpu", download=False, cache_dir=tmp_path / "hf")
    folder = _copy_model(tmp_path)
    shutil.rmtree(folder / "t5gemma-b-b-ul2")
    with pytest.raises(RuntimeError, match=r"not in the local cache"):
        StableAudioModel.from_pretrained(folder, device="cpu", download=False, cache_dir=tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # nothing written


def test_gated_and_offline_errors(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    class FakeResponse:
        status_code, headers, url, request = 401, {}, "https://hub", None

    def gated(*a, **k):
        raise GatedRepoError("gated", response=FakeResponse())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(RuntimeError, match=r"'stabilityai/stable-audio-3-medium' is a gated model. Accept its license"):
        loading.resolve_model_dir("medium")
    monkeypatch.undo()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the real library, offline
    with pytest.raises(RuntimeError, match=r"not in the local cache and downloading is not possible"):
        loading.resolve_model_dir("small-sfx")


def test_corrupt_checkpoint(tmp_path):
    folder = _copy_model(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match=r"model.safetensors' must be a safetensors file with a header of at most "
                                           r"2,097,152 bytes \(got a header of [\d,]+ bytes in a file of 22 bytes\)"):
        StableAudioModel.from_pretrained(folder, device="cpu")
