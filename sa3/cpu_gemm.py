"""CPU GEMM routes: which kernel each float32 / bfloat16 linear layer runs on this CPU, decided once.

Four routes exist: oneDNN's linear op in fp32, oneDNN's linear op in bf16 (on the plain weight or
on a weight prepacked in oneDNN's blocked layout), the fp32 GEMM on upcast bf16 operands, and
plain ``F.linear``. Which of them work depends on the CPU and the torch build (oneDNN refuses bf16
below AVX-512 BW/VL/DQ: ``could not create a primitive descriptor``; its ops are x86 paths), so
``cpu_routes()`` runs each once per process on tiny tensors, checks the result and keeps the
decision; where oneDNN has no bf16 GEMM, bf16 layers take the fp32 GEMM on upcast operands.
``set_cpu_routes`` forces or forgets the decision (tests cover every route on any CPU;
benchmarks compare them). bench/bench_gemm.py measures the routes at the models' GEMM shapes;
bench/RESULTS.md records the choice per CPU kind.

Every large CPU linear layer multiplies through ``linear``, which picks the route for its operands
(``cpu_route``); the models' ``layers.Linear`` reaches it through the ``RoutedGemm`` mixin, which
also keeps a bf16 weight prepacked in oneDNN's blocked layout (``set_weight_packing``). The layer
(or a host's replacement of it, ``nodes/comfy_models.ComfyOperations``) only decides which weight
to compute with; off the CPU, and for small layers, every route is plain ``F.linear``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .weight_writes import inplace_version, write_marks

Bf16Route = Literal["onednn", "fp32", "plain"]

ONEDNN_ARCHES = ("x86_64", "amd64")  # where oneDNN's linear ops are known to work (elsewhere: F.linear)
SLOWDOWN_SHAPE = (256, 1024, 2048)  # rows, in, out of the bf16-vs-fp32 timing: 1 GFLOP, well under a second


@dataclass(frozen=True)
class CpuRoutes:
    """The CPU GEMM routes this process takes (see the module docstring).

    ``bf16``: how a large bf16 layer multiplies: ``"onednn"`` (oneDNN's bf16 GEMMs), ``"fp32"``
    (operands upcast, the fp32 route's GEMM, the result rounded to bf16: what a bf16 GEMM with
    fp32 accumulation computes; on x86 CPUs whose oneDNN has no bf16 GEMM, where it measured
    2.4-5x faster than ATen's bf16 kernel, bench/RESULTS.md) or ``"plain"`` (``F.linear`` in
    bf16: elsewhere, e.g. arm64). ``bf16_native``: bf16 instructions (AVX512-BF16 or AMX) behind
    oneDNN's bf16 GEMMs, rather than oneDNN converting to fp32 itself."""

    capability: str
    onednn_fp32: bool
    onednn_bf16: bool
    bf16: Bf16Route
    packed_bf16: bool
    bf16_native: bool

    def describe(self) -> str:
        """One line for logs and benchmarks: capability and the routes taken."""
        return (f"CPU capability {self.capability} ({platform.machine()}); fp32 GEMMs: "
                f"{'oneDNN' if self.onednn_fp32 else 'F.linear'}; bf16 GEMMs: {BF16_ROUTE_NAMES[self.bf16]}"
                f"{' on prepacked weights' if self.packed_bf16 else ''}"
                f"{'' if self.bf16_native else ' (no native bf16)'}")


BF16_ROUTE_NAMES = {"onednn": "oneDNN bf16", "fp32": "fp32 GEMM on upcast operands", "plain": "F.linear in bf16"}

_routes: CpuRoutes | None = None
_bf16_slowdown: float | None = None


def cpu_routes() -> CpuRoutes:
    """The routes of this process: probed at the first call, then kept."""
    global _routes
    if _routes is None:
        _routes = probe_cpu_routes()
    return _routes


def set_cpu_routes(routes: CpuRoutes | None) -> None:
    """Force ``routes`` (tests, benchmarks), or with None forget the decision (the next use probes)."""
    global _routes, _bf16_slowdown
    _routes, _bf16_slowdown = routes, None


@cache
def onednn_linear_op():
    """oneDNN's linear op where it is known to work (x86 builds with oneDNN), else None; looked
    up once per process (``cache_clear`` to look again)."""
    if not torch.backends.mkldnn.is_available() or platform.machine().lower() not in ONEDNN_ARCHES:
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def onednn_reorder_op():
    """oneDNN's weight reorder into its blocked layout (for prepacking), where the linear op is.
    No batch-size hint is given, so the layout, and with it the rounding, never depends on which
    input came first."""
    return getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if onednn_linear_op() else None


def onednn_call(op, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``op`` (oneDNN's linear) without a fused activation."""
    return op(x, weight, bias, "none", [], "")


def upcast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, fp32_linear) -> torch.Tensor:
    """A bf16 linear as ``fp32_linear`` on upcast operands, rounded back to bf16: bf16 products are
    exact in fp32, so this is a bf16 GEMM with fp32 accumulation, as oneDNN's, in another order."""
    out = fp32_linear(x.float(), weight.float(), None if bias is None else bias.float())
    return out.to(x.dtype)


def _runs_correctly(fn, ref: torch.Tensor, tol: float) -> bool:
    """``fn()`` runs (oneDNN raises RuntimeError for an ISA it lacks) and matches ``ref``."""
    try:
        out = fn()
    except RuntimeError:
        return False
    return out.shape == ref.shape and bool(((out.double() - ref).abs().max() <= tol * ref.abs().max()).item())


def _has_bf16_instructions() -> bool:
    """AVX512-BF16 or AMX tiles (cpuinfo's flags, as torch reads them)."""
    return any(getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def probe_cpu_routes() -> CpuRoutes:
    """Run each oneDNN route once on tiny tensors (oneDNN honours ``ONEDNN_MAX_CPU_ISA``, so a capped
    ISA is seen as the CPU it simulates) and keep the ones that run and give the right result."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g) for s in ((8, 64), (32, 64), (32,)))
    x16, w16, b16 = x.bfloat16(), w.bfloat16(), b.bfloat16()
    op, reorder = onednn_linear_op(), onednn_reorder_op()
    with torch.inference_mode():
        ref32 = F.linear(x.double(), w.double(), b.double())
        ref16 = F.linear(x16.double(), w16.double(), b16.double())
        onednn_fp32 = op is not None and _runs_correctly(lambda: onednn_call(op, x, w, b), ref32, 1e-5)
        onednn_bf16 = op is not None and _runs_correctly(lambda: onednn_call(op, x16, w16, b16), ref16, 1e-2)
        packed = onednn_bf16 and reorder is not None and _runs_correctly(
            lambda: onednn_call(op, x16, reorder(w16), b16), ref16, 1e-2)
    bf16: Bf16Route = "onednn" if onednn_bf16 else "fp32" if onednn_fp32 else "plain"
    return CpuRoutes(torch.backends.cpu.get_cpu_capability(), onednn_fp32, onednn_bf16, bf16, packed,
                     onednn_bf16 and _has_bf16_instructions())


def _seconds(fn, reps: int = 3) -> float:
    """Best of a few timed calls after a warm-up (primitives made, pages touched)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bf16_slowdown() -> float:
    """How many times the fp32 time a bf16 ``linear`` (the routes a large layer takes) needs at
    ``SLOWDOWN_SHAPE``; timed once per process (well under a second), for the load-time message."""
    global _bf16_slowdown
    if _bf16_slowdown is None:
        rows, fan_in, fan_out = SLOWDOWN_SHAPE
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(rows, fan_in, generator=g), torch.randn(fan_out, fan_in, generator=g)
        x16, w16 = x.bfloat16(), w.bfloat16()
        with torch.inference_mode():
            _bf16_slowdown = _seconds(lambda: linear(x16, w16)) / _seconds(lambda: linear(x, w))
    return _bf16_slowdown


def cpu_lacks(routes: CpuRoutes) -> str:
    """What this CPU (or the ISA oneDNN is capped to) lacks for fast bf16 GEMMs."""
    if not routes.onednn_bf16:
        return ("oneDNN has no bf16 GEMM here (it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT; native bf16 "
                "needs AVX512-BF16 or AMX)")
    return "no AVX512-BF16 or AMX instructions (oneDNN converts bf16 to fp32 itself)"


def slow_bf16_message(routes: CpuRoutes, slowdown: float) -> str:
    """The load-time log line for a bf16 precision on a CPU without native bf16."""
    return (f"Stable Audio 3: bf16 on this CPU ({routes.capability}): {cpu_lacks(routes)}. It runs correctly "
            f"({BF16_ROUTE_NAMES[routes.bf16]}), but bf16 matrix products took {slowdown:.1f}x the fp32 time "
            f"here (other bf16 operations, such as convolutions, lose more): precision fp32 is the faster choice "
            f"on this CPU.")


# --- the route each linear layer takes ---------------------------------------------------------


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
    upcast operands (``upcast_linear``), never oneDNN's bf16 op.
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
    ``packed``: ``weight`` already in oneDNN's blocked layout (``RoutedGemm._packed_weight``, which
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


# --- the layers' side: RoutedGemm, with prepacked bf16 weights --------------------------------------


class RoutedGemm:
    """Mixin of the linear layer the models build (``layers.Linear``, and through it a host's
    operations: ``nodes/comfy_models.ComfyOperations``): ``gemm`` multiplies through the routes of
    this process (``linear``), on the layer's own weight kept prepacked where ``pack_weight`` asks
    for it (``set_weight_packing``). The layer decides which weight and bias to compute with
    (``layers.CastWeights.weights_for``); this decides how the CPU multiplies them."""

    pack_weight: bool = False  # see set_weight_packing

    def gemm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.linear(x, weight, bias)`` through ``linear``; the packed copy only of the layer's own
        weight, never of one cast for this call (a partially loaded model)."""
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
    """Let every linear layer (``RoutedGemm``: ``layers.Linear``) in ``module`` keep its bfloat16
    weight in oneDNN's blocked layout for CPU inference, at the cost of that second copy of the
    weights (about the bf16 DiT's size); off drops the copies. Measured on an AMX CPU: most bf16
    GEMM shapes of the models 15-45 % faster, one 30 % slower, the bf16 DiT step about 8-10 %
    (bench/bench_gemm.py, bench/RESULTS.md). Float32 layers never pack (the reorder is small next
    to an fp32 GEMM), so the exact fp32 path is unchanged. The packed GEMM rounds differently from
    the plain one, within bfloat16 rounding, the same way at every call. Only CPUs whose oneDNN
    packs bf16 (``cpu_routes().packed_bf16``) make copies; elsewhere the flag changes nothing."""
    for m in module.modules():
        if isinstance(m, RoutedGemm):
            m.pack_weight = enabled
            if not enabled:
                m.__dict__.pop("_packed", None)
