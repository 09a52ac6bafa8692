"""What newer ComfyUI releases (0.35-0.38) do differently from 0.3.64, on the real 0.3.64 modules:
their ``InterruptProcessingException`` is a ``BaseException``, so nothing may catch it as an
``Exception`` (or swallow it at all); an interrupt at any point of a graph propagates, and the next
run gives the audio of an uninterrupted one (no LoRA half switched, no stale step cache)."""

from __future__ import annotations

import pytest
import torch

from tests.nodes.conftest import ROOT, load_handle, nodes
from tests.nodes.test_graph_parity import run_graph

SMALL = "tiny-small"
LORA = f"{SMALL}/lora.safetensors"


class NewerInterrupt(BaseException):
    """``comfy.model_management.InterruptProcessingException`` as newer ComfyUI defines it."""


@pytest.fixture(params=["0.3.64", "newer"])
def interrupt(request, monkeypatch):
    """The exception class ComfyUI raises on an interrupt, as 0.3.64 and as newer releases define it."""
    import comfy.model_management as mm

    if request.param == "newer":
        monkeypatch.setattr(mm, "InterruptProcessingException", NewerInterrupt)
    return mm.InterruptProcessingException


def _model():
    if not (ROOT / "loras" / LORA).is_file():
        pytest.skip("no LoRA fixtures")
    (m,) = nodes.SA3LoraLoader.execute(model=load_handle(SMALL), lora_name=LORA, strength_dit=1.0,
                                       strength_conditioner=1.0, t_from=0.0, t_to=0.9).args
    return m  # the LoRA switches on between the second and the third of 4 pingpong steps


def _run(m):
    return run_graph(m, sampler="pingpong", seed=3,
                     init_audio={"waveform": torch.zeros(1, 2, 44100), "sample_rate": 44100}, init_noise_level=0.9)


def test_a_graph_checks_for_interrupts_throughout(record):
    _run(_model())
    assert record.checks == 5  # before each of the 4 DiT calls and each decode chunk (one here)


@pytest.mark.parametrize("at_check", [1, 2, 3, 4, 5])  # 3: the first step with the LoRA switched on; 5: decode
def test_an_interrupt_propagates_and_leaves_no_half_state(record, interrupt, at_check):
    m = _model()
    expected = _run(m)["waveform"]
    record.checks = 0
    record.interrupt_after_checks = at_check
    with pytest.raises(interrupt):
        _run(m)
    assert record.interrupt_after_checks is None  # it was raised where asked
    assert torch.equal(_run(m)["waveform"], expected)
