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

import json
import logging
import re
from functools import cache
from pathlib import Path

import torch
from safetensors import safe_open

from .conditioners import Conditioner, TextEncoder
from .config import MODEL_REPOS, ModelConfig, TextEncoderConfig
from .dit import DiT
from .loading import CHECKPOINT_PREFIXES
from .same import SAMEAutoencoder, SAMEConfig

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
VARIANTS = tuple(MODEL_REPOS)  # the six official model names
AUTO = "auto"
TEXT_ENCODER_CONFIG = CONFIG_DIR / "t5gemma-b-b-ul2.json"
TOKENIZER_KEY = "spiece_model"
TEXT_PREFIX = "model.encoder."  # the T5Gemma encoder model's keys, under the file's "model."
DIT_ALIASES = ("model.diffusion_model.",)  # core's name for the DiT prefix, read as "model.model."
SA3_MARKER = "transformer.global_cond_embedder.0.weight"  # a DiT key only SA3 has (core's test)


def _fail(path: Path, what: str) -> RuntimeError:
    return RuntimeError(f"Stable Audio 3: {str(path)!r} {what}")


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a safetensors file, from its header only (no tensor data is read)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise _fail(path, f"is not a readable safetensors file ({e}).") from e


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


@cache
def _signature(family: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a full official checkpoint of ``family`` (built on the meta device)."""
    variant = next(v for v in VARIANTS if _architecture(v) == family)
    cfg = official_config(variant)
    with torch.device("meta"):
        parts = {"dit": DiT(cfg.dit), "conditioner": Conditioner(cfg.text, cfg.seconds, cfg.cond_dim),
                 "autoencoder": SAMEAutoencoder(SAMEConfig.from_official(cfg.pretransform))}
    return {CHECKPOINT_PREFIXES[name] + key: tuple(t.shape)
            for name, module in parts.items() for key, t in module.state_dict().items()}


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
    path = Path(path)
    shapes = {canonical_key(k): v for k, v in read_shapes(path).items()}
    if CHECKPOINT_PREFIXES["dit"] + SA3_MARKER not in shapes:
        raise _fail(path, f"is not a Stable Audio 3 checkpoint (no {CHECKPOINT_PREFIXES['dit'] + SA3_MARKER!r}) and "
                          f"has no sidecar {path.with_suffix('.json').name!r} with its model_config.json.")
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
    path = Path(path)
    side = sidecar(path)
    if side is None:
        name = detect_variant(path, variant)
        return official_config(name), name
    if variant != AUTO:
        raise ValueError(f"Stable Audio 3: {str(path)!r} has a sidecar config {side.name!r}, which decides the model; "
                         f"set variant to {AUTO!r} (got {variant!r}) or remove the sidecar.")
    return ModelConfig.from_file(side), str(side)


# --- text encoder ---------------------------------------------------------------------------


class SentencePieceTokenizer:
    """The tokenizer stored in a text-encoder file, called like the Hugging Face tokenizer the
    official folder uses (the subset ``TextEncoder.tokenize`` passes): no BOS/EOS, right padding
    with id 0 to ``max_length``, truncation at ``max_length``."""

    PAD_ID = 0

    def __init__(self, model_proto: bytes):
        import sentencepiece  # core ComfyUI's tokenizer library (in its requirements)

        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)

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
    from transformers import T5GemmaConfig

    source = sidecar(path) or TEXT_ENCODER_CONFIG
    try:
        config = T5GemmaConfig.from_dict(json.loads(source.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise RuntimeError(f"Stable Audio 3: cannot read the T5Gemma config {str(source)!r} ({e}).") from e
    config.is_encoder_decoder = False  # encoder only, as the official conditioner loads it
    return config, source


def _encoder_model_class():
    from transformers import T5GemmaEncoderModel

    return T5GemmaEncoderModel


def check_text_encoder_file(path: str | Path) -> Path:
    """Check a text-encoder file against its config (header only); returns the config's path."""
    path = Path(path)
    shapes = read_shapes(path)
    config, source = _text_config(path)
    with torch.device("meta"):
        expected = {"model." + k: tuple(v.shape)
                    for k, v in _encoder_model_class()(config).state_dict().items()}
    found = {k: v for k, v in shapes.items() if k.startswith(TEXT_PREFIX)}
    if found != expected:
        hint = (f"has no sidecar {path.with_suffix('.json').name!r} with its config.json"
                if source == TEXT_ENCODER_CONFIG else f"does not match its sidecar {source.name!r}")
        raise _fail(path, f"is not a T5Gemma-b-b-ul2 text encoder: its {TEXT_PREFIX}* tensors ({len(found)}) do not "
                          f"match the {len(expected)} expected, and it {hint}.")
    if TOKENIZER_KEY not in shapes:
        raise _fail(path, f"has no tokenizer (no {TOKENIZER_KEY!r} tensor holding the SentencePiece model).")
    return source


def load_text_encoder_file(path: str | Path, cfg: TextEncoderConfig, dtype: torch.dtype | None = None) -> TextEncoder:
    """T5Gemma encoder + SentencePiece tokenizer from one file. The encoder weights stay
    memory-mapped when kept in the file's dtype (``dtype=None``, bf16 for core's file)."""
    from transformers.utils import logging as hf_logging

    path = Path(path)
    check_text_encoder_file(path)
    config, _ = _text_config(path)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(TEXT_PREFIX)}  # memory-mapped
        proto = f.get_tensor(TOKENIZER_KEY)
    if proto.dtype != torch.uint8 or proto.dim() != 1:
        raise _fail(path, f"has a {TOKENIZER_KEY!r} tensor of {proto.dtype} {tuple(proto.shape)}, expected 1-D uint8.")
    try:
        tokenizer = SentencePieceTokenizer(proto.numpy().tobytes())
    except RuntimeError as e:  # sentencepiece's parse error
        raise _fail(path, f"has a {TOKENIZER_KEY!r} tensor that is not a SentencePiece model ({e}).") from e
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the decoder weights deliberately left out
    try:
        model = _encoder_model_class().from_pretrained(None, config=config, state_dict=state,
                                                       dtype=dtype if dtype is not None else "auto")
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval().requires_grad_(False)
    return TextEncoder(model, tokenizer, cfg.max_length)
