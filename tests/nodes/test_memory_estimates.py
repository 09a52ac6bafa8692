"""Issue #22 item 3: activation estimates reach ComfyUI's ``load_models_gpu``, and an
out-of-memory error in decoding frees, retries chunked, or names the part and its estimate."""

from __future__ import annotations

import comfy.model_management as mm
import pytest
import torch

from tests.nodes.conftest import load_handle, nodes

SMALL = "tiny-small"


def _sampled(h, duration: float) -> dict:
    pos, neg = nodes.SA3TextEncode.execute(model=h, prompt="a dog barking", negative_prompt="", duration=duration,
                                           one_prompt_per_line=False, durations="", batch_size=1).args
    (latent,) = nodes.SA3Sampler.execute(model=h, positive=pos, negative=neg, seed=7, steps=2, cfg=1.0,
                                         sampler="default for the model", apg_scale=1.0).args
    return latent


def _decode(h, latent: dict, chunked: str = "off") -> torch.Tensor:
    (audio,) = nodes.SA3Decode.execute(model=h, latent=latent, chunked=chunked, trim=True).args
    return audio["waveform"]


@pytest.fixture
def loads(monkeypatch):
    """(part class name, memory_required) of every ``load_models_gpu`` call, through the real one."""
    calls, real = [], mm.load_models_gpu

    def load_models_gpu(models, *args, **kwargs):
        calls.extend((type(p.model).__name__, kwargs.get("memory_required", 0)) for p in models)
        return real(models, *args, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", load_models_gpu)
    return calls


def test_estimates_reach_load_models_gpu_and_grow_with_duration(loads):
    h = load_handle(SMALL)
    for duration in (2.0, 6.0):
        _decode(h, _sampled(h, duration))
    dit = [m for name, m in loads if name == "SA3DiffusionTransformer"]
    same = [m for name, m in loads if name == "SA3Autoencoder"]
    assert len(dit) == 2 and len(same) == 2
    assert 0 < dit[0] < dit[1] and 0 < same[0] < same[1]


def test_decode_out_of_memory_once_retries_chunked(monkeypatch):
    h = load_handle(SMALL)
    latent = _sampled(h, 3.0)
    expected = _decode(h, latent)
    same_type = type(h.model.autoencoder)  # the pack's own copy of sa3.same.SAMEAutoencoder
    real, calls, freed = same_type.decode, [], []

    def decode(self, latents, *, chunked, **kwargs):
        calls.append(chunked)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(self, latents, chunked=chunked, **kwargs)

    monkeypatch.setattr(same_type, "decode", decode)
    monkeypatch.setattr(mm, "soft_empty_cache", lambda *a, **k: freed.append(True))
    out = _decode(h, latent)
    assert calls == [False, True] and freed == [True]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # under 128 latents chunked is one pass


def test_decode_out_of_memory_always_names_the_part_and_next_request_works(monkeypatch):
    h = load_handle(SMALL)
    latent = _sampled(h, 3.0)
    expected = _decode(h, latent)
    same_type = type(h.model.autoencoder)
    real = same_type.decode

    def decode(self, latents, *, chunked, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(same_type, "decode", decode)
    with pytest.raises(RuntimeError, match=r"out of memory in the SAME autoencoder \(decode\): it needed about "
                                           r"[0-9.]+ GB .*chunked decoding"):
        _decode(h, latent)
    monkeypatch.setattr(same_type, "decode", real)
    torch.testing.assert_close(_decode(h, latent), expected, rtol=0, atol=0)


def test_sampling_out_of_memory_names_the_part_frees_and_next_request_works(monkeypatch):
    """The DiT has no smaller fallback: the error names it and its estimate, the cache is freed
    once, and the same request then samples as before."""
    h = load_handle(SMALL)
    expected = _sampled(h, 3.0)["samples"]
    dit_type = type(h.model.dit)
    real, freed = dit_type.forward, []

    def forward(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(dit_type, "forward", forward)
    monkeypatch.setattr(mm, "soft_empty_cache", lambda *a, **k: freed.append(True))
    with pytest.raises(RuntimeError, match=r"out of memory in the diffusion transformer \(sampling\): it needed "
                                           r"about [0-9.]+ GB .*--lowvram"):
        _sampled(h, 3.0)
    assert freed == [True]
    monkeypatch.setattr(dit_type, "forward", real)
    torch.testing.assert_close(_sampled(h, 3.0)["samples"], expected, rtol=0, atol=0)
