"""Combo values and numbers are checked by the nodes themselves (see nodes/_validate.py).

ComfyUI 0.3.64 never compares a V3 ``io.Combo`` value with its options (newer releases do, with
their own message, labelled with that input), lets NaN through its min/max check, skips that check
for inputs ``validate_inputs`` names, and repeats a ``validate_inputs`` message once per parameter.
So: every ``validate_inputs`` takes one input, and every ``execute`` checks all its numbers and
combos first (the ``checked`` decorator).
"""

from __future__ import annotations

import inspect

import pytest

from tests.nodes.conftest import load_handle, nodes

BAD = "no-such-choice"


def _validate_params(cls) -> list[str]:
    if "validate_inputs" not in cls.__dict__:
        return []
    return list(inspect.signature(cls.validate_inputs).parameters)


@pytest.mark.parametrize("cls", nodes.NODES, ids=lambda c: c.__name__)
def test_validate_inputs_takes_one_input(cls):
    """ComfyUI labels a failed validate_inputs once per parameter: more than one would report one
    problem several times, against inputs it is not about."""
    params = _validate_params(cls)
    assert len(params) <= 1, f"{cls.__name__}.validate_inputs takes {params}"
    inputs = {i.id for i in cls.define_schema().inputs}
    assert set(params) <= inputs


@pytest.mark.parametrize("cls", nodes.NODES, ids=lambda c: c.__name__)
def test_every_execute_checks_its_widgets(cls):
    assert getattr(cls.execute.__func__, "__wrapped__", None) is not None, \
        f"{cls.__name__}.execute is not wrapped by nodes._validate.checked"


def test_linked_values_pass():
    for cls in nodes.NODES:
        params = _validate_params(cls)
        if params:
            assert cls.validate_inputs(**{params[0]: None}) is True


def test_exact_messages():
    assert nodes.SA3Sampler.validate_inputs(sampler="ddim") == (
        "Stable Audio 3 Sampler: sampler must be one of 'default for the model', 'pingpong', 'euler', 'dpmpp', "
        "'rk4' (got 'ddim'). Pick a value from the list.")
    assert nodes.SA3Decode.validate_inputs(chunked=BAD) == (
        f"Stable Audio 3 Decode: chunked must be one of 'auto', 'on', 'off' (got {BAD!r}). Pick a value from the "
        "list.")
    assert nodes.SA3LoraStrength.validate_inputs(target="vae").startswith(
        "Stable Audio 3 LoRA Strength: target must be one of 'dit and conditioner', 'dit', 'conditioner' (got 'vae')")
    for option in ("default for the model", "pingpong", "euler", "dpmpp", "rk4"):
        assert nodes.SA3Sampler.validate_inputs(sampler=option) is True


def test_execute_rechecks_combos_and_numbers():
    """A value that arrives by link, through the API or as NaN is only caught when the node runs."""
    h = load_handle("tiny-small")
    pos, _ = nodes.SA3TextEncode.execute(model=h, prompt="a", negative_prompt="", duration=1.0,
                                         one_prompt_per_line=False, durations="").args
    (latent,) = nodes.SA3EmptyLatent.execute(model=h, duration=1.0, batch_size=1, durations="").args
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: sampler must be one of .* \(got 'ddim'\)"):
        nodes.SA3Sampler.execute(model=h, positive=pos, latent=latent, seed=0, steps=1, cfg=1.0, sampler="ddim",
                                 apg_scale=1.0)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Decode: chunked must be one of .* \(got 'yes'\)"):
        nodes.SA3Decode.execute(model=h, latent=latent, chunked="yes", trim=True)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Inpaint Regions: mode must be one of .* \(got 'all'\)"):
        nodes.SA3InpaintMask.execute(latent=latent, mode="all", regions="", keep_seconds=0.0)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Model Loader: attention must be one of .* \(got 'xformers'"):
        nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp32", attention="xformers",
                                     padding_mode="exact", download=False)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Model Loader: precision must be one of 'auto', 'fp32', "
                                         r"'fp16', 'bf16' \(got 'fp8'\)"):
        nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp8", attention="auto",
                                     padding_mode="exact", download=False)
