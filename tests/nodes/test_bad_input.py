"""Bad input through the nodes in the real ComfyUI, under ``torch.inference_mode()`` (issue 13), by
class: memory bombs, NaN/infinity, wrong types, messages naming the right input, and per-input
reporting by ComfyUI's own ``execution.validate_inputs``. Every refusal names the node, the input,
the allowed range and the value; no heavy stage ran; the next good graph is bit-identical."""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import sys

import pytest
import torch

from tests.nodes.conftest import load_handle, nodes
from tests.nodes.test_graph_parity import run_graph

NAN, INF = math.nan, math.inf
SMALL = "tiny-small"
LORA = "tiny-small/lora.safetensors"
DEFAULT = "default for the model"


@pytest.fixture(scope="module")
def handle():
    with torch.inference_mode():  # module fixtures run outside the autouse one: load as ComfyUI loads
        return load_handle(SMALL)


@pytest.fixture(scope="module")
def reference(handle):
    with torch.inference_mode():
        return run_graph(handle, duration=1.0, steps=2)["waveform"]


@pytest.fixture
def heavy(monkeypatch):
    """Calls of the heavy stages (text encoder, SAME, DiT) and of model loads; must stay empty."""
    calls = []
    stages = nodes.sampling.stages
    for name in ("encode_text", "encode_audio", "encode_sources", "sample", "decode", "make_noise"):
        real = getattr(stages, name)
        monkeypatch.setattr(stages, name, lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))[1])
    models = nodes.comfy_models
    real_load = models.load_parts
    monkeypatch.setattr(models, "load_parts", lambda *a, **k: (calls.append("load_parts"), real_load(*a, **k))[1])
    return calls


def _audio(rate=44100, wav=None):
    return {"waveform": torch.zeros(1, 1, 4410) if wav is None else wav, "sample_rate": rate}


def _poisoned(value, index=7, batch=1):
    wav = torch.zeros(batch, 2, 4410)
    wav[-1, 1, index] = value
    return wav


# Each case: (node, inputs builder(handle) -> kwargs, input name, rule fragment, value fragment)
def _text(**kw):
    return lambda h: {**dict(model=h, prompt="a", negative_prompt="", duration=1.0, one_prompt_per_line=False,
                             durations=""), **kw}


def _latent(**kw):
    return lambda h: {**dict(model=h, duration=1.0, batch_size=1, durations=""), **kw}


def _sampler(**kw):
    def build(h):
        pos, _ = nodes.SA3TextEncode.execute(**_text()(h)).args
        (latent,) = nodes.SA3EmptyLatent.execute(**_latent()(h)).args
        args = dict(model=h, positive=pos, latent=latent, seed=0, steps=2, cfg=1.0, sampler=DEFAULT, apg_scale=1.0)
        args.update(kw)
        return args
    return build


def _mask(**kw):
    def build(h):
        (latent,) = nodes.SA3EmptyLatent.execute(**_latent()(h)).args
        return {**dict(latent=latent, mode="regions", regions="0.1-0.2", keep_seconds=0.0), **kw}
    return build


def _encode(audio):
    return lambda h: dict(model=h, audio=audio)


def _lora(**kw):
    return lambda h: {**dict(model=h, lora_name=LORA, strength_dit=1.0, strength_conditioner=1.0), **kw}


def _strength(**kw):
    def build(h):
        (with_lora,) = nodes.SA3LoraLoader.execute(**_lora()(h)).args
        return {**dict(model=with_lora, lora_index=0, target="dit", strength=1.0), **kw}
    return build


def _spectrogram(**kw):
    return lambda h: {**dict(audio=_audio(), height=256, width=0, px_per_second=50.0, colormap="magma", fmin=0.0,
                             fmax=0.0, db_floor=-80.0, normalize=True, waveform=False), **kw}


CASES = [
    # class 1: bounds (reachable through the API or a link; ComfyUI's max check skips linked values)
    ("SA3Sampler", _sampler(steps=10**8), "steps", "an integer from 1 to 1000", "100000000"),
    ("SA3Sampler", _sampler(steps=10**9), "steps", "an integer from 1 to 1000", "1000000000"),
    ("SA3Sampler", _sampler(seed=-1), "seed", "an integer from 0 to", "-1"),
    ("SA3Sampler", _sampler(preview_every=10**6), "preview_every", "an integer from 0 to 1000", "1000000"),
    ("SA3EmptyLatent", _latent(batch_size=10**6), "batch_size", "an integer from 1 to 64", "1000000"),
    ("SA3EmptyLatent", _latent(duration=500.0), "duration", "a number from 0.1 to 380.4", "500"),
    ("SA3EmptyLatent", _latent(duration=200.0), "duration", "above 0 and at most 120 seconds", "200"),
    ("SA3EmptyLatent", _latent(durations="10, 300", batch_size=2), "durations", "at most 120 seconds", "300"),
    ("SA3TextEncode", _text(duration=150.0), "duration", "above 0 and at most 120 seconds", "150"),
    ("SA3TextEncode", _text(prompt="\n".join("x" * 65), one_prompt_per_line=True), "prompt lines",
     "an integer from 1 to 64", "65"),
    ("SA3TextEncode", _text(prompt="x" * 100_001), "prompt", "at most 100,000 characters", "100,001 characters"),
    ("SA3EncodeAudio", _encode(_audio(rate=1)), "audio sample rate", "an integer from 1000 to 384000 Hz", "1"),
    ("SA3EncodeAudio", _encode(_audio(rate=0)), "audio sample rate", "from 1000 to 384000 Hz", "0"),
    ("SA3EncodeAudio", _encode(_audio(rate=999)), "audio sample rate", "from 1000 to 384000 Hz", "999"),
    ("SA3EncodeAudio", _encode(_audio(rate=10**9)), "audio sample rate", "from 1000 to 384000 Hz", "1000000000"),
    ("SA3EncodeAudio", _encode(_audio(rate=True)), "audio sample rate", "from 1000 to 384000 Hz", "True"),
    ("SA3EncodeAudio", _encode(_audio(rate=44100.5)), "audio sample rate", "an integer", "44100.5"),
    ("SA3EncodeAudio", _encode(_audio(rate="44100")), "audio sample rate", "an integer", "'44100'"),
    ("SA3EncodeAudio", _encode(_audio(rate=44101)), "audio sample rate 44101 Hz cannot be converted",
     "at most 16,777,216", "a "),
    ("SA3EncodeAudio", _encode(_audio(rate=47999)), "audio sample rate 47999 Hz", "at most 16,777,216", "a "),
    ("SA3Spectrogram", _spectrogram(audio=_audio(rate=1)), "audio sample rate", "from 1000 to 384000 Hz", "1"),
    # class 2: NaN and infinity (NaN passes ComfyUI's own min/max check)
    *[("SA3Sampler", _sampler(**{name: value}), name, rule, str(value).lower().replace("infinity", "inf"))
      for name, rule in (("cfg", "a number from 0 to 30"), ("apg_scale", "a number from 0 to 10"),
                         ("init_noise_level", "a number from 0 to 1"))
      for value in (NAN, INF, -INF)],
    *[("SA3TextEncode", _text(duration=value), "duration", "a number from 0.1 to 380.4", got)
      for value, got in ((NAN, "nan"), (INF, "inf"), (-INF, "-inf"))],
    ("SA3TextEncode", _text(durations="1e999"), "durations", "at most 380.4 seconds", "inf"),
    ("SA3EmptyLatent", _latent(duration=NAN), "duration", "a number from 0.1 to 380.4", "nan"),
    ("SA3EmptyLatent", _latent(durations="0.5, 1e999", batch_size=2), "durations", "at most 120 seconds", "inf"),
    ("SA3InpaintMask", _mask(keep_seconds=NAN), "keep_seconds", "a number from 0 to 380.4", "nan"),
    ("SA3InpaintMask", _mask(regions="1e999-2e999"), "regions start", "at least 0 seconds", "inf"),
    ("SA3InpaintMask", _mask(regions="0.1-1e999"), "regions end", "a finite number of seconds", "inf"),
    ("SA3LoraLoader", _lora(strength_dit=NAN), "strength_dit", "a number from -10 to 10", "nan"),
    ("SA3LoraLoader", _lora(strength_conditioner=INF), "strength_conditioner", "a number from -10 to 10", "inf"),
    ("SA3LoraLoader", _lora(t_from=NAN), "t_from", "a number from 0 to 1", "nan"),
    ("SA3LoraLoader", _lora(t_to=-INF), "t_to", "a number from 0 to 1", "-inf"),
    ("SA3LoraStrength", _strength(strength=NAN), "strength", "a number from -10 to 10", "nan"),
    ("SA3LoraStrength", _strength(strength=-INF), "strength", "a number from -10 to 10", "-inf"),
    ("SA3Spectrogram", _spectrogram(fmin=NAN), "fmin", "a number from 0 to 96000", "nan"),
    ("SA3Spectrogram", _spectrogram(db_floor=INF), "db_floor", "a number from", "inf"),
    *[("SA3EncodeAudio", _encode(_audio(wav=_poisoned(value, index))), "audio samples", "must be finite numbers",
       "1 NaN or infinite sample(s) of 8,820") for value in (NAN, INF, -INF) for index in (0, 4409)],
    ("SA3EncodeAudio", _encode(_audio(wav=_poisoned(NAN, batch=2))), "audio item 1 samples", "finite numbers",
     "1 NaN"),
    ("SA3Spectrogram", _spectrogram(audio=_audio(wav=_poisoned(INF))), "audio samples", "finite numbers", "1 NaN"),
    # class 3: wrong types
    ("SA3Sampler", _sampler(cfg="3"), "cfg", "a number from 0 to 30", "'3'"),
    ("SA3Sampler", _sampler(init_noise_level="0.5"), "init_noise_level", "a number from 0 to 1", "'0.5'"),
    ("SA3Sampler", _sampler(steps="8"), "steps", "an integer from 1 to 1000", "'8'"),
    ("SA3Sampler", _sampler(steps=2.5), "steps", "an integer from 1 to 1000", "2.5"),
    ("SA3Sampler", _sampler(seed=None), "seed", "an integer", "None"),
    ("SA3Sampler", _sampler(sampler="ddim"), "sampler", "one of 'default for the model', 'pingpong'", "'ddim'"),
    ("SA3EmptyLatent", _latent(batch_size="2"), "batch_size", "an integer from 1 to 64", "'2'"),
    ("SA3TextEncode", _text(duration="10"), "duration", "a number from 0.1 to 380.4", "'10'"),
    ("SA3InpaintMask", _mask(keep_seconds="1"), "keep_seconds", "a number from 0 to 380.4", "'1'"),
    ("SA3InpaintMask", _mask(mode="all"), "mode", "one of 'regions', 'continuation'", "'all'"),
    ("SA3LoraLoader", _lora(strength_dit="1"), "strength_dit", "a number from -10 to 10", "'1'"),
    ("SA3LoraStrength", _strength(target="vae"), "target", "one of 'dit and conditioner', 'dit'", "'vae'"),
    ("SA3Decode", lambda h: dict(model=h, latent=None, chunked="yes", trim=True), "chunked",
     "one of 'auto', 'on', 'off'", "'yes'"),
    ("SA3Spectrogram", _spectrogram(colormap="jet"), "colormap", "one of", "'jet'"),
    ("SA3TextEncode", _text(prompt=5), "prompt", "must be text", "5"),
    ("SA3LoraLoader", _lora(lora_name=0), "lora_name", "must be a file name from the list", "0"),
    ("SA3ModelLoader", lambda h: dict(model_name=0, precision="auto", attention="auto", padding_mode="exact",
                                      download=False), "model_name", "must be a file name from the list", "0"),
    ("SA3ModelLoader", lambda h: dict(model_name=SMALL, precision="fp8", attention="auto", padding_mode="exact",
                                      download=False), "precision", "one of 'auto', 'fp32', 'fp16', 'bf16'", "'fp8'"),
    ("SA3ModelLoader", lambda h: dict(model_name=SMALL, precision="auto", attention="xformers", padding_mode="exact",
                                      download=False), "attention", "one of 'auto', 'sdpa', 'math', 'flash'",
     "'xformers'"),
    ("SA3ModelLoader", lambda h: dict(model_name=SMALL, precision="auto", attention="auto", padding_mode="zeros",
                                      download=False), "padding_mode", "one of 'exact', 'reference'", "'zeros'"),
]
DISPLAY = {"SA3Sampler": "Sampler", "SA3EmptyLatent": "Empty Latent", "SA3TextEncode": "Text Encode",
           "SA3EncodeAudio": "Encode Audio", "SA3InpaintMask": "Inpaint Regions", "SA3LoraLoader": "LoRA Loader",
           "SA3LoraStrength": "LoRA Strength", "SA3Spectrogram": "Spectrogram", "SA3Decode": "Decode",
           "SA3ModelLoader": "Model Loader"}


def _node(node_id: str):
    return next(cls for cls in nodes.NODES if cls.__name__ == node_id)


@pytest.mark.parametrize("node_id, build, name, rule, got", CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_refused_by_name_before_any_heavy_work(handle, heavy, node_id, build, name, rule, got):
    with torch.inference_mode():
        kwargs = build(handle)
        heavy.clear()  # building the inputs (text encode for the sampler) may run stages; the call may not
        with pytest.raises(ValueError) as e:
            _node(node_id).execute(**kwargs)
    text = str(e.value)
    assert text.startswith(f"Stable Audio 3 {DISPLAY[node_id]}: "), text
    assert name in text and rule in text and f"(got {got}" in text, text
    assert heavy == [], f"heavy work ran before the refusal: {heavy}"


@pytest.mark.parametrize("name", ["init_audio", "inpaint_audio"])
def test_sampler_audio_inputs_name_themselves(handle, heavy, name):
    """Audio given to the sampler itself is checked there, before anything is encoded or sampled,
    and the message says which input is wrong."""
    with torch.inference_mode():
        args = _sampler()(handle)
        if name == "inpaint_audio":
            (args["inpaint_mask"],) = nodes.SA3InpaintMask.execute(**_mask()(handle)).args
        heavy.clear()
        with pytest.raises(ValueError) as e:
            nodes.SA3Sampler.execute(**args, **{name: _audio(wav=_poisoned(NAN))})
    assert str(e.value).startswith(f"Stable Audio 3 Sampler: {name} samples must be finite numbers (got 1 NaN")
    assert not {"sample", "encode_audio", "encode_sources"} & set(heavy)


def test_good_graph_after_every_refusal_is_bit_identical(handle, reference):
    with torch.inference_mode():
        for node_id, build, *_ in CASES:
            with pytest.raises(ValueError):
                _node(node_id).execute(**build(handle))
        assert torch.equal(run_graph(handle, duration=1.0, steps=2)["waveform"], reference)


def test_printed_maximum_duration_is_accepted(handle):
    with torch.inference_mode(), pytest.raises(ValueError) as e:
        nodes.SA3EmptyLatent.execute(**_latent(duration=121.0)(handle))
    assert "at most 120 seconds (got 121)" in str(e.value)
    with torch.inference_mode():
        nodes.SA3EmptyLatent.execute(**_latent(duration=120.0)(handle))


# --- per-input reporting through ComfyUI's own validation ---------------------------------------


def _comfy_execution():
    """ComfyUI's ``execution`` module bound to ComfyUI's own ``nodes`` (the pack's package shares the
    name), with the pack's classes registered as ComfyUI registers them."""
    saved = sys.modules.pop("nodes", None)
    cached = sys.modules.get("execution")
    try:
        if cached is None or not hasattr(cached.nodes, "NODE_CLASS_MAPPINGS"):
            sys.modules.pop("execution", None)
            sys.path.insert(0, os.environ["COMFYUI_PATH"])
            try:
                importlib.import_module("nodes")
                cached = importlib.import_module("execution")
            finally:
                sys.path.remove(os.environ["COMFYUI_PATH"])
    finally:
        comfy_nodes = sys.modules.pop("nodes", None)
        if saved is not None:
            sys.modules["nodes"] = saved
    mapping = cached.nodes.NODE_CLASS_MAPPINGS
    for cls in nodes.NODES:
        mapping[cls.GET_SCHEMA().node_id] = cls
    del comfy_nodes
    return cached


def _validate(node_id: str, inputs: dict) -> list[dict]:
    """``execution.validate_inputs`` of the real ComfyUI for one node; its error list."""
    execution = _comfy_execution()
    prompt = {"1": {"class_type": node_id, "inputs": inputs}}
    valid, errors, _ = asyncio.run(execution.validate_inputs("p", prompt, "1", {}))
    return [] if valid else errors


QUEUE_CASES = [
    ("SA3TextEncode", dict(prompt="  \n ", negative_prompt="", duration=1.0, one_prompt_per_line=False,
                           durations=""), "prompt", "prompt is empty"),
    ("SA3EmptyLatent", dict(duration=1.0, batch_size=1, durations="1, x"), "durations",
     "durations must be numbers of seconds"),
    ("SA3EmptyLatent", dict(duration=1.0, batch_size=1, durations="1, 999"), "durations",
     "durations must be a number above 0 and at most 380.4 seconds (got 999)"),
    ("SA3EmptyLatent", dict(duration=1.0, batch_size=500, durations=""), "batch_size",
     "Value 500 bigger than max of 64"),
    ("SA3Sampler", dict(seed=0, steps=2, cfg=1.0, sampler="ddim",
                        apg_scale=1.0), "sampler", "sampler must be one of"),
    ("SA3Sampler", dict(seed=0, steps=5000, cfg=1.0, sampler=DEFAULT,
                        apg_scale=1.0), "steps", "Value 5000 bigger than max of 1000"),
    ("SA3Sampler", dict(seed=0, steps=2, cfg=-3.0, sampler=DEFAULT,
                        apg_scale=1.0), "cfg", "Value -3.0 smaller than min of 0.0"),
    ("SA3Sampler", dict(seed=0, steps="many", cfg=1.0, sampler=DEFAULT,
                        apg_scale=1.0), "steps", "Failed to convert an input value to a INT value"),
    ("SA3InpaintMask", dict(mode="regions", regions="4-2", keep_seconds=0.0), "regions",
     "must end after it starts"),
    ("SA3LoraLoader", dict(lora_name=LORA, strength_dit=20.0, strength_conditioner=1.0), "strength_dit",
     "Value 20.0 bigger than max of 10.0"),
    ("SA3LoraStrength", dict(lora_index=0, target="vae", strength=1.0), "target",
     "target must be one of"),
    ("SA3Decode", dict(chunked="yes", trim=True), "chunked", "chunked must be one of"),
    ("SA3ModelLoader", dict(model_name="no-such-model", precision="auto", attention="auto", padding_mode="exact",
                            download=False), "model_name", "model_name 'no-such-model' is not a model folder"),
]


@pytest.mark.parametrize("node_id, inputs, name, message", QUEUE_CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(QUEUE_CASES)])
def test_each_queue_time_problem_is_reported_once_against_its_input(node_id, inputs, name, message):
    """Sockets are left out (ComfyUI then only adds required_input_missing for them)."""
    errors = [e for e in _validate(node_id, inputs) if e["type"] != "required_input_missing"]
    assert len(errors) == 1, errors
    (error,) = errors
    assert error["extra_info"]["input_name"] == name
    assert message in error["message"] + " " + error["details"], error


def test_good_widgets_pass_comfyui_validation():
    assert [e for e in _validate("SA3Sampler", dict(seed=0, steps=2, cfg=1.0,
                                                    sampler=DEFAULT, apg_scale=1.0))
            if e["type"] != "required_input_missing"] == []
