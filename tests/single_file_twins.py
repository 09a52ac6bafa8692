"""Single-file twins of the tiny fixture models, built in a temporary folder.

For a fixture model ``name`` this writes, from the same weights:
- a folder twin in the official layout whose ``t5gemma-b-b-ul2/`` tokenizer is a tiny
  SentencePiece model (``tokenizer.model`` and the ``tokenizer.json`` transformers converts it to);
- ``checkpoints/<name>.safetensors``: the fixture's ``model.safetensors`` byte for byte, with
  its ``model_config.json`` as the sidecar ``<name>.json`` (tiny shapes match no official model);
- ``text_encoders/<name>-t5gemma.safetensors`` (or another name): the T5Gemma tensors plus ``spiece_model``
  (the same SentencePiece model as a uint8 tensor), with the folder's ``config.json`` as sidecar.

So ``from_pretrained(folder)`` and ``from_single_file(checkpoint, text_encoder)`` load the same
weights and the same tokenizer through their own code paths.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# prompts of the tests and some more words, so the tiny vocabulary covers them in whole pieces
_WORDS = ("ambient piano rain drums techno warm pads bass guitar synth calm ocean waves birds forest night city "
          "noise laser explosion footsteps dog bark orchestra strings violin cello choir bpm lofi hip hop jazz "
          "a an the with and of in on slow fast loud soft bright dark deep sound music melody beat").split()


def train_spiece(vocab_size: int = 200) -> bytes:
    """A tiny BPE SentencePiece model with the Gemma tokenizer's conventions (ids 0-3 = pad, eos,
    bos, unk; no dummy prefix; whitespace kept as is)."""
    import sentencepiece

    sentences = [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(len(_WORDS))] * 4
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return out.getvalue()


def _write_folder_tokenizer(text_dir: Path, proto: bytes) -> None:
    """The official folder's tokenizer files for ``proto``, made by transformers itself."""
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
        (text_dir / name).unlink(missing_ok=True)
    (text_dir / "tokenizer.model").write_bytes(proto)
    (text_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": False, "add_eos_token": False, "pad_token": "<pad>",
        "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>", "padding_side": "right"}))
    AutoTokenizer.from_pretrained(text_dir).save_pretrained(text_dir)  # writes tokenizer.json beside it


@dataclass(frozen=True)
class Twins:
    folder: Path  # official layout
    checkpoint: Path  # models/checkpoints/<name>.safetensors (+ <name>.json)
    text_encoder: Path  # models/text_encoders/<name>-t5gemma.safetensors (+ .json)
    spiece: bytes


def make_twins(fixture: Path, root: Path, proto: bytes | None = None, name: str | None = None,
               text_encoder_name: str | None = None) -> Twins:
    """Build the twins of the fixture model folder ``fixture`` under ``root`` (the folder and
    checkpoint named ``name``, by default the fixture's; the text encoder ``text_encoder_name``,
    by default ``<name>-t5gemma``)."""
    name = name or fixture.name
    proto = proto if proto is not None else train_spiece()
    folder = root / "stable_audio_3" / name
    shutil.copytree(fixture, folder)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared fixtures are read-only
    _write_folder_tokenizer(folder / "t5gemma-b-b-ul2", proto)

    checkpoints, text_encoders = root / "checkpoints", root / "text_encoders"
    checkpoints.mkdir(parents=True, exist_ok=True)
    text_encoders.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoints / f"{name}.safetensors"
    shutil.copyfile(fixture / "model.safetensors", checkpoint)
    shutil.copyfile(fixture / "model_config.json", checkpoint.with_suffix(".json"))

    text_encoder = text_encoders / f"{text_encoder_name or name + '-t5gemma'}.safetensors"
    tensors = load_file(fixture / "t5gemma-b-b-ul2" / "model.safetensors")
    tensors["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    save_file(tensors, text_encoder)
    shutil.copyfile(fixture / "t5gemma-b-b-ul2" / "config.json", text_encoder.with_suffix(".json"))
    return Twins(folder, checkpoint, text_encoder, proto)


def rewrite_checkpoint(source: Path, target: Path, *, dtype: torch.dtype | None = None,
                       rename: tuple[str, str] | None = None, drop: str | None = None) -> Path:
    """A variant of a checkpoint file: floating tensors cast to ``dtype``, a key prefix renamed,
    or keys starting with ``drop`` left out; the sidecar is copied along."""
    tensors = {}
    for key, value in load_file(source).items():
        if drop is not None and key.startswith(drop):
            continue
        if rename is not None and key.startswith(rename[0]):
            key = rename[1] + key[len(rename[0]):]
        tensors[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    save_file(tensors, target)
    if source.with_suffix(".json").is_file():
        shutil.copyfile(source.with_suffix(".json"), target.with_suffix(".json"))
    return target


_ELEMENT_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1}


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "F32",
                             data: dict[str, bytes] | None = None, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file laid out as ``safetensors`` itself writes it (tensors sorted by name,
    compact JSON header padded to 8 bytes) whose tensor data is a hole: an official-size file
    that takes no disk space, for header-only checks. ``data`` holds real U8 tensors (by key);
    ``metadata`` is the header's ``__metadata__`` (transformers writes ``{"format": "pt"}``)."""
    import math

    data = data or {}
    entries = {**{k: (dtype, list(s)) for k, s in shapes.items()}, **{k: ("U8", [len(v)]) for k, v in data.items()}}
    header, offset = ({"__metadata__": metadata} if metadata else {}), 0
    for key in sorted(entries):
        kind, shape = entries[key]
        size = math.prod(shape) * _ELEMENT_BYTES[kind]
        header[key] = {"dtype": kind, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for key, value in data.items():
            f.seek(8 + len(raw) + header[key]["data_offsets"][0])
            f.write(value)
        f.truncate(8 + len(raw) + offset)
    return path
