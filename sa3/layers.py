"""Small building blocks shared by the DiT and SAME: linear layer, norms, rotary embedding, GLU
feed-forward, Fourier features; and the operations seam the models build their layers through
(``DefaultOps``, ``CastWeights.weights_for``, ``to_input``), which a host such as ComfyUI replaces.
How a linear layer multiplies on the CPU (oneDNN routes, prepacked weights) is ``sa3.cpu_gemm``'s.

Legend: B batch, N tokens, H heads, D head dim, W model width, F feed-forward inner width.
Module and parameter names follow the official checkpoints (`gamma`, `proj`, `ff.0`, ...), so
state dicts load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_gemm import RoutedGemm

SIN_PI = 3.14159265359  # the constant the official sinusoidal feed-forward uses (not math.pi)
FF_BLOCK_ROWS = 512  # feed-forward rows per block in inference at 4 bytes per value (see FeedForward.forward)


def to_input(t: torch.Tensor | None, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """``t`` on ``x``'s device (and in ``dtype`` when given): a parameter or buffer a module keeps
    outside its layers (memory tokens, adaLN tables, SAME's new tokens, rotary frequencies), used
    where a host (ComfyUI's partial loading) left it on another device than the activations. The
    same tensor, no copy, when it is already there (every full load)."""
    if t is None or (t.device == x.device and (dtype is None or t.dtype == dtype)):
        return t
    return t.to(device=x.device, dtype=dtype or t.dtype)


class CastWeights:
    """Mixin of the layers the models build through an operations namespace (``DefaultOps``):
    ``weights_for(x)`` gives the weight and bias to compute with, on ``x``'s device. The default
    casts only when they live elsewhere (a partially loaded model); a host's operations override it
    (ComfyUI's cast machinery: ``nodes/comfy_models.ComfyOperations``)."""

    def weights_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return to_input(self.weight, x), to_input(self.bias, x)


class Linear(CastWeights, RoutedGemm, nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) computing with ``weights_for(x)``
    through this process's CPU GEMM routes (``RoutedGemm.gemm``: ``cpu_gemm.linear``, weights
    prepacked by ``cpu_gemm.set_weight_packing``; elsewhere ``F.linear``).

    ``compute_dtype`` (None: the input's) is for mixed precision (SAME ``"bf16-mixed"``): the
    weights are stored in it, the input is cast to it for the GEMM, and the result is cast back
    to the input's dtype, so the activations around the layer keep their precision."""

    compute_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mixed precision: the GEMM in the compute dtype, its result back in the activations' dtype
        return self.compute(x).to(x.dtype)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without the cast back: the result in the compute dtype (the input's when
        there is none), for a caller whose next operation converts it anyway."""
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        return self.gemm(x, *self.weights_for(x))


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain only.

    ``force_fp32`` runs the reduction in float32 and casts back, as the DiT's main norms do.
    """

    def __init__(self, dim: int, eps: float = 1e-5, force_fp32: bool = False):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.force_fp32 = force_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = to_input(self.gamma, x)
        if not self.force_fp32:
            return F.rms_norm(x, x.shape[-1:], weight=gamma, eps=self.eps)
        out = F.rms_norm(x.float(), x.shape[-1:], weight=gamma.float(), eps=self.eps)
        return out.to(x.dtype)


class DynamicTanh(nn.Module):
    """DyT: ``gamma * tanh(alpha * x) + beta`` with a scalar alpha (SAME's norm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), 4.0))
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, gamma, beta = (to_input(p, x) for p in (self.alpha, self.gamma, self.beta))
        if torch.is_grad_enabled():
            return gamma * torch.tanh(alpha * x) + beta
        # inference: the same roundings on one fresh tensor (no extra temporaries)
        return (alpha * x).tanh_().mul_(gamma).add_(beta)


class RotaryEmbedding(nn.Module):
    """Rotary table for ``dim`` rotated features (the first ``dim`` of each head).

    ``inv_freq`` is a persistent buffer because the official files contain it.
    """

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def table(self, seq_len: int, offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
        """Angles for positions ``offset .. offset+seq_len-1``: (N, dim), float32, on ``device``
        (None: the buffer's; the activations' where a host may leave the buffer elsewhere)."""
        inv_freq = self.inv_freq if device is None else self.inv_freq.to(device)
        pos = torch.arange(offset, offset + seq_len, device=inv_freq.device, dtype=torch.float32)
        # fp32 angles: positions up to ~70k (SAME-L) lose precision in half types
        freqs = torch.outer(pos, inv_freq.float())  # (N, dim/2)
        return torch.cat((freqs, freqs), dim=-1)  # (N, dim)


def rotary_cos_sin(freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Precompute ``(cos, sin)`` of a rotary table once, for reuse across layers and steps."""
    return freqs.cos(), freqs.sin()


def apply_rotary(t: torch.Tensor, freqs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                 inplace: bool = False) -> torch.Tensor:
    """Rotate the first ``R`` features of ``t`` (partial, GPT-J style slice).

    t: (..., N, D); freqs: (N, R) angles with R <= D, or their ``(cos, sin)`` from
    ``rotary_cos_sin`` (same values, computed once). Computed in float32, returned in t's dtype.
    ``inplace`` (inference, for a ``t`` the caller owns) writes the result into ``t``: the same
    values without a copy of the features that are not rotated.
    """
    cos, sin = rotary_cos_sin(freqs) if torch.is_tensor(freqs) else freqs
    rot, half = cos.shape[-1], cos.shape[-1] // 2
    # only the rotated features in fp32 (a no-op view for fp32 inputs)
    x1, x2 = t[..., :half].float(), t[..., half:rot].float()  # (..., N, R/2) each
    # rotated = x * cos + rotate_half(x) * sin, half by half with the same roundings (no FMA):
    # first = x1 * cos1 - x2 * sin1, second = x2 * cos2 + x1 * sin2; written straight into the
    # output instead of through rotate_half's and the final concatenations' copies. Both halves
    # are computed before either is written: for fp32, x1 and x2 are views of t.
    first = (x1 * cos[..., :half]).sub_(x2 * sin[..., :half])
    second = (x2 * cos[..., half:]).add_(x1 * sin[..., half:])
    if inplace and not torch.is_grad_enabled():
        out = t
    else:
        out = torch.empty_like(t)
        out[..., rot:] = t[..., rot:]
    out[..., :half], out[..., half:rot] = first, second  # casts back to t's dtype
    return out


class GLU(nn.Module):
    """Gated in-projection: ``[value | gate] = proj(x)``, returns ``value * act(gate)``."""

    def __init__(self, dim_in: int, dim_out: int, sinusoidal: bool = False, ops: type | None = None):
        super().__init__()
        self.proj = resolve_ops(ops).Linear(dim_in, dim_out * 2)
        self.sinusoidal = sinusoidal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # (B, N, 2F) -> 2 x (B, N, F)
        if torch.is_grad_enabled():
            act = torch.sin(SIN_PI * gate) if self.sinusoidal else F.silu(gate)
        else:  # the projection is our own fresh tensor: activate in place (same values, less memory)
            act = gate.mul_(SIN_PI).sin_() if self.sinusoidal else F.silu(gate, inplace=True)
        return value * act


class FeedForward(nn.Module):
    """GLU feed-forward. ``ff = [GLU, Identity, Linear, Identity]`` keeps the official key
    indices (``ff.ff.0.proj``, ``ff.ff.2``)."""

    def __init__(self, dim: int, mult: float = 4.0, sinusoidal: bool = False, ops: type | None = None):
        super().__init__()
        inner = int(dim * mult)
        ops = resolve_ops(ops)
        self.ff = nn.Sequential(GLU(dim, inner, sinusoidal, ops), nn.Identity(), ops.Linear(inner, dim), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., W). In inference, long inputs run in blocks of ``FF_BLOCK_ROWS`` tokens (twice
        as many in 2-byte dtypes: the same bytes): the feed-forward is per token, so only the
        GEMM's rounding can change (a kernel may pick a different blocking for fewer rows), while
        the (rows, 2F) intermediate stays small and is reused by the allocator instead of being
        freshly mapped at every call (measured: SAME-S decode 5-8 % faster, DiT step memory -20 %
        at 120 s; in bf16, 1024-row blocks ran SAME-S's feed-forward 27 % faster than 512)."""
        cd = self.ff[0].proj.compute_dtype
        if cd is not None and x.dtype != cd:
            # mixed precision: the whole GLU (two GEMMs, the activation and the gating product) in
            # the compute dtype, one cast in and one out instead of one around each GEMM
            return self._forward(x.to(cd), x.dtype)
        return self._forward(x, x.dtype)

    def _forward(self, x: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        block_rows = FF_BLOCK_ROWS * 4 // x.element_size()  # the same bytes per block: 1024 rows in bf16
        if torch.is_grad_enabled() or x.numel() <= block_rows * x.shape[-1]:
            return self.ff(x).to(out_dtype)
        rows = x.reshape(-1, x.shape[-1])  # (..., W) -> (R, W)
        out = rows.new_empty(rows.shape[0], self.ff[2].out_features, dtype=out_dtype)
        for start in range(0, rows.shape[0], block_rows):
            block = rows[start:start + block_rows]
            out[start:start + block.shape[0]] = self.ff(block)  # the cast back happens in this copy
        return out.view(*x.shape[:-1], out.shape[-1])


def residual(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``h + y``; in inference written into ``y``, a fresh branch output the caller owns (the
    same sum: addition commutes bit for bit)."""
    return h + y if torch.is_grad_enabled() else y.add_(h)


def expo_fourier_features(
    t: torch.Tensor, dim: int, min_freq: float = 0.5, max_freq: float = 10000.0
) -> torch.Tensor:
    """Exponentially spaced Fourier features ``[cos(2*pi*t*f_k) ; sin(2*pi*t*f_k)]``.

    t: (B,) or (B, 1). Returns (B, dim) in t's dtype; computed in float32.
    """
    in_dtype = t.dtype
    t = t.float()
    if t.dim() == 1:
        t = t.unsqueeze(-1)  # (B,) -> (B, 1)
    ramp = torch.linspace(0, 1, dim // 2, device=t.device, dtype=torch.float32)
    log_min, log_max = math.log(min_freq), math.log(max_freq)
    freqs = torch.exp(ramp * (log_max - log_min) + log_min)
    args = t * freqs * 2 * math.pi  # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(in_dtype)


def mlp(dim_in: int, dim_hidden: int, dim_out: int, bias: bool, ops: type | None = None) -> nn.Sequential:
    """``Linear -> SiLU -> Linear`` (indices 0 and 2 hold the weights, as in the official files)."""
    ops = resolve_ops(ops)
    return nn.Sequential(ops.Linear(dim_in, dim_hidden, bias=bias), nn.SiLU(),
                         ops.Linear(dim_hidden, dim_out, bias=bias))


class Conv1d(CastWeights, nn.Conv1d):
    """``nn.Conv1d`` (same parameters and keys) computing with ``weights_for(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *self.weights_for(x))


class WNConv1d(CastWeights, nn.Module):
    """Conv1d under the old ``torch.nn.utils.weight_norm`` (dim 0): ``weight = v * g / ||v||`` with
    the norm over (in, kernel) per output channel; 'same' padding (odd kernels). SAME's mapping."""

    compute_dtype: torch.dtype | None = None  # mixed precision, as ``Linear.compute_dtype``

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        # placeholder values (real ones come from the checkpoint); uniform_ also works on the meta device
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size).uniform_(-0.02, 0.02))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = kernel_size // 2

    @property
    def weight(self) -> torch.Tensor:
        return self._normed(self.weight_v, self.weight_g)

    @staticmethod
    def _normed(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        norm = v.norm(dim=(1, 2), keepdim=True)  # (out, 1, 1)
        return v * (g / norm)

    def weights_for(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._normed(to_input(self.weight_v, x), to_input(self.weight_g, x)), to_input(self.bias, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in, F) -> (B, out, F)."""
        weight, bias = self.weights_for(x)
        cd = self.compute_dtype
        if cd is None or cd == x.dtype:
            return F.conv1d(x, weight, bias, padding=self.padding)
        # mixed precision: weight norm in the parameters' float32, the convolution in the compute
        # dtype, the result back in the activations' dtype
        bias = bias.to(cd) if bias is not None else None
        return F.conv1d(x.to(cd), weight.to(cd), bias, padding=self.padding).to(x.dtype)


class DefaultOps:
    """The operations the models build their layers with (``ops=`` of ``DiT``, ``SAMEAutoencoder``,
    ``Attention``, ``FeedForward``, ``mlp``), as core ComfyUI's ``comfy/ldm`` models take
    ``operations=``. A host passes a namespace with the same names whose classes subclass these
    (same parameters, so the same state-dict keys) and override ``weights_for``: ComfyUI's nodes
    pass ``nodes/comfy_models.ComfyOperations``, built on ``comfy.ops.cast_bias_weight``, so its
    partial loading (low-VRAM cards, ``--lowvram``, ``--novram``) can leave any layer on the CPU."""

    Linear = Linear
    Conv1d = Conv1d
    WNConv1d = WNConv1d
    RMSNorm = RMSNorm
    DynamicTanh = DynamicTanh


def resolve_ops(ops: type | None) -> type:
    """``ops``, or ``DefaultOps`` for None."""
    return DefaultOps if ops is None else ops
