"""Demo clips while training (``demo_every``): generated with the adapters trained so far by the
model's own sampler, written beside the LoRA as ``<name>_demo_<step>.flac``; training itself is
unchanged by them and the model is left without LoRA."""

from __future__ import annotations

import re
import stat

import pytest
import soundfile
import torch

from sa3 import training
from tests.conftest import load_model
from tests.sa3.test_training import data_dir, opts  # noqa: F401 - fixture

TINY = "tiny-small"
DEMO = {"demo_prompt": "a sine tone", "demo_seconds": 1.0, "demo_seed": 3, "demo_steps": 2}


def test_demo_clips_are_the_lora_of_their_step(data_dir, tmp_path):  # noqa: F811
    model = load_model(TINY)
    out = tmp_path / "demo.safetensors"
    demos = []
    result = training.train_lora(model, data_dir, out, opts(steps=4, demo_every=2, checkpoint_every=2, **DEMO),
                                 on_demo=lambda step, path, audio: demos.append((step, path, audio)))
    assert [(s, p) for s, p, _ in demos] == [(2, tmp_path / "demo_demo_2.flac"), (4, tmp_path / "demo_demo_4.flac")]
    assert model.lora is None or len(model.lora) == 0  # left without LoRA
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    for step, path, audio in demos:
        lora_file = result.checkpoints[0] if step == 2 else result.path
        model.load_lora(lora_file)
        try:
            with torch.inference_mode():
                again = model.generate("a sine tone", duration=1.0, steps=2, cfg_scale=training.DEMO_CFG, seed=3)[0]
        finally:
            model.unload_lora()
        assert torch.equal(audio, again.float())  # exactly the LoRA as saved at that step
        data, rate = soundfile.read(str(path), always_2d=True)
        assert rate == 44100 and data.shape == (audio.shape[1], 2)
        probe = tmp_path / "probe"
        probe.touch()
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(probe.stat().st_mode)
    with torch.inference_mode():
        plain = model.generate("a sine tone", duration=1.0, steps=2, cfg_scale=training.DEMO_CFG, seed=3)[0]
    assert not torch.equal(demos[-1][2], plain.float())  # the adapters change the demo
    quiet = training.train_lora(model, data_dir, tmp_path / "quiet.safetensors", opts(steps=4, checkpoint_every=2))
    assert quiet.path.read_bytes() == out.read_bytes()  # demos do not change training


@pytest.mark.parametrize("change, message", [
    ({"demo_prompt": " "}, "demo_prompt must be non-empty text"),
    ({"demo_prompt": "x" * 100_001}, "demo_prompt must be non-empty text of at most 100,000 characters when "
                                     "demo_every is set (got 100,001 characters)"),
    ({"demo_seconds": 0.0}, "demo_seconds must be in (0, "),
    ({"demo_steps": 0}, "demo_steps must be an integer in 1..1000"),
    ({"demo_seed": -1}, "demo_seed must be an integer"),
    ({"demo_every": -1}, "demo_every must be an integer from 0 to 1000000"),
])
def test_demo_options_checked(change, message):
    options = training.LoRATrainingOptions(**{"demo_every": 2, **DEMO, **change})
    with pytest.raises(training.TrainingError, match=re.escape(message)):
        training.check_options(options, 120.0)
