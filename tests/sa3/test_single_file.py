"""Single-file models (core ComfyUI's checkpoint + text-encoder files): same audio as the official
folder from the same weights, config detection by shapes and name, sidecars, refusals."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3 import StableAudioModel, single_file
from sa3.loading import release_mapped_weights
from tests.conftest import require_fixtures
from tests.single_file_twins import (
    make_twins,
    rewrite_checkpoint,
    train_spiece,
    write_sparse_safetensors,
)

OFFICIAL_BYTES = {"small": 2_270_384_940, "medium": 9_222_116_660}  # spec 1.1 (model.safetensors, fp32)
T5GEMMA_BYTES = 1_183_022_944  # the official t5gemma-b-b-ul2/model.safetensors (bf16, encoder + decoder)
PROMPTS = ["ambient piano with rain", "techno 128 bpm, warm pads!"]


@pytest.fixture(scope="module")
def spiece() -> bytes:
    return train_spiece()


def _fixture(name: str):
    folder = require_fixtures() / name
    if not folder.is_dir():
        pytest.skip(f"fixture model {name} not present")
    return folder


@pytest.fixture(scope="module", params=["tiny-small", "tiny-medium"])
def twins(request, tmp_path_factory, spiece):
    return make_twins(_fixture(request.param), tmp_path_factory.mktemp(request.param), spiece)


def _generate(model: StableAudioModel, **kwargs) -> torch.Tensor:
    args = {"prompt": PROMPTS, "negative_prompt": "noise", "duration": [1.5, 2.0], "steps": 2, "cfg_scale": 2.0,
            "seed": 7, "batch_size": 2}
    return model.generate(**{**args, **kwargs})


def _load_pair(twins, **kwargs):
    folder = StableAudioModel.from_pretrained(twins.folder, device="cpu", dtype="fp32", padding_mode="reference",
                                              download=False, **kwargs)
    single = StableAudioModel.from_single_file(twins.checkpoint, twins.text_encoder, device="cpu", dtype="fp32",
                                               padding_mode="reference", **kwargs)
    return folder, single


def test_single_file_twin_gives_the_folders_audio_bit_for_bit(twins):
    folder, single = _load_pair(twins)
    ids_folder, mask_folder = folder.text_encoder.tokenize([*PROMPTS, "", "x " * 300])
    ids_single, mask_single = single.text_encoder.tokenize([*PROMPTS, "", "x " * 300])
    assert torch.equal(ids_folder, ids_single) and torch.equal(mask_folder, mask_single)
    assert mask_single[0].sum() > 0 and ids_single.shape == (4, 256) and mask_single[3].all()  # truncated at 256
    assert single.config == folder.config
    audio = _generate(single)
    assert torch.equal(audio, _generate(folder))
    assert audio.abs().sum() > 0


def test_cores_dit_prefix_loads_the_same_weights(twins, tmp_path):
    renamed = rewrite_checkpoint(twins.checkpoint, tmp_path / "core_layout.safetensors",
                                 rename=("model.model.", "model.diffusion_model."))
    model = StableAudioModel.from_single_file(renamed, twins.text_encoder, device="cpu", dtype="fp32",
                                              padding_mode="reference")
    _, reference = _load_pair(twins)
    assert torch.equal(_generate(model, steps=1), _generate(reference, steps=1))


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_half_precision_files_load_as_their_values(twins, tmp_path, stored):
    half = rewrite_checkpoint(twins.checkpoint, tmp_path / "half.safetensors", dtype=stored)
    model = StableAudioModel.from_single_file(half, twins.text_encoder, device="cpu", dtype="fp32")
    expected = load_file(twins.checkpoint)
    weight = model.dit.state_dict()
    for key in list(weight)[:20]:
        assert weight[key].dtype == torch.float32
        assert torch.equal(weight[key], expected["model.model." + key].to(stored).float())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file mappings are read from /proc (Linux)")
def test_text_encoder_weights_stay_memory_mapped(twins):
    """Kept in the file's dtype, the T5Gemma weights are views of the file mapping (not a copy):
    they are what release_mapped_weights can drop."""
    model = StableAudioModel.from_single_file(twins.checkpoint, twins.text_encoder, device="cpu", dtype="fp32")
    mapped = sum(p.numel() * p.element_size() for p in model.text_encoder.parameters())
    assert release_mapped_weights(model.text_encoder) > mapped // 2


# --- config detection -------------------------------------------------------------------------


def test_bundled_configs_are_the_six_official_models():
    assert set(single_file.VARIANTS) == {"small-music", "small-sfx", "medium", "small-music-base",
                                         "small-sfx-base", "medium-base"}
    families = {v: single_file.official_config(v).family for v in single_file.VARIANTS}
    assert families == {"small-music": "small", "small-sfx": "small", "small-music-base": "small",
                        "small-sfx-base": "small", "medium": "medium", "medium-base": "medium"}
    assert single_file.official_config("small-music").default_sampler == "pingpong"
    assert single_file.official_config("medium-base").default_sampler == "euler"


@pytest.mark.parametrize("family", ["small", "medium"])
def test_official_signature_serialises_to_the_official_file_size(family, tmp_path):
    """Independent check of the shapes detection relies on: a file of exactly those tensors (fp32)
    has the official model.safetensors' size to the byte."""
    path = write_sparse_safetensors(tmp_path / "m.safetensors", single_file._signature(family))
    assert path.stat().st_size == OFFICIAL_BYTES[family]


@pytest.fixture(scope="module")
def official_shaped(tmp_path_factory):
    """Official-shaped checkpoints (sparse files, bf16 as core ships them) under core's names."""
    root = tmp_path_factory.mktemp("official")
    files = {}
    for family, names in {"small": ["stable_audio_3_small_music", "stable_audio_3_small_sfx", "sa3-small-sfx-base",
                                    "my_small"],
                          "medium": ["stable_audio_3_medium", "stable_audio_3_medium_base"]}.items():
        for name in names:
            files[name] = write_sparse_safetensors(root / f"{name}.safetensors", single_file._signature(family), "BF16")
    return files


@pytest.mark.parametrize("name, variant", [("stable_audio_3_small_music", "small-music"),
                                           ("stable_audio_3_small_sfx", "small-sfx"),
                                           ("sa3-small-sfx-base", "small-sfx-base"),
                                           ("my_small", "small-music"),
                                           ("stable_audio_3_medium", "medium"),
                                           ("stable_audio_3_medium_base", "medium-base")])
def test_variant_from_shapes_and_file_name(official_shaped, name, variant):
    config, source = single_file.checkpoint_config(official_shaped[name])
    assert source == variant
    assert config == single_file.official_config(variant)


def test_explicit_variant_wins_over_the_name_and_must_fit_the_shapes(official_shaped):
    shapes = official_shaped["stable_audio_3_small_music"]
    assert single_file.detect_variant(shapes, "small-sfx-base") == "small-sfx-base"
    with pytest.raises(ValueError, match=r"variant 'medium' is a medium model but .*stable_audio_3_small_music"):
        single_file.detect_variant(official_shaped["stable_audio_3_small_music"], "medium")
    with pytest.raises(ValueError, match="unknown variant 'large'"):
        single_file.detect_variant(official_shaped["my_small"], "large")


def test_core_prefix_is_detected_too(tmp_path):
    shapes = {single_file.canonical_key(k).replace("model.model.", "model.diffusion_model.", 1): v
              for k, v in single_file._signature("medium").items()}
    path = write_sparse_safetensors(tmp_path / "stable_audio_3_medium.safetensors", shapes, "F16")
    assert single_file.detect_variant(path) == "medium"


def test_bundled_text_encoder_config_fits_the_official_file(tmp_path, spiece):
    """The bundled T5Gemma-b-b-ul2 config: the official bf16 encoder-decoder file has exactly its
    shapes (same byte size), and core's file (plus spiece_model) passes the check."""
    from transformers import T5GemmaConfig, T5GemmaForConditionalGeneration

    config = T5GemmaConfig.from_dict(json.loads(single_file.TEXT_ENCODER_CONFIG.read_text()))
    with torch.device("meta"):
        full = T5GemmaForConditionalGeneration(config).state_dict()
    shapes = {k: tuple(v.shape) for k, v in full.items() if k.startswith("model.")}  # lm_head is tied: not stored
    official = write_sparse_safetensors(tmp_path / "official.safetensors", shapes, "BF16", metadata={"format": "pt"})
    assert official.stat().st_size == T5GEMMA_BYTES
    core = write_sparse_safetensors(tmp_path / "t5gemma_b_b_ul2.safetensors", shapes, "BF16", {"spiece_model": spiece})
    assert single_file.check_text_encoder_file(core) == single_file.TEXT_ENCODER_CONFIG


# --- sidecars and refusals --------------------------------------------------------------------


def test_sidecar_decides_and_excludes_an_explicit_variant(twins):
    _, source = single_file.checkpoint_config(twins.checkpoint)
    assert source == str(twins.checkpoint.with_suffix(".json"))
    with pytest.raises(ValueError, match=r"has a sidecar config .*set variant to 'auto'"):
        single_file.checkpoint_config(twins.checkpoint, "small-music")


def test_a_sidecar_with_a_broken_same_part_is_refused_naming_the_sidecar(twins, tmp_path):
    ckpt = tmp_path / "finetune.safetensors"
    shutil.copyfile(twins.checkpoint, ckpt)
    config = json.loads(twins.checkpoint.with_suffix(".json").read_text())
    del config["model"]["pretransform"]["config"]["pretransform"]["config"]["patch_size"]
    ckpt.with_suffix(".json").write_text(json.dumps(config))
    missing_text_encoder = tmp_path / "absent.safetensors"  # checked after the config: never reached
    with pytest.raises(ValueError, match=r"model\.pretransform is missing the key 'patch_size' in '.*finetune\.json'"):
        StableAudioModel.from_single_file(ckpt, missing_text_encoder, device="cpu")


def test_unknown_shapes_without_sidecar_are_refused_naming_the_file(twins, tmp_path):
    bare = tmp_path / "finetune.safetensors"
    shutil.copyfile(twins.checkpoint, bare)
    with pytest.raises(RuntimeError,
                       match=r"finetune\.safetensors' matches the shapes of no official .*'finetune\.json'"):
        StableAudioModel.from_single_file(bare, twins.text_encoder, device="cpu")


def test_non_sa3_files_are_refused_naming_the_file(tmp_path, twins):
    other = tmp_path / "sdxl.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.weight": torch.zeros(2)}, other)
    with pytest.raises(RuntimeError, match=r"sdxl\.safetensors' is not a Stable Audio 3 checkpoint"):
        StableAudioModel.from_single_file(other, twins.text_encoder, device="cpu")
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{{{{{")
    with pytest.raises(RuntimeError, match=r"broken\.safetensors' is not a readable safetensors file"):
        single_file.checkpoint_config(garbage)
    with pytest.raises(RuntimeError, match=r"missing\.safetensors' does not exist"):
        single_file.checkpoint_config(tmp_path / "missing.safetensors")


def test_text_encoder_refusals_name_the_file(twins, tmp_path):
    bare = tmp_path / "t5.safetensors"
    shutil.copyfile(twins.text_encoder, bare)  # tiny shapes, no sidecar: not the bundled T5Gemma-b-b-ul2
    with pytest.raises(RuntimeError,
                       match=r"t5\.safetensors' is not a T5Gemma-b-b-ul2 text encoder.*no sidecar 't5\.json'"):
        StableAudioModel.from_single_file(twins.checkpoint, bare, device="cpu")
    no_tokenizer = tmp_path / "no_tok.safetensors"
    tensors = load_file(twins.text_encoder)
    del tensors["spiece_model"]
    save_file(tensors, no_tokenizer)
    shutil.copyfile(twins.text_encoder.with_suffix(".json"), no_tokenizer.with_suffix(".json"))
    with pytest.raises(RuntimeError, match=r"no_tok\.safetensors' has no tokenizer \(no 'spiece_model'"):
        StableAudioModel.from_single_file(twins.checkpoint, no_tokenizer, device="cpu")
    bad_tokenizer = tmp_path / "bad_tok.safetensors"
    tensors["spiece_model"] = torch.arange(64, dtype=torch.uint8)
    save_file(tensors, bad_tokenizer)
    shutil.copyfile(twins.text_encoder.with_suffix(".json"), bad_tokenizer.with_suffix(".json"))
    with pytest.raises(RuntimeError,
                       match=r"bad_tok\.safetensors' has a 'spiece_model' tensor that is not a SentencePiece"):
        StableAudioModel.from_single_file(twins.checkpoint, bad_tokenizer, device="cpu")


def test_checkpoint_as_text_encoder_is_refused(twins, tmp_path):
    swapped = tmp_path / "model.safetensors"
    shutil.copyfile(twins.checkpoint, swapped)
    with pytest.raises(RuntimeError, match=r"model\.safetensors' is not a T5Gemma-b-b-ul2 text encoder: its "
                                           r"model\.encoder\.\* tensors \(0\)"):
        single_file.check_text_encoder_file(swapped)
