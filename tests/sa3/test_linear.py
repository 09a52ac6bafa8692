"""sa3.cpu_gemm (its linear and routes): every CPU GEMM route gives F.linear's result up to its
dtype's rounding, the routes are those the probe found working on this CPU (an unsupported one
is never taken), and each fallback route is covered on any CPU by forcing it."""

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

from sa3 import cpu_gemm, precision
from sa3.cpu_gemm import CpuRoutes, cpu_routes, linear, set_cpu_routes, set_onednn_linear
from sa3.layers import Linear

PROBED = cpu_routes()  # this CPU's decision (simulated older CPUs: ONEDNN_MAX_CPU_ISA, .ci/run)
needs_onednn_fp32 = pytest.mark.skipif(not PROBED.onednn_fp32, reason=f"no oneDNN fp32 linear here: {PROBED}")
needs_packing = pytest.mark.skipif(not PROBED.packed_bf16, reason=f"oneDNN cannot pack bf16 here: {PROBED}")


def _forced(**changes) -> CpuRoutes:
    return dataclasses.replace(PROBED, **changes)


# every bf16 route, as a CPU would decide it; those needing oneDNN bf16 only where it works
BF16_ROUTES = {
    "onednn-packed": _forced(bf16="onednn", packed_bf16=True),
    "onednn-plain-weight": _forced(bf16="onednn", packed_bf16=False),
    "fp32-upcast (x86 without bf16 GEMMs)": _forced(onednn_bf16=False, bf16="fp32", packed_bf16=False,
                                                   bf16_native=False),
    "fp32-upcast without oneDNN": _forced(onednn_fp32=False, bf16="fp32", packed_bf16=False, bf16_native=False),
    "plain (arm64)": _forced(onednn_fp32=False, onednn_bf16=False, bf16="plain", packed_bf16=False,
                             bf16_native=False),
}


def _runnable_here(routes: CpuRoutes) -> bool:
    return ((routes.bf16 != "onednn" or PROBED.onednn_bf16) and (not routes.packed_bf16 or PROBED.packed_bf16)
            and (not routes.onednn_fp32 or PROBED.onednn_fp32))


@pytest.fixture
def onednn_default():
    yield
    set_onednn_linear(True)


@pytest.fixture
def force_routes():
    """Force a routes decision for one test; the probed one comes back afterwards."""
    yield set_cpu_routes
    set_cpu_routes(PROBED)


@pytest.fixture
def onednn_calls(monkeypatch):
    """Every call of oneDNN's linear op made through sa3.cpu_gemm.linear, by dtype of the input."""
    calls, op = [], cpu_gemm.onednn_linear_op()

    def counted(*args):
        calls.append(args[0].dtype)
        return op(*args)

    monkeypatch.setattr(cpu_gemm, "onednn_linear_op", lambda: counted)
    return calls


def _inputs(shape, fan_out=cpu_gemm.ONEDNN_MIN_WEIGHTS // 64, seed=0):
    """x of ``shape`` and a layer large enough for the routes (fan_in = shape[-1])."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return x, torch.randn(fan_out, shape[-1], generator=g), torch.randn(fan_out, generator=g)


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


# --- the decision -------------------------------------------------------------------------------

def _runs(fn) -> bool:
    try:
        fn()
    except RuntimeError:
        return False
    return True


def test_the_probe_keeps_exactly_the_onednn_routes_that_run_here():
    op, reorder = cpu_gemm.onednn_linear_op(), cpu_gemm.onednn_reorder_op()
    x, w = torch.randn(3, 64).bfloat16(), torch.randn(16, 64).bfloat16()
    with torch.inference_mode():
        bf16_runs = op is not None and _runs(lambda: cpu_gemm.onednn_call(op, x, w, None))
        packing_runs = bf16_runs and reorder is not None and _runs(
            lambda: cpu_gemm.onednn_call(op, x, reorder(w), None))
        fp32_runs = op is not None and _runs(lambda: cpu_gemm.onednn_call(op, x.float(), w.float(), None))
    assert (PROBED.onednn_fp32, PROBED.onednn_bf16, PROBED.packed_bf16) == (fp32_runs, bf16_runs, packing_runs)
    assert PROBED.bf16 == ("onednn" if bf16_runs else "fp32" if fp32_runs else "plain")
    assert PROBED.bf16_native <= bf16_runs


def test_the_decision_is_made_once_and_can_be_forgotten(force_routes, monkeypatch):
    probes = []
    monkeypatch.setattr(cpu_gemm, "probe_cpu_routes", lambda: probes.append(1) or PROBED)
    force_routes(None)
    for _ in range(3):
        assert cpu_routes() is PROBED
    assert probes == [1]


@pytest.fixture
def arm64(monkeypatch):
    """The process as on an arm64 machine (Apple Silicon, Linux aarch64) for one test."""
    monkeypatch.setattr(cpu_gemm.platform, "machine", lambda: "aarch64")
    cpu_gemm.onednn_linear_op.cache_clear()
    yield
    monkeypatch.undo()
    cpu_gemm.onednn_linear_op.cache_clear()


def test_onednn_is_never_taken_off_x86(arm64):
    assert cpu_gemm.onednn_linear_op() is None and cpu_gemm.onednn_reorder_op() is None
    routes = cpu_gemm.probe_cpu_routes()
    assert (routes.onednn_fp32, routes.onednn_bf16, routes.bf16, routes.packed_bf16) == (False, False, "plain", False)


# --- float32 ------------------------------------------------------------------------------------

@needs_onednn_fp32
@pytest.mark.parametrize("shape", [(1, 64), (7, 96), (2, 5, 64), (2, 3, 5, 64)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_route_matches_f_linear(shape, with_bias, onednn_calls):
    x, w, b = _inputs(shape)
    b = b if with_bias else None
    with torch.inference_mode():
        got, ref = linear(x, w, b), F.linear(x.double(), w.double(), None if b is None else b.double())
    assert onednn_calls == [torch.float32], "the oneDNN route was not taken"
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@needs_onednn_fp32
def test_onednn_route_takes_strided_inputs():
    _, w, b = _inputs((1, 64))
    x = torch.randn(3, 64, 10).transpose(1, 2)  # (3, 10, 64), not contiguous
    with torch.inference_mode():
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_fp32_without_onednn_is_f_linear_bit_for_bit(force_routes, onednn_calls):
    force_routes(_forced(onednn_fp32=False, onednn_bf16=False, bf16="plain", packed_bf16=False, bf16_native=False))
    x, w, b = _inputs((4, 9, 64))
    with torch.inference_mode():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))
    assert onednn_calls == []


def test_disabled_is_f_linear_bit_for_bit(onednn_default):
    x, w, b = _inputs((4, 9, 64))
    set_onednn_linear(False)
    with torch.inference_mode():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))


def test_small_layers_keep_f_linear():
    x, w, b = _inputs((9, 16), fan_out=16)  # 256 weights
    with torch.inference_mode():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))


def test_bf16_takes_the_probed_route_and_never_an_unsupported_one(onednn_calls):
    x, w, b = (t.bfloat16() for t in _inputs((2, 7, 64)))
    with torch.inference_mode():
        got = linear(x, w, b)
    assert got.dtype == torch.bfloat16
    assert _relative_error(got, F.linear(x.double(), w.double(), b.double())) < 4e-3  # bf16 output rounding
    expected = {"onednn": [torch.bfloat16], "fp32": [torch.float32] if PROBED.onednn_fp32 else [], "plain": []}
    assert onednn_calls == expected[PROBED.bf16]


@pytest.mark.parametrize("routes", BF16_ROUTES.values(), ids=BF16_ROUTES.keys())
def test_every_bf16_route_matches_f_linear_within_bf16_rounding(routes, force_routes, onednn_calls):
    if not _runnable_here(routes):
        pytest.skip(f"this CPU cannot run that route: {PROBED}")
    force_routes(routes)
    layer = _bf16_layer()
    x = torch.randn(2, 37, 64).bfloat16()
    with torch.inference_mode():
        got = layer(x)
    ref = F.linear(x.double(), layer.weight.double(), layer.bias.double())
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape
    assert _relative_error(got, ref) < 4e-3
    assert ("_packed" in layer.__dict__) == routes.packed_bf16
    onednn_dtypes = {"onednn": [torch.bfloat16], "fp32": [torch.float32] if routes.onednn_fp32 else [], "plain": []}
    assert onednn_calls == onednn_dtypes[routes.bf16]


def test_bf16_without_onednn_bf16_gemms_never_calls_them(force_routes, onednn_calls, monkeypatch):
    """An AVX2 CPU: oneDNN refuses bf16 (simulated by an op that raises for it); bf16 layers,
    packed or not, take the fp32 GEMM on upcast operands and pack nothing."""
    force_routes(BF16_ROUTES["fp32-upcast (x86 without bf16 GEMMs)"])
    op = cpu_gemm.onednn_linear_op()

    def fp32_only(x, *args):
        if x.dtype != torch.float32:
            raise RuntimeError("could not create a primitive descriptor for the inner product")
        return op(x, *args)

    def no_reorder(weight):
        raise AssertionError("packed a weight on a CPU that cannot pack")

    monkeypatch.setattr(cpu_gemm, "onednn_linear_op", lambda: fp32_only if op else None)
    monkeypatch.setattr(cpu_gemm, "onednn_reorder_op", lambda: no_reorder)
    layer = _bf16_layer()
    x = torch.randn(5, 64).bfloat16()
    with torch.inference_mode():
        got = layer(x)
    assert "_packed" not in layer.__dict__
    assert _relative_error(got, F.linear(x.double(), layer.weight.double(), layer.bias.double())) < 4e-3


def test_other_dtypes_and_autograd_use_f_linear():
    x, w, b = _inputs((4, 64))
    with torch.inference_mode():
        xh, wh, bh = x.half(), w.half(), b.half()
        assert torch.equal(linear(xh, wh, bh), F.linear(xh, wh, bh))
    layer = Linear(64, cpu_gemm.ONEDNN_MIN_WEIGHTS // 64)
    out = layer(x.requires_grad_())
    out.sum().backward()  # the oneDNN op has no autograd formula: training must fall back
    assert layer.weight.grad is not None and x.grad is not None


def test_linear_keeps_the_nn_linear_state_dict():
    ours, ref = Linear(8, 4), torch.nn.Linear(8, 4)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert isinstance(ours, torch.nn.Linear)  # LoRA targets nn.Linear layers


# --- prepacked bfloat16 weights (set_weight_packing) ------------------------------------------



def _bf16_layer(seed=0) -> Linear:
    _, w, b = _inputs((1, 64), seed=seed)
    layer = Linear(64, w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w), layer.bias.copy_(b)
    layer.to(torch.bfloat16).requires_grad_(False)
    cpu_gemm.set_weight_packing(layer, True)
    return layer


@needs_packing
def test_packed_weight_matches_plain_within_bf16_rounding():
    layer = _bf16_layer()
    x = torch.randn(2, 37, 64).bfloat16()
    with torch.inference_mode():
        packed = layer(x)
        assert "_packed" in layer.__dict__, "no packed copy was made"
        cpu_gemm.set_weight_packing(layer, False)
        assert "_packed" not in layer.__dict__  # off drops the copy
        plain = layer(x)
    ref = F.linear(x.double(), layer.weight.double(), layer.bias.double())
    assert packed.dtype == torch.bfloat16 and packed.shape == plain.shape
    for out in (packed, plain):
        assert ((out.double() - ref).norm() / ref.norm()).item() < 4e-3  # bf16 output rounding


@needs_packing
def test_packed_weight_is_made_once_and_remade_after_a_write():
    from sa3.lora import write_weight

    layer = _bf16_layer()
    x = torch.randn(5, 64).bfloat16()
    with torch.inference_mode():
        layer.weight.data = layer.weight.data.clone()  # an inference tensor, as inside ComfyUI: no version counter
        first = layer(x)
        packed = layer.__dict__["_packed"][1]
        layer(x)
        assert layer.__dict__["_packed"][1] is packed  # reused
        write_weight(layer, torch.zeros_like(layer.weight))  # LoRA's in-place write, marked
        assert torch.equal(layer(x), layer.bias.expand(5, -1))  # the new weight is used
        assert layer.__dict__["_packed"][1] is not packed
    assert not torch.equal(first, layer.bias.expand(5, -1))


@needs_packing
def test_packing_does_not_depend_on_the_first_input():
    """The layout is chosen without a batch-size hint, so a layer first called with 3 rows gives a
    long input the same bits as one first called with that long input."""
    a, b = _bf16_layer(), _bf16_layer()
    short, long = torch.randn(3, 64).bfloat16(), torch.randn(700, 64).bfloat16()
    with torch.inference_mode():
        a(short)
        assert torch.equal(a(long), b(long))


@needs_packing
def test_packing_skips_fp32_autograd_and_moves():
    layer = _bf16_layer()
    x = torch.randn(4, 64).bfloat16()
    with torch.enable_grad():
        layer(x)
    assert "_packed" not in layer.__dict__  # grad mode: the plain weight (training)
    with torch.inference_mode():
        layer(x)
    assert "_packed" in layer.__dict__
    layer.float()  # moved or cast: the copy is stale and dropped
    assert "_packed" not in layer.__dict__
    with torch.inference_mode():
        layer(x.float())
    assert "_packed" not in layer.__dict__  # float32 never packs: the exact path is unchanged


@needs_packing
def test_a_packed_layer_can_be_copied_and_saved():
    """Training deep-copies a model that inference may have packed (inside ComfyUI the weights
    are inference tensors); the opaque packed tensor cannot be copied, so copies leave it out."""
    import copy
    import io

    layer = _bf16_layer()
    x = torch.randn(3, 64).bfloat16()
    with torch.inference_mode():
        out = layer(x)
    assert "_packed" in layer.__dict__
    twin = copy.deepcopy(layer)
    assert "_packed" not in twin.__dict__ and "_packed" in layer.__dict__
    with torch.inference_mode():
        assert torch.equal(twin(x), out)  # packs again, the same way
    torch.save(layer, io.BytesIO())


# --- the load-time message ----------------------------------------------------------------------

@pytest.mark.parametrize("precisions", [(torch.bfloat16, torch.float32), (torch.float32, precision.MIXED_BF16)])
def test_bf16_on_a_cpu_without_native_bf16_warns_once_per_load(precisions, force_routes, caplog):
    force_routes(BF16_ROUTES["fp32-upcast (x86 without bf16 GEMMs)"])
    with caplog.at_level(logging.WARNING, logger="sa3.precision"):
        assert precision.resolve_autoencoder_precision(precisions[1], torch.device("cpu"), precisions[0]) \
            == precisions[1]
    (record,) = caplog.records
    message = record.getMessage()
    assert "oneDNN has no bf16 GEMM" in message and "fp32 is the faster choice" in message
    assert f"({PROBED.capability})" in message and "x the fp32 time" in message


@pytest.mark.parametrize("routes, device, precisions", [
    (BF16_ROUTES["fp32-upcast (x86 without bf16 GEMMs)"], "cpu", (torch.float32, torch.float32)),
    (_forced(bf16="onednn", onednn_bf16=True, bf16_native=True), "cpu", (torch.bfloat16, precision.MIXED_BF16)),
    (BF16_ROUTES["plain (arm64)"], "cuda", (torch.bfloat16, torch.bfloat16)),
], ids=["fp32", "native-bf16", "gpu"])
def test_no_message_for_fp32_native_bf16_or_a_gpu(routes, device, precisions, force_routes, caplog):
    force_routes(routes)
    with caplog.at_level(logging.WARNING, logger="sa3.precision"):
        assert not precision.report_cpu_precision(torch.device(device), *precisions)
    assert not caplog.records


def test_auto_stays_fp32_on_cpu():
    assert precision.resolve_dtype("auto", torch.device("cpu")) == torch.float32


# --- one small generation, every linear on the routes -------------------------------------------

def _tiny_generation(dtype: str, every_layer_routed: bool, monkeypatch) -> torch.Tensor:
    """tiny-small's audio in ``dtype``, one step (its random weights make more steps chaotic
    under any rounding change); every layer on this CPU's routes, or all on ``F.linear``."""
    from sa3 import StableAudioModel
    from tests.conftest import require_fixtures

    root = require_fixtures() / "tiny-small"
    monkeypatch.setattr(cpu_gemm, "ONEDNN_MIN_WEIGHTS", 0)
    set_onednn_linear(every_layer_routed)
    try:
        with torch.inference_mode():
            model = StableAudioModel.from_pretrained(root, device="cpu", dtype=dtype)
            return model.generate(prompt="a dog barking", duration=2.0, steps=1, seed=3)
    finally:
        set_onednn_linear(True)


def test_a_small_fp32_generation_on_the_probed_routes(monkeypatch):
    """Every layer of tiny-small on this CPU's fp32 route: within the golden tolerance of F.linear
    (.ci/run reruns this under simulated older CPUs)."""
    from tests.conftest import GOLDEN_ATOL

    routed, ref = (_tiny_generation("fp32", on, monkeypatch) for on in (True, False))
    torch.testing.assert_close(routed, ref, rtol=0, atol=GOLDEN_ATOL)


def test_a_small_bf16_generation_on_the_probed_routes(monkeypatch):
    """Every layer of tiny-small on this CPU's bf16 route (the crash of issue 21 on AVX2): audio
    within bf16 rounding of fp32."""
    audio, ref = _tiny_generation("bf16", True, monkeypatch), _tiny_generation("fp32", False, monkeypatch)
    assert audio.dtype == torch.float32 and audio.shape == ref.shape
    assert 0 < _relative_error(audio, ref.double()) < 0.1  # measured 2.2e-2
