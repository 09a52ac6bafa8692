"""The training log beside the LoRA: ``<name>.csv`` with step, loss and validation loss,
written as training goes, continued by an exact resume into the same file."""

from __future__ import annotations

import csv

import torch

from sa3.training import log_path, train_lora, validation_loss
from sa3.training_data import encode_dataset, load_training_folder
from tests.sa3.test_training import CLIP_SECONDS, data_dir, model, opts  # noqa: F401 - fixtures


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_log_holds_every_step_and_the_validation_loss(model, data_dir, tmp_path):  # noqa: F811
    seen = []

    def on_step(step, total, loss):  # the row is on disk when the step is reported
        seen.append(len(_rows(log_path(tmp_path / "v.safetensors"))))

    data = encode_dataset(model, load_training_folder(data_dir), opts().crop_latents(), torch.Generator())
    result = train_lora(model, data, tmp_path / "v.safetensors", opts(steps=3, validate_every=2), on_step=on_step)
    rows = _rows(log_path(result.path))
    assert log_path(result.path) == tmp_path / "v.csv"
    assert seen == [1, 2, 3]
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert [float(r["loss"]) for r in rows] == [float(f"{x:.8g}") for x in result.losses]
    assert rows[0]["validation_loss"] == ""  # every 2 steps, and at the last
    # the logged validation loss is the model's with the trained LoRA (the file is fp16, hence the tolerance)
    model.load_lora(result.path)
    try:
        after = validation_loss(model, data, CLIP_SECONDS, seed=opts().seed)
    finally:
        model.unload_lora()
    assert abs(float(rows[2]["validation_loss"]) - after) < 1e-3 * after
    assert float(rows[1]["validation_loss"]) != float(rows[2]["validation_loss"])


def test_exact_resume_continues_the_log(model, data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "r.safetensors"
    calls = []
    train_lora(model, data_dir, out, opts(steps=4), should_stop=lambda: len(calls) >= 2,
               on_step=lambda *a: calls.append(a))
    first = _rows(log_path(out))
    with open(log_path(out), "a", encoding="utf-8") as f:
        f.write("3,9.9,\n")  # a row past the saved state (a crash after it): dropped on resume
    resumed = train_lora(model, data_dir, out, opts(steps=4), resume_from=out)
    rows = _rows(log_path(out))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[:2] == first and [float(r["loss"]) for r in rows[2:]] == [float(f"{x:.8g}") for x in resumed.losses]
    # another output starts its own log
    other = train_lora(model, data_dir, tmp_path / "o.safetensors", opts(steps=5), resume_from=out)
    assert [r["step"] for r in _rows(log_path(other.path))] == ["5"]
