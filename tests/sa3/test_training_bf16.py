"""``base_precision="bf16"``: the official ``train_lora.py`` bf16 run. The model is cast
to bf16 before the adapters are added (DoRA magnitudes and -XS bases from the bf16 weights) and
the forward runs under ``torch.autocast(bfloat16)`` (Lightning's ``precision="bf16-mixed"``)."""

from __future__ import annotations

import math

import pytest
import torch

from sa3 import training
from sa3.lora import svd_bases
from tests.conftest import load_model
from tests.sa3.test_training import data_dir, opts  # noqa: F401 - fixture

TINY = "tiny-small"


def _initial_parameters(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The LoRA parameters of every run, as initialised (before the first step)."""
    made = []

    class Recording(training._TrainableLoRA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append({k: p.detach().clone() for k, p in self.params.items()})
            made.append(self.bases)

    monkeypatch.setattr(training, "_TrainableLoRA", Recording)
    return made


def _key(part: str, path: str, param: str) -> str:
    return training._TrainableLoRA._name((part, path), param)


@pytest.mark.parametrize("adapter_type", ["dora-rows", "bora-xs"])
def test_adapters_start_from_the_bf16_cast_weights(adapter_type, monkeypatch, data_dir, tmp_path):  # noqa: F811
    model = load_model(TINY)
    made = _initial_parameters(monkeypatch)
    options = opts(steps=1, adapter_type=adapter_type, base_precision="bf16")
    training.train_lora(model, data_dir, tmp_path / "x.safetensors", options)
    params, bases = made
    targets = training._targets(model.dit, model.conditioner, training.check_options(options, 1e9))
    assert len(targets) > 20
    differs = 0
    for part, path, module in targets:
        w = module.weight.detach().reshape(module.weight.shape[0], -1)
        assert w.dtype == torch.float32  # the model itself stays fp32
        cast = w.to(torch.bfloat16)
        want = cast.norm(dim=1).float()  # as the official LoRAParametrization on a bf16 model
        name = "magnitude" if adapter_type == "dora-rows" else "magnitude_r"
        assert torch.equal(params[_key(part, path, name)], want)
        differs += not torch.equal(want, w.norm(dim=1))
        if adapter_type == "bora-xs":
            assert torch.equal(params[_key(part, path, "magnitude_c")], cast.norm(dim=0).float())
            u, v = svd_bases(cast.float(), 4)
            u, v = u.to(torch.bfloat16), v.to(torch.bfloat16)  # then cast with the model, as the official
            assert torch.equal(bases[(part, path)][0], u) and torch.equal(bases[(part, path)][1], v)
    assert differs > 0  # the fp32 weights would give other magnitudes


@pytest.mark.parametrize("precision, autocast", [("bf16", torch.bfloat16), ("fp16", None), ("fp32", None)])
def test_forward_runs_under_bf16_autocast_only_when_official(precision, autocast, monkeypatch, data_dir,  # noqa: F811
                                                             tmp_path):
    model = load_model(TINY)
    seen = []
    call = training._Frozen.__call__

    def recording(self, weights, *args):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return call(self, weights, *args)

    monkeypatch.setattr(training._Frozen, "__call__", recording)
    result = training.train_lora(model, data_dir, tmp_path / "x.safetensors",
                                 opts(steps=2, base_precision=precision, validate_every=2))
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)
    assert len(seen) > 4 and set(seen) == {autocast}  # steps and validation alike


def test_bf16_is_the_official_bf16():
    assert training.OFFICIAL_BF16 == "bf16" and training.BASE_PRECISIONS["bf16"] is torch.bfloat16


def test_official_defaults_one_choice_away():
    o = training.LoRATrainingOptions.official(120.0)
    assert (o.steps, o.clip_seconds, o.base_precision) == (10_000, 120.0, "bf16")
    assert training.LoRATrainingOptions.official().clip_seconds == 380.0
    assert training.LoRATrainingOptions.official(steps=5).steps == 5
    d = training.LoRATrainingOptions()
    assert (d.steps, d.clip_seconds, d.base_precision) == (500, 30.0, "fp32")
