"""Combo values and numbers are checked by the nodes themselves.

ComfyUI 0.3.64 never compares a V3 ``io.Combo`` value with its options; newer releases do, with
their own message, unless ``validate_inputs`` takes the input; both skip their min/max check for
any input ``validate_inputs`` names. So every combo input (the user's model folders and LoRA
files included) is named in its node's ``validate_inputs`` and refused there with a message naming
the input, the value and the choices, the same in every ComfyUI; every number a
``validate_inputs`` names is range-checked by the node.
"""

from __future__ import annotations

import inspect

import pytest

from tests.nodes.conftest import load_handle, nodes

BAD = "no-such-choice"
FILE_LISTS = {"model_name", "lora_name", "resume_from", "ckpt_name",  # answered with the loaders' own messages
              "text_encoder_name"}  # (files, folders)


def _node(node_id: str):
    return next(cls for cls in nodes.NODES if cls.__name__ == node_id)


def _inputs(cls):
    return cls.define_schema().inputs


def _validate_params(cls) -> set[str]:
    if "validate_inputs" not in cls.__dict__:
        return set()
    return set(inspect.signature(cls.validate_inputs).parameters)


def _combos(cls):
    return [i for i in _inputs(cls) if hasattr(i, "options")]


def _numbers(cls):
    return [i for i in _inputs(cls) if getattr(i, "min", None) is not None and getattr(i, "max", None) is not None
            and not hasattr(i, "options")]


def _cases(kind):
    out = []
    for cls in nodes.NODES:
        for inp in (_combos(cls) if kind == "combo" else _numbers(cls)):
            out.append(pytest.param(cls, inp.id, id=f"{cls.__name__}.{inp.id}"))
    return out


@pytest.mark.parametrize("cls, name", _cases("combo"))
def test_every_combo_is_checked_in_validate_inputs(cls, name):
    assert name in _validate_params(cls), f"{cls.__name__}.{name} is a combo but validate_inputs does not check it"
    message = cls.validate_inputs(**{name: BAD})
    assert isinstance(message, str) and message.startswith("Stable Audio 3 "), message
    assert f"{name} {BAD!r}" in message
    if name in FILE_LISTS:
        assert "expected" in message and "Refresh the node list" in message
        return
    options = next(i for i in _inputs(cls) if i.id == name).options
    assert f"expected one of {options}" in message
    for option in options:  # every listed choice passes
        assert cls.validate_inputs(**{name: option}) is True


@pytest.mark.parametrize("cls, name", [c for c in _cases("number")
                                       if c.values[1] in _validate_params(c.values[0])])
def test_numbers_named_in_validate_inputs_are_range_checked(cls, name):
    inp = next(i for i in _inputs(cls) if i.id == name)
    for value in (inp.max + 1, inp.min - 1):
        message = cls.validate_inputs(**{name: value})
        assert isinstance(message, str), f"{cls.__name__}.{name}={value} passed validation"
        shown = f"{value:g}" if isinstance(value, float) else str(value)  # as the validator prints it
        assert f"{name} {shown} is out of range" in message and "expected" in message, message
    assert cls.validate_inputs(**{name: inp.default}) is True


def test_exact_messages():
    assert nodes.SA3Sampler.validate_inputs(sampler="ddim") == (
        "Stable Audio 3 Sampler: sampler 'ddim' is not one of its choices (got 'ddim', expected one of "
        "['default for the model', 'pingpong', 'euler', 'dpmpp', 'rk4']). Pick a value from the list.")
    assert nodes.SA3ModelLoader.validate_inputs(precision="fp8") == (
        "Stable Audio 3 Model Loader: precision 'fp8' is not one of its choices (got 'fp8', expected one of "
        "['auto', 'fp32', 'fp16', 'bf16']). Pick a value from the list.")
    assert _node("SA3Spectrogram").validate_inputs(width=20000) == (
        "Stable Audio 3 Spectrogram: width 20000 is out of range (got 20000, expected 0 to 16384). Enter a value "
        "in that range.")
    assert _node("SA3Spectrogram").validate_inputs(fmin=-5.0) == (
        "Stable Audio 3 Spectrogram: fmin -5 is out of range (got -5, expected 0 to 96000). Enter a value in that "
        "range.")
    assert nodes.SA3LoraLoader.validate_inputs(t_from=0.8, t_to=0.2) == (
        "Stable Audio 3 LoRA Loader: t_from 0.8 is above t_to 0.2 (got t_from 0.8, t_to 0.2, expected t_from <= "
        "t_to). Swap the two values.")
    assert nodes.SA3LoraLoader.validate_inputs(t_to=1.5).startswith(
        "Stable Audio 3 LoRA Loader: t_to 1.5 is out of range (got 1.5, expected 0 to 1).")


def test_linked_combos_pass():
    for cls in nodes.NODES:
        if _validate_params(cls):
            assert cls.validate_inputs() is True


def test_execute_rechecks_linked_combos():
    """A combo value that arrives by link is only known at run time: execute refuses it the same way."""
    h = load_handle("tiny-small")
    pos, _ = nodes.SA3TextEncode.execute(model=h, prompt="a", negative_prompt="", duration=1.0,
                                         one_prompt_per_line=False, durations="").args
    (latent,) = nodes.SA3EmptyLatent.execute(model=h, duration=1.0, batch_size=1, durations="").args
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: sampler 'ddim' is not one of its choices"):
        nodes.SA3Sampler.execute(model=h, positive=pos, seed=0, steps=1, cfg=1.0, sampler="ddim", apg_scale=1.0)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Decode: chunked 'yes' is not one of its choices"):
        nodes.SA3Decode.execute(model=h, latent=latent, chunked="yes", trim=True)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Inpaint Regions: mode 'all' is not one of its choices"):
        nodes.SA3InpaintMask.execute(mode="all", regions="", keep_seconds=0.0)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Model Loader: attention 'xformers' is not one of"):
        nodes.SA3ModelLoader.execute(model_name="tiny-small", precision="fp32", attention="xformers",
                                     padding_mode="exact", download=False)
