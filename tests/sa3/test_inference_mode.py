"""The library under ``torch.inference_mode()``, as ComfyUI runs every node: tensors made there keep
no version counter and accept in-place writes only there. A LoRA noise interval (in-place weight
refreshes between steps) gives the same audio in every mode, weights loaded in one mode can be
LoRA-patched in the other, and ``release_mapped_weights`` drops the mapped file's pages in both
(measured as resident bytes of the model file's mappings)."""

from __future__ import annotations

import sys

import pytest
import torch

from sa3.loading import release_mapped_weights
from sa3.lora import write_weight
from sa3.weight_writes import mark_written, write_marks
from tests.conftest import fixture_root, resident_bytes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="smaps/pagemap are Linux-only")
MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
KW = dict(duration=3.0, steps=4, seed=3, sampler_type="pingpong")


def _model(low_memory: bool = False):
    from sa3 import StableAudioModel

    root = fixture_root()
    if root is None or not (root / "tiny-small").is_dir():
        pytest.skip("tiny-small fixture model not found")
    return StableAudioModel.from_pretrained(root / "tiny-small", device="cpu", padding_mode="exact",
                                            low_memory=low_memory)


def _lora_file():
    path = fixture_root() / "loras" / "tiny-small" / "lora.safetensors"
    if not path.is_file():
        pytest.skip("no LoRA fixtures")
    return path


def _interval_audio(load_mode: str, run_mode: str) -> torch.Tensor:
    """Audio of the tiny model with a LoRA active only for t in [0.0, 0.9] (4 pingpong steps call
    the DiT at t = 1, 0.98, 0.89, 0.51: switched on between steps 2 and 3), the model loaded
    under ``load_mode`` and generating under ``run_mode``."""
    with MODES[load_mode]():
        model = _model()
    with MODES[run_mode]():
        model.load_lora([_lora_file()])
        model.set_lora_options(0, interval=(0.0, 0.9))
        return model.generate("a dog barking", **KW)


def test_lora_interval_gives_the_same_audio_in_every_mode():
    expected = _interval_audio("no_grad", "no_grad")
    with torch.no_grad():
        without = _model().generate("a dog barking", **KW)
    assert not torch.equal(expected, without)  # the LoRA acts
    for load_mode, run_mode in [("inference_mode", "inference_mode"), ("no_grad", "inference_mode"),
                                ("inference_mode", "no_grad")]:
        got = _interval_audio(load_mode, run_mode)
        assert torch.equal(got, expected), f"loaded under {load_mode}, run under {run_mode}: max abs diff " \
                                           f"{(got - expected).abs().max().item():.3g}"


@pytest.mark.parametrize("build_mode", MODES)
@pytest.mark.parametrize("write_mode", MODES)
def test_a_marked_weight_write_invalidates_the_dit_cache(build_mode, write_mode):
    from tests.sa3.test_dit_cache import CFG, _cond, _dit

    with MODES[build_mode]():
        dit, cond = _dit(), _cond()
    with MODES[write_mode]():
        cache = dit.prepare(cond)
        layer = dit.transformer.layers[0].cross_attn.to_kv
        before = write_marks(dit.transformer.layers[0])
        write_weight(layer, layer.weight * 2)  # in place; under inference mode no version counter sees it
        assert write_marks(dit.transformer.layers[0]) == before + 1
        assert cache.signature != dit.cache_signature()
        x, t = torch.randn(2, CFG.io_channels, 24), torch.full((2,), 0.5)
        assert torch.equal(dit(x, t, cond, cache=cache), dit(x, t, cond))  # the cache was recomputed


def test_write_marks_count_submodules():
    seq = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert write_marks(seq) == 0
    mark_written(seq[1])
    mark_written(seq[0])
    assert write_marks(seq) == 2 and write_marks(seq[0]) == 1


@pytest.mark.parametrize("load_mode", MODES)
def test_lora_on_weights_of_the_other_mode_restores_them_bit_for_bit(load_mode):
    """Inference tensors accept in-place writes only in inference mode: a model loaded inside
    ComfyUI and patched outside it (or the reverse) must neither fail nor keep a LoRA's values."""
    with MODES[load_mode]():
        model = _model()
    other = "no_grad" if load_mode == "inference_mode" else "inference_mode"
    before = {k: v.clone() for k, v in model.dit.state_dict().items()}
    with MODES[other]():
        model.load_lora([_lora_file()])
        assert any(not torch.equal(v, before[k]) for k, v in model.dit.state_dict().items())
        model.unload_lora()
    assert all(torch.equal(v, before[k]) for k, v in model.dit.state_dict().items())


def _mapped(model) -> list[torch.Tensor]:
    return [t for part in (model.dit, model.conditioner, model.autoencoder)
            for t in (*part.parameters(), *part.buffers())]


@linux_only
@pytest.mark.parametrize("mode", MODES)
def test_release_drops_the_model_files_resident_pages(mode):
    with MODES[mode]():
        model = _model()
        model.generate("a dog barking", duration=2.0, steps=2, seed=1)  # every weight read: pages resident
        resident, mapped = resident_bytes(_mapped(model))
        assert mapped > 0 and resident > 0.6 * mapped
        values = {k: v.clone() for k, v in model.dit.state_dict().items()}
        released = sum(release_mapped_weights(p) for p in (model.dit, model.conditioner, model.autoencoder))
        after, _ = resident_bytes(_mapped(model))
    assert released > 0.5 * mapped
    assert after < 0.1 * mapped, f"{after} of {mapped} bytes still resident under {mode}"
    assert all(torch.equal(model.dit.state_dict()[k], v) for k, v in values.items())


@linux_only
@pytest.mark.parametrize("mode", MODES)
def test_release_keeps_written_pages(mode):
    """A page written since loading (a LoRA merge, or any in-place write, marked or not) is the
    process's own copy: releasing it would bring the file's values back, so it stays, in either
    mode."""
    with MODES[mode]():
        model = _model()
        weight = model.dit.transformer.layers[0].ff.ff[0].proj.weight
        weight.mul_(2.0)  # no mark, no version counter under inference mode: only the kernel knows
        changed = weight.clone()
        release_mapped_weights(model.dit)
        assert torch.equal(weight, changed)
        plain = torch.nn.Linear(64, 64)  # ordinary (anonymous) memory: nothing to release
        assert release_mapped_weights(plain) == 0


@linux_only
def test_low_memory_generation_under_inference_mode_is_bit_identical_and_lean():
    with torch.inference_mode():
        expected = _model().generate("rain on a tin roof", duration=2.0, steps=3, seed=5)
        model = _model(low_memory=True)
        first = model.generate("rain on a tin roof", duration=2.0, steps=3, seed=5)
        resident, mapped = resident_bytes(_mapped(model))
        second = model.generate("rain on a tin roof", duration=2.0, steps=3, seed=5)  # reads pages back
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert resident < 0.1 * mapped, f"{resident} of {mapped} bytes resident after a low_memory generation"


def test_a_model_loaded_under_inference_mode_generates_the_same_under_no_grad():
    with torch.inference_mode():
        model = _model()
        a = model.generate("a dog barking", duration=2.0, steps=2, seed=1)
    with torch.no_grad():
        b = model.generate("a dog barking", duration=2.0, steps=2, seed=1)
    assert torch.equal(a, b)
