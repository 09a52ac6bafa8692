"""What travels on the pack's model and conditioning sockets: the model handle and one side of
the text conditioning.

``SA3Handle`` is an immutable description: the loaded ``StableAudioModel`` (shared by every handle
derived from one loader output, never copied), the ComfyUI patchers that move its parts, and the
LoRA stack this branch of the graph asked for. LoRA nodes return a *new* handle with a longer or
re-weighted stack, so the loader's cached output is never changed. The stack is put onto the
shared modules by ``sync_loras`` right before a node runs them; it is a no-op when the modules
already carry exactly that stack, so an unchanged graph does not reload anything.

No ComfyUI import here: the patchers are opaque objects made by ``comfy_models``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ._sa3 import ModelConfig, StableAudioModel

SVD_BASES_FILE = "svd_bases.safetensors"  # -XS LoRA bases, looked up beside the LoRA file


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA of a stack: file, per-target strengths (1.0 = as trained) and the official UI's
    extras: the noise interval it is active in (None: always) and the DiT layers it leaves alone."""

    path: str
    strength_dit: float = 1.0
    strength_conditioner: float = 1.0
    interval: tuple[float, float] | None = None  # active while interval[0] <= t <= interval[1]
    layer_filter: str = ""  # comma-separated DiT layer-name parts where this LoRA is off

    @property
    def options(self) -> tuple:
        return (self.interval, self.layer_filter)

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class SA3Handle:
    model: StableAudioModel
    name: str  # what the loader was given (folder or official name), for messages
    patchers: dict = field(compare=False, hash=False)  # "text" / "dit" / "autoencoder" -> ModelPatcher
    loras: tuple[LoraSpec, ...] = ()

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    def with_loras(self, loras) -> SA3Handle:
        return replace(self, loras=tuple(loras))


@dataclass(frozen=True)
class ConditioningSide:
    """Encoded text of one side (positive or negative) for B items, on the intermediate device;
    what travels on an ``SA3_CONDITIONING`` socket.

    cross: (B, K, E) prompt tokens + seconds token; global_cond: (B, E); mask: (B, K) or None.
    ``durations`` are the seconds each item was conditioned on: the sampler plans the latent
    from them (the one place a graph sets its durations). ``prompts`` are kept so a
    single-item conditioning can be re-encoded for a larger batch exactly as
    ``generate(batch_size=...)`` encodes it.
    """

    kind: str  # "positive" | "negative" | "none" (no negative prompt: zeros)
    prompts: tuple[str, ...]
    durations: tuple[float, ...]
    cross: torch.Tensor | None
    global_cond: torch.Tensor | None
    mask: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        return len(self.prompts)


def _applied(model: StableAudioModel) -> tuple[LoraSpec, ...] | None:
    """The stack the modules carry; None when unknown (a failed sync)."""
    return getattr(model, "_sa3_nodes_loras", ())


def sync_loras(handle: SA3Handle) -> None:
    """Make the shared modules carry exactly ``handle.loras`` (files, strengths, intervals and
    layer filters); options are re-applied only for LoRAs whose options differ from what the
    modules carry (a freshly loaded LoRA carries none)."""
    model, wanted = handle.model, handle.loras
    current = _applied(model)
    if current == wanted:
        return
    same_files = current is not None and [s.path for s in current] == [s.path for s in wanted]
    if not same_files:
        model.unload_lora()
        model._sa3_nodes_loras = ()
        if wanted:
            bases = next((Path(s.path).parent / SVD_BASES_FILE for s in wanted
                          if (Path(s.path).parent / SVD_BASES_FILE).is_file()), None)
            model.load_lora([s.path for s in wanted], svd_bases_path=bases)
        current = tuple(LoraSpec(s.path) for s in wanted)  # as loaded: no interval, no filter
    try:
        for i, spec in enumerate(wanted):
            if spec.options != current[i].options:
                model.set_lora_options(i, interval=spec.interval, layer_filter=spec.layer_filter)
            model.set_lora_strength(spec.strength_dit, lora_index=i, target="dit")
            model.set_lora_strength(spec.strength_conditioner, lora_index=i, target="conditioner")
    except BaseException:  # also an interrupt (a BaseException in newer ComfyUI)
        model._sa3_nodes_loras = None  # half applied: the next sync reloads the whole stack
        raise
    model._sa3_nodes_loras = wanted
