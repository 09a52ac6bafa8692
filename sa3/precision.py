"""Precision names: the one vocabulary of ``from_pretrained(dtype=...)``, the CLI's ``--dtype`` and
the loader node's ``precision`` combo."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # "auto": fp16 on CUDA, fp32 elsewhere (the official default)
MIXED_BF16 = "bf16-mixed"  # SAME only: bf16 GEMMs and convolutions, everything else fp32
AUTOENCODER_PRECISIONS = ("auto", "fp32", MIXED_BF16)  # the loader node's and the CLI's SAME choices
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ALIASES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}  # torch's spellings, also accepted


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, name: str = "dtype",
                  also: tuple[str, ...] = ()) -> torch.dtype:
    """A precision name, a torch dtype or None/"auto" -> one of the three supported dtypes. ``also``:
    further names the caller accepts itself (listed in the message)."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32  # the official default
    if isinstance(dtype, str):
        key = ALIASES.get(dtype, dtype)
        if key not in DTYPES:
            raise ValueError(f"Stable Audio 3: {name} must be one of {', '.join(map(repr, PRECISIONS + also))} "
                             f"(got {dtype!r}).")
        return DTYPES[key]
    if dtype not in DTYPES.values():
        raise ValueError(f"Stable Audio 3: {name} must be float32, float16 or bfloat16 (got {dtype}).")
    return dtype


def resolve_autoencoder_precision(precision, device: torch.device, model_dtype: torch.dtype) -> torch.dtype | str:
    """SAME's precision: a precision name or torch dtype, ``"bf16-mixed"`` (bf16 GEMMs and
    convolutions, the rest fp32) or None (the DiT's dtype)."""
    if precision is None:
        return model_dtype
    if precision == MIXED_BF16:
        return MIXED_BF16
    return resolve_dtype(precision, device, "autoencoder_dtype", also=(MIXED_BF16,))
