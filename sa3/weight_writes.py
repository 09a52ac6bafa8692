"""Telling whether weights changed since a value was computed from them.

Caches of values computed from weights (the DiT step cache, the prepacked bf16 weights of
``cpu_gemm``) compare a tensor's identity, storage and in-place version counter; tensors made under
``torch.inference_mode()`` keep no counter, so code that writes weights in place (LoRA) also marks
the module it wrote (``mark_written``), and the caches compare ``write_marks`` too.
"""

from __future__ import annotations

import torch
from torch import nn


def inplace_version(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter (bumped by every in-place write through autograd-
    visible views), or None for inference-mode tensors, which keep none."""
    try:
        return t._version
    except RuntimeError:
        return None


def mark_written(module: nn.Module) -> None:
    """Record that ``module``'s own weights were written in place.

    Version counters cannot tell: tensors made under ``torch.inference_mode()`` (every model
    loaded inside ComfyUI) keep none. So code that writes weights in place (LoRA) marks the module,
    and caches of values computed from weights (the DiT step cache) compare ``write_marks``.
    """
    module._sa3_writes = getattr(module, "_sa3_writes", 0) + 1


def write_marks(module: nn.Module) -> int:
    """How often ``module`` and its submodules were marked written (grows with every mark)."""
    return sum(getattr(m, "_sa3_writes", 0) for m in module.modules())
