"""What a device can run, and the official numeric settings of a CUDA run (no ComfyUI import).

- ``flash_supported(device)``: flash-attn 2 needs compute capability 8.0+ (Ampere and newer);
  T4, V100 and RTX 20xx have the package installable but its kernels refuse to run.
- ``official_numerics(device)``: the official ``StableAudioModel`` turns TF32 and fp16
  reduced-precision reductions off (and cuDNN benchmarking) for the whole process when it is made;
  here they apply only inside the ``with`` block and are restored after, so other models of the
  process (ComfyUI's, with TF32 on by choice) are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

FLASH_MIN_CAPABILITY = (8, 0)  # flash-attn 2: Ampere (sm_80) and newer


def flash_supported(device: torch.device | str | None) -> bool:
    """True when ``device`` is a CUDA GPU whose compute capability flash-attn 2 supports."""
    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    return tuple(torch.cuda.get_device_capability(torch.device(device))) >= FLASH_MIN_CAPABILITY


# (object, attribute, the official value)
_OFFICIAL_CUDA_SETTINGS = (
    (torch.backends.cuda.matmul, "allow_tf32", False),
    (torch.backends.cudnn, "allow_tf32", False),
    (torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction", False),
    (torch.backends.cudnn, "benchmark", False),
)


@contextlib.contextmanager
def official_numerics(device: torch.device | str) -> Iterator[None]:
    """The official CUDA numeric settings while the block runs on a CUDA ``device`` (nothing
    elsewhere: the settings only act on CUDA); the previous values come back on exit, error or not."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _OFFICIAL_CUDA_SETTINGS]
    try:
        for owner, name, value in _OFFICIAL_CUDA_SETTINGS:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
