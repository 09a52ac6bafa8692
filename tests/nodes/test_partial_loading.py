"""ComfyUI's partial loading of the DiT on a (fake) CUDA device: issue #22 item 2.

``load_models_gpu`` loads a part partially when it does not fit (low-VRAM cards, ``--lowvram``,
``--novram``): ComfyUI's ``ModelPatcher.load`` moves only leaf modules with parameters, within the
budget, and relies on ``comfy.ops`` cast layers to bring the rest to the input's device per call.
The library builds its layers from the operations it is given (``ops=``) and the nodes pass
``ComfyOperations`` (ComfyUI's cast machinery), while parameters outside those layers (memory
tokens, adaLN tables, the rotary buffer) follow the input's device: a partially loaded DiT runs,
with the CPU's result.
"""

from __future__ import annotations

import importlib

import comfy.model_patcher
import pytest
import torch

from tests.fake_cuda import FakeCuda
from tests.nodes.conftest import PACK, ROOT, require_model

CUDA = torch.device("cuda", 0)


def _dit_patcher(name: str):
    from sa3 import StableAudioModel

    comfy_models = importlib.import_module(f"{PACK}.nodes.comfy_models")
    model = StableAudioModel.from_pretrained(ROOT / name, device="cpu", padding_mode="exact",
                                             ops=comfy_models.ComfyOperations)
    part = comfy_models.SA3DiffusionTransformer(torch.device("cpu"), dit=model.dit)
    return model, comfy.model_patcher.ModelPatcher(part, load_device=CUDA, offload_device=torch.device("cpu"))


def _run_dit(model, device: torch.device = CUDA) -> torch.Tensor:
    from sa3.dit import DiTConditioning

    cfg, dit = model.config, model.dit
    frames = 8
    gen = torch.Generator().manual_seed(0)
    cross, global_cond = torch.randn(1, 4, cfg.cond_dim, generator=gen), torch.randn(1, cfg.cond_dim, generator=gen)
    x = torch.randn(1, cfg.latent_channels, frames, generator=gen)
    cond = DiTConditioning(cross=cross.to(device), global_cond=global_cond.to(device),
                           local=torch.zeros(1, 1 + cfg.latent_channels, frames, device=device),
                           padding_mask=torch.ones(1, frames, dtype=torch.bool, device=device))
    return dit(x.to(device), torch.full((1,), 0.5, device=device), cond)


@pytest.mark.parametrize("share", [0.0, 0.5], ids=["novram", "half-budget"])
def test_partially_loaded_dit_runs(share):
    """Partial loads leave layers on the CPU (cast per call by ComfyUI's ``cast_bias_weight``) and
    the rest on the (fake) CUDA device; the velocity equals the CPU model's within 1e-5."""
    require_model("tiny-small")
    model, patcher = _dit_patcher("tiny-small")
    expected = _run_dit(model, torch.device("cpu"))
    with FakeCuda():
        patcher.load(CUDA, lowvram_model_memory=int(patcher.model_size() * share) + 1)
        on_cpu = [n for n, p in model.dit.named_parameters() if p.device.type == "cpu"]
        cast = [n for n, m in model.dit.named_modules() if getattr(m, "comfy_cast_weights", False)]
        out = _run_dit(model, CUDA)
    assert on_cpu and cast  # partial: some weights stayed behind, ComfyUI marked their layers for casting
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=1e-5)


def test_fully_loaded_dit_runs_on_the_fake_device():
    """The same call with the whole DiT loaded works: the partial case above fails on devices only."""
    require_model("tiny-small")
    model, patcher = _dit_patcher("tiny-small")
    with FakeCuda():
        patcher.load(CUDA, full_load=True)
        out = _run_dit(model)
    assert out.device.type == "cuda" and tuple(out.shape) == (1, model.config.latent_channels, 8)


@pytest.mark.parametrize("share", [0.0, 0.5], ids=["novram", "half-budget"])
def test_partially_loaded_same_decodes(share):
    """SAME partially loaded the same way (its mapping conv, linear layers, DyT norms, new tokens and
    bottleneck partly on the CPU) decodes on the (fake) CUDA device as on the CPU, within 1e-5."""
    from sa3.rng import make_generator

    require_model("tiny-small")
    comfy_models = importlib.import_module(f"{PACK}.nodes.comfy_models")
    model = _model_with_comfy_ops(comfy_models)
    part = comfy_models.SA3Autoencoder(torch.device("cpu"), autoencoder=model.autoencoder)
    patcher = comfy.model_patcher.ModelPatcher(part, load_device=CUDA, offload_device=torch.device("cpu"))
    latents = torch.randn(1, model.config.latent_channels, 6, generator=torch.Generator().manual_seed(1))
    expected = model.autoencoder.decode(latents, chunked=False, generator=make_generator(3))
    with FakeCuda():
        patcher.load(CUDA, lowvram_model_memory=int(patcher.model_size() * share) + 1)
        on_cpu = [n for n, p in model.autoencoder.named_parameters() if p.device.type == "cpu"]
        out = model.autoencoder.decode(latents.to(CUDA), chunked=False, generator=make_generator(3))
    assert on_cpu and out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=1e-5)


def _model_with_comfy_ops(comfy_models):
    from sa3 import StableAudioModel

    return StableAudioModel.from_pretrained(ROOT / "tiny-small", device="cpu", padding_mode="exact",
                                            ops=comfy_models.ComfyOperations)
