"""Small building blocks shared by the DiT and SAME: linear layer, norms, rotary embedding, GLU
feed-forward, Fourier features.

Legend: B batch, N tokens, H heads, D head dim, W model width, F feed-forward inner width.
Module and parameter names follow the official checkpoints (`gamma`, `proj`, `ff.0`, ...), so
state dicts load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_gemm import cpu_routes, onednn_call, onednn_linear_op, onednn_reorder_op, upcast_linear

SIN_PI = 3.14159265359  # the constant the official sinusoidal feed-forward uses (not math.pi)
FF_BLOCK_ROWS = 512  # feed-forward rows per block in inference at 4 bytes per value (see FeedForward.forward)

ONEDNN_MIN_WEIGHTS = 1 << 18  # layers with fewer weights keep F.linear (see set_onednn_linear)
_use_onednn = True


def set_onednn_linear(enabled: bool) -> None:
    """Route large float32 and bfloat16 CPU linear layers through the routes ``cpu_routes()``
    found on this CPU (default) or through ``F.linear`` (MKL BLAS for float32, what the official
    code gets; bfloat16 measured 3-7 % slower per DiT step with the same output where oneDNN has
    bf16 GEMMs).

    oneDNN's and MKL's fp32 GEMMs differ only in rounding (~1e-6 relative). oneDNN picks its
    kernels by instruction set, MKL by CPU vendor: on AMD CPUs with AVX-512 MKL runs AVX2 code
    and oneDNN measured about 2x faster (bench/RESULTS.md). Only layers with at least
    ``ONEDNN_MIN_WEIGHTS`` weights take the routes (every large layer of the official models):
    for small layers the call overhead dominates, and they keep the official code's rounding.
    Where oneDNN has no bf16 GEMM (x86 below AVX-512), bf16 layers always take the fp32 GEMM on
    upcast operands (``cpu_gemm.upcast_linear``), never oneDNN's bf16 op.
    """
    global _use_onednn
    _use_onednn = bool(enabled)


def _fp32_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The float32 route: oneDNN where it works here and is switched on, else ``F.linear``."""
    if _use_onednn and cpu_routes().onednn_fp32:
        return onednn_call(_onednn_linear(), x, weight, bias)
    return F.linear(x, weight, bias)


def cpu_route(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """The route ``linear`` takes for these operands: ``"fp32"``, a bf16 route of ``CpuRoutes``
    (``"onednn"``, ``"fp32"`` upcast, ``"plain"``), or None for ``F.linear`` as given (small
    layers, other dtypes and devices, autograd: oneDNN's op has no autograd formula)."""
    if (x.device.type != "cpu" or weight.dtype != x.dtype or weight.numel() < ONEDNN_MIN_WEIGHTS
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return None
    if x.dtype == torch.float32:
        return "fp32"
    if x.dtype != torch.bfloat16:
        return None
    route = cpu_routes().bf16
    return "plain" if route == "onednn" and not _use_onednn else route


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           packed: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through the CPU route decided for this process (``cpu_route``, ``cpu_routes``).
    ``packed``: ``weight`` already in oneDNN's blocked layout (``Linear._packed_weight``, which
    only makes one for a call that takes the oneDNN bf16 route), used instead of ``weight``."""
    if packed is not None:
        return onednn_call(_onednn_linear(), x, packed, bias)
    route = cpu_route(x, weight)
    if route is None or route == "plain":
        return F.linear(x, weight, bias)
    if x.dtype == torch.float32:
        return _fp32_linear(x, weight, bias)
    if route == "onednn":
        return onednn_call(_onednn_linear(), x, weight, bias)
    return upcast_linear(x, weight, bias, _fp32_linear)


def _onednn_linear():
    """oneDNN's linear op (looked up per call so tests can wrap ``cpu_gemm.onednn_linear_op``)."""
    return onednn_linear_op()


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


class Linear(CastWeights, nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose forward is ``linear``.

    ``compute_dtype`` (None: the input's) is for mixed precision (SAME ``"bf16-mixed"``): the
    weights are stored in it, the input is cast to it for the GEMM, and the result is cast back
    to the input's dtype, so the activations around the layer keep their precision."""

    compute_dtype: torch.dtype | None = None
    pack_weight: bool = False  # see set_weight_packing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mixed precision: the GEMM in the compute dtype, its result back in the activations' dtype
        return self.compute(x).to(x.dtype)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` without the cast back: the result in the compute dtype (the input's when
        there is none), for a caller whose next operation converts it anyway."""
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        weight, bias = self.weights_for(x)
        if weight is not self.weight:  # cast for this call (partial load): no packed copy of it
            return linear(x, weight, bias)
        return linear(x, weight, bias, self._packed_weight(x))

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """With ``pack_weight``, for a bfloat16 oneDNN call in inference: the weight in oneDNN's
        blocked layout, made once and kept until the weight changes (new tensor, in-place write
        seen by its version counter or by ``mark_written``, as the DiT step cache); else None."""
        weight = self.weight
        if (not self.pack_weight or x.dtype != torch.bfloat16 or torch.is_grad_enabled()
                or not cpu_routes().packed_bf16 or cpu_route(x, weight) != "onednn"):
            return None
        key = (id(weight), weight.data_ptr(), inplace_version(weight), write_marks(self), weight.shape)
        cached = self.__dict__.get("_packed")
        if cached is None or cached[0] != key:
            self.__dict__["_packed"] = cached = (key, onednn_reorder_op()(weight))
        return cached[1]

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_packed", None)  # moved or cast: the packed copy is stale
        return super()._apply(fn, recurse)

    def __getstate__(self):
        """Copies and pickles leave the packed weight out (an opaque oneDNN tensor cannot be
        copied; training deep-copies a model that inference may have packed): remade on use."""
        state = self.__dict__.copy()
        state.pop("_packed", None)
        return state


def set_weight_packing(module: nn.Module, enabled: bool) -> None:
    """Let every ``Linear`` in ``module`` keep its bfloat16 weight in oneDNN's blocked layout for
    CPU inference, at the cost of that second copy of the weights (about the bf16 DiT's size);
    off drops the copies. Measured on an AMX CPU: most bf16 GEMM shapes of the models 15-45 %
    faster, one 30 % slower, the bf16 DiT step about 8-10 % (bench/bench_gemm.py,
    bench/RESULTS.md). Float32 layers never pack (the reorder is small next to an fp32 GEMM), so
    the exact fp32 path is unchanged. The packed GEMM rounds differently from the plain one,
    within bfloat16 rounding, the same way at every call. Only CPUs whose oneDNN packs bf16
    (``cpu_routes().packed_bf16``) make copies; elsewhere the flag changes nothing."""
    for m in module.modules():
        if isinstance(m, Linear):
            m.pack_weight = enabled
            if not enabled:
                m.__dict__.pop("_packed", None)


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
