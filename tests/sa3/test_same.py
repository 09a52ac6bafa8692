"""SAME autoencoder: config parsing, official keys, golden parity, sliding-window attention, chunking.

Legend: B batch, A audio channels, C latent channels, L latents, S samples, N tokens, H heads, D head dim.

Golden parity uses the public fixture pack (tiny random-weight models made by the official code on
CPU, fp32). RNG: the reference seeds the global CPU generator and draws, in order, the initial noise,
the SAME-L encoder mask noise, pingpong noise, then per decode chunk the bottleneck and decoder
mask noise. A ``torch.Generator`` seeded alike yields the same stream, so the tests replay every draw
the manifest lists before the stage under test and compare within the pack's 1.5e-5 tolerance.
"""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import torch.nn.functional as F

from sa3.attention import Attention, attention
from sa3.same import CHUNK_LATENTS, SAMEAutoencoder, SAMEConfig
from tests.conftest import fixture_root, manifest

TOL = 1.5e-5  # fixtures README section 7
PREFIX = "pretransform.model."


# --- fixtures (located by tests/conftest.py) -------------------------------------------------

FIXTURES = fixture_root()
needs_fixtures = pytest.mark.skipif(
    FIXTURES is None,
    reason="SA3 golden fixtures not found (set SA3_FIXTURES, or place them at ../shared/fixtures or tests/fixtures)",
)
# the committed subset has tiny-small only; ../shared/fixtures has both
MODELS = tuple(m for m in ("tiny-small", "tiny-medium") if FIXTURES is not None and (FIXTURES / m).is_dir())


def _cases(select) -> list:
    if FIXTURES is None:
        return []
    return [pytest.param(c["model"], c["case"], id=f"{c['model']}/{c['case']}") for c in manifest()["cases"]
            if select(c)]


def _case(model: str, name: str) -> dict:
    return next(c for c in manifest()["cases"] if c["model"] == model and c["case"] == name)


@functools.cache
def _official_sd(model: str) -> dict:
    from safetensors.torch import load_file

    sd = load_file(str(FIXTURES / model / "model.safetensors"))
    return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}


@functools.cache
def _model(model: str) -> SAMEAutoencoder:
    cfg = SAMEConfig.from_official(json.loads((FIXTURES / model / "model_config.json").read_text()))
    ae = SAMEAutoencoder(cfg).eval().requires_grad_(False)
    ae.load_state_dict(_official_sd(model), strict=True)
    return ae


def _load(case: dict, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / case["dir"] / name))


def _replay(case: dict, stop_caller: str, stop_shape_len: int | None = None) -> torch.Generator:
    """Generator seeded like the case, with every listed draw before the first draw made by
    ``stop_caller`` (with ``stop_shape_len`` dims, if given) consumed."""
    gen = torch.Generator().manual_seed(case["generate_kwargs"]["seed"])
    for draw in case["rng_draws"]:
        fn = draw["caller"].split(":")[1]
        if fn == stop_caller and (stop_shape_len is None or len(draw["shape"]) == stop_shape_len):
            break
        torch.randn(draw["shape"], generator=gen, dtype=getattr(torch, draw["dtype"].split(".")[-1]))
    return gen


# --- synthetic configs (no fixtures needed) --------------------------------------------------


def _tiny_official(windowed: bool, width: int = 64, depth: int = 2) -> dict:
    """An official-layout `model.pretransform` dict for a tiny SAME-S (chunked) or SAME-L (window)."""
    stage = {"c_mults": [1], "channels": width, "strides": [16], "transformer_depths": [depth],
             "dim_heads": 32, "differential": True, "dyt": True, "variable_stride": True, "latent_dim": 8,
             "use_flash": True, "mapping_style": "none", "checkpointing": False}
    if windowed:
        stage.update(sliding_window=[1, 1], conv_bias=False)
    else:
        stage.update(chunk_size=32, chunk_midpoint_shift=True)
    enc = dict(stage, in_channels=512, mask_noise=0.001 if windowed else 0.0, conv_mapping=False)
    dec = dict(stage, out_channels=512, mask_noise=0.1 if windowed else 0.01, conv_mapping=not windowed,
               sinusoidal_blocks=[depth] if windowed else [0])
    return {
        "type": "autoencoder", "chunked": True, "iterate_batch": False,
        "config": {
            "encoder": {"type": "taae_v2", "config": enc, "requires_grad": False},
            "decoder": {"type": "taae_v2", "config": dec, "requires_grad": False},
            "bottleneck": {"type": "softnorm", "config": {"dim": 8, "noise_augment_dim": 0, "noise_regularize": True,
                                                          "auto_scale": True, "freeze": True}},
            "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": 256}, "enable_grad": False},
            "latent_dim": 8, "downsampling_ratio": 4096, "io_channels": 2,
        },
    }


@functools.cache
def _tiny(windowed: bool) -> SAMEAutoencoder:
    torch.manual_seed(0)  # weights only; the code under test never touches the global RNG
    ae = SAMEAutoencoder(SAMEConfig.from_official(_tiny_official(windowed))).eval().requires_grad_(False)
    for block in ae.modules():  # the official init zeroes the branch outputs; give them signal
        if isinstance(block, Attention):
            torch.nn.init.normal_(block.to_out.weight, std=0.05)
    return ae


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- config ----------------------------------------------------------------------------------


def test_config_layouts_agree():
    nested = _tiny_official(windowed=True)
    legacy = copy.deepcopy(nested["config"])  # standalone SAME repo: everything under `model`
    a = SAMEConfig.from_official(nested)
    b = SAMEConfig.from_official({"model_type": "autoencoder", "model": legacy})
    c = SAMEConfig.from_official({"model": {"io_channels": 8, "pretransform": nested, "diffusion": {}}})
    assert a.chunked and not b.chunked  # the standalone layout has no `chunked`; the reference default is off
    assert a == c
    assert a.encoder == b.encoder and a.decoder == b.decoder and a.latent_dim == b.latent_dim == 8
    assert a.windowed and a.encoder.window_tokens == (17, 17) and a.samples_per_latent == 4096
    s = SAMEConfig.from_official(_tiny_official(windowed=False))
    assert not s.windowed and s.encoder.chunk_tokens == 34 and s.decoder.conv_mapping


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["config"]["encoder"]["config"].update(bogus=1), "bogus"),
        (lambda c: c["config"]["decoder"]["config"].update(conformer=True), "conformer"),
        (lambda c: c["config"]["encoder"]["config"].update(c_mults=[1, 2]), "one resampling stage"),
        (lambda c: c["config"]["bottleneck"]["config"].update(noise_augment_dim=4), "noise_augment_dim"),
        (lambda c: c.update(iterate_batch=True), "iterate_batch"),
        (lambda c: c["config"]["pretransform"]["config"].update(patch_size=128), "io_channels \\* patch_size"),
        (lambda c: c["config"]["bottleneck"]["config"].update(dim=16), "latent dims disagree"),
        (lambda c: c["config"]["decoder"]["config"].update(sliding_window=[1]), "sliding_window"),
        (lambda c: c["config"].update(downsampling_ratio=2048), "downsampling_ratio"),
    ],
)
def test_config_rejects_unsupported(edit, match):
    cfg = _tiny_official(windowed=True)
    edit(cfg)
    with pytest.raises(ValueError, match=match):
        SAMEConfig.from_official(cfg)
    with pytest.raises(ValueError, match="no SAME encoder"):
        SAMEConfig.from_official({"model": {"diffusion": {}}})


def _stage(part: str, **values):
    """An edit setting ``values`` in the encoder's or decoder's config."""
    return lambda c: c["config"][part]["config"].update(values)


ENC = "model.pretransform.config.encoder.config"
DEC = "model.pretransform.config.decoder.config"
BAD_VALUES = [
    (_stage("encoder", transformer_depths=["6"]), rf"{ENC}.transformer_depths[0] must be an integer from 1 to 256 "
                                                  r"(got '6')"),
    (_stage("encoder", transformer_depths=[0]), rf"{ENC}.transformer_depths[0] must be an integer from 1 to 256 "
                                                r"(got 0)"),
    (_stage("decoder", channels=-64), rf"{DEC}.channels must be an integer at least 1 (got -64)"),
    (_stage("decoder", c_mults=[2.5]), rf"{DEC}.c_mults[0] must be an integer from 1 to 65536 (got 2.5)"),
    (_stage("encoder", strides=16), rf"{ENC}.strides must be a list of one entry (SA3's SAME has one resampling "
                                    r"stage) (got 16)"),
    (lambda c: c["config"]["decoder"]["config"].pop("strides"),
     rf"{DEC}.strides must be a list of one entry (SA3's SAME has one resampling stage) (got nothing, whose official "
     r"default [2, 4, 8, 8] has 4 entries)"),
    (_stage("decoder", dim_heads=None), rf"{DEC}.dim_heads must be an integer from 1 to 65536 (got None)"),
    (_stage("encoder", ff_mult=0), rf"{ENC}.ff_mult must be a number above 0 and at most 64 (got 0)"),
    (_stage("decoder", mask_noise=-0.1), rf"{DEC}.mask_noise must be a number at least 0 (got -0.1)"),
    (_stage("decoder", mask_noise=float("nan")), rf"{DEC}.mask_noise must be a number at least 0 (got nan)"),
    (_stage("encoder", differential="yes"), rf"{ENC}.differential must be true or false (got 'yes')"),
    (_stage("decoder", sinusoidal_blocks=[-1]), rf"{DEC}.sinusoidal_blocks[0] must be an integer from 0 to 256 "
                                                r"(got -1)"),
    (_stage("decoder", sliding_window=[1, -1]), rf"{DEC}.sliding_window[1] must be an integer from 0 to 65536 "
                                                r"(got -1)"),
    (_stage("decoder", dyt=False), rf"{DEC}.dyt must be true (the only value SA3's SAME uses) (got False)"),
    (_stage("encoder", conformer=1), rf"{ENC}.conformer must be false (the only value SA3's SAME uses) (got 1)"),
    (lambda c: c["config"]["bottleneck"].update(type="vq"),
     r"model.pretransform.config.bottleneck.type must be 'softnorm' (the only kind SA3's SAME has) (got 'vq')"),
    (lambda c: c["config"]["bottleneck"]["config"].update(auto_scale="true"),
     r"model.pretransform.config.bottleneck.config.auto_scale must be true or false (got 'true')"),
    (lambda c: c["config"]["pretransform"]["config"].update(oversampling=2),
     r"model.pretransform.config.pretransform.config.oversampling must be 1 (oversampling is not supported) (got 2)"),
    (lambda c: c["config"].update(io_channels=0), r"model.pretransform.config.io_channels must be an integer from 1 "
                                                  r"to 65536 (got 0)"),
    (lambda c: c["config"].update(out_channels=1), r"model.pretransform.config.out_channels must be absent, null or "
                                                   r"io_channels (2) (got 1)"),
    (lambda c: c["config"].pop("decoder"), r"model.pretransform.config.decoder must be a JSON object (got 'nothing')"),
    (lambda c: c.update(chunked="yes"), r"model.pretransform.chunked must be true or false (got 'yes')"),
]


@pytest.mark.parametrize("edit, message", BAD_VALUES)
def test_bad_values_are_refused_naming_key_range_and_value(edit, message):
    """Every value is checked when the config is parsed (``sa3.config``, as the DiT's): a wrong type, a
    size out of range or an unknown kind names the key, the allowed values and the value given."""
    cfg = _tiny_official(windowed=True)
    edit(cfg)
    with pytest.raises(ValueError) as e:
        SAMEConfig.from_official(cfg)
    assert str(e.value) == f"Stable Audio 3 config: {message}."


def test_absent_keys_take_the_official_defaults():
    """Keys the official constructors default (SAMEEncoder/SAMEDecoder, TransformerResamplingBlock,
    SoftNormBottleneck) may be left out, with the same values."""
    cfg = _tiny_official(windowed=True)
    for part in ("encoder", "decoder"):
        for key in ("dim_heads", "differential", "mask_noise", "variable_stride", "conv_mapping", "sinusoidal_blocks",
                    "dyt"):
            cfg["config"][part]["config"].pop(key, None)
    for key in ("noise_regularize", "auto_scale", "noise_augment_dim"):
        cfg["config"]["bottleneck"]["config"].pop(key)
    cfg.pop("chunked")
    got = SAMEConfig.from_official(cfg)
    assert (got.encoder.dim_heads, got.encoder.differential, got.encoder.mask_noise, got.encoder.variable_stride,
            got.decoder.conv_mapping, got.decoder.sinusoidal_blocks, got.encoder.ff_mult, got.encoder.chunk_size,
            got.encoder.mapping_bias) == (128, True, 0.0, False, False, 0, 3.0, 128, True)
    assert (got.noise_regularize, got.auto_scale, got.chunked) == (False, False, False)


def test_real_configs_build_official_shapes():
    """The six reconstructed production configs (spec/configs) give the spec's key shapes (meta device)."""
    spec = (FIXTURES.parent / "spec" / "configs") if FIXTURES is not None else None
    files = sorted(spec.glob("*.reconstructed_model_config.json")) if spec is not None and spec.is_dir() else []
    if not files:
        pytest.skip("spec/configs not found beside the fixtures")
    for path in files:
        cfg = SAMEConfig.from_official(json.loads(path.read_text()))
        medium = path.name.startswith("medium")
        w, depth = (1536, 12) if medium else (768, 6)
        assert (cfg.encoder.width, cfg.encoder.depth, cfg.latent_dim, cfg.chunked) == (w, depth, 256, True), path.name
        with torch.device("meta"):
            ae = SAMEAutoencoder(cfg)
        sd = ae.state_dict()
        assert sd["decoder.layers.3.mapping.weight_v"].shape == (512, w, 1 if medium else 3)
        assert sd["encoder.layers.0.transformers.0.self_attn.to_qkv.weight"].shape == (5 * w, w)
        assert sd["encoder.layers.0.transformers.0.ff.ff.0.proj.weight"].shape == (6 * w, w)
        assert sd["bottleneck.noise_scaling_factor"].shape == (1, 0, 1)
        sinus = [b.ff.ff[0].sinusoidal for b in ae.decoder.layers[3].transformers]
        assert sinus == ([False] * 5 + [True] * 7 if medium else [False] * 6), path.name
        assert cfg.windowed == medium and cfg.decoder.mask_noise == (0.1 if medium else 0.01)


# --- official weights ------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("model", MODELS)
def test_strict_load_key_set(model):
    official = _official_sd(model)
    ae = _model(model)  # load_state_dict(strict=True) inside
    assert set(ae.state_dict()) == set(official)
    for key, value in ae.state_dict().items():
        assert value.shape == official[key].shape, key
    sinus = [b.ff.ff[0].sinusoidal for b in ae.decoder.layers[3].transformers]
    assert sinus == ([False, True] if model == "tiny-medium" else [False, False])  # depth - i < sinusoidal_blocks


# --- golden parity ---------------------------------------------------------------------------


def _case_audio(case: dict) -> torch.Tensor:
    """The case's 44.1 kHz input as generate() prepares it: pad/crop to audio_sample_size, mono -> stereo."""
    audio = next(iter(_load(case, "inputs.safetensors").values()))  # (A, S)
    n = case["audio_sample_size"]
    audio = F.pad(audio[..., :n], (0, max(0, n - audio.shape[-1])))
    if audio.shape[0] == 1:
        audio = audio.repeat(2, 1)
    return audio[None]  # (1, 2, S)


def _has_trace(c: dict, key: str) -> bool:
    return key in c["trace"]


@needs_fixtures
@pytest.mark.parametrize(
    "model, name",
    # the 48 kHz case needs resampling first (pipeline's job); its decode is covered below
    _cases(lambda c: _has_trace(c, "pt.encode.00.out") and not _has_trace(c, "pt.encode.00.in_head")),
)
def test_encoder_parity(model, name):
    case = _case(model, name)
    trace = _load(case, "trace.safetensors")
    gen = torch.Generator().manual_seed(case["generate_kwargs"]["seed"])
    noise = torch.randn(case["rng_draws"][0]["shape"], generator=gen)
    assert torch.equal(noise, trace["rng.000"])  # same stream as the reference's manual_seed
    with torch.no_grad():
        latents = _model(model).encode(_case_audio(case), chunked=case["encode_chunked"], generator=gen)
    ref = trace["pt.encode.00.out"]
    assert latents.shape == ref.shape
    err = (latents - ref).abs().max().item()
    assert err <= TOL, f"{model}/{name}: max abs error {err:.3g}"


@needs_fixtures
@pytest.mark.parametrize("model, name", _cases(lambda c: _has_trace(c, "latents.final")))
def test_decoder_parity(model, name):
    case = _case(model, name)
    trace = _load(case, "trace.safetensors")
    gen = _replay(case, stop_caller="decode")  # initial noise, encoder and sampler draws
    latents = trace["latents.final"]
    chunked = case["latent_length"] >= CHUNK_LATENTS
    assert chunked == case["decode"].startswith("chunked")
    calls = []
    with torch.no_grad():
        audio = _model(model).decode(latents, chunked=True, generator=gen, on_chunk=lambda i, n: calls.append((i, n)))
    n_chunks = 2 if chunked else 1
    assert calls == [(i + 1, n_chunks) for i in range(n_chunks)]
    assert audio.shape == (latents.shape[0], 2, latents.shape[-1] * 4096)
    for b, valid in enumerate(case["valid_latents_per_item"]):  # what generate() does after decoding
        audio[b, :, valid * 4096:] = 0
    audio = audio.clamp(-1, 1)
    out = _load(case, "output.safetensors")
    if "audio" in out:
        ref = out["audio"]
        got = audio[..., :ref.shape[-1]]  # truncated to int(duration * 44100)
        assert got.shape == ref.shape
        err = (got - ref).abs().max().item()
    else:  # mixed durations: only slices of the full output are stored
        err = 0.0
        for s in case["output"]["stored"]:
            sel = audio[:, :, s["start"]:s["stop"]] if s["item"] == "all" else audio[s["item"], :, s["start"]:s["stop"]]
            err = max(err, (sel - out[s["key"]]).abs().max().item())
    assert err <= TOL, f"{model}/{name}: max abs error {err:.3g}"


@needs_fixtures
def test_decoder_needs_the_right_stream():
    """Sanity check of the parity test: one draw out of place breaks it (decode is stochastic)."""
    case = _case("tiny-small", "t2a_euler")
    latents = _load(case, "trace.safetensors")["latents.final"]
    ae = _model("tiny-small")
    with torch.no_grad():
        a = ae.decode(latents, chunked=True, generator=_replay(case, "decode"))
        b = ae.decode(latents, chunked=True, generator=_gen(case["generate_kwargs"]["seed"]))  # rng.000 not drawn
    assert (a - b).abs().max().item() > 1e-4


# --- attention -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [17, 1000, 2500])
def test_sliding_window_sdpa_matches_math(n):
    gen = _gen(n)
    q, k, v = (torch.randn(2, 3, n, 64, generator=gen) for _ in range(3))  # (B, H, N, D)
    ref = attention(q, k, v, window=(17, 17), backend="math")
    out = attention(q, k, v, window=(17, 17), backend="sdpa")
    assert out.shape == (2, 3, n, 64)
    assert (out - ref).abs().max().item() < 1e-5


def test_attention_backend_propagates_and_windowed_model_matches_math():
    ae = SAMEAutoencoder(SAMEConfig.from_official(_tiny_official(windowed=True))).eval().requires_grad_(False)
    ae.load_state_dict(_tiny(True).state_dict())
    latents = torch.randn(1, 8, 70, generator=_gen(1))  # 70 latents = 1190 tokens > one 1024-query chunk
    with torch.no_grad():
        ref = ae.decode(latents, chunked=False, generator=_gen(2))
        ae.attention_backend = "math"
        assert all(m.backend == "math" for m in ae.modules() if isinstance(m, Attention))
        dense = ae.decode(latents, chunked=False, generator=_gen(2))
    assert ae.attention_backend == "math"
    assert (ref - dense).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="unknown attention backend"):
        ae.attention_backend = "xformers"


# --- shapes, chunking, RNG hygiene -----------------------------------------------------------


@pytest.mark.parametrize("windowed", [False, True])
def test_round_trip_shapes(windowed):
    ae = _tiny(windowed)
    with torch.no_grad():
        for length, chunked in ((130, True), (130, False), (77, True), (77, False)):
            audio = ae.decode(torch.randn(2, 8, length, generator=_gen(length)), chunked=chunked, generator=_gen())
            assert audio.shape == (2, 2, length * 4096)
        z = ae.encode(torch.randn(2, 2, 130 * 4096, generator=_gen(3)), chunked=True, generator=_gen())
        assert z.shape == (2, 8, 130)
        z = ae.encode(torch.randn(1, 2, 77 * 4096 - 100, generator=_gen(4)), chunked=False, generator=_gen())
        assert z.shape == (1, 8, 78 if not windowed else 77)  # SAME-S pads to an even latent count


@pytest.mark.parametrize("windowed", [False, True])
def test_short_input_chunked_equals_unchunked(windowed):
    ae = _tiny(windowed)
    latents = torch.randn(1, 8, CHUNK_LATENTS - 2, generator=_gen(5))
    with torch.no_grad():
        a = ae.decode(latents, chunked=True, generator=_gen(6))
        b = ae.decode(latents, chunked=False, generator=_gen(6))
    assert torch.equal(a, b)


def test_chunk_stitching_layout(monkeypatch):
    """L = 130: chunks start at 0 and 2; chunk 1 overwrites from latent 2 + 16 on (reference rule)."""
    ae = _tiny(False)
    calls = []

    def fake_decode(latents, generator):
        calls.append(latents.shape[-1])
        return torch.full((1, 2, latents.shape[-1] * 4096), float(len(calls)))

    def fake_encode(audio, generator):
        calls.append(audio.shape[-1])
        return torch.full((1, 8, audio.shape[-1] // 4096), float(len(calls)))

    monkeypatch.setattr(ae, "_decode_once", fake_decode)
    monkeypatch.setattr(ae, "_encode_once", fake_encode)
    audio = ae.decode(torch.zeros(1, 8, 130), chunked=True, generator=_gen())
    assert calls == [128, 128]
    assert torch.all(audio[..., :18 * 4096] == 1) and torch.all(audio[..., 18 * 4096:] == 2)
    calls.clear()
    z = ae.encode(torch.zeros(1, 2, 130 * 4096), chunked=True, generator=_gen())
    assert calls == [128 * 4096] * 2
    assert torch.all(z[..., :18] == 1) and torch.all(z[..., 18:] == 2)
    calls.clear()  # L = 300: starts 0, 96, 172 (anchored); boundaries at 96 + 16 and 172 + 16
    ae.decode(torch.zeros(1, 8, 300), chunked=True, generator=_gen())
    assert calls == [128, 128, 128]


def test_bad_shapes_name_the_argument():
    ae = _tiny(True)
    with pytest.raises(ValueError, match="SAME encode: audio must be"):
        ae.encode(torch.zeros(2, 4096), chunked=False)
    with pytest.raises(ValueError, match="SAME encode: audio must be"):
        ae.encode(torch.zeros(1, 1, 4096), chunked=False)
    with pytest.raises(ValueError, match="SAME decode: latents must be"):
        ae.decode(torch.zeros(1, 32, 4), chunked=False)
    with pytest.raises(ValueError, match="SAME decode: latents must be"):
        ae.decode(torch.zeros(8, 4), chunked=False)


def test_generator_controls_all_randomness():
    ae = _tiny(True)
    latents = torch.randn(1, 8, 6, generator=_gen(7))
    audio = torch.randn(1, 2, 6 * 4096, generator=_gen(8))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with torch.no_grad():
        a = ae.decode(latents, chunked=False, generator=_gen(9))
        b = ae.decode(latents, chunked=False, generator=_gen(9))
        ae.decode(latents, chunked=False)  # fresh private generator
        ae.encode(audio, chunked=False)
        c = ae.decode(latents, chunked=False, generator=_gen(10))
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cast_to_bfloat16_runs():
    ae = SAMEAutoencoder(SAMEConfig.from_official(_tiny_official(windowed=False))).eval().requires_grad_(False)
    ae.load_state_dict(_tiny(False).state_dict())
    ae = ae.to(torch.bfloat16)
    with torch.no_grad():
        z = ae.encode(torch.randn(1, 2, 4 * 4096, generator=_gen(11)), chunked=False, generator=_gen())
        audio = ae.decode(z, chunked=False, generator=_gen())
    assert z.dtype == audio.dtype == torch.bfloat16 and audio.shape == (1, 2, 4 * 4096)
    assert torch.isfinite(audio.float()).all()
