"""``svd_bases_path`` for -XS training: the bases come from the file (the official torch-saved
dict or the fixtures' safetensors form), so the adapters are the golden -XS LoRA's as the
loader builds them from the same file; bad bases files are refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sa3 import training
from tests.conftest import load_model, require_fixtures
from tests.sa3.test_training import data_dir, opts  # noqa: F401 - fixture

TINY = "tiny-small"


def _fixture(name: str) -> Path:
    return require_fixtures() / "loras" / TINY / name


def _official_pickle(tmp_path: Path) -> Path:
    """The fixture bases as the official trainer's torch-saved dict (weight name -> {"U", "V"})."""
    flat = load_file(str(_fixture("svd_bases.safetensors")))
    names = {k[:-2] for k in flat}
    path = tmp_path / "svd_bases.pt"
    torch.save({n: {"U": flat[n + ".U"], "V": flat[n + ".V"]} for n in names}, path)
    return path


def _trained_weights(model, golden: Path, bases_path: Path | None) -> dict[str, torch.Tensor]:
    """The DiT weights training starts from with ``golden``'s tensors and ``bases_path``'s bases."""
    options = training.check_options(training.LoRATrainingOptions(adapter_type="lora-xs", rank=4), 1e9)
    targets = training._targets(model.dit, model.conditioner, options)
    bases = None if bases_path is None else training.read_training_bases(bases_path, targets, 4)
    lora = training._TrainableLoRA(targets, options, torch.Generator(), "cpu", bases)
    lora.load_file_tensors({k: v.float() for k, v in training._file_tensors(golden).items()})
    frozen = training._frozen(model.dit, torch.float32, torch.device("cpu"))
    return training._effective_weights(lora, frozen, "", "dit", None)


@pytest.mark.parametrize("form", ["safetensors", "official torch.save"])
def test_fixture_bases_reproduce_the_golden_xs_adapters(form, tmp_path):
    model = load_model(TINY)
    golden, bases_file = _fixture("lora-xs.safetensors"), _fixture("svd_bases.safetensors")
    ours = _trained_weights(model, golden, bases_file if form == "safetensors" else _official_pickle(tmp_path))
    own_svd = _trained_weights(model, golden, None)
    model.load_lora(golden, svd_bases_path=bases_file)
    try:
        loaded = {n: p.detach().clone() for n, p in model.dit.named_parameters() if n in ours}
    finally:
        model.unload_lora()
    assert len(loaded) == len(ours) > 20
    err = max(float((ours[n] - loaded[n]).detach().abs().max()) for n in ours)
    own = max(float((own_svd[n] - loaded[n]).detach().abs().max()) for n in ours)
    assert err < 1e-6 and own > 3e-5, (err, own)  # the file's bases, not an SVD of our own


def test_training_with_bases_runs(data_dir, tmp_path):  # noqa: F811
    model = load_model(TINY)
    result = training.train_lora(model, data_dir, tmp_path / "x.safetensors", opts(steps=1, adapter_type="bora-xs"),
                                 svd_bases_path=_fixture("svd_bases.safetensors"))
    assert result.steps_done == 1


@pytest.mark.parametrize("content, message", [
    ({}, "holds no bases for this model's layers"),
    ({"model.model.preprocess_conv.weight": {"U": torch.zeros(3, 4), "V": torch.zeros(3, 4)}}, "bases of shapes"),
    ("not a dict", "cannot be used"),
])
def test_bad_bases_refused_before_any_work(content, message, tmp_path):
    model = load_model(TINY)
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(training.TrainingError, match=message):
        training.train_lora(model, tmp_path / "no such folder", tmp_path / "x.safetensors",
                            opts(steps=1, adapter_type="lora-xs"), svd_bases_path=path)
    assert not (tmp_path / "x.safetensors").exists()
