"""LoRA chains live on ComfyUI's objects: each SA3 LoRA node output has its own clones of the DiT
and text patchers carrying its chain (the files read once, when the LoRA node runs), so two
branches on one base model run one after the other without reading files again and without
changing each other's audio."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.conftest import fixture_root
from tests.nodes.conftest import PACK, load_handle, load_reference, nodes
from tests.nodes.test_graph_parity import assert_same, run_graph

PROMPT = "a dog barking"



@pytest.fixture
def file_reads(monkeypatch):
    """Every LoRA file the pack's library reads."""
    lora = importlib.import_module(f"{PACK}.sa3.lora")
    reads = []
    original = lora.read_lora_file
    monkeypatch.setattr(lora, "read_lora_file", lambda path: reads.append(str(path)) or original(path))
    return reads


def _lora(model, name, dit=1.0, cond=1.0, **options):
    (out,) = nodes.SA3LoraLoader.execute(model=model, lora_name=name, strength_dit=dit, strength_conditioner=cond,
                                         **options).args
    return out


def _alone(ref, files, strengths, seed, layer_filter=None):
    """``generate()`` with only this branch's LoRAs on a model of its own."""
    loras = fixture_root() / "loras"
    try:
        ref.load_lora([loras / f for f in files])
        for i, (dit, cond) in enumerate(strengths):
            ref.set_lora_strength(dit, lora_index=i, target="dit")
            ref.set_lora_strength(cond, lora_index=i, target="conditioner")
        if layer_filter is not None:
            ref.set_lora_options(len(files) - 1, layer_filter=layer_filter)
        return ref.generate(PROMPT, duration=3.0, steps=4, seed=seed)
    finally:
        ref.unload_lora()


@pytest.mark.parametrize("name", ["tiny-small", "tiny-medium"])
def test_two_branches_on_one_base_model(name, file_reads):
    h, ref = load_handle(name), load_reference(name)
    if not (fixture_root() / "loras" / name / "lora.safetensors").is_file():
        pytest.skip(f"no LoRA fixtures for {name}")
    first, second = f"{name}/lora.safetensors", f"{name}/dora-rows.safetensors"
    branch_a = _lora(h, first, dit=0.8)
    branch_b = _lora(_lora(h, second, cond=0.5), first, dit=0.6, layer_filter="self_attn")
    assert len(file_reads) == 3  # once per LoRA node
    # ComfyUI's way: each branch has its own patcher clones of the one model; the loader's are untouched
    for part in ("dit", "text"):
        assert branch_a.patchers[part] is not h.patchers[part] and branch_a.patchers[part].is_clone(h.patchers[part])
        assert branch_b.patchers[part] is not branch_a.patchers[part]
    assert branch_a.patchers["autoencoder"] is h.patchers["autoencoder"]
    assert h.loras == () and len(branch_a.loras) == 1 and len(branch_b.loras) == 2
    assert branch_a.model is h.model and branch_b.model is h.model  # one base model, never copied

    runs = [(label, run_graph(m, seed=seed)["waveform"]) for label, m, seed in
            [("a", branch_a, 3), ("b", branch_b, 4), ("a", branch_a, 3), ("base", h, 3), ("b", branch_b, 4)]]
    assert len(file_reads) == 3  # switching branches applies the chains from memory
    audio = {}
    for label, wav in runs:
        assert torch.equal(audio.setdefault(label, wav), wav)  # every run of a branch gives the same audio
    expected_a = _alone(ref, [first], [(0.8, 1.0)], seed=3)
    expected_b = _alone(ref, [second, first], [(1.0, 0.5), (0.6, 1.0)], seed=4,
                        layer_filter="self_attn")
    assert_same({"waveform": audio["a"], "sample_rate": 44100}, expected_a)
    assert_same({"waveform": audio["b"], "sample_rate": 44100}, expected_b)
    assert_same({"waveform": audio["base"], "sample_rate": 44100}, ref.generate(PROMPT, duration=3.0, steps=4, seed=3))


def test_lora_strength_node_reads_no_file(file_reads):
    h = load_handle("tiny-small")
    m = _lora(h, "tiny-small/lora.safetensors", dit=0.5)
    (weaker,) = nodes.SA3LoraStrength.execute(model=m, lora_index=1, target="dit and conditioner", strength=0.2).args
    run_graph(weaker, steps=2)
    run_graph(m, steps=2)
    assert len(file_reads) == 1
    assert weaker.loras[0].lora is m.loras[0].lora  # the same tensors in memory, other strengths
    assert (weaker.loras[0].strength_dit, m.loras[0].strength_dit) == (0.2, 0.5)
