"""Bad input through the library, by class (issue 13): memory bombs and hangs, NaN/infinity, raw
Python errors (wrong types, broken configs), and messages that name the input. Every refusal must
name the input, the allowed range and the value, happen before any model work (no noise drawn, no
text encoded), and leave the model as it was: a following good request is bit-identical."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from sa3 import checks, rng, stages
from sa3.audio import resample, samples_needed
from sa3.config import ModelConfig
from sa3.loading import read_config
from sa3.model import StableAudioModel
from tests.conftest import load_model, require_fixtures

NAN, INF = float("nan"), float("inf")
GOOD = dict(prompt="x", duration=0.5, steps=2, seed=1)
SILENCE = (44100, torch.zeros(1, 4410))


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-small")


@pytest.fixture(scope="module")
def reference(model):
    return model.generate(**GOOD)


@pytest.fixture
def heavy(monkeypatch):
    """Counts calls of the heavy stages; a refusal must leave them at zero."""
    calls = []
    for name in ("make_noise", "encode_text", "encode_audio", "sample", "decode"):
        real = getattr(stages, name)
        monkeypatch.setattr(stages, name,
                            lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1])
    return calls


def _assert_message(error: Exception, name: str, rule: str, got: str):
    text = str(error)
    assert text.startswith("Stable Audio 3"), text
    assert name in text, f"{name!r} not named in: {text}"
    assert rule in text, f"range {rule!r} not in: {text}"
    assert f"(got {got}" in text, f"value {got!r} not in: {text}"


# --- class 1: bounds against memory bombs and hangs ---------------------------------------------

BOUNDS = [
    (dict(steps=10**8), "steps", "an integer from 1 to 1000", "100000000"),
    (dict(steps=10**9), "steps", "an integer from 1 to 1000", "1000000000"),
    (dict(steps=1001), "steps", "an integer from 1 to 1000", "1001"),
    (dict(steps=0), "steps", "an integer from 1 to 1000", "0"),
    (dict(steps=-3), "steps", "an integer from 1 to 1000", "-3"),
    (dict(batch_size=10**6), "batch_size", "an integer from 1 to 64", "1000000"),
    (dict(batch_size=65), "batch_size", "an integer from 1 to 64", "65"),
    (dict(batch_size=0), "batch_size", "an integer from 1 to 64", "0"),
    (dict(prompt=["x"] * 65, batch_size=65), "batch_size", "an integer from 1 to 64", "65"),
    (dict(prompt="x" * (checks.MAX_PROMPT_CHARS + 1)), "prompt", "a string of at most 100,000 characters",
     "100,001 characters"),
    (dict(negative_prompt="y" * (checks.MAX_PROMPT_CHARS + 1)), "negative_prompt", "at most 100,000 characters",
     "100,001 characters"),
    (dict(duration=500.0), "duration", "above 0 and at most 120 seconds", "500"),
    (dict(duration=120.01), "duration", "above 0 and at most 120 seconds", "120.01"),
    (dict(duration=1e300), "duration", "above 0 and at most 120 seconds", "1e+300"),
    (dict(duration=0), "duration", "above 0 and at most 120 seconds", "0"),
    (dict(duration=-1.0), "duration", "above 0 and at most 120 seconds", "-1"),
    (dict(duration=[0.5, 200.0], batch_size=2), "duration", "at most 120 seconds", "200"),
    (dict(cfg_scale=31.0), "cfg_scale", "a number from 0 to 30", "31"),
    (dict(cfg_scale=-1.0), "cfg_scale", "a number from 0 to 30", "-1"),
    (dict(apg_scale=11.0), "apg_scale", "a number from 0 to 10", "11"),
    (dict(apg_scale=-0.5), "apg_scale", "a number from 0 to 10", "-0.5"),
    (dict(init_noise_level=1.5, init_audio=SILENCE), "init_noise_level", "a number from 0 to 1", "1.5"),
    (dict(init_noise_level=-0.1, init_audio=SILENCE), "init_noise_level", "a number from 0 to 1", "-0.1"),
    (dict(duration_padding_sec=-1.0), "duration_padding_sec", "a number from 0 to 384 seconds", "-1"),
    (dict(duration_padding_sec=1e9), "duration_padding_sec", "a number from 0 to 384 seconds", "1e+09"),
    (dict(seed=-5), "seed", f"an integer from -1 to {checks.MAX_SEED}", "-5"),
    (dict(seed=2**64), "seed", f"an integer from -1 to {checks.MAX_SEED}", str(2**64)),
    (dict(scale_phi=2.0), "scale_phi", "a number from 0 to 1", "2"),
    (dict(cfg_norm_threshold=-1.0), "cfg_norm_threshold", "a number from 0 to 1000", "-1"),
    (dict(cfg_norm_threshold=1e4), "cfg_norm_threshold", "a number from 0 to 1000", "10000"),
    (dict(cfg_interval=(0.8, 0.2)), "cfg_interval", "run from a lower to a higher noise level", "from 0.8, to 0.2"),
    (dict(cfg_interval=(0.2, 1.5)), "cfg_interval to", "a number from 0 to 1", "1.5"),
    (dict(cfg_interval=(-0.1, 0.5)), "cfg_interval from", "a number from 0 to 1", "-0.1"),
    (dict(cfg_interval=0.5), "cfg_interval", "two noise levels (from, to)", "0.5"),
    (dict(cfg_interval=(0.1, 0.2, 0.3)), "cfg_interval", "two noise levels (from, to)", "a tuple"),
    (dict(dist_shift="flux"), "dist_shift", "a JSON object", "'flux'"),
    (dict(dist_shift={"type": "karras"}), "dist_shift.type", "one of 'logsnr', 'full', 'flux', 'none'", "'karras'"),
    (dict(dist_shift={"type": "flux", "alpha": 3.0}), "each dist_shift parameter of a 'flux' shift",
     "one of 'min_length', 'max_length', 'alpha_min', 'alpha_max'", "'alpha'"),
    (dict(dist_shift={"type": "none", "rate": 1.0}), "each dist_shift parameter of a 'none' shift",
     "absent", "'rate'"),
    (dict(dist_shift={"type": "flux", "alpha_min": 0.0}), "dist_shift.alpha_min", "a number from 0.001 to 1000",
     "0"),
    (dict(dist_shift={"type": "flux", "min_length": 64, "max_length": 8}), "dist_shift.max_length",
     "at least min_length (64)", "8"),
    (dict(dist_shift={"type": "full", "min_length": 64, "max_length": 64}), "dist_shift.max_length",
     "above min_length (64)", "64"),
    (dict(dist_shift={"type": "full", "use_sine": 1}), "dist_shift.use_sine", "true or false", "1"),
    (dict(dist_shift={"type": "logsnr", "anchor_length": 0}), "dist_shift.anchor_length",
     "a number from 1 to 1048576", "0"),
    (dict(dist_shift={"type": "logsnr", "rate": "fast"}), "dist_shift.rate", "a number from -10 to 10", "'fast'"),
    (dict(sampler_type="heun"), "sampler_type", "one of 'pingpong', 'euler', 'dpmpp', 'rk4'", "'heun'"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=0.6, inpaint_mask_end_seconds=0.9), "inpaint region",
     "must start before the 0.5 s duration", "start 0.6"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=0.4, inpaint_mask_end_seconds=0.2), "inpaint region",
     "must end after it starts", "start 0.4, end 0.2"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=-0.1, inpaint_mask_end_seconds=0.2),
     "inpaint_mask_start_seconds", "a number at least 0 seconds", "-0.1"),
]

RATES = [1, 0, -44100, 999, 384_001, 10**9, True, False, 44100.5, NAN, INF, -INF, "44100", None, 2**70]


def _rate_shown(rate):
    return checks.shown(int(rate) if isinstance(rate, float) and rate.is_integer() and abs(rate) < 2**53 else rate)


AUDIO_RATES = [(dict(**{key: (rate, torch.zeros(1, 4410))}, **extra), key, "an integer from 1000 to 384000 Hz",
                _rate_shown(rate))
               for key, extra in (("init_audio", {}), ("inpaint_audio", dict(inpaint_mask_start_seconds=0.1,
                                                                                 inpaint_mask_end_seconds=0.2)))
               for rate in RATES]

# rate pairs that share no large divisor: the exact filter would take gigabytes
COSTLY_RATES = [(dict(init_audio=(rate, torch.zeros(1, 4410))), "init_audio", "at most 16,777,216", "a ")
                for rate in (44101, 47999, 44099, 96001, 383_999, 1009)]


@pytest.mark.parametrize("kwargs, name, rule, got", BOUNDS + AUDIO_RATES + COSTLY_RATES)
def test_bounds(model, heavy, kwargs, name, rule, got):
    with pytest.raises(ValueError) as e:
        model.generate(**{**GOOD, **kwargs})
    _assert_message(e.value, name, rule, got)
    assert heavy == [], f"heavy stages ran before the refusal: {heavy}"


def test_common_rates_are_cheap():
    for rate in (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 352800,
                 384000, 1000):
        checks.check_resample("init_audio", rate, 44100)


def test_long_audio_is_cropped_before_resampling_with_the_same_numbers():
    """A 10-minute 48 kHz source for a short generation resamples only what reaches the output."""
    torch.manual_seed(0)
    wav = torch.randn(2, 48000 * 3)
    length = 44100
    full = resample(wav, 48000, 44100)[..., :length]
    cropped = stages.prepare_audio((48000, wav), 44100, length, "init_audio")[0]
    assert torch.equal(cropped, full)
    assert samples_needed(length, 48000, 44100) < wav.shape[-1] / 2
    huge = torch.zeros(1, 48000 * 600).expand(40, -1)  # 40 channels x 10 minutes, only 2 x 1 s are used
    assert stages.prepare_audio((48000, huge), 44100, length, "init_audio").shape == (1, 2, length)


# --- class 2: NaN and infinity -----------------------------------------------------------------

NAN_INF = [
    (dict(**{key: value}, **extra), key, rule, checks.shown(value))
    for key, rule, extra in (
        ("cfg_scale", "a number from 0 to 30", {}),
        ("apg_scale", "a number from 0 to 10", {}),
        ("init_noise_level", "a number from 0 to 1", dict(init_audio=SILENCE)),
        ("duration", "above 0 and at most 120 seconds", {}),
        ("duration_padding_sec", "a number from 0 to 384 seconds", {}),
        ("scale_phi", "a number from 0 to 1", {}),
        ("cfg_norm_threshold", "a number from 0 to 1000", {}),
        ("inpaint_mask_start_seconds", "a number at least 0 seconds",
         dict(inpaint_audio=SILENCE, inpaint_mask_end_seconds=0.3)),
        ("inpaint_mask_end_seconds", "a finite number of seconds",
         dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=0.1)),
    )
    for value in (NAN, INF, -INF)
] + [
    (dict(duration=[0.5, NAN], batch_size=2), "duration", "at most 120 seconds", "nan"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=[0.1, 0.2], inpaint_mask_end_seconds=[0.15, INF]),
     "inpaint_mask_end_seconds", "seconds", "inf"),
    (dict(cfg_interval=(NAN, 1.0)), "cfg_interval from", "a number from 0 to 1", "nan"),
    (dict(cfg_interval=(0.0, INF)), "cfg_interval to", "a number from 0 to 1", "inf"),
    (dict(dist_shift={"type": "flux", "alpha_max": NAN}), "dist_shift.alpha_max", "a number from 0.001 to 1000",
     "nan"),
    (dict(dist_shift={"type": "full", "base_shift": -INF}), "dist_shift.base_shift", "a number from -20 to 20",
     "-inf"),
    (dict(seed=NAN), "seed", "an integer", "nan"),
    (dict(steps=INF), "steps", "an integer from 1 to 1000", "inf"),
    (dict(batch_size=NAN), "batch_size", "an integer from 1 to 64", "nan"),
]


def _poisoned(value, where: int, numpy: bool = False):
    wav = torch.zeros(2, 4410)
    wav[where % 2, where] = value
    return wav.numpy().T.copy() if numpy else wav


BAD_SAMPLES = [
    (dict(**{key: (44100, _poisoned(value, where, numpy))}, **extra), key, "samples must be finite numbers",
     "1 NaN or infinite sample(s) of 8,820")  # all 4410 samples reach a 0.5 s request
    for key, extra in (("init_audio", {}), ("inpaint_audio", dict(inpaint_mask_start_seconds=0.1,
                                                                  inpaint_mask_end_seconds=0.2)))
    for value in (NAN, INF, -INF)
    for where, numpy in ((0, False), (4409, False), (17, True))
]


@pytest.mark.parametrize("kwargs, name, rule, got", NAN_INF + BAD_SAMPLES)
def test_nan_and_infinity(model, heavy, kwargs, name, rule, got):
    with pytest.raises(ValueError) as e:
        model.generate(**{**GOOD, **kwargs})
    _assert_message(e.value, name, rule, got)
    assert heavy == []


# --- class 3: wrong types give the pack's message, not TypeError/OverflowError/KeyError ---------

TYPES = [
    (dict(cfg_scale="3"), "cfg_scale", "a number from 0 to 30", "'3'"),
    (dict(cfg_scale=None), "cfg_scale", "a number from 0 to 30", "None"),
    (dict(cfg_scale=[3.0]), "cfg_scale", "a number from 0 to 30", "a list"),
    (dict(apg_scale="1"), "apg_scale", "a number from 0 to 10", "'1'"),
    (dict(init_noise_level="0.5", init_audio=SILENCE), "init_noise_level", "a number from 0 to 1", "'0.5'"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds="0.2", inpaint_mask_end_seconds=0.4),
     "inpaint_mask_start_seconds", "a number at least 0 seconds", "'0.2'"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=0.1, inpaint_mask_end_seconds="0.4"),
     "inpaint_mask_end_seconds", "seconds", "'0.4'"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=[0.1, "0.2"], inpaint_mask_end_seconds=[0.15, 0.3]),
     "inpaint_mask_start_seconds", "at least 0 seconds", "'0.2'"),
    (dict(duration="10"), "duration", "a number above 0", "'10'"),
    (dict(duration=None), "duration", "a number above 0", "None"),
    (dict(duration=True), "duration", "a number above 0", "True"),
    (dict(duration_padding_sec="6"), "duration_padding_sec", "a number from 0 to 384", "'6'"),
    (dict(duration_padding_sec=None), "duration_padding_sec", "a number from 0 to 384", "None"),
    (dict(steps="8"), "steps", "an integer from 1 to 1000", "'8'"),
    (dict(steps=8.0), "steps", "an integer from 1 to 1000", "8"),
    (dict(steps=True), "steps", "an integer from 1 to 1000", "True"),
    (dict(batch_size="2"), "batch_size", "an integer from 1 to 64", "'2'"),
    (dict(batch_size=1.5), "batch_size", "an integer from 1 to 64", "1.5"),
    (dict(seed="1"), "seed", "an integer", "'1'"),
    (dict(seed=1.5), "seed", "an integer", "1.5"),
    (dict(sampler_type=3), "sampler_type", "one of 'pingpong'", "3"),
    (dict(prompt=3), "prompt", "a string", "3"),
    (dict(prompt=None), "prompt", "a string or one string per batch item", "None"),
    (dict(prompt=["a", None], batch_size=2), "prompt", "a string", "None"),
    (dict(negative_prompt=5), "negative_prompt", "a string", "5"),
    (dict(prompt=["a", "b"], batch_size=3), "prompt", "must have 3 entries, one per batch item", "2"),
    (dict(duration=[1.0], batch_size=2), "duration", "must have 2 entries", "1"),
    (dict(negative_prompt=["a", "b", "c"], batch_size=2), "negative_prompt", "must have 2 entries", "3"),
    (dict(inpaint_audio=SILENCE, inpaint_mask_start_seconds=[0.1, 0.2], inpaint_mask_end_seconds=[0.3]),
     "inpaint_mask_end_seconds", "must have 2 entries", "1"),
    (dict(init_audio=torch.zeros(1, 100)), "init_audio", "a (sample_rate, audio) pair", "a Tensor"),
    (dict(init_audio=(44100,)), "init_audio", "a (sample_rate, audio) pair", "a tuple"),
    (dict(inpaint_audio="x.wav", inpaint_mask_start_seconds=0.1, inpaint_mask_end_seconds=0.2), "inpaint_audio",
     "a (sample_rate, audio) pair", "'x.wav'"),
    (dict(init_audio=(44100, torch.zeros(1, 0))), "init_audio", "at least one sample", "an empty waveform"),
    (dict(init_audio=(44100, [0.0, 0.1])), "init_audio", "a torch.Tensor or numpy.ndarray", "list"),
    (dict(init_audio=(44100, torch.zeros(1, 2, 100))), "init_audio", "(channels, samples)", "shape (1, 2, 100)"),
    (dict(init_audio=(44100, torch.zeros(1, 100, dtype=torch.int16))), "init_audio", "floating point",
     "torch.int16"),
    (dict(init_audio=(44100, np.zeros(100, dtype=np.uint8))), "init_audio", "float32, int16 or int32",
     "NumPy dtype uint8"),
]


@pytest.mark.parametrize("kwargs, name, rule, got", TYPES)
def test_wrong_types(model, heavy, kwargs, name, rule, got):
    with pytest.raises(ValueError) as e:
        model.generate(**{**GOOD, **kwargs})
    _assert_message(e.value, name, rule, got)
    assert heavy == []


def test_swapped_audio_tuple_says_so(model, heavy):
    with pytest.raises(ValueError, match=r"init_audio must be \(sample_rate, audio\) with the sample rate first.*swap"):
        model.generate(**GOOD, init_audio=(torch.zeros(1, 100), 44100))
    assert heavy == []


def test_regions_without_audio(model, heavy):
    with pytest.raises(ValueError, match=r"inpaint regions need inpaint_audio"):
        model.generate(**GOOD, inpaint_mask_start_seconds=0.1, inpaint_mask_end_seconds=0.3)
    with pytest.raises(ValueError, match=r"give both inpaint_mask_start_seconds and inpaint_mask_end_seconds"):
        model.generate(**GOOD, inpaint_audio=SILENCE, inpaint_mask_start_seconds=0.1)
    with pytest.raises(ValueError, match=r"must both be numbers or both be lists \(got float and list\)"):
        model.generate(**GOOD, inpaint_audio=SILENCE, inpaint_mask_start_seconds=0.1, inpaint_mask_end_seconds=[0.3])
    assert heavy == []


def test_stage_functions_check_their_own_inputs(model):
    cfg = model.config
    plan = stages.plan_latents(cfg, [0.5])
    with pytest.raises(ValueError, match=r"duration must be a number above 0 .* \(got nan\)"):
        stages.plan_latents(cfg, [NAN])
    with pytest.raises(ValueError, match=r"duration_padding_sec must be a number from 0 to 384 seconds \(got -1\)"):
        stages.plan_latents(cfg, [0.5], padding_sec=-1.0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer from 1 to 64 \(got 1000000\)"):
        rng.make_noise(10**6, 256, 8, torch.Generator())
    with pytest.raises(ValueError, match=r"inpaint region start must be a number at least 0 seconds \(got nan\)"):
        stages.build_inpaint_mask(plan, [(NAN, 0.3)], cfg.sample_rate)
    with pytest.raises(ValueError, match=r"prompt must be a string .* \(got 3\)"):
        stages.encode_text(model.text_encoder, model.conditioner, [3], [0.5])
    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to"):
        rng.make_generator(-1)
    text = stages.encode_text(model.text_encoder, model.conditioner, ["x"], [0.5])
    noise = rng.make_noise(1, cfg.latent_channels, plan.latents, torch.Generator().manual_seed(0))
    for kw, name in ((dict(steps=10**9), "steps"), (dict(cfg_scale=NAN), "cfg_scale"),
                     (dict(apg_scale=INF), "apg_scale"), (dict(init_noise_level="1"), "init_noise_level")):
        with pytest.raises(ValueError, match=rf"Stable Audio 3: {name} must be"):
            stages.sample(model.dit, noise, text, plan, cfg=cfg, **kw)


def test_good_request_after_every_refusal_is_bit_identical(model, reference):
    for kwargs, *_ in BOUNDS + AUDIO_RATES + COSTLY_RATES + NAN_INF + BAD_SAMPLES + TYPES:
        with pytest.raises(ValueError):
            model.generate(**{**GOOD, **kwargs})
    assert torch.equal(model.generate(**GOOD), reference)


# --- class 3b: model configs are checked at load time ------------------------------------------


def _config(tmp_path, edit):
    src = require_fixtures() / "tiny-small"
    dst = tmp_path / "m"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    (dst / "model.safetensors").write_bytes(b"not read: the config fails first")
    raw = json.loads((src / "model_config.json").read_text())
    path = dst / "model_config.json"
    result = edit(raw)
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        path.write_text(json.dumps(raw if result is None else result))
    return dst


def _set(path: str, value):
    def edit(raw):
        node = raw
        *parents, last = path.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return edit


CONFIGS = [
    (_set("model", KeyError), r"model must be a JSON object \(got 'nothing'\)"),
    (_set("model", []), r"model must be a JSON object \(got a list\)"),
    (_set("model.diffusion", KeyError), r"model.diffusion must be a JSON object \(got 'nothing'\)"),
    (_set("model.diffusion.config", "x"), r"model.diffusion.config must be a JSON object \(got 'x'\)"),
    (_set("model.conditioning", KeyError), r"model.conditioning must be a JSON object"),
    (_set("model.conditioning.configs", {}), r"model.conditioning.configs must be a list of conditioner objects"),
    (_set("model.conditioning.configs", [3]), r"model.conditioning.configs must be a list of conditioner objects"),
    (_set("model.conditioning.cond_dim", "768"), r"model.conditioning.cond_dim must be an integer from 1 to 65536 "
                                                 r"\(got '768'\)"),
    (_set("model.pretransform", KeyError), r"model.pretransform must be a JSON object"),
    (_set("model.io_channels", 0), r"model.io_channels must be an integer from 1 to 65536 \(got 0\)"),
    (_set("sample_size", "5292032"), r"model_config.sample_size must be an integer from 4096 to 33554432 "
                                     r"\(got '5292032'\)"),
    (_set("sample_size", 1e30), r"sample_size must be an integer from 4096 to 33554432 \(got 1e\+30\)"),
    (_set("sample_size", KeyError), r"sample_size must be an integer .* \(got 'nothing'\)"),
    (_set("sample_size", -1), r"sample_size must be an integer .* \(got -1\)"),
    (_set("sample_rate", True), r"model_config.sample_rate must be an integer from 1000 to 384000 \(got True\)"),
    (_set("sample_rate", 1), r"model_config.sample_rate must be an integer from 1000 to 384000 \(got 1\)"),
    (_set("model.diffusion.config.embed_dim", "256"), r"model.diffusion.config.embed_dim must be an integer"),
    (_set("model.diffusion.config.num_heads", 0), r"model.diffusion.config.num_heads must be an integer from 1"),
    (_set("model.diffusion.config.num_heads", 7), r"embed_dim must be a multiple of num_heads"),
    (_set("model.diffusion.config.depth", KeyError), r"model.diffusion.config.depth must be an integer .*"
                                                     r"\(got 'nothing'\)"),
    (_set("model.diffusion.config.ff_kwargs", 4), r"ff_kwargs must be a JSON object \(got 4\)"),
    (_set("model.diffusion.sampling_distribution_shift_options", {"type": "cosine"}),
     r"sampling_distribution_shift_options.type must be one of 'logsnr', 'full', 'flux', 'none' \(got 'cosine'\)"),
    (_set("model.diffusion.sampling_distribution_shift_options", {"type": "full", "base_shift": "0.5"}),
     r"sampling_distribution_shift_options.base_shift must be a number from -20 to 20 \(got '0.5'\)"),
    (_set("model.diffusion.sampling_distribution_shift_options", {"type": "flux", "shift": 3}),
     r"each model.diffusion.sampling_distribution_shift_options parameter of a 'flux' shift must be one of "
     r"'min_length', 'max_length', 'alpha_min', 'alpha_max' \(got 'shift'\)"),
    (_set("svd_bases_path", 3), r"model_config.svd_bases_path must be a string \(got 3\)"),
    (_set("model.pretransform.config.pretransform", KeyError),
     r"model.pretransform.config.pretransform must be a JSON object \(got 'nothing'\) in '.*model_config.json'"),
    (_set("model.pretransform.config.pretransform.config.patch_size", KeyError),
     r"model.pretransform.config.pretransform.config.patch_size must be an integer from 1 to 65536 \(got 'nothing'\)"),
    (_set("model.pretransform.config.pretransform.config.patch_size", "x"),
     r"model.pretransform.config.pretransform.config.patch_size must be an integer from 1 to 65536 \(got 'x'\)"),
    (lambda raw: b'{"model_type": "diffusion_cond_inpaint", "x": "\xff"}',
     r"is not UTF-8 text \(got byte 0xff at offset 47"),
    (lambda raw: b"{not json", r"is not valid JSON"),
    (lambda raw: [1, 2], r"model_config.json must be a JSON object \(got a list\)"),
    (lambda raw: b"[" * 100000 + b"]" * 100000, r"is not valid JSON"),
]


@pytest.mark.parametrize("edit, message", CONFIGS)
def test_bad_configs_fail_at_load_naming_the_key(tmp_path, edit, message):
    folder = _config(tmp_path, edit)
    with pytest.raises((ValueError, RuntimeError), match=message) as e:
        read_config(folder / "model_config.json")
    assert str(folder) in str(e.value)
    with pytest.raises((ValueError, RuntimeError), match=message):
        StableAudioModel.from_pretrained(folder, device="cpu", download=False)


def test_seconds_conditioner_range_is_checked(tmp_path):
    def edit(raw):
        for entry in raw["model"]["conditioning"]["configs"]:
            if entry["id"] == "seconds_total":
                entry["config"]["max_val"] = entry["config"].get("min_val", 0)
    with pytest.raises(ValueError, match=r"seconds_total conditioner.max_val must be above min_val"):
        ModelConfig.from_file(_config(tmp_path, edit) / "model_config.json")


# --- class 4: printed limits are accepted ------------------------------------------------------


@pytest.mark.parametrize("max_duration", [120.0, 380.4357, 16777216 / 44100, 0.999, 5292032 / 44100])
def test_printed_maximum_is_accepted(max_duration):
    with pytest.raises(ValueError) as e:
        checks.check_durations("duration", [max_duration + 1], max_duration)
    printed = float(re.search(r"at most ([0-9.]+) seconds", str(e.value)).group(1))
    assert printed <= max_duration and max_duration - printed < 0.01
    assert checks.check_durations("duration", [printed], max_duration) == [printed]


def test_medium_prints_an_accepted_maximum():
    config = ModelConfig.from_file(require_fixtures() / "tiny-medium" / "model_config.json")
    with pytest.raises(ValueError, match=r"at most 380.43 seconds \(got 380.44\)"):
        checks.check_durations("duration", [380.44], config.max_duration)
    assert stages.plan_latents(config, [380.43]).latents == config.max_latents - config.max_latents % 2


def test_where_names_the_node():
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: cfg must be a number from 0 to 30 \(got nan\)\.$"):
        checks.check_number("cfg", NAN, 0, 30, where="Sampler")
    with pytest.raises(ValueError) as e:
        checks.check_number("steps", "8", 1, 1000, integer=True, where="Sampler")
    assert type(e.value) is ValueError and str(e.value).startswith("Stable Audio 3 Sampler: steps must be")


# --- the standalone autoencoder checks its audio the same way ----------------------------------

AUTOENCODER_AUDIO = [
    ((torch.zeros(1, 4410), 1), "audio sample rate", "an integer from 1000 to 384000 Hz", "1"),
    ((torch.zeros(1, 4410), True), "audio sample rate", "an integer from 1000 to 384000 Hz", "True"),
    ((torch.zeros(1, 4410), NAN), "audio sample rate", "an integer from 1000 to 384000 Hz", "nan"),
    ((torch.zeros(1, 4410), 44101), "audio sample rate 44101 Hz cannot be converted", "at most 16,777,216", "a "),
    ((_poisoned(NAN, 3), 44100), "audio samples must be finite", "finite numbers", "1 NaN"),
    (([torch.zeros(1, 4410), _poisoned(INF, 5)], [44100, 44100]), "audio item 1 samples", "finite numbers", "1 NaN"),
    ((torch.zeros(1, 0), 44100), "audio must hold at least one sample", "at least one sample", "an empty"),
]


@pytest.mark.parametrize("args, name, rule, got", AUTOENCODER_AUDIO)
def test_autoencoder_model_audio(args, name, rule, got):
    from sa3 import AutoencoderModel

    ae = AutoencoderModel.from_pretrained(require_fixtures() / "tiny-small", device="cpu")
    with pytest.raises(ValueError) as e:
        ae.encode(*args)
    _assert_message(e.value, name, rule, got)


# --- the CLI checks the whole request before loading any weights --------------------------------


def _wav(path, rate: int, frames: int = 4410) -> str:
    import wave

    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(b"\x00\x01" * frames)
    return str(path)


@pytest.mark.parametrize("extra, message", [
    (["--steps", "100000000"], "steps must be an integer from 1 to 1000 (got 100000000)"),
    (["--cfg-scale", "nan"], "cfg_scale must be a number from 0 to 30 (got nan)"),
    (["--apg-scale", "inf"], "apg_scale must be a number from 0 to 10 (got inf)"),
    (["--duration", "nan"], "duration must be a number above 0 and at most 120 seconds (got nan)"),
    (["--batch-size", "1000000"], "batch_size must be an integer from 1 to 64 (got 1000000)"),
    (["--lora", "x.safetensors", "--lora-strength", "nan"],
     "--lora-strength must be a number from -10 to 10 (got nan)"),
    (["--init-audio", "{one_hz}"], "init_audio sample rate must be an integer from 1000 to 384000 Hz (got 1)"),
    (["--init-audio", "{odd}"], "init_audio sample rate 44101 Hz cannot be converted to 44100 Hz"),
    (["--inpaint-audio", "{ok}", "--inpaint-start", "0.4", "--inpaint-end", "inf"],
     "inpaint_mask_end_seconds must be a finite number of seconds (got inf)"),
])
def test_cli_refuses_before_loading(tmp_path, capsys, monkeypatch, extra, message):
    from sa3.cli import main

    def no_load(*a, **k):
        raise AssertionError("weights loaded before the request was checked")

    monkeypatch.setattr(StableAudioModel, "from_pretrained", no_load)
    files = {"one_hz": _wav(tmp_path / "one_hz.wav", 1), "odd": _wav(tmp_path / "odd.wav", 44101),
             "ok": _wav(tmp_path / "ok.wav", 44100)}
    argv = ["generate", "--model", str(require_fixtures() / "tiny-small"), "-p", "x", "--duration", "0.5",
            "-o", str(tmp_path / "out.wav")] + [a.format(**files) for a in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("value, text", [(120.0001, "120.0001"), (120.0, "120"), (1e300, "1e+300"), (NAN, "nan"),
                                         (-INF, "-inf"), (0.1 + 0.2, "0.30000000000000004"), ("3", "'3'"),
                                         (True, "True"), (None, "None"), ([1], "a list")])
def test_values_are_printed_exactly(value, text):
    assert checks.shown(value) == text
