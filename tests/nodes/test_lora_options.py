"""SA3 LoRA Loader's per-LoRA extras (the official UI's): the noise interval t_from..t_to and the
layer filter. They reach the shared modules through the LoRA chain sync, re-apply when changed,
and the graph equals ``generate()`` after the same ``set_lora_options`` calls."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.conftest import fixture_root
from tests.nodes.conftest import load_handle, load_reference, nodes
from tests.nodes.test_graph_parity import assert_same, run_graph

SMALL = "tiny-small"
LORA = f"{SMALL}/lora.safetensors"
PROMPT = "a dog barking"


@pytest.fixture(autouse=True)
def _need_lora_fixtures():
    root = fixture_root()
    if root is None or not (root / "loras" / LORA).is_file():
        pytest.skip("no LoRA fixtures")


def _lora(model, name=LORA, dit=1.0, cond=1.0, **options):
    (out,) = nodes.SA3LoraLoader.execute(model=model, lora_name=name, strength_dit=dit, strength_conditioner=cond,
                                         **options).args
    return out


def _run(h, **kw):
    return run_graph(h, sampler="pingpong", seed=3, **kw)["waveform"]


def test_defaults_mean_always_and_no_filter():
    h = load_handle(SMALL)
    spec = _lora(h).loras[0]
    assert spec.interval is None and spec.layer_filter == ""
    same = _lora(h, t_from=0.0, t_to=1.0, layer_filter="  ").loras[0]
    assert replace(same, lora=spec.lora) == spec  # the same settings (each LoRA node reads its own file)
    assert _lora(h, t_from=0.25, t_to=0.75).loras[0].interval == (0.25, 0.75)


def test_interval_that_pingpong_never_reaches_leaves_the_dit_alone():
    """pingpong calls the DiT at t = 1 ... t_(n-1) > 0, never at t = 0: a LoRA active only at
    t = 0 changes nothing in the DiT, so the audio is the audio with strength_dit 0 (the
    conditioner LoRA, which intervals do not touch, still applies); with the conditioner at 0 too
    it is the base model's audio."""
    h = load_handle(SMALL)
    full = _run(_lora(h))
    never = _run(_lora(h, t_from=0.0, t_to=0.0))
    assert torch.equal(never, _run(_lora(h, dit=0.0)))
    assert not torch.equal(never, full)
    assert torch.equal(_run(_lora(h, cond=0.0, t_from=0.0, t_to=0.0)), _run(h))


def test_layer_filter_changes_the_output():
    h = load_handle(SMALL)
    full = _run(_lora(h))
    filtered = _run(_lora(h, layer_filter="cross_attn, transformer.layers.[0-0].ff"))
    assert not torch.equal(filtered, full)
    # filtering every adapted DiT layer is strength_dit 0
    everything = "transformer, conv, embed, project"
    assert torch.equal(_run(_lora(h, layer_filter=everything)), _run(_lora(h, dit=0.0)))


@pytest.mark.parametrize("name", ["tiny-small", "tiny-medium"])
def test_graph_equals_generate_with_the_same_options(name):
    h, ref = load_handle(name), load_reference(name)
    loras = fixture_root() / "loras" / name
    (m1,) = nodes.SA3LoraLoader.execute(model=h, lora_name=f"{name}/lora.safetensors", strength_dit=0.9,
                                        strength_conditioner=1.0, t_from=0.4, t_to=1.0, layer_filter="self_attn").args
    (m2,) = nodes.SA3LoraLoader.execute(model=m1, lora_name=f"{name}/dora-rows.safetensors", strength_dit=1.0,
                                        strength_conditioner=0.5, t_from=0.0, t_to=0.6,
                                        layer_filter="transformer.layers.[1-1]").args
    (m3,) = nodes.SA3LoraStrength.execute(model=m2, lora_index=2, target="dit", strength=0.7).args  # 1-based
    assert m3.loras[0].interval == (0.4, 1.0) and m3.loras[1].layer_filter == "transformer.layers.[1-1]"
    audio = run_graph(m3, seed=12, sampler="pingpong")
    try:
        ref.load_lora([loras / "lora.safetensors", loras / "dora-rows.safetensors"])
        ref.set_lora_strength(0.9, lora_index=0, target="dit")
        ref.set_lora_strength(0.7, lora_index=1, target="dit")
        ref.set_lora_strength(0.5, lora_index=1, target="conditioner")
        ref.set_lora_options(0, interval=(0.4, 1.0), layer_filter="self_attn")
        ref.set_lora_options(1, interval=(0.0, 0.6), layer_filter="transformer.layers.[1-1]")
        expected = ref.generate(PROMPT, duration=3.0, steps=4, seed=12, sampler_type="pingpong")
    finally:
        ref.unload_lora()
    assert_same(audio, expected)


def test_changing_options_reapplies_them():
    """The chain sync compares intervals and filters too: each branch runs with its own options on
    the shared modules, in any order, and a branch without options gets a clean LoRA back."""
    h, ref = load_handle(SMALL), load_reference(SMALL)
    # 4 pingpong steps call the DiT at t = 1, 0.98, 0.89, 0.51 (shifted schedule)
    late = _lora(h, t_from=0.0, t_to=0.9)
    early = _lora(h, t_from=0.95, t_to=1.0)
    filtered = _lora(h, layer_filter="ff")
    plain = _lora(h)
    outs = {name: _run(m) for name, m in [("late", late), ("early", early), ("filtered", filtered),
                                          ("plain", plain)]}
    assert len({tuple(o.flatten()[:64].tolist()) for o in outs.values()}) == 4  # all different
    assert torch.equal(_run(late), outs["late"])  # back to an earlier branch: same audio
    assert torch.equal(_run(plain), outs["plain"])
    try:
        ref.load_lora([fixture_root() / "loras" / LORA])
        expected_plain = ref.generate(PROMPT, duration=3.0, steps=4, seed=3, sampler_type="pingpong")
        ref.set_lora_options(0, interval=(0.95, 1.0))
        expected_early = ref.generate(PROMPT, duration=3.0, steps=4, seed=3, sampler_type="pingpong")
    finally:
        ref.unload_lora()
    assert torch.equal(outs["plain"], expected_plain)
    assert torch.equal(outs["early"], expected_early)


def test_lora_strength_keeps_the_options():
    h = load_handle(SMALL)
    m = _lora(h, t_from=0.2, t_to=0.8, layer_filter="ff")
    (m2,) = nodes.SA3LoraStrength.execute(model=m, lora_index=0, target="dit and conditioner", strength=0.5).args
    assert m2.loras[0].interval == (0.2, 0.8) and m2.loras[0].layer_filter == "ff"
    assert m2.loras[0].strength_dit == m2.loras[0].strength_conditioner == 0.5


def test_option_errors():
    h = load_handle(SMALL)
    with pytest.raises(ValueError) as e:
        _lora(h, layer_filter="cross_attn, crossattn")
    assert str(e.value) == (
        "Stable Audio 3 LoRA Loader: layer_filter entry 'crossattn' matches no layer of the model (got "
        "'cross_attn, crossattn', expected parts of layer names such as 'cross_attn', 'self_attn', 'ff' or "
        "'transformer.layers.0'). Fix the spelling or clear layer_filter.")
    for layer_filter, rule in [("ff, transformer.layers.[0-999999]", "expanding to at most 10,000 names (got "
                                                                     "'transformer.layers.[0-999999]', 1,000,000"),
                               ("ff[1", "whose brackets are [a-b] ranges of whole numbers (got 'ff[1')")]:
        with pytest.raises(ValueError) as e:
            _lora(h, layer_filter=layer_filter)
        assert str(e.value).startswith(f"Stable Audio 3 LoRA Loader: layer_filter must be a layer-name rule {rule}")
    with pytest.raises(ValueError, match=r"^Stable Audio 3 LoRA Loader: t_from 0.7 is above t_to 0.3 \(got t_from "
                                         r"0.7, t_to 0.3, expected t_from <= t_to\). Swap the two values.$"):
        _lora(h, t_from=0.7, t_to=0.3)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 LoRA Loader: t_to must be a number from 0 to 1 \(got 2\)"):
        _lora(h, t_to=2.0)
