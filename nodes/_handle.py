"""What travels on the pack's model and conditioning sockets: the model handle and one side of
the text conditioning.

``SA3Handle`` is an immutable description: the loaded ``StableAudioModel`` (its modules shared by
every handle derived from one loader output, never copied) and the ComfyUI patchers that move its
parts. LoRAs live where ComfyUI keeps patches: an SA3 LoRA node returns a handle whose DiT and text
patchers are clones (``ModelPatcher.clone``) carrying the chain as an attachment, a tuple of
``sa3.lora.LoRALink`` (the LoRA file read once into memory, plus its strengths and options). The
loader's output and every other branch keep their own patchers, so branches never see each
other's LoRAs; ``comfy_models.load_parts`` puts a handle's chain onto the shared modules from
memory whenever it loads the DiT or the text part (a no-op when they already carry it).

No ComfyUI import here: the patchers are opaque objects made by ``comfy_models``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._sa3 import LoRALink, ModelConfig, StableAudioModel

LORAS = "sa3_loras"  # patcher attachment: the LoRA chain of this branch, a tuple of LoRALink
LORA_PARTS = ("dit", "text")  # the patchers whose modules LoRAs adapt (DiT; conditioner in "text")


@dataclass(frozen=True)
class SA3Handle:
    model: StableAudioModel
    name: str  # what the loader was given (folder or official name), for messages
    patchers: dict = field(compare=False, hash=False)  # "text" / "dit" / "autoencoder" -> ModelPatcher

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def loras(self) -> tuple[LoRALink, ...]:
        """This branch's LoRA chain, in order (empty for the loader's output)."""
        return self.patchers["dit"].get_attachment(LORAS) or ()


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
