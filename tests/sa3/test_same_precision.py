"""SAME precision options: fp32 stays the exact default; ``"bf16-mixed"`` (bf16 GEMMs and
convolutions, norms / attention / noise in fp32) is opt-in, changes the audio only by bounded
rounding, and draws the same random stream as fp32 (plain bf16 does not, and breaks SAME
attention: 0.7-1.4 relative error on these models)."""

from __future__ import annotations

import copy

import pytest
import torch

from sa3 import AutoencoderModel, StableAudioModel
from sa3.layers import DynamicTanh, Linear
from sa3.same import MIXED_BF16, WNConv1d
from tests.conftest import require_fixtures

MODELS = ("tiny-small", "tiny-medium")
# measured relative L2 of the audio vs fp32 (bench/bench_same.py has the full-size figure):
# 1.6e-2 tiny-small, 2.0e-2 tiny-medium; the bound leaves room for kernel rounding differences
MIXED_REL_L2 = 4e-2


def _same(name: str, precision=torch.float32):
    return AutoencoderModel.from_pretrained(require_fixtures() / name, device="cpu", dtype=precision).autoencoder


def _decode(same, latents: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio and the generator's state afterwards (which draws were made)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        audio = same.decode(latents, chunked=False, generator=gen)
    return audio, gen.get_state()


def _latents(same, frames: int = 64) -> torch.Tensor:
    return torch.randn(1, same.config.latent_dim, frames, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", MODELS)
def test_mixed_bf16_decode_is_close_to_fp32_with_the_same_random_stream(name):
    ref_model, mixed = _same(name), _same(name, MIXED_BF16)
    z = _latents(ref_model)
    ref, ref_state = _decode(ref_model, z)
    out, state = _decode(mixed, z)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    rel = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    assert 0 < rel < MIXED_REL_L2, f"bf16-mixed decode deviates {rel:.2e} from fp32 (bound {MIXED_REL_L2})"
    assert torch.equal(state, ref_state)  # noise drawn in fp32, in the same order


@pytest.mark.parametrize("name", MODELS)
def test_mixed_bf16_encode_is_close_to_fp32(name):
    ref_model, mixed = _same(name), _same(name, MIXED_BF16)
    audio = torch.randn(1, 2, 64 * 4096, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.inference_mode():
        ref = ref_model.encode(audio, chunked=False, generator=torch.Generator().manual_seed(4))
        out = mixed.encode(audio, chunked=False, generator=torch.Generator().manual_seed(4))
    rel = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    assert 0 < rel < MIXED_REL_L2


def test_mixed_bf16_keeps_norms_and_activations_in_fp32():
    same = _same("tiny-small", MIXED_BF16)
    assert same.dtype == torch.float32 and same.compute_dtype == torch.bfloat16
    linears = [m for m in same.modules() if isinstance(m, Linear)]
    convs = [m for m in same.modules() if isinstance(m, WNConv1d)]
    assert linears and convs
    assert all(m.weight.dtype == torch.bfloat16 and m.compute_dtype == torch.bfloat16 for m in linears)
    assert all(m.weight_v.dtype == torch.float32 and m.compute_dtype == torch.bfloat16 for m in convs)
    norms = [p for m in same.modules() if isinstance(m, DynamicTanh) for p in m.parameters()]
    assert norms and all(p.dtype == torch.float32 for p in norms)


@pytest.mark.parametrize("name", MODELS)
def test_fp32_default_is_unchanged_bit_for_bit(name):
    """The default keeps every layer on its plain fp32 path: equal to a module that never saw
    the precision code (compute_dtype unset), and to itself after a mixed copy was made."""
    default = StableAudioModel.from_pretrained(require_fixtures() / name, device="cpu").autoencoder
    assert default.compute_dtype == torch.float32
    assert all(m.compute_dtype is None for m in default.modules() if isinstance(m, (Linear, WNConv1d)))
    z = _latents(default)
    before, _ = _decode(default, z)
    copy.deepcopy(default).use_mixed_bf16()  # a mixed copy leaves the original alone
    after, _ = _decode(default, z)
    plain, _ = _decode(_same(name), z)
    assert torch.equal(before, after) and torch.equal(before, plain)


def test_pipeline_option_and_errors():
    model = StableAudioModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu",
                                             autoencoder_dtype="bf16-mixed")
    assert model.autoencoder.compute_dtype == torch.bfloat16 and model.autoencoder.dtype == torch.float32
    audio = model.generate(prompt="x", duration=1, steps=1, seed=0)
    assert audio.dtype == torch.float32 and torch.isfinite(audio).all()
    with pytest.raises(ValueError, match=r"autoencoder_dtype must be one of 'auto', 'fp32', 'fp16', 'bf16', "
                                         r"'bf16-mixed' \(got 'bf16-half'\)"):
        StableAudioModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu", autoencoder_dtype="bf16-half")
    with pytest.raises(ValueError, match=r"'bf16-mixed' needs a float32 autoencoder \(got torch.bfloat16\)"):
        _same("tiny-small", torch.bfloat16).use_mixed_bf16()
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'"):
        _same("tiny-small").to_precision("cpu", "fp8")
