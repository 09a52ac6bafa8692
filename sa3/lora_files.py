"""Reading official Stable Audio 3 LoRA files into validated, model-independent records.

Two formats (spec 7.1):
- ``.safetensors``: fp16 tensors; the metadata key ``"lora_config"`` holds JSON
  ``{rank, alpha, adapter_type, dropout, include, exclude}``.
- Lightning ``.ckpt``: a torch zip pickle of ``{"state_dict": {...}, "lora_config": {...}}``. Read
  with ``torch.load(weights_only=True)``; files that need pickle code execution are refused.

File keys are ``<layer>.parametrizations.weight.0.<param>`` (spec 7.2). ``KEY_REMAP`` turns the
layer part into (part, our module path); ``ADAPTER_PARAMS`` says which params each adapter type
carries. Every key of a file must be consumed, or the load fails naming the file.

Legend: O fan_out (rows of the 2-D weight view), I fan_in (columns; in * kernel for Conv1d),
r rank.
"""

from __future__ import annotations

import functools
import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import torch

from .checks import fail

logger = logging.getLogger(__name__)

# adapter type -> tensors every adapted layer carries (official models/lora/model.py)
ADAPTER_PARAMS: dict[str, tuple[str, ...]] = {
    "lora": ("lora_A", "lora_B"),
    "dora-rows": ("lora_A", "lora_B", "magnitude"),
    "dora-cols": ("lora_A", "lora_B", "magnitude"),
    "bora": ("lora_A", "lora_B", "magnitude_r", "magnitude_c"),
    "lora-xs": ("M_xs",),
    "dora-rows-xs": ("M_xs", "magnitude"),
    "dora-cols-xs": ("M_xs", "magnitude"),
    "bora-xs": ("M_xs", "magnitude_r", "magnitude_c"),
}
# persistent buffers of the official parametrization a file may also hold: U/V replace the
# computed -XS bases (the official load_state_dict would load them); the dropout mask is all ones
OPTIONAL_PARAMS: dict[str, tuple[str, ...]] = {
    kind: ("lora_dropout_mask",) + (("U", "V") if kind.endswith("-xs") else ()) for kind in ADAPTER_PARAMS
}
LEGACY_DORA = "dora"  # resolves to dora-rows, or dora-cols when 2-D magnitudes say so
SLOT = ".parametrizations.weight.0."  # files always use slot 0 (spec 7.2)

# file key prefix -> (part, prefix of our module path); the official loader offers the same dict
# to the DiT wrapper (``model.`` + DiT path) and to the conditioner (``conditioners.`` path)
KEY_REMAP: tuple[tuple[str, str, str], ...] = (
    ("model.", "dit", ""),
    ("conditioners.", "conditioner", "conditioners."),
)
CONFIG_KEYS = ("rank", "alpha", "adapter_type", "dropout", "include", "exclude")


class LoRALoadError(RuntimeError):
    """A LoRA file cannot be read or does not fit the model; the model is left unchanged."""


def file_error(path: Path | str, what: str, fix: str) -> LoRALoadError:
    """The one error shape: ``Stable Audio 3 LoRA: <what> in '<file>'. <fix>.``"""
    return LoRALoadError(f"Stable Audio 3 LoRA: {what} in {str(path)!r}. {fix}")


@dataclass(frozen=True)
class LoRAFile:
    """One LoRA file, parsed and checked on its own (no model needed yet)."""

    path: Path
    adapter_type: str  # resolved type (one of ADAPTER_PARAMS)
    rank: int  # r: from the config, else inferred from the tensors
    alpha: float  # alpha / rank is the scaling; defaults to rank
    dropout: float  # training dropout; only matters together with a stored dropout mask
    include: tuple[str, ...] | None  # substring rules with bracket expansion; None = every layer
    exclude: tuple[str, ...] | None  # substring rules with bracket expansion; None = none
    layers: dict[tuple[str, str], dict[str, torch.Tensor]] = field(repr=False)  # (part, path) -> param -> fp32
    keys: dict[tuple[str, str], str] = field(repr=False)  # (part, path) -> file layer prefix, for messages

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


# --- layer-name rules ------------------------------------------------------------------------


MAX_RULE_CHARS = 1_000  # one layer-name rule; real ones are a few dozen characters
MAX_RULE_NAMES = 10_000  # names one rule may expand to; the largest model has ~1,000 layers
_RANGE = re.compile(r"\[(\d+)-(\d+)\]")


def rule_names(pattern: str) -> int:
    """How many names ``pattern`` expands to (the product of its ranges' lengths), counted without
    expanding it; the digits are bounded by ``MAX_RULE_CHARS``."""
    count = 1
    for a, b in _RANGE.findall(pattern):
        count *= abs(int(b) - int(a)) + 1
    return count


def check_rule(name: str, pattern, where: str | None = None, fix: str = "") -> str:
    """One layer-name rule (include, exclude, layer_filter entry): text of at most ``MAX_RULE_CHARS``
    characters whose brackets are all ``[a-b]`` digit ranges, expanding to at most
    ``MAX_RULE_NAMES`` names. Checked before anything is expanded."""
    fix = fix or "Use layer-name parts such as 'cross_attn' or 'transformer.layers.[0-7]'."
    if not isinstance(pattern, str) or len(pattern) > MAX_RULE_CHARS:
        got = f"{len(pattern):,} characters" if isinstance(pattern, str) else None
        raise fail(name, f"a layer-name rule of at most {MAX_RULE_CHARS:,} characters", pattern, where, fix, got=got)
    if "[" in _RANGE.sub("", pattern) or "]" in _RANGE.sub("", pattern):
        raise fail(name, "a layer-name rule whose brackets are [a-b] ranges of whole numbers", pattern, where, fix)
    count = rule_names(pattern)
    if count > MAX_RULE_NAMES:
        raise fail(name, f"a layer-name rule expanding to at most {MAX_RULE_NAMES:,} names", pattern, where, fix,
                   got=f"{pattern[:60]!r}, {count:,} names")
    return pattern


def expand_brackets(pattern: str) -> list[str]:
    """``"layers.[0-2].attn"`` -> ``["layers.0.attn", "layers.1.attn", "layers.2.attn"]``;
    descending ranges count down; several ranges expand as a product (official ``_expand``).
    Refuses (``ValueError``) a rule longer than ``MAX_RULE_CHARS`` or expanding to more than
    ``MAX_RULE_NAMES`` names before expanding anything."""
    return list(_expanded(pattern))


@functools.lru_cache(maxsize=256)
def _expanded(pattern: str) -> tuple[str, ...]:
    if not isinstance(pattern, str) or len(pattern) > MAX_RULE_CHARS or rule_names(pattern) > MAX_RULE_NAMES:
        check_rule("pattern", pattern)  # raises the message naming the bound
    pieces = _RANGE.split(pattern)
    literals, starts, ends = pieces[0::3], pieces[1::3], pieces[2::3]
    pools = []
    for a, b in zip(starts, ends, strict=True):
        lo, hi = int(a), int(b)
        step = 1 if hi >= lo else -1
        pools.append([str(n) for n in range(lo, hi + step, step)])
    out = []
    for combo in product(*pools):
        text = literals[0]
        for number, literal in zip(combo, literals[1:], strict=True):
            text += number + literal
        out.append(text)
    return tuple(out)


def matches_any(name: str, patterns) -> bool:
    """True when ``name`` contains any expanded pattern (patterns are stripped first)."""
    return any(e in name for p in (patterns or ()) for e in expand_brackets(p.strip()))


def selected(name: str, include, exclude) -> bool:
    """The official include/exclude rule: included (or no include list) and not excluded."""
    if include is not None and not matches_any(name, include):
        return False
    return not (exclude is not None and matches_any(name, exclude))


# --- reading ---------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for broken headers/data
        raise file_error(path, f"the safetensors file cannot be read ({type(e).__name__}: {e})",
                         "The file is corrupted or incomplete; download or export it again") from e
    raw = metadata.get("lora_config")
    if raw is None:
        logger.info("Stable Audio 3 LoRA: %s has no lora_config metadata; assuming plain lora, rank from tensors", path)
        return tensors, {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise file_error(path, f"the 'lora_config' metadata is not valid JSON ({e})",
                         "Re-export the LoRA with the official trainer") from e
    return tensors, config


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise file_error(path, "the checkpoint needs pickle code execution to load (refused: weights_only=True)",
                         "Only load checkpoints you trust; convert it to .safetensors with the official "
                         "convert_lora_ckpt_to_safetensors, or re-save it holding only tensors and plain types") from e
    except Exception as e:  # zip/EOF/runtime errors of a broken file
        raise file_error(path, f"the checkpoint cannot be read ({type(e).__name__}: {e})",
                         "The file is corrupted or incomplete, or not a torch checkpoint") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        got = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise file_error(path, f"the checkpoint has no 'state_dict' dict (got {got})",
                         "Expected a Lightning LoRA checkpoint {'state_dict', 'lora_config'}")
    config = ckpt.get("lora_config") or {}
    if not isinstance(config, dict):
        raise file_error(path, f"'lora_config' is not a dict (got {type(config).__name__})",
                         "Expected {rank, alpha, adapter_type, include, exclude}")
    return ckpt["state_dict"], config


def _rules(path: Path, config: dict, key: str) -> tuple[str, ...] | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]  # the official code would iterate its characters; a one-rule list is meant
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise file_error(path, f"lora_config[{key!r}] must be a list of strings (got {value!r})",
                         "Fix the LoRA's config")
    for rule in value:
        try:
            check_rule(f"lora_config[{key!r}]", rule)
        except ValueError as e:
            raise file_error(path, str(e).removeprefix("Stable Audio 3: ").rstrip("."), "Fix the LoRA's config") from e
    return tuple(value)


def _tensor_rank(param: str, tensor: torch.Tensor) -> int | None:
    if param == "lora_A" or param == "M_xs":
        return tensor.shape[0]
    if param == "lora_B":
        return tensor.shape[1]
    return None


def _resolve_type(path: Path, raw: object, tensors: dict[str, torch.Tensor]) -> str:
    if not isinstance(raw, str):
        raise file_error(path, f"adapter_type must be a string (got {raw!r})", f"Use one of {sorted(ADAPTER_PARAMS)}")
    if raw == LEGACY_DORA:
        for key, t in tensors.items():  # the first magnitude decides, as in the official loader
            if key.endswith(".magnitude"):
                if t.dim() == 2 and t.shape[0] == 1:
                    return "dora-cols"  # old format (1, I)
                break
        return "dora-rows"
    if raw not in ADAPTER_PARAMS:
        known = [*sorted(ADAPTER_PARAMS), LEGACY_DORA]
        raise file_error(path, f"unknown adapter_type {raw!r} (expected one of {known})",
                         "The file was made by an unsupported trainer or a newer version; update the node pack")
    return raw


def _split_key(key: str) -> tuple[tuple[str, str], str, str] | None:
    """File key -> ((part, our path), param, file layer prefix), or None when it fits no rule."""
    if SLOT not in key:
        return None
    layer, param = key.rsplit(SLOT, 1)
    if "." in param or not param:
        return None
    for prefix, part, ours in KEY_REMAP:
        if layer.startswith(prefix) and len(layer) > len(prefix):
            return (part, ours + layer[len(prefix):]), param, layer
    return None


def read_lora_file(path: str | Path) -> LoRAFile:
    """Read and check one official LoRA file (see the module docstring for the formats)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise file_error(path, "the file does not exist", "Check the path")
    if path.suffix.lower() == ".safetensors":
        tensors, config = _read_safetensors(path)
    else:
        tensors, config = _read_checkpoint(path)
    if not tensors:
        raise file_error(path, "the file holds no tensors", "Expected LoRA tensors (lora_A/lora_B, M_xs, ...)")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise file_error(path, f"state_dict entries that are not tensors (got {bad[:3]!r})",
                         "Expected LoRA tensors only")
    unknown_cfg = sorted(set(config) - set(CONFIG_KEYS))
    if unknown_cfg:
        logger.debug("Stable Audio 3 LoRA: %s: ignoring lora_config keys %s", path, unknown_cfg)

    include, exclude = _rules(path, config, "include"), _rules(path, config, "exclude")  # bounded before use
    adapter_type = _resolve_type(path, config.get("adapter_type", "lora"), tensors)
    layers, prefixes = _group_layers(path, tensors, adapter_type)
    rank = _check_rank(path, config.get("rank"), layers, prefixes)
    alpha = config.get("alpha")
    alpha = float(rank if alpha is None else alpha)
    dropout = float(config.get("dropout") or 0.0)
    return LoRAFile(path=path, adapter_type=adapter_type, rank=rank, alpha=alpha, dropout=dropout,
                    include=include, exclude=exclude, layers=layers, keys=prefixes)


def _group_layers(path: Path, tensors: dict, adapter_type: str
                  ) -> tuple[dict[tuple[str, str], dict[str, torch.Tensor]], dict[tuple[str, str], str]]:
    """Group the file's keys by target layer through KEY_REMAP: (part, our module path) -> param -> tensor,
    and the same target -> the file's layer prefix (for messages). Every key must be consumed."""
    wanted, optional = ADAPTER_PARAMS[adapter_type], OPTIONAL_PARAMS[adapter_type]
    layers: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    prefixes: dict[tuple[str, str], str] = {}
    unconsumed = []
    for key, tensor in tensors.items():
        split = _split_key(key)
        if split is None or split[1] not in wanted + optional:
            unconsumed.append(key)
            continue
        target, param, layer = split
        if not tensor.is_floating_point():
            raise file_error(path, f"tensor {key!r} has dtype {tensor.dtype} (expected a float dtype)",
                             "The file is corrupted")
        if param == "magnitude" and tensor.dim() == 2:
            tensor = tensor.squeeze()  # legacy 2-D DoRA magnitudes
        layers.setdefault(target, {})[param] = tensor.float()  # fp16 file values -> fp32, as official
        prefixes[target] = layer
    if unconsumed:
        raise file_error(path, f"{len(unconsumed)} tensor(s) are not {adapter_type} LoRA parameters "
                         f"(got {unconsumed[:3]!r}; expected '<layer>{SLOT}<param>' with param in {list(wanted)})",
                         "The file is not an SA3 LoRA of this adapter type, or its metadata is wrong")
    for target, params in layers.items():
        missing = [p for p in wanted if p not in params]
        if missing:
            raise file_error(path, f"layer {prefixes[target]!r} lacks {missing} (got {sorted(params)})",
                             "The file is incomplete or corrupted; export it again")
    return layers, prefixes


def _check_rank(path: Path, rank, layers: dict[tuple[str, str], dict[str, torch.Tensor]],
                prefixes: dict[tuple[str, str], str]) -> int:
    """The LoRA rank: lora_config's ``rank`` or, without one, the single rank of the tensors; every
    tensor must agree with it."""
    ranks = sorted({r for params in layers.values() for p, t in params.items()
                    if (r := _tensor_rank(p, t)) is not None})
    if isinstance(rank, float) and rank.is_integer():
        rank = int(rank)  # JSON written by other tools may say 4.0
    if rank is None:
        if len(ranks) != 1:
            raise file_error(path, f"cannot infer one rank from the tensors (got ranks {ranks})",
                             "Per-layer ranks are not supported; add 'rank' to lora_config")
        rank = ranks[0]
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise file_error(path, f"lora_config rank must be a positive integer (got {rank!r})", "Fix the LoRA's config")
    for target, params in layers.items():
        for p, t in params.items():
            r = _tensor_rank(p, t)
            if r is not None and r != rank:
                raise file_error(path, f"rank mismatch: {prefixes[target] + SLOT + p!r} has rank {r} "
                                 f"(shape {tuple(t.shape)}; expected rank {rank} from lora_config)",
                                 "The file's config and tensors disagree; re-export the LoRA")
        if "M_xs" in params and params["M_xs"].shape != (rank, rank):
            raise file_error(path, f"{prefixes[target] + SLOT}M_xs has shape {tuple(params['M_xs'].shape)} "
                             f"(expected ({rank}, {rank}))", "The file is corrupted")
    return rank


def read_svd_bases(path: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """-XS bases: weight name (``model.model.<path>.weight`` / ``conditioner.<path>.weight``) ->
    (U (O, r_max), V (I, r_max)). Either a ``.safetensors`` with ``<weight name>.U`` / ``.V`` keys
    (the fixtures' ``svd_bases.safetensors``) or the official ``torch.save`` dict
    ``weight name -> {"U", "V"}``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise file_error(path, "the SVD bases file does not exist", "Check svd_bases_path")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path))
            names = {k[:-2] for k in flat if k.endswith((".U", ".V"))}
            bases = {n: (flat[n + ".U"], flat[n + ".V"]) for n in names if n + ".U" in flat and n + ".V" in flat}
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
            bases = {n: (d["U"], d["V"]) for n, d in raw.items()}
    except Exception as e:
        raise file_error(path, f"the SVD bases cannot be read ({type(e).__name__}: {e})",
                         "Expected the official svd_bases dict (weight name -> {'U', 'V'}) or a .safetensors "
                         "with '<weight name>.U' / '.V' keys") from e
    return {n: (u.float(), v.float()) for n, (u, v) in bases.items()}
