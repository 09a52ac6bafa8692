"""ComfyUI integration behaviour: model management per part, progress, interrupt, caching, RNG."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.conftest import load_handle, load_reference, nodes
from tests.nodes.test_graph_parity import assert_same, run_graph

SMALL = "tiny-small"


def test_parts_are_separate_patchers_loaded_on_demand(record):
    h = load_handle(SMALL)
    assert set(h.patchers) == {"text", "dit", "autoencoder"}
    run_graph(h, steps=2)
    loaded = [[type(p.model).__name__ for p in call] for call in record.loads]
    assert loaded == [["SA3TextParts"], ["SA3DiffusionTransformer"], ["SA3Autoencoder"]]


def test_progress_per_step_and_per_decode_chunk(record):
    run_graph(load_handle(SMALL), steps=5)
    assert record.progress == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5), (1, 1)]


def test_interrupt_within_a_step_and_next_run_is_clean(record):
    import comfy.model_management as mm

    h, ref = load_handle(SMALL), load_reference(SMALL)
    record.interrupt_after_checks = 3  # checked before every DiT call: stops inside step 3
    with pytest.raises(mm.InterruptProcessingException):
        run_graph(h, steps=8)
    assert record.progress[-1] == (2, 8)
    assert_same(run_graph(h), ref.generate("a dog barking", duration=3.0, steps=4, seed=7))


def test_global_rng_untouched():
    state = torch.get_rng_state()
    run_graph(load_handle(SMALL), steps=2, init_audio={"waveform": torch.zeros(1, 1, 22050), "sample_rate": 22050},
              init_noise_level=0.5)
    assert torch.equal(state, torch.get_rng_state())


def test_unchanged_lora_chain_is_not_rewritten(monkeypatch):
    """The chain is written onto the shared modules when it changes, from memory; an unchanged
    branch run again writes nothing, the base model gets its weights back."""
    pytest.importorskip("sa3.lora")
    h = load_handle(SMALL)
    (m,) = nodes.SA3LoraLoader.execute(model=h, lora_name="tiny-small/lora.safetensors", strength_dit=0.5,
                                       strength_conditioner=1.0).args
    stack_type = type(h.model._lora_stack())
    writes = []
    original = stack_type._refresh
    monkeypatch.setattr(stack_type, "_refresh", lambda self, keys: (writes.append(len(keys)), original(self, keys)))
    run_graph(m, steps=2)
    assert writes and writes[0] > 0  # applied when the branch first runs (text encode)
    writes.clear()
    run_graph(m, steps=2, seed=3)
    assert writes == []  # unchanged: nothing rewritten by text encode or sampler
    (weaker,) = nodes.SA3LoraStrength.execute(model=m, lora_index=1, target="dit and conditioner", strength=0.2).args
    run_graph(weaker, steps=2)
    assert writes and writes[0] > 0  # a strength change re-weights in place
    run_graph(h, steps=2)  # the base model: LoRA removed without loading anything
    assert len(h.model.lora) == 0 and h.model.lora.describe() == []


def test_decode_of_encoded_audio_round_trip():
    h = load_handle(SMALL)
    wave = torch.rand(1, 2, 44100) - 0.5
    (latent,) = nodes.SA3EncodeAudio.execute(model=h, audio={"waveform": wave, "sample_rate": 44100}).args
    assert latent["sa3_durations"] == [1.0] and latent["samples"].dtype == torch.float32
    assert set(latent) == {"samples", "type", "sa3_durations"}  # no waveform, no random stream
    (audio,) = nodes.SA3Decode.execute(model=h, latent=latent, chunked="auto", trim=True).args
    assert audio["waveform"].shape == (1, 2, 44100) and audio["sample_rate"] == 44100
    (again,) = nodes.SA3Decode.execute(model=h, latent=latent, chunked="auto", trim=True).args
    assert torch.equal(audio["waveform"], again["waveform"])  # no sampler state: a fixed decoder seed
