"""Random draws: one rule for every draw of a generation, on every device.

**The rule.** A draw is made on its generator's device, in the dtype asked for, then moved to the
device of the tensor it is for. The generator may live on the CPU or on the model's device:

- on the CPU (``make_generator(seed)``, the default everywhere, as in ComfyUI and diffusers): the
  same seed gives the same numbers on the CPU, CUDA and MPS, and they are the official CPU
  stream (``torch.manual_seed(seed)`` then ``torch.randn`` on the CPU), i.e. the golden fixtures';
- on the model's device (``make_generator(seed, "cuda")``): the official run's stream on that
  device (it seeds with ``torch.manual_seed`` and draws with ``device=cuda``); ``generate(...,
  device_parity=True)`` picks it.

Only the noise itself crosses devices (one copy per draw); with ``generator=None`` the draw comes
from torch's global RNG on the target device.
"""

from __future__ import annotations

import random

import torch

from . import checks

__all__ = ["make_generator", "make_noise", "randn", "random_seed", "stream_device"]


def random_seed() -> int:
    """A fresh seed for seed = -1 (drawn without touching torch's global RNG)."""
    return random.SystemRandom().randint(0, 99998)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded like ``torch.manual_seed(seed)`` on ``device`` (the CPU unless asked)."""
    seed = checks.check_number("seed", seed, 0, checks.MAX_SEED, integer=True)
    return torch.Generator(device=device).manual_seed(seed)


def stream_device(model_device: torch.device | str, device_parity: bool = False) -> torch.device:
    """Where a generation's generator lives: the CPU, or the model's device when the official run
    on that device is to be reproduced (``device_parity``)."""
    return torch.device(model_device) if device_parity else torch.device("cpu")


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` for ``device``: drawn on ``generator``'s device in
    ``dtype`` (the official code draws ``randn_like`` in the tensor's dtype), then moved."""
    source = generator.device if generator is not None else device
    noise = torch.randn(tuple(shape), generator=generator, device=source, dtype=dtype)
    return noise.to(device)


def make_noise(batch_size: int, channels: int, latents: int, generator: torch.Generator,
               device=None) -> torch.Tensor:
    """The initial noise (B, C, L), float32, on ``device`` (default: the generator's): always the
    first draw of the stream, made on the generator's device (the rule above)."""
    checks.check_number("batch_size", batch_size, 1, checks.MAX_BATCH, integer=True)
    return randn((batch_size, channels, latents), generator, device or generator.device)
