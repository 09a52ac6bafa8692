"""Memory savers: ``low_memory`` (releasing memory-mapped weights between stages) and the
collapsed local-embedding cache leave results bit for bit unchanged; the blocked feed-forward
changes at most the GEMM rounding."""

from __future__ import annotations

import sys

import pytest
import torch

from sa3 import cpu_gemm, layers
from sa3.layers import FeedForward
from sa3.loading import release_mapped_weights
from tests.conftest import fixture_root

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise release is Linux-only")


def _fresh_model(low_memory: bool = False):
    """A private (uncached) tiny-small: these tests modify and release its weights."""
    from sa3 import StableAudioModel

    root = fixture_root()
    if root is None or not (root / "tiny-small").is_dir():
        pytest.skip("tiny-small fixture model not found")
    return StableAudioModel.from_pretrained(root / "tiny-small", device="cpu", low_memory=low_memory)


KW = dict(prompt=["a drum loop", "rain on a tin roof"], duration=[3.0, 2.0], steps=3, batch_size=2, seed=11)


@linux_only
def test_low_memory_generation_is_bit_identical():
    ref = _fresh_model().generate(**KW)
    model = _fresh_model(low_memory=True)
    first, second = model.generate(**KW), model.generate(**KW)  # the second re-reads released pages
    assert torch.equal(first, ref) and torch.equal(second, ref)


@linux_only
def test_low_memory_streams_dit_blocks_during_sampling(monkeypatch):
    """low_memory drops each DiT block's mapped pages once it has run (one release per block and
    DiT call), inside ComfyUI's inference mode too, and the audio stays bit-identical."""
    from sa3 import model as model_module

    ref = _fresh_model().generate(**KW)
    model = _fresh_model(low_memory=True)
    released = []
    def spy(module, trim_heap=True):
        released.append((module, trim_heap))
        return release_mapped_weights(module, trim_heap)

    monkeypatch.setattr(model_module, "release_mapped_weights", spy)
    with torch.inference_mode():
        out = model.generate(**KW)
    assert torch.equal(out, ref)
    blocks = [m for m, trim in released if m in set(model.dit.transformer.layers) and not trim]
    assert len(blocks) == KW["steps"] * len(model.dit.transformer.layers)  # cfg 1: one DiT call per step
    assert _fresh_model().dit.transformer.after_block is None  # only with low_memory


def test_weight_packing_is_on_except_in_low_memory():
    """Prepacked bf16 weights are a second copy of the weights: the default, not low_memory."""
    for low_memory in (False, True):
        model = _fresh_model(low_memory=low_memory)
        linears = [m for part in (model.dit, model.autoencoder) for m in part.modules()
                   if isinstance(m, layers.Linear)]
        assert linears and all(m.pack_weight is not low_memory for m in linears)


@linux_only
def test_release_drops_mapped_weights_and_keeps_their_values():
    model = _fresh_model()
    before = {k: v.clone() for k, v in model.dit.state_dict().items()}
    assert release_mapped_weights(model.dit) > 0  # memory-mapped from model.safetensors
    after = model.dit.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("sinusoidal", [False, True])
def test_blocked_feed_forward_matches_whole(monkeypatch, sinusoidal):
    torch.manual_seed(0)
    ff = FeedForward(32, mult=2.0, sinusoidal=sinusoidal).eval()
    x = torch.randn(3, 50, 32)
    with torch.no_grad():
        whole = ff(x)
        monkeypatch.setattr(layers, "FF_BLOCK_ROWS", 16)  # 150 rows -> 10 blocks, the last of 6
        blocked = ff(x)
    assert blocked.shape == whole.shape
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-6)


def test_blocked_mixed_precision_feed_forward_returns_the_activations_dtype(monkeypatch):
    """bf16-mixed: blocks computed in bf16 and written into one float32 output (the cast in the
    copy), the same values as the whole GLU cast once."""
    torch.manual_seed(0)
    ff = FeedForward(32, mult=2.0).eval()
    for module in ff.modules():
        if isinstance(module, layers.Linear):
            module.compute_dtype = torch.bfloat16
            module.to(torch.bfloat16)
    x = torch.randn(3, 50, 32)
    with torch.no_grad():
        whole = ff(x)
        monkeypatch.setattr(layers, "FF_BLOCK_ROWS", 16)
        blocked = ff(x)
    assert whole.dtype == blocked.dtype == torch.float32
    torch.testing.assert_close(blocked, whole, rtol=0, atol=0)


def test_feed_forward_in_place_activation_matches_autograd_path():
    torch.manual_seed(0)
    cpu_gemm.set_onednn_linear(False)  # autograd always takes F.linear: compare like with like
    try:
        _check_in_place_activation()
    finally:
        cpu_gemm.set_onednn_linear(True)


def _check_in_place_activation():
    for sinusoidal in (False, True):
        ff = FeedForward(16, sinusoidal=sinusoidal)
        x = torch.randn(2, 5, 16, requires_grad=True)
        out = ff(x)  # grad mode: out-of-place activation
        out.sum().backward()
        with torch.no_grad():
            assert torch.equal(ff(x), out.detach())
        assert x.grad is not None


def test_local_embeddings_collapse_only_when_rows_are_equal():
    from tests.sa3.test_dit_cache import CFG, _cond, _dit

    dit = _dit()
    plain = dit.prepare(_cond(inpaint=False))
    assert all(e.shape == (1, 1, CFG.embed_dim) for e in plain.local_embeds)
    inpaint = dit.prepare(_cond(inpaint=True))
    assert all(e.shape == (2, 24, CFG.embed_dim) for e in inpaint.local_embeds)
