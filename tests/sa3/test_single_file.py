"""Single-file models (core ComfyUI's checkpoint + text-encoder files): same audio as the official
folder from the same weights, config detection by shapes and name, sidecars, refusals."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from sa3 import StableAudioModel, loading, single_file
from sa3.config import read_json_file
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
    with pytest.raises(ValueError, match=r"model\.pretransform\.config\.pretransform\.config\.patch_size must be an "
                                         r"integer from 1 to 65536 \(got 'nothing'\) in '.*finetune\.json'"):
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


# --- hostile files (issue 24): refused by the header and config checks, before any weight is read ----

class _Marker:
    """Unpickling this writes the file ``path``: a pickle must never be unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def small(tmp_path_factory, spiece):
    return make_twins(_fixture("tiny-small"), tmp_path_factory.mktemp("hostile"), spiece)


def _header_parts(path):
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def _with_header(source, edit):
    """The bytes of ``source`` with its JSON header changed by ``edit(header)``."""
    header, data = _header_parts(source)
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _first_key(header):
    return sorted(k for k in header if k != "__metadata__")[0]


def _lie_offsets(header):
    key = _first_key(header)
    header[key]["data_offsets"] = [10**9, 10**9 + 4]


def _lie_shape(header):
    key = _first_key(header)
    header[key]["shape"] = [n * 2 for n in header[key]["shape"]]


def _pickled(marker):
    buffer = io.BytesIO()
    torch.save({"model.model.x": torch.zeros(2), "evil": _Marker(marker)}, buffer)
    return buffer.getvalue()


_MANY_KEYS = {f"k{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(60_000)}
_MANY_KEYS_RAW = json.dumps(_MANY_KEYS).encode()

# name -> (bytes of the checkpoint from the good one and a marker path, the message expected)
BAD_CHECKPOINT_BYTES = {
    "empty": (lambda good, _: b"", r"must be a safetensors file with a header of at most 2,097,152 bytes "
                                   r"\(got a 0-byte"),
    "4 bytes": (lambda good, _: good[:4], r"\(got a 4-byte file\)"),
    "header cut": (lambda good, _: good[:40], r"\(got a header of [\d,]+ bytes in a file of 40 bytes\)"),
    "data cut": (lambda good, _: good[:-1], r"is not a readable safetensors file \(.*not fully covered"),
    "pickle (zip)": (lambda good, marker: _pickled(marker), r"must be a safetensors file .* never read"),
    "pickle (legacy)": (lambda good, marker: pickle.dumps({"evil": _Marker(marker)}), r"must be a safetensors file"),
    "length 2^60": (lambda good, _: struct.pack("<Q", 1 << 60) + b"{}", r"\(got a header of 1,152,921,504,606,846,976"),
    "60,000 tensors": (lambda good, _: struct.pack("<Q", len(_MANY_KEYS_RAW)) + _MANY_KEYS_RAW,
                       r"header of at most 2,097,152 bytes \(got a header of [\d,]+ bytes"),
    "offsets past the end": (lambda good, _: None, r"is not a readable safetensors file \(.*invalid offset"),
    "shape lie": (lambda good, _: None, r"is not a readable safetensors file \(.*invalid shape"),
}
HEADER_EDITS = {"offsets past the end": _lie_offsets, "shape lie": _lie_shape}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINT_BYTES))
@pytest.mark.parametrize("sidecar", [True, False], ids=["with sidecar", "bare"])
def test_broken_checkpoint_files_are_refused_from_the_header(small, tmp_path, case, sidecar):
    """Refused by checkpoint_config (the queue-time check), with or without a sidecar config, and
    nothing is ever unpickled."""
    make, pattern = BAD_CHECKPOINT_BYTES[case]
    marker = tmp_path / "unpickled"
    good = small.checkpoint.read_bytes()
    data = make(good, marker)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_with_header(small.checkpoint, HEADER_EDITS[case]) if data is None else data)
    if sidecar:
        shutil.copyfile(small.checkpoint.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(RuntimeError, match=r"Stable Audio 3: '.*bad\.safetensors' " + ".*" + pattern):
        single_file.checkpoint_config(bad)
    with pytest.raises(RuntimeError, match=pattern):
        StableAudioModel.from_single_file(bad, small.text_encoder, device="cpu")
    assert not marker.exists()


def _drop(prefix):
    return lambda source, target: rewrite_checkpoint(source, target, drop=prefix)


def _other_model(source, target):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4)}, target)
    return target


def _stray_key(source, target):
    tensors = load_file(source)
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2)
    save_file(tensors, target)
    return target


WRONG_KEYS = [
    (_drop("pretransform.model."), r"has no SAME autoencoder \(no 'pretransform\.model\.\*' tensors\)"),
    (_drop("conditioner."), r"has no conditioner \(no 'conditioner\.\*' tensors\)"),
    (_drop("model.model.transformer.layers.1."), r"does not match its sidecar 'bad\.json': \d+ missing tensor"),
    (_other_model, r"is not a Stable Audio 3 checkpoint \(no 'model\.model\.transformer\.global_cond_embedder"),
    (_stray_key, r"must hold only Stable Audio 3 tensors \(got 1 outside .*first_stage_model"),
]


@pytest.mark.parametrize("make, pattern", WRONG_KEYS, ids=["DiT only", "no conditioner", "a block short",
                                                           "another model", "stray key"])
def test_wrong_keys_beside_a_sidecar_are_refused_from_the_header(small, tmp_path, make, pattern):
    bad = make(small.checkpoint, tmp_path / "bad.safetensors")
    shutil.copyfile(small.checkpoint.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(RuntimeError, match=pattern):
        single_file.checkpoint_config(bad)


def test_an_official_shaped_dit_without_its_autoencoder_says_so(tmp_path):
    shapes = {k: v for k, v in single_file._signature("small").items() if not k.startswith("pretransform.")}
    bare = write_sparse_safetensors(tmp_path / "stable_audio_3_small_music.safetensors", shapes, "BF16")
    with pytest.raises(RuntimeError, match=r"has no SAME autoencoder \(no 'pretransform\.model\.\*' tensors\)"):
        single_file.checkpoint_config(bare)


def _edited_sidecar(source, tmp_path, edit):
    """A copy of ``source`` as ``bad.safetensors`` with its sidecar changed by ``edit(config)``."""
    bad = tmp_path / "bad.safetensors"
    shutil.copyfile(source, bad)
    config = json.loads(source.with_suffix(".json").read_text())
    edit(config)
    bad.with_suffix(".json").write_text(json.dumps(config))
    return bad


def _dit(key, value):
    return lambda c: c["model"]["diffusion"]["config"].__setitem__(key, value)


def _same(part, key, value):
    return lambda c: c["model"]["pretransform"]["config"][part]["config"].__setitem__(key, value)


SIDECAR_EDITS = [
    (_dit("depth", 65536), r"model\.diffusion\.config\.depth must be an integer from 1 to 256 \(got 65536\)"),
    (_dit("depth", 4096), r"depth must be an integer from 1 to 256 \(got 4096\)"),
    (_dit("depth", "20"), r"depth must be an integer from 1 to 256 \(got '20'\)"),
    (_dit("embed_dim", 65536), r"does not match its sidecar 'bad\.json': 0 missing .* of the wrong shape"),
    (_same("encoder", "transformer_depths", [10**6]),
     r"encoder\.config\.transformer_depths\[0\] must be an integer from 1 to 256 \(got 1000000\)"),
    (_same("decoder", "channels", 10**7), r"decoder\.config\.channels x c_mults\[0\] must be an integer from 1 to"),
    (_same("decoder", "strides", [0]), r"decoder\.config\.strides\[0\] must be an integer from 1 to 65536 \(got 0\)"),
    (_same("decoder", "dim_heads", 0), r"decoder\.config\.dim_heads must be an integer from 1 to 65536 \(got 0\)"),
    (_same("decoder", "chunk_size", 0), r"decoder\.config\.chunk_size must be an integer from 1 to 65536 \(got 0\)"),
]


@pytest.mark.parametrize("edit, pattern", SIDECAR_EDITS, ids=["depth 65536", "depth 4096", "depth text", "width lie",
                                                              "SAME depth", "SAME width", "SAME stride 0",
                                                              "SAME heads 0", "SAME chunk 0"])
def test_absurd_sidecar_sizes_are_refused_before_building(small, tmp_path, edit, pattern):
    bad = _edited_sidecar(small.checkpoint, tmp_path, edit)
    with pytest.raises((ValueError, RuntimeError), match=r"Stable Audio 3.*" + pattern):
        single_file.checkpoint_config(bad)


SIDECAR_TEXTS = [
    (b" " * (2 << 20) + b"{}", r"must be a JSON model config of at most 1,048,576 bytes \(got 2,097,154 bytes\)"),
    (b"[" * 100_000 + b"]" * 100_000, r"is not valid JSON \(maximum recursion depth"),
    (b"\xff\xfe{}", r"is not UTF-8 text \(got byte 0xff at offset 0"),
    (b"[1, 2]", r"model_config\.json must be a JSON object \(got a list\)"),
]


@pytest.mark.parametrize("text, pattern", SIDECAR_TEXTS, ids=["huge", "nested", "not UTF-8", "a list"])
@pytest.mark.parametrize("kind", ["checkpoint", "text encoder"])
def test_malformed_sidecars_are_refused_naming_them(small, tmp_path, text, pattern, kind):
    source = small.checkpoint if kind == "checkpoint" else small.text_encoder
    bad = tmp_path / "bad.safetensors"
    shutil.copyfile(source, bad)
    bad.with_suffix(".json").write_bytes(text)
    if kind == "text encoder":
        pattern = pattern.replace("model_config\\.json", "a T5Gemma config\\.json").replace("JSON model config",
                                                                                          "T5Gemma config.json")
    check = single_file.checkpoint_config if kind == "checkpoint" else single_file.check_text_encoder_file
    with pytest.raises((ValueError, RuntimeError), match=r"Stable Audio 3.*" + pattern):
        check(bad)


def _encoder(key, value):
    return lambda c: c["encoder"].__setitem__(key, value)


TEXT_SIDECAR_EDITS = [
    (_encoder("num_hidden_layers", 10**6), r"encoder\.num_hidden_layers must be an integer from 1 to 256 \(got 10+"),
    (_encoder("num_hidden_layers", "2"), r"encoder\.num_hidden_layers must be an integer from 1 to 256 \(got '2'\)"),
    (_encoder("vocab_size", 2**40), r"encoder\.vocab_size must be an integer from 1 to 1048576"),
    (_encoder("hidden_size", 2**30), r"encoder\.hidden_size must be an integer from 1 to 65536"),
    (_encoder("num_attention_heads", 0), r"encoder\.num_attention_heads must be an integer from 1 to 65536 \(got 0\)"),
    (_encoder("layer_types", ["full_attention"]), r"is not a T5Gemma config \(.*layer_types"),
    (lambda c: c.__setitem__("encoder", [1]), r"encoder must be a JSON object .*\(got a list\)"),
    (lambda c: c.__setitem__("model_type", "bert"), r"model_type must be 't5gemma' .*\(got 'bert'\)"),
]


@pytest.mark.parametrize("edit, pattern", TEXT_SIDECAR_EDITS, ids=["layers 10^6", "layers text", "vocab 2^40",
                                                                   "width 2^30", "heads 0", "layer types",
                                                                   "encoder list", "bert"])
def test_absurd_text_encoder_sidecars_are_refused_before_building(small, tmp_path, edit, pattern):
    bad = _edited_sidecar(small.text_encoder, tmp_path, edit)
    with pytest.raises((ValueError, RuntimeError), match=r"Stable Audio 3.*" + pattern):
        single_file.check_text_encoder_file(bad)


def _tokenizer(make):
    def edit(tensors, spiece):
        tensors["spiece_model"] = make(spiece)
    return edit


TOKENIZER_EDITS = [
    (_tokenizer(lambda sp: torch.frombuffer(bytearray(sp), dtype=torch.uint8).float()),
     r"has a 'spiece_model' tensor of F32 \(\d+,\), expected 1-D uint8"),
    (_tokenizer(lambda sp: torch.frombuffer(bytearray(sp[:len(sp) // 2 * 2]), dtype=torch.uint8).reshape(2, -1)),
     r"has a 'spiece_model' tensor of U8 \(2, \d+\), expected 1-D uint8"),
    (_tokenizer(lambda sp: torch.zeros(0, dtype=torch.uint8)), r"tensor of U8 \(0,\), expected 1-D uint8 .* 1 to"),
    (_tokenizer(lambda sp: torch.arange(5000).remainder(251).to(torch.uint8)),
     r"'spiece_model' tensor that is not a SentencePiece model"),
    (_tokenizer(lambda sp: torch.frombuffer(bytearray(train_spiece(400)), dtype=torch.uint8)),
     r"must have a tokenizer of 1 to 260 pieces, one per row of its encoder's token embedding \(got 400 pieces\)"),
    (lambda tensors, sp: tensors.update({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)}) or
     [tensors.pop(k) for k in list(tensors) if k.startswith("model.encoder.")],
     r"is not a T5Gemma-b-b-ul2 text encoder: its model\.encoder\.\* tensors \(0\)"),
]


@pytest.mark.parametrize("edit, pattern", TOKENIZER_EDITS, ids=["float", "2-D", "empty", "random bytes",
                                                                "vocabulary over the embedding", "CLIP-like"])
def test_hostile_text_encoder_files_are_refused_at_the_check(small, tmp_path, edit, pattern):
    """Refused by check_text_encoder_file (the queue-time check), so never at encode time."""
    tensors = load_file(small.text_encoder)
    edit(tensors, small.spiece)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad)
    shutil.copyfile(small.text_encoder.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(RuntimeError, match=r"Stable Audio 3: '.*bad\.safetensors' .*" + pattern):
        single_file.check_text_encoder_file(bad)


def test_a_huge_tokenizer_tensor_is_refused_from_the_header(small, tmp_path):
    """A 3 GB spiece_model (a sparse file) is refused before a byte of it is copied."""
    header, data = _header_parts(small.text_encoder)
    start = header["spiece_model"]["data_offsets"][0]  # the last tensor (keys are sorted)
    header["spiece_model"] = {"dtype": "U8", "shape": [3 << 30], "data_offsets": [start, start + (3 << 30)]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    bad = tmp_path / "bad.safetensors"
    with open(bad, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data[:start])
        f.truncate(8 + len(raw) + start + (3 << 30))  # a hole: no disk space, no memory
    shutil.copyfile(small.text_encoder.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(RuntimeError, match=r"tensor of U8 \(3221225472,\), expected 1-D uint8 \(U8\) of 1 to "
                                           r"67,108,864 bytes"):
        single_file.check_text_encoder_file(bad)


@pytest.mark.parametrize("value", [5, None, "a\0b.safetensors", ["x"]])
def test_paths_that_are_not_paths_are_refused_by_name(value):
    with pytest.raises(ValueError, match=r"Stable Audio 3: checkpoint must be a path to a \.safetensors file \(got "):
        single_file.checkpoint_config(value)
    with pytest.raises(ValueError, match=r"Stable Audio 3: text encoder must be a path to a \.safetensors file"):
        single_file.check_text_encoder_file(value)


def test_headers_and_configs_are_read_once_per_file_version(small, tmp_path, monkeypatch):
    """The checks run at queue time: each header, sidecar and encoder config is read (and built on
    the meta device) once, and again only when the file changes."""
    text = tmp_path / "t5.safetensors"
    shutil.copyfile(small.text_encoder, text)
    shutil.copyfile(small.text_encoder.with_suffix(".json"), text.with_suffix(".json"))
    opened, built = [], []
    real_open, real_class = single_file.safe_open, single_file._encoder_model_class
    monkeypatch.setattr(single_file, "safe_open", lambda path, **k: opened.append(path) or real_open(path, **k))
    monkeypatch.setattr(single_file, "_encoder_model_class", lambda: built.append(1) or real_class())
    for _ in range(3):
        assert single_file.check_text_encoder_file(text) == text.with_suffix(".json")
    assert (len(opened), len(built)) == (2, 1)  # the header, the tokenizer; the encoder on meta once
    stat = text.stat()
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    single_file.check_text_encoder_file(text)
    assert (len(opened), len(built)) == (4, 1)  # the file changed; its config did not


def test_bounded_reads_never_read_past_the_bound(tmp_path):
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(10 << 30)  # a 10 GB sparse file
    with pytest.raises(RuntimeError, match=r"at most 1,048,576 bytes \(got 10,737,418,240 bytes\)"):
        read_json_file(huge, "a JSON model config")
    with pytest.raises(RuntimeError, match=r"got a header of 0 bytes in a file of 10,737,418,240"):
        loading.check_safetensors_header(huge)


def test_good_load_after_every_refusal_is_bit_identical(small, tmp_path):
    reference = _generate(StableAudioModel.from_single_file(small.checkpoint, small.text_encoder, device="cpu",
                                                            dtype="fp32", padding_mode="reference"), steps=1)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(small.checkpoint.read_bytes()[:-1])
    shutil.copyfile(small.checkpoint.with_suffix(".json"), bad.with_suffix(".json"))
    tensors = load_file(small.text_encoder)
    tensors["spiece_model"] = torch.frombuffer(bytearray(train_spiece(400)), dtype=torch.uint8)
    bad_text = tmp_path / "bad_text.safetensors"
    save_file(tensors, bad_text)
    shutil.copyfile(small.text_encoder.with_suffix(".json"), bad_text.with_suffix(".json"))
    for checkpoint, text in ((bad, small.text_encoder), (small.checkpoint, bad_text)):
        with pytest.raises(RuntimeError, match="Stable Audio 3"):
            StableAudioModel.from_single_file(checkpoint, text, device="cpu", dtype="fp32", padding_mode="reference")
    again = StableAudioModel.from_single_file(small.checkpoint, small.text_encoder, device="cpu", dtype="fp32",
                                              padding_mode="reference")
    assert torch.equal(_generate(again, steps=1), reference)
