"""sa3.layers.linear: the oneDNN route for float32 CPU inference is F.linear up to fp32 rounding."""

import pytest
import torch
import torch.nn.functional as F

from sa3 import layers
from sa3.layers import Linear, linear, set_onednn_linear


@pytest.fixture
def onednn_default():
    yield
    set_onednn_linear(True)


def _inputs(shape, fan_out=layers.ONEDNN_MIN_WEIGHTS // 64, seed=0):
    """x of ``shape`` and a layer large enough for the oneDNN route (fan_in = shape[-1])."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    return x, torch.randn(fan_out, shape[-1], generator=g), torch.randn(fan_out, generator=g)


@pytest.mark.skipif(layers._onednn_linear is None, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("shape", [(1, 64), (7, 96), (2, 5, 64), (2, 3, 5, 64)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_route_matches_f_linear(shape, with_bias, monkeypatch):
    x, w, b = _inputs(shape)
    b = b if with_bias else None
    calls, op = [], layers._onednn_linear
    monkeypatch.setattr(layers, "_onednn_linear", lambda *a: calls.append(1) or op(*a))
    with torch.inference_mode():
        got, ref = linear(x, w, b), F.linear(x.double(), w.double(), None if b is None else b.double())
    assert calls, "the oneDNN route was not taken"
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(layers._onednn_linear is None, reason="this torch build has no oneDNN")
def test_onednn_route_takes_strided_inputs():
    _, w, b = _inputs((1, 64))
    x = torch.randn(3, 64, 10).transpose(1, 2)  # (3, 10, 64), not contiguous
    with torch.inference_mode():
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_disabled_is_f_linear_bit_for_bit(onednn_default):
    x, w, b = _inputs((4, 9, 64))
    set_onednn_linear(False)
    with torch.inference_mode():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))


def test_small_layers_keep_f_linear():
    x, w, b = _inputs((9, 16), fan_out=16)  # 256 weights
    with torch.inference_mode():
        assert torch.equal(linear(x, w, b), F.linear(x, w, b))


@pytest.mark.skipif(layers._onednn_linear is None, reason="this torch build has no oneDNN")
def test_bfloat16_route_matches_f_linear():
    x, w, b = (t.bfloat16() for t in _inputs((2, 7, 64)))
    with torch.inference_mode():
        got, ref = linear(x, w, b), F.linear(x, w, b)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, ref, rtol=1.6e-2, atol=1e-2)  # bf16 rounding at most


def test_other_dtypes_and_autograd_use_f_linear():
    x, w, b = _inputs((4, 64))
    with torch.inference_mode():
        xh, wh, bh = x.half(), w.half(), b.half()
        assert torch.equal(linear(xh, wh, bh), F.linear(xh, wh, bh))
    layer = Linear(64, layers.ONEDNN_MIN_WEIGHTS // 64)
    out = layer(x.requires_grad_())
    out.sum().backward()  # the oneDNN op has no autograd formula: training must fall back
    assert layer.weight.grad is not None and x.grad is not None


def test_linear_keeps_the_nn_linear_state_dict():
    ours, ref = Linear(8, 4), torch.nn.Linear(8, 4)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert isinstance(ours, torch.nn.Linear)  # LoRA targets nn.Linear layers


# --- prepacked bfloat16 weights (set_weight_packing) ------------------------------------------

needs_packing = pytest.mark.skipif(layers._reorder_weight is None, reason="this torch build has no oneDNN reorder")


def _bf16_layer(seed=0) -> Linear:
    _, w, b = _inputs((1, 64), seed=seed)
    layer = Linear(64, w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w), layer.bias.copy_(b)
    layer.to(torch.bfloat16).requires_grad_(False)
    layers.set_weight_packing(layer, True)
    return layer


@needs_packing
def test_packed_weight_matches_plain_within_bf16_rounding():
    layer = _bf16_layer()
    x = torch.randn(2, 37, 64).bfloat16()
    with torch.inference_mode():
        packed = layer(x)
        assert "_packed" in layer.__dict__, "no packed copy was made"
        layers.set_weight_packing(layer, False)
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
def test_packing_falls_back_to_the_plain_weight_where_onednn_cannot_pack(monkeypatch):
    layer = _bf16_layer()
    x = torch.randn(4, 64).bfloat16()
    with torch.inference_mode():
        layers.set_weight_packing(layer, False)
        plain = layer(x)
        layers.set_weight_packing(layer, True)

        def refuse(weight):
            raise RuntimeError("no bf16 reorder on this CPU")

        monkeypatch.setattr(layers, "_reorder_weight", refuse)
        assert torch.equal(layer(x), plain)
    assert layer.pack_weight is False and "_packed" not in layer.__dict__


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
