"""One attention entry point with named backends, and the projection module used by DiT and SAME.

Legend: B batch, H heads, N query tokens, M key tokens, D head dim (64 in every SA3 model).

``attention(q, k, v, key_padding=..., window=..., backend=...)`` takes and returns (B, H, N, D).

Backends:
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``. A sliding window runs in query
  chunks over a key halo, so memory is linear in the sequence length (no N x N mask).
- ``"math"``: explicit softmax over a full dense mask. Slow and quadratic; the reference the
  other backends are tested against.
- ``"flash"``: flash-attn 2 (CUDA, fp16/bf16 inputs only: it is never given float32, see
  ``resolve_backend``), varlen for key padding. Only when importable.

Key padding has two semantics (``padding_mode``):
- ``"exact"``: padded keys are excluded from the softmax, as flash-attn varlen does on CUDA (the
  behaviour the models were trained with).
- ``"reference"``: padded values are zeroed but padded keys keep their softmax mass. This is what
  the official implementation does on every non-flash path (CPU, MPS), so the golden fixtures,
  made on CPU, use it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .devices import flash_supported
from .layers import apply_rotary, resolve_ops
from .weight_writes import inplace_version

logger = logging.getLogger(__name__)

PaddingMode = Literal["exact", "reference"]
BACKENDS = ("auto", "sdpa", "math", "flash")
PADDING_MODES = ("exact", "reference")
WINDOW_CHUNK = 1024  # query tokens per chunk for the sliding-window SDPA path


def _flash_module():
    try:
        import flash_attn
    except ImportError:
        return None
    return flash_attn


def flash_available() -> bool:
    return torch.cuda.is_available() and _flash_module() is not None


HALF_DTYPES = (torch.float16, torch.bfloat16)  # the only precisions flash-attn computes in
_FLASH_DECLINED: set[str] = set()  # GPUs already logged as too old for flash-attn (one line each)


def _flash_runs_on(device: torch.device | str) -> bool:
    """``flash_supported`` for ``auto``, logging once per GPU that it falls back to SDPA."""
    if flash_supported(device):
        return True
    name = torch.cuda.get_device_name(torch.device(device))
    if name not in _FLASH_DECLINED:
        _FLASH_DECLINED.add(name)
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        logger.info("Stable Audio 3: flash-attn needs compute capability 8.0+; %s is %d.%d, attention uses sdpa.",
                    name, major, minor)
    return False


def resolve_backend(backend: str | None, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> str:
    """The concrete backend for a part running on ``device`` in ``dtype`` (None: float32).

    ``None``/``"auto"``: flash-attn for a CUDA part in fp16/bf16 when it is installed, SDPA
    otherwise. flash-attn has no float32 kernels, so a float32 part (SAME by default, or an fp32
    DiT) never gets it: ``auto`` picks SDPA, and an explicit ``"flash"`` gives that part SDPA too
    (logged), so no part silently runs its attention in a lower precision than its own.
    """
    if backend not in (None, *BACKENDS):
        raise ValueError(f"Stable Audio 3: unknown attention backend {backend!r} (expected one of {BACKENDS}).")
    is_cuda = device is not None and torch.device(device).type == "cuda"
    half = dtype in HALF_DTYPES
    if backend in (None, "auto"):
        if not (is_cuda and half and flash_available()):
            return "sdpa"
        return "flash" if _flash_runs_on(device) else "sdpa"
    if backend == "flash" and not flash_available():
        raise RuntimeError(
            "Stable Audio 3: attention='flash' needs a CUDA GPU and the flash-attn package "
            "(pip install flash-attn). Use attention='sdpa' instead."
        )
    if backend == "flash" and is_cuda and not flash_supported(device):
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        raise RuntimeError(
            f"Stable Audio 3: attention='flash' needs a GPU of compute capability 8.0 or newer (Ampere+); "
            f"{torch.cuda.get_device_name(torch.device(device))} is {major}.{minor}. Use attention='sdpa' "
            "(or 'auto', which picks it there)."
        )
    if backend == "flash" and not half:
        logger.info("Stable Audio 3: attention='flash' computes in fp16/bf16 only; a part in %s uses sdpa "
                    "(keeps its precision).", dtype or torch.float32)
        return "sdpa"
    return backend


# --- masks -----------------------------------------------------------------------------------


def band_mask(n_q: int, n_k: int, window: tuple[int, int], q_offset: int = 0, k_offset: int = 0,
              device=None) -> torch.Tensor:
    """Boolean (n_q, n_k) mask: query i attends key j iff ``-left <= j - i <= right``."""
    qi = torch.arange(q_offset, q_offset + n_q, device=device)[:, None]
    kj = torch.arange(k_offset, k_offset + n_k, device=device)[None, :]
    left, right = window
    return (kj >= qi - left) & (kj <= qi + right)


# --- backends --------------------------------------------------------------------------------


def _math_attention(q, k, v, key_padding, window, padding_mode):
    scale = q.shape[-1] ** -0.5
    scores = torch.einsum("bhnd,bhmd->bhnm", q.float(), k.float()) * scale  # (B, H, N, M)
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if window is not None:
        allowed = band_mask(q.shape[-2], k.shape[-2], window, device=q.device)
    allowed = allowed.expand(scores.shape)
    if key_padding is not None:
        if padding_mode == "exact":
            allowed = allowed & key_padding[:, None, None, :]
        else:
            v = v * key_padding[:, None, :, None].to(v.dtype)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhnm,bhmd->bhnd", scores.softmax(dim=-1), v.float()).to(q.dtype)


def _sdpa_windowed(q, k, v, window, chunk=WINDOW_CHUNK):
    """Sliding-window attention in query chunks of ``chunk`` over keys ``[start-left, end+right)``;
    peak memory O(N * (chunk + left + right))."""
    n = q.shape[-2]
    left, right = window
    out = torch.empty_like(q)
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        k0, k1 = max(0, start - left), min(n, end + right)
        mask = band_mask(end - start, k1 - k0, window, q_offset=start, k_offset=k0, device=q.device)
        out[..., start:end, :] = F.scaled_dot_product_attention(
            q[..., start:end, :], k[..., k0:k1, :], v[..., k0:k1, :], attn_mask=mask
        )
    return out


def _sdpa_attention(q, k, v, key_padding, window, padding_mode):
    if key_padding is not None:
        if padding_mode == "exact":
            if window is not None:
                raise ValueError("Stable Audio 3: key padding with a sliding window is not supported.")
            valid = _mask_fact(key_padding, "prefix", _shared_prefix)
            if valid is not None:  # every item's valid keys are the same prefix: attend to it alone
                return F.scaled_dot_product_attention(q, k[..., :valid, :], v[..., :valid, :])
            mask = key_padding[:, None, None, :]  # (B, 1, 1, M)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        v = v * key_padding[:, None, :, None].to(v.dtype)  # reference: V-zeroing
    if window is not None:
        return _sdpa_windowed(q, k, v, window)
    return F.scaled_dot_product_attention(q, k, v)


_mask_memo: tuple | None = None  # (weakref to the mask, its version, {fact: value}): one mask at a time


def _mask_fact(key_padding: torch.Tensor, name: str, compute: Callable[[torch.Tensor], object]):
    """``compute(key_padding)``, memoised per mask (object and in-place version) under ``name``.
    The DiT passes one mask tensor to every layer and step, so what a backend derives from it
    (with a host sync: ``nonzero``, ``item``) is derived once per generation, not per call."""
    global _mask_memo
    version = inplace_version(key_padding)
    if _mask_memo is None or _mask_memo[0]() is not key_padding or _mask_memo[1] != version:
        _mask_memo = (weakref.ref(key_padding), version, {})
    facts = _mask_memo[2]
    if name not in facts:
        facts[name] = compute(key_padding)
    return facts[name]


def _shared_prefix(key_padding: torch.Tensor) -> int | None:
    """n when every row of the (B, M) mask is n valid keys followed only by padding, else None."""
    n = int(key_padding[0].sum())
    return n if n > 0 and bool(key_padding[:, :n].all()) and not bool(key_padding[:, n:].any()) else None


def _varlen_layout(key_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the valid tokens and the cumulative sequence lengths (B + 1,) int32 for
    flash-attn varlen, once per mask (``_mask_fact``). The DiT's padding is a suffix, so the
    valid tokens are a prefix of each row."""
    return _mask_fact(key_padding, "varlen", _compute_varlen)


def _compute_varlen(key_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = key_padding.sum(dim=1, dtype=torch.int32)
    cu = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    return key_padding.reshape(-1).nonzero(as_tuple=True)[0], cu


def _flash_attention(q, k, v, key_padding, window, padding_mode):
    if q.dtype not in HALF_DTYPES:  # never cast silently: resolve_backend gives float32 parts sdpa
        raise RuntimeError(f"Stable Audio 3: the flash attention backend computes in fp16/bf16 only (got {q.dtype} "
                           "inputs); use attention='sdpa' for parts kept in float32.")
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, D) -> (B, N, H, D)
    win = window if window is not None else (-1, -1)
    if key_padding is None or padding_mode == "reference":
        if key_padding is not None:
            v = v * key_padding[:, :, None, None].to(v.dtype)
        out = flash_attn_func(q, k, v, window_size=win)
    else:
        b, n, h, d = q.shape
        idx, cu = _varlen_layout(key_padding)
        packed = [t.reshape(b * n, h, d)[idx] for t in (q, k, v)]
        max_len = n  # an upper bound keeps this free of host syncs
        out_packed = flash_attn_varlen_func(*packed, cu, cu, max_len, max_len, window_size=win)
        out = torch.zeros(b * n, h, d, dtype=out_packed.dtype, device=out_packed.device)
        out[idx] = out_packed
        out = out.reshape(b, n, h, d)
    return out.transpose(1, 2)


_BACKEND_FNS: dict[str, Callable] = {"math": _math_attention, "sdpa": _sdpa_attention, "flash": _flash_attention}


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding: torch.Tensor | None = None,
    window: tuple[int, int] | None = None,
    backend: str = "sdpa",
    padding_mode: PaddingMode = "exact",
) -> torch.Tensor:
    """Scaled dot-product attention, scale 1/sqrt(D), non-causal.

    q: (B, H, N, D); k, v: (B, H, M, D); key_padding: (B, M) bool, True = valid key;
    window: (left, right) tokens around each query (self-attention only, N == M).
    Returns (B, H, N, D).
    """
    return _BACKEND_FNS[backend](q, k, v, key_padding, window, padding_mode)


# --- projection module -----------------------------------------------------------------------


def _qk_norm(kind: str, dim_heads: int, ops: type) -> nn.Module:
    if kind == "rms":
        return ops.RMSNorm(dim_heads, eps=1e-6)
    if kind == "dyt":
        return ops.DynamicTanh(dim_heads)
    raise ValueError(f"Stable Audio 3: unsupported qk_norm {kind!r} (expected 'rms' or 'dyt').")


class Attention(nn.Module):
    """Multi-head (optionally differential) self- or cross-attention with q/k norm.

    Self-attention uses a fused ``to_qkv``; cross-attention (``dim_context`` given) uses ``to_q``
    and ``to_kv``. Differential attention projects a second query/key pair and returns
    ``attn(q, k, v) - attn(q2, k2, v)``: an unweighted difference with shared values and norms.
    """

    def __init__(self, dim: int, dim_heads: int = 64, dim_context: int | None = None,
                 qk_norm: str = "rms", differential: bool = False, ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        self.num_heads = dim // dim_heads
        self.differential = differential
        self.is_cross = dim_context is not None
        n_q = 2 if differential else 1  # query projections (q, q2)
        if self.is_cross:
            self.to_q = ops.Linear(dim, dim * n_q, bias=False)
            self.to_kv = ops.Linear(dim_context, dim_context * (n_q + 1), bias=False)  # k[, k2], v
        else:
            self.to_qkv = ops.Linear(dim, dim * (3 + 2 * differential), bias=False)
        self.to_out = ops.Linear(dim, dim, bias=False)
        self.q_norm = _qk_norm(qk_norm, dim_heads, ops)
        self.k_norm = _qk_norm(qk_norm, dim_heads, ops)
        self.backend = "sdpa"
        self.padding_mode: PaddingMode = "exact"

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, N, H*D) -> (B, H, N, D)

    def _stacked(self, ts, dtype: torch.dtype) -> torch.Tensor:
        """(B, N, H*D) projections -> (P, B, H, N, D) heads in ``dtype``, converted (exactly, from
        the narrower compute dtype in mixed precision) by the stacking copy itself."""
        heads = [self._heads(t) for t in ts]
        if torch.is_grad_enabled():
            return torch.stack(heads).to(dtype)
        return torch.stack(heads, out=heads[0].new_empty((len(heads), *heads[0].shape), dtype=dtype))

    def _normed(self, qs, ks, dtype: torch.dtype):
        """Stack the (differential) pair over a new leading dim and apply the q/k norms; the
        results in ``dtype``, the activations' (the projections' own but in mixed precision)."""
        q = self._stacked(qs, dtype) if qs is not None else None  # P x (B, H, N, D)
        k = self._stacked(ks, dtype) if ks is not None else None
        # the q/k norms run in the model dtype (not forced to fp32), as in the official code
        q = self.q_norm(q).to(dtype) if q is not None else None
        k = self.k_norm(k).to(dtype) if k is not None else None
        return q, k

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Cross-attention queries: (B, N, W) -> normalised q (P, B, H, N, D)."""
        q, _ = self._normed(self.to_q(x).chunk(2 if self.differential else 1, dim=-1), None, x.dtype)
        return q

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values: (B, M, Wc) -> normalised k (P, B, H, M, D), v (B, H, M, D).

        They depend only on the context and the weights, so the DiT computes them once per
        generation (``DiT.prepare``)."""
        kvs = self.to_kv(context).chunk(3 if self.differential else 2, dim=-1)
        _, k = self._normed(None, kvs[:-1], context.dtype)
        return k, self._heads(kvs[-1])

    def project_qk_v(self, x: torch.Tensor, context: torch.Tensor | None = None):
        """Project to normalised (q, k, v), q and k stacked over the differential pair.

        Returns q: (P, B, H, N, D), k: (P, B, H, M, D), v: (B, H, M, D) with P = 2 if differential.
        """
        if self.is_cross:
            return (self.project_q(x), *self.project_kv(context))
        # mixed precision: the projections stay in the compute dtype until they are stacked into
        # heads, which converts them exactly (no separate cast pass over all of them)
        qkv = self.to_qkv.compute(x)
        if self.differential:
            q, k, v, q2, k2 = qkv.chunk(5, dim=-1)
            qs, ks = (q, q2), (k, k2)
        else:
            q, k, v = qkv.chunk(3, dim=-1)
            qs, ks = (q,), (k,)
        q, k = self._normed(qs, ks, x.dtype)
        return q, k, self._heads(v).to(x.dtype)

    def attend(self, q, k, v, *, rotary=None, key_padding=None, window=None):
        """Attention over projected heads; see ``project_qk_v`` for shapes. ``rotary`` is an
        (N, R) angle table or its ``(cos, sin)``. Returns (B, N, H*D).

        ``q`` and ``k`` are the fresh projections of ``project_qk_v`` (or ``project_q``): in
        inference the rotary is applied to them in place."""
        if rotary is not None:
            q = apply_rotary(q, rotary, inplace=True).to(v.dtype)
            k = apply_rotary(k, rotary, inplace=True).to(v.dtype)
        kw = dict(key_padding=key_padding, window=window, backend=self.backend, padding_mode=self.padding_mode)
        out = attention(q[0], k[0], v, **kw)
        if self.differential:
            second = attention(q[1], k[1], v, **kw)
            out = out - second if torch.is_grad_enabled() else out.sub_(second)  # the same difference
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))  # (B, H, N, D) -> (B, N, H*D)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, rotary=None,
                key_padding=None, window=None, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, N, W); context: (B, M, Wc) for cross-attention, or ``kv`` from ``project_kv``
        already computed. Returns (B, N, W)."""
        if kv is not None:
            q, (k, v) = self.project_q(x), kv
        else:
            q, k, v = self.project_qk_v(x, context)
        return self.attend(q, k, v, rotary=rotary, key_padding=key_padding, window=window)
