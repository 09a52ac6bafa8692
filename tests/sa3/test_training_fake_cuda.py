"""LoRA training on a (fake) CUDA device: issue #22, proven on the CPU.

The DiT sits on the device (as ComfyUI leaves it after loading); the batches, the random draws
(CPU generators, ``sa3.rng``'s rule), the adapters' initialisation, the forward, the loss and
the optimizer step must all work there, and the file is written from host copies.

``tests/fake_cuda.py`` cannot run autograd's backward: the engine asks the CUDA runtime about the
device of any tensor that says ``cuda`` ("hasPrimaryContext expects a valid device index" on a CPU
build). So ``Tensor.backward`` is replaced here by one that finds the graph's leaves (the LoRA
parameters, through ``AccumulateGrad`` nodes) and gives each a gradient on its own device: the
optimizer step then runs on the device, and the step's loss (computed before any update) must
equal the CPU's exactly.
"""

from __future__ import annotations

import pytest
import torch

from sa3.audio import write_audio
from sa3.training import LoRATrainingOptions, train_lora
from tests.conftest import require_fixtures
from tests.fake_cuda import FakeCuda, FakeCudaTensor, move_model

from .test_fake_cuda import fresh_model


def _leaves(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors ``tensor``'s graph accumulates gradients into."""
    seen, stack, leaves = set(), [tensor.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(fn for fn, _ in node.next_functions)
    return leaves


def _stand_in_backward(self: torch.Tensor, *args, **kwargs) -> None:
    for leaf in _leaves(self):
        leaf.grad = torch.full_like(leaf, 1e-3)


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    t = torch.arange(2 * 44100) / 44100
    for i in range(2):
        write_audio(folder / f"clip{i}.wav", 0.3 * torch.sin(2 * torch.pi * 220 * (i + 1) * t).expand(2, -1), 44100)
        (folder / f"clip{i}.txt").write_text(f"a sine tone, take {i}")
    return folder


@pytest.mark.parametrize("adapter_type", ["lora", "dora-rows-xs"])
def test_training_steps_on_the_device(clips, tmp_path, monkeypatch, adapter_type):
    require_fixtures()
    options = LoRATrainingOptions(steps=2, clip_seconds=2.0, rank=4, adapter_type=adapter_type, seed=3)
    monkeypatch.setattr(torch.Tensor, "backward", _stand_in_backward)
    cpu = train_lora(fresh_model("tiny-small"), clips, tmp_path / "cpu.safetensors", options)
    model = move_model(fresh_model("tiny-small"))
    with FakeCuda() as fc:
        on_device = train_lora(model, clips, tmp_path / "cuda.safetensors", options)
    assert on_device.losses[0] == cpu.losses[0]  # same batch, draws and adapters; exact CPU arithmetic
    torch.testing.assert_close(torch.tensor(on_device.losses), torch.tensor(cpu.losses), rtol=1e-6, atol=0)
    from safetensors.torch import load_file

    written, expected = load_file(on_device.path), load_file(cpu.path)
    assert written.keys() == expected.keys()
    assert all(not isinstance(t, FakeCudaTensor) for t in written.values())
    for key, value in expected.items():
        torch.testing.assert_close(written[key], value, rtol=1e-6, atol=1e-7, msg=key)
    # host reads: the loss once per step for the progress and the log (plus the finite check), no more
    per_step = [site for _, site in fc.syncs if site.startswith("sa3/training.py")]
    assert len(per_step) <= 3 * options.steps, per_step
