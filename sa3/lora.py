"""Stacked LoRA adapters on the DiT and the conditioner, applied as cached effective weights.

Official behaviour (spec 7 and 4.8): every ``nn.Linear`` / ``nn.Conv1d`` of the DiT and of the
conditioner (only the ``seconds_total`` Linear there) selected by the file's include/exclude
rules gets the adapter; stacked LoRAs form a chain ``W -> adapter 0 -> adapter 1 -> ...``
(DoRA/BoRA renormalise at each link, -XS bases come from the original weight); per-LoRA sigma
intervals and layer filters switch DiT adapters on and off before every DiT call.

The official code re-evaluates every adapted weight through torch parametrizations on every
forward. Here each adapted layer keeps a copy of its base weight; the effective weight is
computed once, in fp32, and written into the layer's own ``weight`` only when a strength, an
option or an interval state changes, so a forward costs what it costs without LoRA.

Devices: the adapters and the base copies live on the CPU (``HOST``) whatever device the model
is on, so ComfyUI can move the model's modules freely and no GPU memory is held outside them;
an effective weight is computed on the weight's own device at the moment it is written (the
layer's base and adapters copied there for that one computation). ``LoRAStack.host_bytes``
says what they hold.

Legend: O fan_out (rows of the 2-D weight view), I fan_in (columns; in * kernel for Conv1d),
r rank, B batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .checks import MAX_LORA_STRENGTH, check_noise_interval, check_number
from .lora_files import (
    SLOT,
    LoRAFile,
    LoRALoadError,
    check_rule,
    expand_brackets,
    file_error,
    read_lora_file,
    read_svd_bases,
    selected,
)
from .weight_writes import mark_written

logger = logging.getLogger(__name__)

__all__ = ["LoRAInfo", "LoRALink", "LoRALoadError", "LoRAStack", "PreparedLoRA", "adapt_weight", "svd_bases"]

TARGET_TYPES = (nn.Linear, nn.Conv1d)  # the official loader's lora_config keys
PARTS = ("dit", "conditioner")
# the official code names DiT layers from the DiT wrapper (``model.`` + our DiT path), the
# conditioner's from the conditioner; include/exclude rules and file keys use these names
OFFICIAL_PREFIX = {"dit": "model.", "conditioner": ""}
SVD_NAME_PREFIX = {"dit": "model.model.", "conditioner": "conditioner."}  # svd_bases / model.safetensors names
# adapter type -> (delta kind, normalisation); "ab" = B @ A, "xs" = U @ M @ V^T
ADAPTER_KINDS: dict[str, tuple[str, str | None]] = {
    "lora": ("ab", None),
    "dora-rows": ("ab", "rows"),
    "dora-cols": ("ab", "cols"),
    "bora": ("ab", "both"),
    "lora-xs": ("xs", None),
    "dora-rows-xs": ("xs", "rows"),
    "dora-cols-xs": ("xs", "cols"),
    "bora-xs": ("xs", "both"),
}
EPS = 1e-12  # official norm epsilon
HOST = torch.device("cpu")  # where adapters and base copies are kept


def _fp32(value: float) -> float:
    """Round a Python float the way the official fp32 strength buffer / t comparison does."""
    return float(torch.tensor(value, dtype=torch.float32))


def write_weight(module: nn.Module, value: torch.Tensor) -> None:
    """Write ``value`` into ``module.weight`` in place and mark the write (``weight_writes.mark_written``).

    An inference tensor (a model loaded inside ComfyUI, which runs nodes under
    ``torch.inference_mode()``) accepts in-place writes only in inference mode, so it is written
    there whatever mode the caller is in; other weights are written in the caller's mode.
    """
    weight = module.weight
    with torch.no_grad(), torch.inference_mode(weight.is_inference() or torch.is_inference_mode_enabled()):
        weight.copy_(value)
    mark_written(module)


# --- the maths (one function, also used by bench/bench_lora.py) ---------------------------------


@dataclass(frozen=True)
class LayerAdapter:
    """One LoRA's fp32 tensors for one layer. Unused fields are None."""

    A: torch.Tensor | None = None  # (r, I)
    B: torch.Tensor | None = None  # (O, r)
    M: torch.Tensor | None = None  # (r, r) -XS core
    U: torch.Tensor | None = None  # (O, r) -XS left basis
    V: torch.Tensor | None = None  # (I, r) -XS right basis
    magnitude: torch.Tensor | None = None  # (O,) rows / (I,) cols
    magnitude_r: torch.Tensor | None = None  # (O,) bora
    magnitude_c: torch.Tensor | None = None  # (I,) bora

    def to(self, device: torch.device) -> LayerAdapter:
        """These tensors on ``device`` (self when already there)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if all(t is None or t.device == device for t in fields.values()):
            return self
        return LayerAdapter(**{name: None if t is None else t.to(device) for name, t in fields.items()})

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (getattr(self, name) for name in self.__dataclass_fields__) if t is not None]

    def delta(self) -> torch.Tensor:
        """The unscaled low-rank update, (O, I)."""
        if self.M is not None:
            return self.U @ self.M @ self.V.T  # (O, r) @ (r, r) @ (r, I), left to right as official
        return self.B @ self.A  # (O, r) @ (r, I)


def adapt_weight(w: torch.Tensor, layer: LayerAdapter, adapter_type: str, scaling: float,
                 strength: float) -> torch.Tensor:
    """One link of the chain: w (O, I) fp32 -> adapted (O, I) fp32, with the official op order
    (bit-identical to the official parametrization in fp32). ``w`` is not modified."""
    _delta_kind, norm = ADAPTER_KINDS[adapter_type]
    if norm is not None and _fp32(strength) == 0:
        return w  # official quirk: DoRA/BoRA at strength 0 return W, magnitude rescale included
    strength_t = torch.tensor(strength, dtype=torch.float32, device=w.device)  # official fp32 buffer
    v = w + scaling * strength_t * layer.delta()  # (O, I)
    if norm is None:
        return v
    return _renormed(v, layer, norm)


def adapt_weight_cast_bases(w: torch.Tensor, layer: LayerAdapter, adapter_type: str, scaling: float,
                            strength: float) -> torch.Tensor:
    """``adapt_weight`` for an -XS adapter whose bases U, V were cast to a lower precision with the
    model (the official bf16 training run casts every buffer, U and V and the strength included,
    and keeps only the trainable tensors fp32): w (O, I) in the base precision -> adapted (O, I),
    with the official parametrization's op order and dtypes. The weight and the update are summed,
    and (DoRA/BoRA) their norms taken, in the bases' dtype; the fp32 magnitudes promote what they
    multiply. Run it under the autocast the step runs under (its matmuls follow that, as officially)."""
    _delta_kind, norm = ADAPTER_KINDS[adapter_type]
    low = layer.U.dtype
    strength_t = torch.tensor(strength, dtype=low, device=w.device)  # the official buffer after the cast
    if norm is not None and bool(strength_t == 0):
        return w  # official quirk, as in adapt_weight
    delta = layer.U @ layer.M.to(low) @ layer.V.T  # (O, r) @ (r, r) @ (r, I), M rounded to the bases' dtype
    if norm is None:  # lora-xs: the scaled update cast to the weight's dtype, then added
        return w + (scaling * strength_t * delta).to(w.dtype)
    v = w.to(low) + scaling * strength_t * delta  # (O, I) in the bases' dtype
    return _renormed(v, layer, norm)


def _renormed(v: torch.Tensor, layer: LayerAdapter, norm: str) -> torch.Tensor:
    """DoRA/BoRA: the adapted direction v (O, I) normalised and scaled by the magnitudes (official order)."""
    if norm == "rows":
        return v / (v.norm(dim=1, keepdim=True) + EPS) * layer.magnitude.unsqueeze(1)
    if norm == "cols":
        return v / (v.norm(dim=0, keepdim=True) + EPS) * layer.magnitude.unsqueeze(0)
    rows = layer.magnitude_r.unsqueeze(1) * (v / (v.norm(dim=1, keepdim=True) + EPS))  # bora: rows ...
    return rows / (rows.norm(dim=0, keepdim=True) + EPS) * layer.magnitude_c.unsqueeze(0)  # ... then columns


def svd_bases(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``rank`` singular vectors of w (O, I): U (O, r), V (I, r), fp32 SVD on the CPU as
    official, each pair's sign flipped so the largest-magnitude entry of the U column is positive."""
    u, _, vh = torch.linalg.svd(w.detach().reshape(w.shape[0], -1).cpu().float(), full_matrices=False)
    peak = u.abs().argmax(dim=0)  # (k,) row of each column's largest |entry|
    signs = u[peak, torch.arange(u.shape[1])].sign()
    signs[signs == 0] = 1
    u, vh = u * signs[None, :], vh * signs[:, None]
    return u[:, :rank].contiguous(), vh[:rank].T.contiguous()


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoRAInfo:
    """Public description of one stacked LoRA."""

    index: int  # position in the chain
    name: str  # file stem
    path: Path
    adapter_type: str
    rank: int
    alpha: float
    dit_layers: int  # adapted DiT layers
    conditioner_layers: int  # adapted conditioner layers (0 or 1)
    strength_dit: float
    strength_conditioner: float
    interval: tuple[float, float] | None  # active only while interval[0] <= t <= interval[1]
    layer_filter: str  # comma-separated substrings of DiT layer names to leave unadapted


@dataclass(frozen=True, eq=False)
class PreparedLoRA:
    """One LoRA file read once and matched to one model: its fp32 tensors per adapted layer. It
    changes nothing by itself; ``LoRAStack.set_chain`` applies it from memory, any number of times
    and in any chain (compared by identity: preparing the same file twice gives two objects)."""

    file: LoRAFile  # metadata only (its tensors are dropped once matched)
    layers: dict[tuple[str, str], LayerAdapter] = field(repr=False)  # (part, path) -> tensors

    @property
    def name(self) -> str:
        return self.file.path.name


@dataclass(frozen=True)
class LoRALink:
    """One LoRA of a chain with its settings (see ``LoRAStack.set_strength`` / ``set_options``)."""

    lora: PreparedLoRA
    strength_dit: float = 1.0  # 1 = as trained
    strength_conditioner: float = 1.0
    interval: tuple[float, float] | None = None  # DiT adapters active while interval[0] <= t <= interval[1]
    layer_filter: str = ""  # comma-separated DiT layer-name parts left unadapted

    @property
    def name(self) -> str:
        return self.lora.name


@dataclass
class _LoRA:
    file: LoRAFile  # tensors dropped (layers={}); kept for its metadata
    layers: dict[tuple[str, str], LayerAdapter]  # (part, path) -> tensors
    strength: dict[str, float] = field(default_factory=lambda: {"dit": 1.0, "conditioner": 1.0})
    interval: tuple[float, float] | None = None
    bounds32: tuple[float, float] | None = None  # interval rounded to fp32, as t is compared officially
    layer_filter: str = ""
    filters: tuple[str, ...] = ()  # lower-cased, bracket-expanded layer_filter entries
    active: bool = True  # interval state of the last DiT call

    def applies(self, part: str, path: str) -> bool:
        if part != "dit":
            return True  # intervals and filters act on the DiT only (official DiT forward)
        return self.active and not any(f in path for f in self.filters)


@dataclass
class _Target:
    part: str
    path: str  # our module path inside the DiT / conditioner
    module: nn.Module
    base: torch.Tensor  # untouched copy of the original weight (its own dtype), on HOST

    @classmethod
    def of(cls, key: tuple[str, str], module: nn.Module) -> _Target:
        """A target keeping a HOST copy of ``module``'s current weight."""
        return cls(key[0], key[1], module, module.weight.detach().to(HOST, copy=True))


# --- settings checks (one per rule, shared by set_strength / set_options / set_chain) ------------


def _check_strength(strength) -> float:
    return check_number("strength", strength, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH, where="LoRA")


def _check_options(interval, layer_filter) -> tuple[tuple[float, float] | None, str | None]:
    if interval is not None:
        interval = check_noise_interval("interval", interval, where="LoRA")
    if layer_filter is not None and not isinstance(layer_filter, str):
        raise ValueError(f"Stable Audio 3 LoRA: layer_filter must be a string (got {layer_filter!r}).")
    for entry in (layer_filter or "").split(","):
        if entry.strip():
            check_rule("layer_filter", entry.strip(), where="LoRA")
    return interval, layer_filter


def _set_options(lora: _LoRA, interval: tuple[float, float] | None, layer_filter: str | None) -> None:
    """Checked options onto one LoRA's state (the caller refreshes the weights)."""
    lora.interval = interval
    lora.bounds32 = None if interval is None else (_fp32(interval[0]), _fp32(interval[1]))
    lora.layer_filter = (layer_filter or "").strip()
    lora.filters = tuple(e for x in lora.layer_filter.split(",") if x.strip()
                         for e in expand_brackets(x.strip().lower()))
    lora.active = True


class LoRAStack:
    """Ordered LoRAs on one DiT + conditioner pair. See ``StableAudioModel.load_lora``."""

    def __init__(self, dit: nn.Module, conditioner: nn.Module):
        self._roots = {"dit": dit, "conditioner": conditioner}
        self._candidates = {(part, name): m for part, root in self._roots.items()
                            for name, m in root.named_modules() if isinstance(m, TARGET_TYPES)}
        self._targets: dict[tuple[str, str], _Target] = {}
        self._loras: list[_LoRA] = []
        self._chain: tuple[LoRALink, ...] | None = ()  # what set_chain made; None once changed otherwise

    def __len__(self) -> int:
        return len(self._loras)

    # -- loading --

    def prepare(self, paths: Sequence[str | Path], svd_bases_path: str | Path | None = None) -> list[PreparedLoRA]:
        """Read LoRA files and check them against the model: nothing changes (see ``set_chain``)."""
        files = [read_lora_file(p) for p in paths]
        bases = None
        if svd_bases_path is not None and any(f.adapter_type.endswith("-xs") for f in files):
            bases = read_svd_bases(svd_bases_path)
        svd_cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        return [self._stage(f, bases, svd_cache) for f in files]

    def load(self, paths: Sequence[str | Path], svd_bases_path: str | Path | None = None) -> None:
        """Append LoRA files to the chain, in order. Every file is read and checked against the
        model before anything changes; any error leaves weights and stack exactly as they were."""
        staged = [_LoRA(file=p.file, layers=p.layers) for p in self.prepare(paths, svd_bases_path)]
        self._chain = None
        new_targets = [key for lora in staged for key in lora.layers if key not in self._targets]
        n_before = len(self._loras)
        try:
            with torch.no_grad():
                for key in dict.fromkeys(new_targets):
                    module = self._candidates[key]
                    self._targets[key] = _Target.of(key, module)
            self._loras.extend(staged)
            self._refresh({key for lora in staged for key in lora.layers})
        except BaseException:
            self._loras[n_before:] = []
            for key in dict.fromkeys(new_targets):
                target = self._targets.pop(key, None)
                if target is not None:
                    write_weight(target.module, target.base)
            raise
        for lora in staged:
            f = lora.file
            n_dit = sum(part == "dit" for part, _ in lora.layers)
            logger.info("Stable Audio 3 LoRA %d: %s (%s, rank %d, alpha %g): %d DiT + %d conditioner layers",
                        self._loras.index(lora), f.path.name, f.adapter_type, f.rank, f.alpha, n_dit,
                        len(lora.layers) - n_dit)

    def _stage(self, f: LoRAFile, bases, svd_cache) -> PreparedLoRA:
        """Match one file to the model; build its fp32 tensors. Mutates nothing of the model."""
        unknown = [f.keys[key] for key in f.layers if key not in self._candidates]
        if unknown:
            raise file_error(f.path, f"{len(unknown)} layer(s) match no layer of this model (got {unknown[:3]!r}; "
                             f"expected names like 'model.transformer.layers.0.self_attn.to_qkv'{SLOT}...)",
                             "The LoRA was made for another model variant (e.g. medium vs small); use one made for it")
        official = {key: OFFICIAL_PREFIX[key[0]] + key[1] for key in self._candidates}
        chosen = [key for key in self._candidates if selected(official[key], f.include, f.exclude)]
        outside = [f.keys[key] for key in f.layers if key not in chosen]
        if outside:
            raise file_error(f.path, f"{len(outside)} layer(s) are outside the file's own include/exclude rules "
                             f"(got {outside[:3]!r}; include={f.include}, exclude={f.exclude})",
                             "The file's config and tensors disagree; re-export the LoRA")
        idle = [official[key] for key in chosen if key not in f.layers]
        if idle:
            logger.warning("Stable Audio 3 LoRA: %s has no tensors for %d selected layer(s) (e.g. %r); "
                           "they stay unadapted", f.path.name, len(idle), idle[0])
        if not f.layers:
            raise file_error(f.path, "no layer of this model is adapted", "Check the file's include/exclude rules")

        layers = {}
        for key, params in f.layers.items():
            module = self._candidates[key]
            weight = self._targets[key].base if key in self._targets else module.weight
            o = weight.shape[0]
            i = weight[0].numel()
            expected = {"lora_A": (f.rank, i), "lora_B": (o, f.rank), "M_xs": (f.rank, f.rank),
                        "magnitude": (i,) if f.adapter_type.startswith("dora-cols") else (o,),
                        "magnitude_r": (o,), "magnitude_c": (i,), "U": (o, f.rank), "V": (i, f.rank),
                        "lora_dropout_mask": (1, i)}
            for p, t in params.items():
                if tuple(t.shape) != expected[p]:
                    raise file_error(f.path, f"shape mismatch for {f.keys[key] + SLOT + p!r} (got {tuple(t.shape)}, "
                                     f"expected {expected[p]} for the model's layer of weight {tuple(weight.shape)})",
                                     "The LoRA was made for another model variant (e.g. medium vs small)")
            layers[key] = self._layer_tensors(f, key, params, weight, bases, svd_cache)
        return PreparedLoRA(file=replace(f, layers={}), layers=layers)

    def _layer_tensors(self, f: LoRAFile, key, params, weight, bases, svd_cache) -> LayerAdapter:
        device = HOST  # adapters stay off the GPU; moved per use (effective_weight)
        get = {p: t.to(device) for p, t in params.items()}
        a = get.get("lora_A")
        if a is not None and f.dropout > 0 and "lora_dropout_mask" in get:
            a = a * get["lora_dropout_mask"]  # eval-mode dropout is identity: A * mask (official _dropout)
        u, v = get.get("U"), get.get("V")
        if "M_xs" in get and (u is None or v is None):
            u, v = self._bases(f, key, weight, bases, svd_cache)
            u, v = u.to(device), v.to(device)
        return LayerAdapter(A=a, B=get.get("lora_B"), M=get.get("M_xs"), U=u, V=v,
                            magnitude=get.get("magnitude"), magnitude_r=get.get("magnitude_r"),
                            magnitude_c=get.get("magnitude_c"))

    @staticmethod
    def _bases(f: LoRAFile, key, weight, bases, svd_cache):
        name = SVD_NAME_PREFIX[key[0]] + key[1] + ".weight"
        if bases is not None and name in bases:
            u, v = bases[name]
            o, i = weight.shape[0], weight[0].numel()
            if u.shape[0] != o or v.shape[0] != i or u.shape[1] < f.rank or v.shape[1] < f.rank:
                raise file_error(f.path, f"SVD bases for {name!r} have shapes {tuple(u.shape)}/{tuple(v.shape)} "
                                 f"(expected ({o}, >={f.rank}) / ({i}, >={f.rank}))",
                                 "Use the svd_bases file made for this model")
            return u[:, : f.rank], v[:, : f.rank]
        if key not in svd_cache:  # one SVD per layer and load call, sliced per rank
            rank = min(weight.shape[0], weight[0].numel())
            svd_cache[key] = svd_bases(weight, rank)
        u, v = svd_cache[key]
        return u[:, : f.rank].contiguous(), v[:, : f.rank].contiguous()

    # -- control --

    def set_strength(self, strength: float, lora_index: int | None = None, target: str | None = None) -> None:
        """Strength of one LoRA (``lora_index``) or all, for ``target`` "dit", "conditioner" or
        both (None). 1 is the trained effect; the new weights are written now."""
        strength = _check_strength(strength)
        if target not in (None, *PARTS):
            raise ValueError(f"Stable Audio 3 LoRA: target must be None, 'dit' or 'conditioner' (got {target!r}).")
        parts = PARTS if target is None else (target,)
        self._chain = None
        dirty = set()
        for lora in self._select(lora_index):
            for part in parts:
                if lora.strength[part] != strength:
                    lora.strength[part] = strength
                    dirty.update(key for key in lora.layers if key[0] == part)
        self._refresh(dirty)

    def set_options(self, lora_index: int, interval: tuple[float, float] | None = None,
                    layer_filter: str | None = None) -> None:
        """Official UI extras for one LoRA (replacing earlier ones): DiT adapters active only while
        ``interval[0] <= t <= interval[1]`` (None: always); ``layer_filter`` = comma-separated
        DiT layer-name substrings (bracket ranges allowed) left unadapted (None or "": none)."""
        (lora,) = self._select(lora_index, required=True)
        interval, layer_filter = _check_options(interval, layer_filter)
        self._chain = None
        _set_options(lora, interval, layer_filter)
        self._refresh({key for key in lora.layers if key[0] == "dit"})

    def set_chain(self, links: Sequence[LoRALink]) -> None:
        """Make the modules carry exactly ``links``, in order (LoRAs prepared by ``prepare`` for
        this model, with their strengths and options), replacing whatever was loaded: layers no
        longer adapted get their base weight back bit for bit. No file is read; a no-op when the
        stack already is this chain. Invalid settings raise before anything changes."""
        links = tuple(links)
        if links == self._chain:
            return
        loras = []
        for link in links:
            unknown = [key for key in link.lora.layers if key not in self._candidates]
            if unknown:
                raise ValueError(f"Stable Audio 3 LoRA: {link.lora.name!r} was prepared for another model (got layer "
                                 f"{unknown[0][1]!r}, not a layer of this one). Prepare it with this model.")
            lora = _LoRA(file=link.lora.file, layers=link.lora.layers)
            for part, strength in (("dit", link.strength_dit), ("conditioner", link.strength_conditioner)):
                lora.strength[part] = _check_strength(strength)
            _set_options(lora, *_check_options(link.interval, link.layer_filter))
            loras.append(lora)
        wanted = {key for lora in loras for key in lora.layers}
        with torch.no_grad():
            for key in [key for key in self._targets if key not in wanted]:
                target = self._targets.pop(key)
                write_weight(target.module, target.base)
            for key in wanted - set(self._targets):
                self._targets[key] = _Target.of(key, self._candidates[key])
        self._loras = loras
        self._chain = None  # until every weight is written
        self._refresh(wanted)
        self._chain = links

    def on_step(self, t: torch.Tensor) -> None:
        """Called before every DiT forward with t (B,): switches interval LoRAs on or off by
        ``t[0]`` (official); rewrites weights only when a state changes."""
        timed = [lora for lora in self._loras if lora.bounds32 is not None]
        if not timed:
            return
        sigma = float(t.reshape(-1)[0])
        dirty = set()
        for lora in timed:
            active = lora.bounds32[0] <= sigma <= lora.bounds32[1]
            if active != lora.active:
                lora.active = active
                dirty.update(key for key in lora.layers if key[0] == "dit")
        self._refresh(dirty)

    def unload(self) -> None:
        """Restore every adapted weight bit for bit and forget all LoRAs."""
        for target in self._targets.values():
            write_weight(target.module, target.base)
        self._targets.clear()
        self._loras.clear()
        self._chain = ()

    def describe(self) -> list[LoRAInfo]:
        return [LoRAInfo(index=i, name=lora.file.name, path=lora.file.path, adapter_type=lora.file.adapter_type,
                         rank=lora.file.rank, alpha=lora.file.alpha,
                         dit_layers=sum(p == "dit" for p, _ in lora.layers),
                         conditioner_layers=sum(p == "conditioner" for p, _ in lora.layers),
                         strength_dit=lora.strength["dit"], strength_conditioner=lora.strength["conditioner"],
                         interval=lora.interval, layer_filter=lora.layer_filter)
                for i, lora in enumerate(self._loras)]

    # -- internals --

    def _select(self, lora_index: int | None, required: bool = False) -> list[_LoRA]:
        if lora_index is None and not required:
            return list(self._loras)
        if isinstance(lora_index, bool) or not isinstance(lora_index, int) or not 0 <= lora_index < len(self._loras):
            raise ValueError(f"Stable Audio 3 LoRA: lora_index out of range (got {lora_index!r}, expected 0.."
                             f"{len(self._loras) - 1} for {len(self._loras)} loaded LoRA(s)).")
        return [self._loras[lora_index]]

    def effective_weight(self, part: str, path: str, device: torch.device | None = None) -> torch.Tensor:
        """The adapted weight of one layer, computed from the base on ``device`` (default: where the
        layer's weight is now): fp32, the weight's shape."""
        target = self._targets[(part, path)]
        device = target.module.weight.device if device is None else device
        w = target.base.to(device).float().reshape(target.base.shape[0], -1)  # (O, I)
        for lora in self._loras:
            layer = lora.layers.get((part, path))
            if layer is not None and lora.applies(part, path):
                w = adapt_weight(w, layer.to(device), lora.file.adapter_type, lora.file.scaling, lora.strength[part])
        return w.reshape(target.base.shape)

    def host_bytes(self) -> int:
        """CPU memory the stack holds: base copies of adapted weights plus every LoRA's adapters
        (nothing of it is on a GPU; ComfyUI's patchers count the modules only)."""
        bases = sum(t.base.nbytes for t in self._targets.values())
        return bases + sum(t.nbytes for lora in self._loras for layer in lora.layers.values() for t in layer.tensors())

    def _refresh(self, keys) -> None:
        """Write the effective weight of each given layer into its module."""
        with torch.no_grad():
            for key in keys:
                write_weight(self._targets[key].module, self.effective_weight(*key))
