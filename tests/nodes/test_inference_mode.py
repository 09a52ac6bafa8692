"""The nodes as ComfyUI runs them, under ``torch.inference_mode()`` (the autouse fixture of
conftest.py): the models the loader makes hold inference tensors, a LoRA noise interval gives
the audio ``generate()`` gives under ``no_grad`` (also with bf16's prepacked weights), and
``low_memory`` drops the model file's pages once the graph is done (measured as the resident
bytes of the file's mappings)."""

from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import fixture_root, resident_bytes
from tests.nodes.conftest import PACK, ROOT, load_handle, nodes, require_model
from tests.nodes.test_graph_parity import assert_same, run_graph

SMALL = "tiny-small"
LORA = f"{SMALL}/lora.safetensors"


def test_lora_interval_graph_equals_generate_under_no_grad():
    """The in-place LoRA refresh between steps must reach the DiT's step cache although inference
    tensors keep no version counter (4 pingpong steps call the DiT at t = 1, 0.98, 0.89, 0.51: the
    LoRA switches on between the second and the third)."""
    from sa3 import StableAudioModel

    if not (ROOT / "loras" / LORA).is_file():
        pytest.skip("no LoRA fixtures")
    h = load_handle(SMALL)
    (m,) = nodes.SA3LoraLoader.execute(model=h, lora_name=LORA, strength_dit=1.0, strength_conditioner=1.0,
                                       t_from=0.0, t_to=0.9).args
    audio = run_graph(m, sampler="pingpong", seed=3)
    with torch.inference_mode(False), torch.no_grad():
        ref = StableAudioModel.from_pretrained(fixture_root() / SMALL, device="cpu", dtype="fp32",
                                               padding_mode="exact")
        assert not any(p.is_inference() for p in ref.dit.parameters())
        ref.load_lora([ROOT / "loras" / LORA])
        ref.set_lora_options(0, interval=(0.0, 0.9))
        expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=3, sampler_type="pingpong")
    assert_same(audio, expected)
    (always,) = nodes.SA3LoraLoader.execute(model=h, lora_name=LORA, strength_dit=1.0,
                                            strength_conditioner=1.0).args
    assert not torch.equal(run_graph(always, sampler="pingpong", seed=3)["waveform"], expected)  # it switches


def test_packed_bf16_weights_follow_a_lora_interval_inside_comfyui(monkeypatch):
    """bf16 on the CPU keeps prepacked weights where oneDNN packs bf16 (every layer qualifies
    here, the size threshold set to 0), and none where it cannot (AVX2: the fp32 GEMM on upcast
    operands). The LoRA switching on mid-sampling writes inference tensors, which have no version
    counter: the graph must still use the written weights, as generate() under no_grad does."""
    import importlib

    from sa3 import StableAudioModel, cpu_gemm

    if not (ROOT / "loras" / LORA).is_file():
        pytest.skip("no LoRA fixtures")
    for copy in (cpu_gemm, importlib.import_module(f"{PACK}.sa3.cpu_gemm")):  # the library's and the pack's
        monkeypatch.setattr(copy, "ONEDNN_MIN_WEIGHTS", 0)
    require_model(SMALL)
    (h,) = nodes.SA3ModelLoader.execute(model_name=SMALL, precision="bf16", attention="auto", padding_mode="exact",
                                        download=False, low_memory=False).args
    (m,) = nodes.SA3LoraLoader.execute(model=h, lora_name=LORA, strength_dit=1.0, strength_conditioner=1.0,
                                       t_from=0.0, t_to=0.9).args
    audio = run_graph(m, sampler="pingpong", seed=3)
    routes = importlib.import_module(f"{PACK}.sa3.cpu_gemm").cpu_routes()  # the pack's copy decides its layers
    assert any("_packed" in mod.__dict__ for mod in h.model.dit.modules()) == routes.packed_bf16
    with torch.inference_mode(False), torch.no_grad():
        ref = StableAudioModel.from_pretrained(fixture_root() / SMALL, device="cpu", dtype="bf16",
                                               padding_mode="exact")
        ref.load_lora([ROOT / "loras" / LORA])
        ref.set_lora_options(0, interval=(0.0, 0.9))
        expected = ref.generate("a dog barking", duration=3.0, steps=4, seed=3, sampler_type="pingpong")
    assert_same(audio, expected)


def _mapped(handle) -> list[torch.Tensor]:
    model = handle.model
    return [t for part in (model.dit, model.conditioner, model.autoencoder)
            for t in (*part.parameters(), *part.buffers())]


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="smaps/pagemap are Linux-only")
SOURCE = {"waveform": torch.zeros(1, 2, 44100), "sample_rate": 44100}


def _graph_on_a_fresh_model(low_memory: bool):
    """Audio-to-audio (every part used) on a newly loaded model; (handle, audio, resident, mapped)."""
    require_model(SMALL)
    (h,) = nodes.SA3ModelLoader.execute(model_name=SMALL, precision="fp32", attention="auto", padding_mode="exact",
                                        download=False, low_memory=low_memory).args
    audio = run_graph(h, init_audio=SOURCE, init_noise_level=0.5, steps=2)
    resident, mapped = resident_bytes(_mapped(h))
    assert mapped > 0
    return h, audio, resident, mapped


@linux_only
def test_without_low_memory_the_read_pages_stay_resident():
    _, _, resident, mapped = _graph_on_a_fresh_model(low_memory=False)
    assert resident > 0.6 * mapped


@linux_only
def test_low_memory_releases_the_model_files_pages_inside_comfyui():
    h, audio, resident, mapped = _graph_on_a_fresh_model(low_memory=True)
    assert resident < 0.1 * mapped, f"{resident} of {mapped} bytes of the model file still resident"
    again = run_graph(h, init_audio=SOURCE, init_noise_level=0.5, steps=2)  # the released pages are read back
    assert torch.equal(again["waveform"], audio["waveform"])
