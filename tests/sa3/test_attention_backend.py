"""Which attention backend each part gets: flash-attn only computes in fp16/bf16, so a float32 part
(SAME by default, an fp32 DiT) must never be given it, neither by ``auto`` nor by an explicit
``"flash"``; the flash backend itself refuses float32 instead of casting it down. Runs on CPU:
flash-attn's presence is simulated where only the selection logic is under test."""

from __future__ import annotations

import pytest
import torch

from sa3 import StableAudioModel
from sa3 import attention as attn
from sa3.same import SAMEAutoencoder, SAMEConfig
from tests.conftest import require_fixtures
from tests.sa3.test_same import _tiny_official

FP32, FP16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    """flash-attn installed and a CUDA GPU of ``capability`` (simulated: selection logic only)."""
    monkeypatch.setattr(attn, "flash_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(attn, "_FLASH_DECLINED", set())


@pytest.fixture
def flash_installed(monkeypatch):
    _gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0))


@pytest.mark.parametrize(("name", "capability"), [("Tesla T4", (7, 5)), ("Tesla V100-SXM2-16GB", (7, 0)),
                                                  ("NVIDIA GeForce RTX 2080 Ti", (7, 5))])
def test_flash_needs_compute_capability_8(monkeypatch, caplog, name, capability):
    """Issue #22 item 4: flash-attn 2 refuses pre-Ampere GPUs: auto picks SDPA there with one log
    line per GPU, an explicit "flash" is refused before any work, naming the card."""
    _gpu(monkeypatch, name, capability)
    with caplog.at_level("INFO", logger="sa3.attention"):
        assert attn.resolve_backend("auto", "cuda", FP16) == "sdpa"
        assert attn.resolve_backend("auto", "cuda:0", BF16) == "sdpa"
    assert [r.message for r in caplog.records] == [
        f"Stable Audio 3: flash-attn needs compute capability 8.0+; {name} is {capability[0]}.{capability[1]}, "
        "attention uses sdpa."]
    version = rf"{capability[0]}\.{capability[1]}"
    with pytest.raises(RuntimeError, match=rf"compute capability 8.0 or newer .*{name} is {version}"):
        attn.resolve_backend("flash", "cuda", FP16)


def test_flash_on_ampere_and_newer(monkeypatch):
    for capability in ((8, 0), (8, 6), (9, 0), (12, 0)):
        _gpu(monkeypatch, "GPU", capability)
        assert attn.resolve_backend("auto", "cuda", FP16) == "flash"


@pytest.mark.parametrize(("backend", "device", "dtype", "expected"), [
    ("auto", "cuda", FP16, "flash"),
    ("auto", "cuda", BF16, "flash"),
    ("auto", "cuda", FP32, "sdpa"),  # auto never lowers a float32 part's precision
    ("auto", "cuda", None, "sdpa"),  # unknown dtype counts as float32
    ("auto", "cpu", FP16, "sdpa"),
    (None, "cuda", BF16, "flash"),
    ("flash", "cuda", FP16, "flash"),
    ("flash", "cuda", FP32, "sdpa"),  # explicit flash: the float32 part keeps sdpa
    ("sdpa", "cuda", FP16, "sdpa"),
    ("math", "cuda", FP32, "math"),
])
def test_backend_choice_with_flash_installed(flash_installed, backend, device, dtype, expected):
    assert attn.resolve_backend(backend, device, dtype) == expected


def test_explicit_flash_for_float32_is_logged(flash_installed, caplog):
    with caplog.at_level("INFO", logger="sa3.attention"):
        assert attn.resolve_backend("flash", "cuda", FP32) == "sdpa"
    assert "fp16/bf16 only; a part in torch.float32 uses sdpa" in caplog.text


def test_auto_without_flash_attn_is_sdpa(monkeypatch):
    monkeypatch.setattr(attn, "flash_available", lambda: False)
    assert attn.resolve_backend("auto", "cuda", FP16) == "sdpa"
    with pytest.raises(RuntimeError, match=r"attention='flash' needs a CUDA GPU and the flash-attn package"):
        attn.resolve_backend("flash", "cuda", FP16)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown attention backend 'xformers'"):
        attn.resolve_backend("xformers", "cpu", FP32)


def test_flash_backend_refuses_float32_instead_of_casting():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match=r"computes in fp16/bf16 only \(got torch.float32 inputs\)"):
        attn.attention(q, q, q, backend="flash")


def test_float32_same_never_gets_flash(flash_installed):
    same = SAMEAutoencoder(SAMEConfig.from_official(_tiny_official(windowed=True)))
    same.attention_backend = "flash"
    assert same.attention_backend == "sdpa"
    assert {m.backend for m in same.modules() if isinstance(m, attn.Attention)} == {"sdpa"}
    same.to(FP16)
    same.attention_backend = "auto"  # on CPU: sdpa whatever the dtype
    assert same.attention_backend == "sdpa"
    same.attention_backend = "flash"
    assert same.attention_backend == "flash"


def test_model_level_flash_keeps_fp32_parts_on_sdpa(flash_installed):
    model = StableAudioModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu", dtype="fp32",
                                             attention="flash")
    backends = {m.backend for part in (model.dit, model.autoencoder) for m in part.modules()
                if isinstance(m, attn.Attention)}
    assert backends == {"sdpa"}
