"""Pre-encoded training latents equal the official ``pre_encode_dataset.py``'s: every clip
zero-padded to ``sample_size`` (here a stand-in far past the encoder's reach), encoded unchunked
and cut after its last valid frame (ceil(S / 4096) frames); the per-step crop range follows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sa3.audio import write_audio
from sa3.training_data import PHASE_FLIP_P, EncodedClip, crop_latents, encode_clip_audio, load_clip, tail_latents
from tests.conftest import load_model

SPL = 4096
OFFICIAL_STAND_IN = 48  # latent frames every clip is padded to: well past any clip here plus the reach


def _noise_clip(path: Path, samples: int, rate: int) -> None:
    audio = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples)) * 0.3
    write_audio(path, audio.clamp(-1, 1), rate)


def official_encode(autoencoder, audio: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``pre_encode_dataset.py`` on one clip: pad to sample_size with zeros, encode unchunked,
    nearest-sample the audio-rate mask to the latent length, cut after its last 1."""
    n = audio.shape[-1]
    padded = torch.zeros(1, 2, OFFICIAL_STAND_IN * SPL)
    padded[0, :, :n] = audio
    mask = torch.zeros(1, 1, OFFICIAL_STAND_IN * SPL)
    mask[..., :n] = 1
    z = autoencoder.encode(padded, chunked=False, generator=generator)[0].float()
    mask = torch.nn.functional.interpolate(mask, size=z.shape[-1], mode="nearest")[0, 0]
    return z[:, :int(mask.nonzero().max()) + 1]


# samples at the source rate -> latent frames at 44.1 kHz: odd and even counts, both rates
CLIPS = [(27 * SPL - 1000, 44100), (28 * SPL - 5, 44100), (33 * SPL - 4095, 44100), (34 * SPL, 44100),
         ((27 * SPL - 2000) * 480 // 441, 48000), ((34 * SPL - 100) * 480 // 441, 48000)]


@pytest.mark.parametrize("name", ["tiny-small", "tiny-medium"])
def test_latents_equal_the_official_pre_encoding(name, tmp_path):
    autoencoder = load_model(name).autoencoder
    assert tail_latents(autoencoder.config) > 0
    counts = set()
    for samples, rate in CLIPS:
        path = tmp_path / f"c{samples}_{rate}.wav"
        _noise_clip(path, samples, rate)
        clip = load_clip(path, "noise")
        n = clip.audio.shape[-1]
        valid = math.ceil(n / SPL)
        counts.add((valid % 2, rate))
        (ours,), _ = encode_clip_audio(autoencoder, [clip], 4, torch.Generator().manual_seed(1))
        # same stream: the polarity draw, then SAME-L's mask noise (the same numbers for the frames kept)
        g = torch.Generator().manual_seed(1)
        sign = -1 if float(torch.rand((), generator=g)) < PHASE_FLIP_P else 1
        ref = official_encode(autoencoder, sign * clip.audio, g)
        assert ours.shape == ref.shape == (autoencoder.config.latent_dim, valid), (name, samples, rate)
        err = float((ours - ref).abs().max())
        assert err < 1e-5, (name, samples, rate, err)
    assert counts == {(0, 44100), (1, 44100), (0, 48000), (1, 48000)}  # odd and even at both rates


def test_silence_latent_is_the_official_silence_start():
    autoencoder = load_model("tiny-small").autoencoder
    _, silence = encode_clip_audio(autoencoder, [], 5, None)
    ref = official_encode(autoencoder, torch.zeros(2, OFFICIAL_STAND_IN * SPL), torch.Generator())
    assert silence.shape == (autoencoder.config.latent_dim, 5)
    assert float((silence - ref[:, :5]).abs().max()) < 1e-5


def test_crop_range_is_the_official_one():
    """Official: start = randint(0, last_valid - crop) inclusive when last_valid > crop."""
    clip = EncodedClip(name="c", latents=torch.arange(27.0)[None].repeat(2, 1), prompt=torch.zeros(1, 1),
                       seconds_total=3)
    starts = {int(crop_latents(clip, torch.zeros(2, 4), 20, torch.Generator().manual_seed(s))[0][0, 0])
              for s in range(400)}
    assert starts == set(range(0, 26 - 20 + 1))
