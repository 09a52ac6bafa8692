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
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F

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


def bf16_slowdown(linear) -> float:
    """How many times the fp32 time a bf16 ``linear`` (``layers.linear``: the routes a large layer
    takes) needs at ``SLOWDOWN_SHAPE``; timed once per process (well under a second), for the load-time
    message."""
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
