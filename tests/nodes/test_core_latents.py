"""Core's audio latents in, the pack's latents out: SA3 Sampler and SA3 Decode take core's
EmptyLatentAudio (the real node of this ComfyUI) and a VAEEncodeAudio-shaped dict (SAME latents
without the pack's keys, as core's SA3 VAE makes them in newer ComfyUI); anything else is refused
with a message saying what to use."""

from __future__ import annotations

import pytest
import torch
from comfy_extras.nodes_audio import EmptyLatentAudio

from tests.nodes.conftest import load_handle, load_reference, nodes
from tests.nodes.test_graph_parity import _wave, assert_same

SMALL = "tiny-small"
DEFAULT = "default for the model"


def _encode(h, duration=3.0, **kw):
    return nodes.SA3TextEncode.execute(model=h, prompt="a dog barking", negative_prompt="", duration=duration,
                                       one_prompt_per_line=False, durations="", **kw).args


def _sample(h, pos, **kw):
    (out,) = nodes.SA3Sampler.execute(model=h, positive=pos, seed=7, steps=4, cfg=1.0, sampler=DEFAULT,
                                      apg_scale=1.0, **kw).args
    return out


def _decode(h, latent, trim=True):
    return nodes.SA3Decode.execute(model=h, latent=latent, chunked="auto", trim=trim).args[0]


def _core_empty(seconds: float, batch: int) -> dict:
    (latent,) = EmptyLatentAudio().generate(seconds, batch)
    return latent


def test_our_latent_keeps_what_core_audio_nodes_read():
    h = load_handle(SMALL)
    pos, _ = _encode(h)
    out = _sample(h, pos)
    assert out["type"] == "audio" and out["samples"].shape == (1, h.config.latent_channels, 98)
    assert "sa3_sample_rate" not in out and out["sa3_durations"] == [3.0]


@pytest.mark.parametrize("name", ["tiny-small", "tiny-medium"])
def test_core_empty_latent_audio_of_the_official_length_gives_generate(name):
    """9.1 s in core's EmptyLatentAudio are 196 frames at 2048 samples, i.e. 98 SA3 frames: the
    length generate() plans for 3 s. Its batch size is used, its values are not."""
    h, ref = load_handle(name), load_reference(name)
    pos, neg = _encode(h)
    latent = _core_empty(9.1, 2)
    assert latent["samples"].shape == (2, 64, 196) and set(latent) == {"samples", "type"}
    audio = _decode(h, _sample(h, pos, negative=neg, latent=latent))
    assert_same(audio, ref.generate("a dog barking", duration=3.0, steps=4, seed=7, batch_size=2))
    newer = {**latent, "downscale_ratio_temporal": 2048}  # newer ComfyUI names the ratio
    assert_same(_decode(h, _sample(h, pos, negative=neg, latent=newer)), audio["waveform"])
    channels = h.config.latent_channels  # an empty latent at SA3's own frame rate
    same_rate = {"samples": torch.zeros(2, channels, 98), "type": "audio", "downscale_ratio_temporal": 4096}
    assert_same(_decode(h, _sample(h, pos, negative=neg, latent=same_rate)), audio["waveform"])


def test_core_empty_latent_sets_the_length():
    h = load_handle(SMALL)
    pos, _ = _encode(h, duration=2.0)
    out = _sample(h, pos, latent=_core_empty(20.0, 1))
    assert out["samples"].shape[-1] == round(20.0 * 44100 / 4096)  # 215 frames, as core converts it
    assert out["sa3_durations"] == [2.0]  # the conditioning's: decode silences and trims past it
    audio = _decode(h, out)
    assert audio["waveform"].shape == (1, 2, 2 * 44100)
    untrimmed = _decode(h, out, trim=False)["waveform"]
    assert untrimmed.shape[-1] == 215 * 4096 and not untrimmed[..., (22 + 129) * 4096:].any()  # 2 s + 6 s headroom
    with pytest.raises(ValueError) as e:
        _sample(h, pos, latent=_core_empty(1.0, 1))
    assert str(e.value) == (
        "Stable Audio 3 Sampler: latent is 1.02 s long, but positive asks for 2 s (expected a latent of 2 to 120.00 "
        "s). Set the latent's seconds to the SA3 Text Encode duration, or leave latent unconnected: the sampler "
        "sizes it from SA3 Text Encode.")
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: latent is 130.03 s long, longer than this model "
                                         r"makes \(expected at most 120.00 s\)\."):
        _sample(h, pos, latent=_core_empty(130.0, 1))


def test_vae_encode_audio_shaped_latents_into_sampler_and_decode():
    """SAME latents without the pack's keys: used as they are (SAME-S: the same values SA3 Encode
    Audio gives), cut or zero-padded to the generation's length."""
    h, ref = load_handle(SMALL), load_reference(SMALL)
    wave = _wave(9.1, 44100, 2, seed=1)[..., : 98 * 4096]  # exactly the 3 s plan's length
    latents = h.model.autoencoder.encode(wave[None], chunked=False, generator=None)  # (1, C, 98)
    core = {"samples": latents}  # what VAEEncodeAudio returns: no type, no sa3_* keys
    pos, _ = _encode(h)
    audio = _decode(h, _sample(h, pos, init_latent=core, init_noise_level=0.7))
    assert_same(audio, ref.generate("a dog barking", duration=3.0, steps=4, seed=7, init_audio=(44100, wave),
                                    init_noise_level=0.7))
    short = {"samples": latents[..., :40], "type": "audio"}
    assert _sample(h, pos, init_latent=short, init_noise_level=0.7)["samples"].shape[-1] == 98
    decoded = _decode(h, core)  # the whole latent is audio: 98 frames of 4096 samples, not trimmed
    assert decoded["sample_rate"] == 44100 and decoded["waveform"].shape == (1, 2, 98 * 4096)


@pytest.mark.parametrize("latent, message", [
    ({"samples": torch.ones(1, 64, 22), "type": "audio"},
     "Stable Audio 3 Sampler: latent holds latents of another audio model (got 64 channels at unknown samples per "
     "frame, expected {c} at 4096). Connect SA3 Encode Audio, core's EmptyLatentAudio or core's VAEEncodeAudio with "
     "the SA3 VAE, or leave it unconnected."),
    ({"samples": torch.ones(1, 4, 8, 8)},
     "Stable Audio 3 Sampler: latent is not an audio latent (got shape (1, 4, 8, 8), expected (batch, channels, "
     "frames))."),
    ("latent", "Stable Audio 3 Sampler: latent is not a LATENT (got str, expected a dict with 'samples')."),
    ({"samples": torch.zeros(1, 3, 98), "type": "audio", "sa3_durations": [3.0]},
     "Stable Audio 3 Sampler: latent was made for another model (got 3 channels, expected {c}). Make it again with "
     "this model."),
])
def test_foreign_latents_are_refused_saying_what_to_use(latent, message):
    h = load_handle(SMALL)
    pos, _ = _encode(h)
    with pytest.raises(ValueError) as e:
        _sample(h, pos, latent=latent)
    assert str(e.value).startswith(message.format(c=h.config.latent_channels)), str(e.value)


def test_empty_latents_are_not_sources_or_audio():
    h = load_handle(SMALL)
    pos, _ = _encode(h)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: init_latent is an empty latent \(got all zeros, "
                                         r"expected encoded audio\)\. Connect the source audio to init_audio, or "
                                         r"through SA3 Encode Audio\.$"):
        _sample(h, pos, init_latent=_core_empty(9.1, 1))
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Decode: latent is empty \(got all zeros, expected sampled "
                                         r"or encoded latents\)\. Decode the output of SA3 Sampler\."):
        _decode(h, _core_empty(9.1, 1))


def test_decode_refuses_latents_that_do_not_fit_the_model():
    h = load_handle(SMALL)
    channels = h.config.latent_channels
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Decode: latent has 1400 frames, more than this model makes "
                                         r"\(expected at most 1292 frames\)\. Decode the output of SA3 Sampler"):
        _decode(h, {"samples": torch.ones(1, channels, 1400)})  # a VAEEncodeAudio latent longer than 120 s
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Decode: latent has 10 frames, too few for 3 s\. Decode "
                                         r"the output of SA3 Sampler or SA3 Encode Audio with this model\.$"):
        _decode(h, {"samples": torch.ones(1, channels, 10), "type": "audio", "sa3_durations": [3.0]})


def _ours(h, **change) -> dict:
    """A latent as SA3 Sampler makes it (zeros: the values do not matter for these checks)."""
    latent = {"samples": torch.ones(1, h.config.latent_channels, 98), "type": "audio", "sa3_durations": [3.0]}
    latent.update(change)
    return latent


@pytest.mark.parametrize("make, message", [
    (lambda h: _ours(h, samples=torch.full((1, h.config.latent_channels, 98), float("nan"))),
     "latent values must be finite numbers (got {n:,} NaN or infinite of {n:,})."),
    (lambda h: {"samples": torch.ones(1, h.config.latent_channels, 98).index_fill_(2, torch.tensor([5]), float("inf"))},
     "latent values must be finite numbers (got {c:,} NaN or infinite of {n:,})."),
    (lambda h: _ours(h, samples=torch.ones(1, h.config.latent_channels, 98, dtype=torch.int32)),
     "latent samples must be real floating-point numbers (got torch.int32)."),
    (lambda h: _ours(h, sa3_durations="3"), "latent sa3_durations must be a list of 1 to 64 durations (got '3')."),
    (lambda h: _ours(h, sa3_durations=[float("nan")]),
     "latent sa3_durations must be a number above 0 and at most 384 seconds (got nan)."),
    (lambda h: _ours(h, sa3_durations=["x"]),
     "latent sa3_durations must be a number above 0 and at most 384 seconds (got 'x')."),
    (lambda h: _ours(h, sa3_rng={"state": "junk", "device": "cpu"}),
     "latent sa3_rng is not a random-stream state saved by SA3 Sampler (got a dict). Set decoder_seed"),
])
def test_decode_refuses_broken_latents_before_decoding(make, message):
    """LoadLatent of a broken or hand-made file, or latent arithmetic gone wrong: a clear error, never
    junk audio (today's decode of NaN latents saved full-scale noise)."""
    h = load_handle(SMALL)
    latent = make(h)
    n, c = 1 * h.config.latent_channels * 98, h.config.latent_channels
    with pytest.raises(ValueError) as e:
        _decode(h, latent)
    assert str(e.value).startswith("Stable Audio 3 Decode: " + message.format(n=n, c=c)), str(e.value)


def test_core_empty_latent_with_an_absurd_batch_names_the_batch():
    h = load_handle(SMALL)
    pos, _ = _encode(h)
    latent = {"samples": torch.zeros(4096, 64, 2), "type": "audio"}  # EmptyLatentAudio(batch_size=4096), short
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: latent batch size must be an integer from 1 to 64 "
                                         r"\(got 4096\)\. Lower the batch size of the node that made the latent\.$"):
        _sample(h, pos, latent=latent)


def test_non_finite_sources_are_refused_by_the_sampler():
    h = load_handle(SMALL)
    pos, _ = _encode(h)
    source = {"samples": torch.full((1, h.config.latent_channels, 98), float("-inf"))}
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Sampler: init_latent values must be finite numbers"):
        _sample(h, pos, init_latent=source, init_noise_level=0.5)
