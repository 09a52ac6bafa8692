"""Precision names: the one vocabulary of ``from_pretrained(dtype=...)``, the CLI's ``--dtype`` and
the loader node's ``precision`` combo."""

from __future__ import annotations

import logging

import torch

from . import cpu_gemm

logger = logging.getLogger(__name__)

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
    convolutions, the rest fp32) or None (the DiT's dtype). The last precision a model load
    resolves, so it also logs ``report_cpu_precision`` for the load's DiT and SAME precisions."""
    if precision is None:
        resolved = model_dtype
    elif precision == MIXED_BF16:
        resolved = MIXED_BF16
    else:
        resolved = resolve_dtype(precision, device, "autoencoder_dtype", also=(MIXED_BF16,))
    report_cpu_precision(device, model_dtype, resolved)
    return resolved


def report_cpu_precision(device: torch.device, *precisions: torch.dtype | str) -> bool:
    """One warning per load where a bf16 precision (bf16, bf16-mixed) meets a CPU without native
    bf16: what the CPU lacks, bf16's measured slowdown and that fp32 is faster. It still runs
    (``sa3.cpu_gemm`` picks a working route). Returns whether it warned."""
    if torch.device(device).type != "cpu" or not any(p in (torch.bfloat16, MIXED_BF16) for p in precisions):
        return False
    routes = cpu_gemm.cpu_routes()
    if routes.bf16_native:
        return False
    logger.warning(cpu_gemm.slow_bf16_message(routes, cpu_gemm.bf16_slowdown()))
    return True

