"""Single-file models: the checkpoint and text-encoder files core ComfyUI users already have.

A checkpoint file (``models/checkpoints/stable_audio_3_*.safetensors``) holds the official key
layout: the DiT under ``model.model.`` (core also writes ``model.diffusion_model.``), the
conditioner under ``conditioner.conditioners.`` and SAME under ``pretransform.model.``; the
official ``model.safetensors`` is such a file. Its model config is, in this order:

1. a sidecar ``<checkpoint stem>.json`` beside it (official ``model_config.json`` format:
   fine-tunes and test models);
2. one of the six official configs bundled in ``sa3/configs/``, picked by key signature and
   tensor shapes. small-music, small-sfx and their -base versions share one architecture (as do
   medium and medium-base), so the variant comes from an explicit ``variant`` or the file name.

A text-encoder file (``models/text_encoders/t5gemma_b_b_ul2.safetensors``) holds the T5Gemma
encoder under ``model.encoder.`` (the decoder, if present, is ignored) and the SentencePiece
model as a uint8 tensor ``spiece_model``. Its config is a sidecar ``<stem>.json`` (Hugging Face
``config.json`` format) or the bundled T5Gemma-b-b-ul2 one, checked against the file's shapes.
Prompts are tokenized as core and the official folder's tokenizer do: no BOS/EOS, truncated to
``max_length`` and right-padded with id 0.

The bundled model configs are the official configs as the spec reconstructs them (only the keys
the official factory reads); the T5Gemma config follows the spec's architecture facts and matches
the official file's size to the byte.
"""

from __future__ import annotations

import logging
import os
import re
from functools import cache, lru_cache
from pathlib import Path

import torch
from safetensors import safe_open

from .checks import check_number, fail
from .conditioners import Conditioner, TextEncoder, check_vocabulary
from .config import (
    MAX_DEPTH,
    MAX_WIDTH,
    MODEL_REPOS,
    ModelConfig,
    SAMEConfig,
    TextEncoderConfig,
    read_json_file,
)
from .dit import DiT
from .loading import CHECKPOINT_PREFIXES, MAX_TENSORS, check_safetensors_header, same_config
from .same import SAMEAutoencoder

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
VARIANTS = tuple(MODEL_REPOS)  # the six official model names
AUTO = "auto"
TEXT_ENCODER_CONFIG = CONFIG_DIR / "t5gemma-b-b-ul2.json"
TOKENIZER_KEY = "spiece_model"
TEXT_PREFIX = "model.encoder."  # the T5Gemma encoder model's keys, under the file's "model."
DIT_ALIASES = ("model.diffusion_model.",)  # core's name for the DiT prefix, read as "model.model."
SA3_MARKER = "transformer.global_cond_embedder.0.weight"  # a DiT key only SA3 has (core's test)
PART_NAMES = {"dit": "diffusion transformer", "conditioner": "conditioner", "autoencoder": "SAME autoencoder"}
MAX_TOKENIZER_BYTES = 64 << 20  # the SentencePiece model tensor; Gemma's tokenizer.model is 4.2 MB
MAX_VOCAB = 1 << 20  # T5Gemma vocabulary (official: 256,000)
# the T5Gemma encoder sizes a text-encoder sidecar sets, bounded before the encoder is built (even on meta)
T5GEMMA_SIZES = {"num_hidden_layers": MAX_DEPTH, "hidden_size": MAX_WIDTH, "intermediate_size": MAX_WIDTH,
                 "num_attention_heads": MAX_WIDTH, "num_key_value_heads": MAX_WIDTH, "head_dim": MAX_WIDTH,
                 "vocab_size": MAX_VOCAB}


def _fail(path: Path, what: str) -> RuntimeError:
    return RuntimeError(f"Stable Audio 3: {str(path)!r} {what}")


def file_path(value, name: str) -> Path:
    """``value`` as a path (text or os.PathLike without NUL), else a ValueError naming ``name``."""
    if not isinstance(value, (str, os.PathLike)) or "\0" in os.fspath(value):
        raise fail(name, "a path to a .safetensors file", value)
    return Path(value)


def file_state(path: Path) -> tuple[str, int, int] | None:
    """(path, size, modification time) of a file, None when absent: the key of every per-file cache."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return str(path), stat.st_size, stat.st_mtime_ns


def read_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Key -> (dtype, shape) of a safetensors file, from its bounded header only (no tensor data is
    read); each file's header is read once until it changes."""
    path = file_path(path, "checkpoint")
    state = file_state(path)
    if state is None or not path.is_file():
        raise _fail(path, "does not exist.")
    return dict(_header(state))


@lru_cache(maxsize=64)
def _header(state: tuple[str, int, int]) -> dict[str, tuple[str, tuple[int, ...]]]:
    path = Path(state[0])
    check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if len(keys) > MAX_TENSORS:
                raise _fail(path, f"must hold at most {MAX_TENSORS:,} tensors (got {len(keys):,}).")
            return {key: (f.get_slice(key).get_dtype(), tuple(f.get_slice(key).get_shape())) for key in keys}
    except RuntimeError as e:
        if str(e).startswith("Stable Audio 3"):
            raise
        raise _fail(path, f"is not a readable safetensors file ({e}).") from e
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise _fail(path, f"is not a readable safetensors file ({e}).") from e


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a safetensors file, from its header only (no tensor data is read)."""
    return {key: shape for key, (_, shape) in read_header(path).items()}


def canonical_key(key: str) -> str:
    """The official name of a checkpoint key (``model.diffusion_model.`` -> ``model.model.``)."""
    for alias in DIT_ALIASES:
        if key.startswith(alias):
            return CHECKPOINT_PREFIXES["dit"] + key[len(alias):]
    return key


def canonical_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {canonical_key(key): value for key, value in state.items()}


def sidecar(path: str | Path) -> Path | None:
    """``<stem>.json`` beside ``path``, when present."""
    candidate = Path(path).with_suffix(".json")
    return candidate if candidate.is_file() else None


# --- checkpoint config ----------------------------------------------------------------------


def official_config(variant: str) -> ModelConfig:
    """The bundled config of one of the six official models."""
    if variant not in VARIANTS:
        raise ValueError(f"Stable Audio 3: unknown variant {variant!r} (expected {AUTO!r} or one of {list(VARIANTS)}).")
    return ModelConfig.from_file(CONFIG_DIR / f"{variant}.json")


def _architecture(variant: str) -> str:
    return official_config(variant).family  # "small" | "medium": the only split the weights show


def _expected_shapes(cfg: ModelConfig, same: SAMEConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a full checkpoint of ``cfg`` (built on the meta device; sizes already bounded)."""
    with torch.device("meta"):
        parts = {"dit": DiT(cfg.dit), "conditioner": Conditioner(cfg.text, cfg.seconds, cfg.cond_dim),
                 "autoencoder": SAMEAutoencoder(same)}
    return {CHECKPOINT_PREFIXES[name] + key: tuple(t.shape)
            for name, module in parts.items() for key, t in module.state_dict().items()}


@cache
def _signature(family: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a full official checkpoint of ``family``."""
    cfg = official_config(next(v for v in VARIANTS if _architecture(v) == family))
    return _expected_shapes(cfg, SAMEConfig.from_official(cfg.pretransform))


@lru_cache(maxsize=16)
def _sidecar_config(state: tuple[str, int, int]) -> tuple[ModelConfig, dict[str, tuple[int, ...]]]:
    """A sidecar's checked config and the checkpoint shapes it implies, once per version of the file."""
    side = Path(state[0])
    config = ModelConfig.from_file(side)
    return config, _expected_shapes(config, same_config(config, side))


def _check_parts(path: Path, shapes: dict[str, tuple[int, ...]], side: Path | None) -> None:
    """An SA3 checkpoint: the SA3 DiT marker, the three parts, and no keys outside them."""
    marker = CHECKPOINT_PREFIXES["dit"] + SA3_MARKER
    if marker not in shapes:
        hint = "" if side else f" and has no sidecar {path.with_suffix('.json').name!r} with its model_config.json"
        raise _fail(path, f"is not a Stable Audio 3 checkpoint (no {marker!r}){hint}.")
    stray = [k for k in shapes if not k.startswith(tuple(CHECKPOINT_PREFIXES.values()))]
    if stray:
        raise _fail(path, f"must hold only Stable Audio 3 tensors (got {len(stray)} outside "
                          f"{list(CHECKPOINT_PREFIXES.values())}, e.g. {stray[:3]}). Use the checkpoint as released.")
    for name, prefix in CHECKPOINT_PREFIXES.items():
        if not any(k.startswith(prefix) for k in shapes):
            raise _fail(path, f"has no {PART_NAMES[name]} (no {prefix + '*'!r} tensors): a Stable Audio 3 checkpoint "
                              "holds the diffusion transformer, the conditioner and the SAME autoencoder. Use the "
                              "full checkpoint file.")


def _check_against(path: Path, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                   side: Path) -> None:
    """The checkpoint's tensors are exactly those its sidecar config builds."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [(k, shapes[k], expected[k]) for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        example = f", e.g. {wrong[0][0]!r}: {wrong[0][1]} (expected {wrong[0][2]})" if wrong else ""
        raise _fail(path, f"does not match its sidecar {side.name!r}: {len(missing)} missing tensor(s) {missing[:3]}, "
                          f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of the wrong shape{example}. "
                          "Use the sidecar of this checkpoint's model.")


def _variant_from_name(path: Path, family: str) -> str:
    """The official variant a file name points to (``stable_audio_3_small_sfx`` -> small-sfx);
    the post-trained music model of ``family`` when the name does not say."""
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    if family == "medium":
        return "medium-base" if "base" in words else "medium"
    kind = "sfx" if "sfx" in words else "music"
    return f"small-{kind}-base" if "base" in words else f"small-{kind}"


def detect_variant(path: str | Path, variant: str = AUTO) -> str:
    """The official variant of a checkpoint file, from its key signature and shapes (the header
    only). ``variant`` other than "auto" must fit the file's architecture."""
    path = file_path(path, "checkpoint")
    shapes = {canonical_key(k): v for k, v in read_shapes(path).items()}
    _check_parts(path, shapes, None)
    families = [f for f in ("small", "medium") if _signature(f) == shapes]
    if not families:
        raise _fail(path, "matches the shapes of no official Stable Audio 3 model (small or medium): a fine-tune "
                          "or a different architecture needs its model_config.json as "
                          f"{path.with_suffix('.json').name!r} beside it.")
    family = families[0]
    if variant == AUTO:
        return _variant_from_name(path, family)
    if variant not in VARIANTS:
        raise ValueError(f"Stable Audio 3: unknown variant {variant!r} (expected {AUTO!r} or one of {list(VARIANTS)}).")
    if _architecture(variant) != family:
        raise ValueError(f"Stable Audio 3: variant {variant!r} is a {_architecture(variant)} model but {str(path)!r} "
                         f"holds a {family} model; pick a {family} variant or {AUTO!r}.")
    return variant


def checkpoint_config(path: str | Path, variant: str = AUTO) -> tuple[ModelConfig, str]:
    """The model config of a checkpoint file and where it came from (the sidecar's path or the
    official variant's name)."""
    path = file_path(path, "checkpoint")
    side = sidecar(path)
    if side is None:
        name = detect_variant(path, variant)
        return official_config(name), name
    if variant != AUTO:
        raise ValueError(f"Stable Audio 3: {str(path)!r} has a sidecar config {side.name!r}, which decides the model; "
                         f"set variant to {AUTO!r} (got {variant!r}) or remove the sidecar.")
    shapes = {canonical_key(k): v for k, v in read_shapes(path).items()}  # the file is checked, sidecar or not
    _check_parts(path, shapes, side)
    config, expected = _sidecar_config(file_state(side) or (str(side), -1, -1))
    _check_against(path, shapes, expected, side)
    return config, str(side)


# --- text encoder ---------------------------------------------------------------------------


class SentencePieceTokenizer:
    """The tokenizer stored in a text-encoder file, called like the Hugging Face tokenizer the
    official folder uses (the subset ``TextEncoder.tokenize`` passes): no BOS/EOS, right padding
    with id 0 to ``max_length``, truncation at ``max_length``."""

    PAD_ID = 0

    def __init__(self, model_proto: bytes):
        import sentencepiece  # core ComfyUI's tokenizer library (in its requirements)

        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self.pieces = self.processor.get_piece_size()  # raises for a proto that parses to no model

    def __call__(self, prompts: list[str], *, max_length: int, truncation: bool = True, padding: str = "max_length",
                 return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        if not (truncation and padding == "max_length" and return_tensors == "pt"):
            raise ValueError("SentencePieceTokenizer only pads and truncates to max_length, returning tensors.")
        ids = torch.full((len(prompts), max_length), self.PAD_ID, dtype=torch.long)  # (B, P)
        mask = torch.zeros(len(prompts), max_length, dtype=torch.long)
        for i, tokens in enumerate(self.processor.encode(list(prompts))):
            tokens = tokens[:max_length]
            ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[i, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _text_config(path: Path):
    """The T5Gemma config of a text-encoder file: its sidecar, else the bundled one."""
    source = sidecar(path) or TEXT_ENCODER_CONFIG
    return _t5gemma_config(file_state(source) or (str(source), -1, -1)), source


@lru_cache(maxsize=16)
def _t5gemma_config(state: tuple[str, int, int]):
    """A checked T5Gemma encoder config, once per version of the file."""
    from transformers import T5GemmaConfig

    source = Path(state[0])
    raw = read_json_file(source, "a T5Gemma config.json")
    _check_t5gemma_dict(raw, source)
    try:
        config = T5GemmaConfig.from_dict(raw)
    except Exception as e:  # transformers' (and huggingface_hub's) own validation errors
        raise RuntimeError(f"Stable Audio 3: {str(source)!r} is not a T5Gemma config ({_one_line(e)}).") from e
    config.is_encoder_decoder = False  # encoder only, as the official conditioner loads it
    return config


def _check_t5gemma_dict(raw, source: Path) -> None:
    """A T5Gemma config.json: an object whose ``encoder`` object has every size bounded."""
    where = f"config in {str(source)!r}"
    if not isinstance(raw, dict):
        raise fail("a T5Gemma config.json", "a JSON object", raw, where)
    if raw.get("model_type", "t5gemma") != "t5gemma":
        raise fail("model_type", "'t5gemma' (a T5Gemma config)", raw["model_type"], where)
    encoder = raw.get("encoder")
    if not isinstance(encoder, dict):
        raise fail("encoder", "a JSON object (the T5Gemma encoder's config)", encoder, where)
    for key, hi in T5GEMMA_SIZES.items():
        if key in encoder:
            check_number(f"encoder.{key}", encoder[key], 1, hi, integer=True, where=where)


@lru_cache(maxsize=16)
def _encoder_shapes(state: tuple[str, int, int]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the T5Gemma encoder a config builds (on the meta device), once per config file."""
    config = _t5gemma_config(state)
    try:
        with torch.device("meta"):
            model = _encoder_model_class()(config)
    except Exception as e:  # sizes that do not fit together (heads, layer types) fail inside transformers
        raise RuntimeError(f"Stable Audio 3: {state[0]!r} is not a buildable T5Gemma config ({_one_line(e)}).") from e
    return {"model." + k: tuple(v.shape) for k, v in model.state_dict().items()}


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())  # transformers' validation messages span lines


def _encoder_model_class():
    from transformers import T5GemmaEncoderModel

    return T5GemmaEncoderModel


def check_text_encoder_file(path: str | Path) -> Path:
    """Check a text-encoder file against its config and its tokenizer against its embedding (the
    header and the tokenizer tensor only, each file once until it changes); returns the config's path."""
    path = file_path(path, "text encoder")
    read_header(path)  # present, a bounded safetensors header
    source = sidecar(path) or TEXT_ENCODER_CONFIG
    _checked_text_encoder(file_state(path), file_state(source) or (str(source), -1, -1))
    return source


@lru_cache(maxsize=16)
def _checked_text_encoder(state: tuple[str, int, int], source_state: tuple[str, int, int]) -> None:
    path, source = Path(state[0]), Path(source_state[0])
    header = read_header(path)
    expected = _encoder_shapes(source_state)
    found = {k: shape for k, (_, shape) in header.items() if k.startswith(TEXT_PREFIX)}
    if found != expected:
        hint = (f"has no sidecar {path.with_suffix('.json').name!r} with its config.json"
                if source == TEXT_ENCODER_CONFIG else f"does not match its sidecar {source.name!r}")
        raise _fail(path, f"is not a T5Gemma-b-b-ul2 text encoder: its {TEXT_PREFIX}* tensors ({len(found)}) do not "
                          f"match the {len(expected)} expected, and it {hint}.")
    _check_tokenizer_tensor(path, header)
    rows = expected[TEXT_PREFIX + "embed_tokens.weight"][0]
    check_vocabulary(_read_tokenizer(path).pieces, rows, f"{str(path)!r}")


def _check_tokenizer_tensor(path: Path, header: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """The ``spiece_model`` tensor: 1-D uint8 of 1 to ``MAX_TOKENIZER_BYTES`` bytes (header only)."""
    if TOKENIZER_KEY not in header:
        raise _fail(path, f"has no tokenizer (no {TOKENIZER_KEY!r} tensor holding the SentencePiece model).")
    dtype, shape = header[TOKENIZER_KEY]
    if dtype != "U8" or len(shape) != 1 or not 1 <= shape[0] <= MAX_TOKENIZER_BYTES:
        raise _fail(path, f"has a {TOKENIZER_KEY!r} tensor of {dtype} {shape}, expected 1-D uint8 (U8) of 1 to "
                          f"{MAX_TOKENIZER_BYTES:,} bytes (a SentencePiece model). Use the text encoder as released.")


def _read_tokenizer(path: Path) -> SentencePieceTokenizer:
    """The SentencePiece tokenizer stored in a checked text-encoder file."""
    with safe_open(str(path), framework="pt") as f:
        proto = f.get_tensor(TOKENIZER_KEY).numpy().tobytes()  # at most MAX_TOKENIZER_BYTES
    try:
        return SentencePieceTokenizer(proto)
    except RuntimeError as e:  # sentencepiece's parse error
        raise _fail(path, f"has a {TOKENIZER_KEY!r} tensor that is not a SentencePiece model ({e}).") from e


def load_text_encoder_file(path: str | Path, cfg: TextEncoderConfig, dtype: torch.dtype | None = None) -> TextEncoder:
    """T5Gemma encoder + SentencePiece tokenizer from one file. The encoder weights stay
    memory-mapped when kept in the file's dtype (``dtype=None``, bf16 for core's file)."""
    from transformers.utils import logging as hf_logging

    path = file_path(path, "text encoder")
    check_text_encoder_file(path)
    config, _ = _text_config(path)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(TEXT_PREFIX)}  # memory-mapped
    tokenizer = _read_tokenizer(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the decoder weights deliberately left out
    try:
        model = _encoder_model_class().from_pretrained(None, config=config, state_dict=state,
                                                       dtype=dtype if dtype is not None else "auto")
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval().requires_grad_(False)
    return TextEncoder(model, tokenizer, cfg.max_length)
