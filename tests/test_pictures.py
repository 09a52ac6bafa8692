"""nodes/pictures.py: picture shape and range, where tones and silence land, shaded regions in seconds,
the mel filterbank (equal to torchaudio's), the text labels, PNG output and latent previews.

Legend: B batch, C channels, S samples, H/W image height/width, L latent frames.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torchaudio
from PIL import Image

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import file_module

sg = file_module.load("nodes/pictures.py")

SR = 44100


def tone(freq: float, seconds: float, amplitude: float = 0.5, channels: int = 2, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()[None].repeat(channels, 1)  # (C, S)


def spec_box(image: torch.Tensor, layout: sg.Layout) -> torch.Tensor:
    """(B, rows, cols) gray levels of the spectrogram box."""
    return image[:, layout.spec_y0:layout.spec_y1, layout.plot_x0:layout.plot_x1].mean(-1)


# --- shape and range ---------------------------------------------------------------------------


def test_image_shape_range_and_dtype():
    audio = torch.stack([tone(440, 2.0), tone(880, 2.0) * 0.1])  # (2, 2, S)
    image = sg.render_spectrogram(audio, SR, height=200, width=640)
    assert image.shape == (2, 200, 640, 3)
    assert image.dtype == torch.float32 and image.device.type == "cpu"
    assert image.min() >= 0 and image.max() <= 1
    assert not torch.equal(image[0], image[1])  # one picture per item


def test_mono_2d_input_and_width_from_px_per_second():
    image, layout = sg.render_spectrogram(tone(440, 3.0, channels=1, sr=22050), 22050, width=None, px_per_second=100,
                                          return_layout=True)
    assert image.shape[0] == 1 and image.shape[1:] == (sg.SpectrogramOptions().height, layout.width, 3)
    assert layout.plot_width == 300  # 3 s at 100 columns per second
    assert layout.fmax == 11025


def test_waveform_strip_is_optional():
    _, with_wave = sg.render_spectrogram(tone(440, 1.0), SR, return_layout=True)
    _, without = sg.render_spectrogram(tone(440, 1.0), SR, waveform=False, return_layout=True)
    assert with_wave.wave_y1 > with_wave.wave_y0 and without.wave_y1 == without.wave_y0
    assert without.spec_y1 - without.spec_y0 > with_wave.spec_y1 - with_wave.spec_y0


# --- content -----------------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [250.0, 1000.0, 5000.0])
def test_pure_tone_lights_its_row(freq):
    image, layout = sg.render_spectrogram(tone(freq, 2.0), SR, colormap="gray", waveform=False, return_layout=True)
    box = spec_box(image, layout)[0]  # (rows, cols)
    middle = box[:, box.shape[1] // 4: 3 * box.shape[1] // 4]  # away from the edges
    brightest = int(middle.mean(dim=1).argmax())
    expected = layout.y_of_hz(freq) - layout.spec_y0
    assert abs(brightest - expected) <= 2, (brightest, expected)
    assert middle.mean(dim=1)[brightest] > 0.8  # 0.5 amplitude = -6 dBFS: near the top of an 80 dB scale


def test_silent_region_is_dark():
    audio = torch.cat([tone(1000, 1.0), torch.zeros(2, 2 * SR)], dim=1)  # 1 s tone, 2 s silence
    image, layout = sg.render_spectrogram(audio, SR, colormap="gray", return_layout=True)
    box = spec_box(image, layout)[0]
    loud = box[:, layout.x_of_seconds(0.2) - layout.plot_x0: layout.x_of_seconds(0.8) - layout.plot_x0]
    quiet = box[:, layout.x_of_seconds(1.2) - layout.plot_x0: layout.x_of_seconds(2.9) - layout.plot_x0]
    assert loud.max() > 0.8
    assert quiet.max() == 0  # -120 dB, below the -80 dB floor: the darkest colour
    # waveform strip: a flat centre line in the silence
    wave = image[0, layout.wave_y0:layout.wave_y1, layout.x_of_seconds(1.5)]  # (rows, 3)
    lit = (wave - torch.tensor(sg.WAVE_BACKGROUND)).abs().sum(-1) > 0.1
    assert 1 <= int(lit.sum()) <= 2


def test_normalize_uses_each_items_peak():
    audio = torch.stack([tone(1000, 1.0, amplitude=0.5), tone(1000, 1.0, amplitude=0.005)])
    fixed, layout = sg.render_spectrogram(audio, SR, colormap="gray", waveform=False, return_layout=True)
    scaled = sg.render_spectrogram(audio, SR, colormap="gray", waveform=False, normalize=True)
    f, s = spec_box(fixed, layout), spec_box(scaled, layout)
    assert f[1].max() < f[0].max() - 0.4  # 40 dB quieter on the shared 0 dBFS scale
    assert abs(float(s[1].max()) - float(s[0].max())) < 0.02  # both reach the top when normalised


def test_level_scale_full_scale_sine_reads_about_0_dbfs():
    db = sg.mel_spectrogram_db(tone(1000, 1.0, amplitude=1.0)[None], SR)  # (1, M, N)
    peak = float(db[..., 10:-10].amax(dim=1).median())
    assert -3.0 < peak < 0.5
    silence = sg.mel_spectrogram_db(torch.zeros(1, 2, SR), SR)
    assert float(silence.max()) == pytest.approx(-120.0)


# --- shaded regions ----------------------------------------------------------------------------


def tinted_columns(row: torch.Tensor, background, layout: sg.Layout) -> torch.Tensor:
    """Image columns of the plot whose colour in ``row`` (W, 3) differs from ``background``."""
    plot = row[layout.plot_x0:layout.plot_x1]
    changed = (plot - torch.tensor(background)).abs().sum(-1) > 1e-6
    return changed.nonzero().flatten() + layout.plot_x0


def test_shaded_regions_match_seconds_and_have_a_legend():
    silence = torch.zeros(1, 2, 4 * SR)  # black spectrogram with gray: the tint is all that shows
    _, layout = sg.render_spectrogram(silence, SR, colormap="gray", return_layout=True)
    shaded, layout_r = sg.render_spectrogram(silence, SR, colormap="gray", regions=[(1.0, 2.5)], return_layout=True)
    cols = tinted_columns(shaded[0, layout_r.spec_y0 + 5], (0.0, 0.0, 0.0), layout_r)
    x0, x1 = layout_r.x_of_seconds(1.0), layout_r.x_of_seconds(2.5)
    assert x0 == layout_r.plot_x0 + round(layout_r.plot_width / 4)  # 1 s of 4 s
    assert torch.equal(cols, torch.arange(x0, x1))
    inside = shaded[0, layout_r.spec_y0 + 5, layout_r.x_of_seconds(1.75)]
    assert torch.allclose(inside, torch.tensor(sg.REGION_COLOR) * sg.REGION_ALPHA, atol=1e-6)
    # the waveform strip is shaded over the same columns
    wcols = tinted_columns(shaded[0, layout_r.wave_y0 + 2], sg.WAVE_BACKGROUND, layout_r)
    assert torch.equal(wcols, cols)
    # legend: a top row exists only with regions and holds text pixels
    assert layout_r.wave_y0 > layout.wave_y0
    legend = shaded[0, :layout_r.wave_y0]
    assert ((legend - torch.tensor(sg.TEXT_COLOR)).abs().sum(-1) < 1e-6).sum() > 50


def test_regions_per_item_and_from_a_latent_mask():
    spf = 4096 / SR  # seconds per latent frame
    mask = torch.ones(2, 1, 40)
    mask[0, :, 10:20] = 0
    mask[1, :, 30:] = 0
    regions = sg.regions_from_mask(mask, spf)
    assert regions == [[(10 * spf, 20 * spf)], [(30 * spf, 40 * spf)]]
    audio = torch.zeros(2, 2, 40 * 4096)
    image, layout = sg.render_spectrogram(audio, SR, colormap="gray", regions=regions, return_layout=True)
    for b, ((start, end),) in enumerate(regions):
        cols = tinted_columns(image[b, layout.spec_y0 + 3], (0.0, 0.0, 0.0), layout)
        assert torch.equal(cols, torch.arange(layout.x_of_seconds(start), layout.x_of_seconds(end)))


def test_region_errors_follow_the_error_shape():
    with pytest.raises(ValueError, match=r"^Stable Audio 3 spectrogram: invalid region \(got \(3\.0, 1\.0\), "
                                         r"expected .*\)\. Swap or fix the bounds\.$"):
        sg.render_spectrogram(torch.zeros(1, 2, SR), SR, regions=[(3.0, 1.0)])
    with pytest.raises(ValueError, match=r"regions given for 3 items \(got 3, expected 1 or 2\)"):
        sg.normalize_regions([[(0, 1)], [(1, 2)], [(2, 3)]], 2)


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"height": 10}, r"height out of range \(got 10, expected 64\.\.4096 pixels\)\. Change height\.$"),
    ({"colormap": "jet"}, r"unknown colour map \(got 'jet', expected one of \['gray', 'magma', 'viridis'\]\)"),
    ({"fmin": 5000, "fmax": 1000}, r"invalid frequency range \(got \(5000, 1000\), expected 0 <= fmin"),
    ({"db_floor": 5}, r"db_floor out of range \(got 5, expected -200\.\.-1 dB\)\. Change db_floor\.$"),
    ({"width": None, "px_per_second": None}, r"px_per_second out of range \(got None"),
])
def test_option_errors(overrides, message):
    with pytest.raises(ValueError, match=r"^Stable Audio 3 spectrogram: " + message):
        sg.render_spectrogram(torch.zeros(1, 2, SR), SR, **overrides)


def test_frequency_range_and_colormaps():
    audio = tone(3000, 1.0)
    _image, layout = sg.render_spectrogram(audio, SR, fmin=1000, fmax=8000, colormap="viridis", return_layout=True)
    assert (layout.fmin, layout.fmax) == (1000.0, 8000.0)
    assert layout.y_of_hz(8000) == layout.spec_y0 and layout.y_of_hz(1000) == layout.spec_y1 - 1
    for name, table in sg.COLORMAPS.items():
        ends = sg.apply_colormap(torch.tensor([0.0, 1.0]), name)
        assert torch.allclose(ends, torch.tensor([table[0], table[-1]]))


def test_axis_ticks_are_readable():
    assert sg._time_ticks(10.0, 900, 60) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert sg._time_ticks(190.0, 900, 60)[:3] == [0, 15, 30]
    assert [sg._seconds_label(t) for t in (0, 0.5, 12)] == ["0s", "0.5s", "12s"]
    assert [sg._freq_label(f) for f in (200, 1000, 2500, 20000)] == ["200Hz", "1kHz", "2.5kHz", "20kHz"]


# --- mel filterbank ----------------------------------------------------------------------------


@pytest.mark.parametrize("n_fft, n_mels, fmin, fmax, sr", [(2048, 128, 0.0, 22050.0, 44100), (1024, 64, 50.0, 8000.0,
                                                                                              16000)])
def test_mel_filterbank_equals_torchaudio(n_fft, n_mels, fmin, fmax, sr):
    """The reason the filterbank is ours: torchaudio's matrix, without depending on torchaudio."""
    ours = sg.mel_filterbank(n_fft // 2 + 1, fmin, fmax, n_mels, sr)
    theirs = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, fmin, fmax, n_mels, sr)
    assert ours.shape == theirs.shape == (n_fft // 2 + 1, n_mels)
    torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=0)
    assert (ours.amax(dim=0) > 0).all()  # no empty band at these sizes


# --- text and files ----------------------------------------------------------------------------


def _lit(canvas: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: pixels the text touched."""
    return canvas.abs().sum(-1) > 0


def test_labels_are_drawn_where_asked_and_scale():
    canvas = torch.zeros(40, 120, 3)
    sg.draw_labels(canvas, [sg.Label("12.5s", 10, 5, color=(1.0, 1.0, 1.0))], scale=1)
    rows, cols = _lit(canvas).nonzero().unbind(1)
    width, height = sg.text_size("12.5s", 1)
    assert 10 <= int(cols.min()) <= 11 and int(cols.max()) <= 10 + width
    # digits stand on the box's bottom row (one anti-aliased row may reach above the box)
    assert 4 <= int(rows.min()) <= 6 and int(rows.max()) == 5 + height - 1
    assert canvas.max() > 0.9 and 0.0 < float(canvas[canvas > 0].min()) < 0.5  # anti-aliased edges
    assert sg.text_size("12.5s", 2)[0] > 1.8 * width and sg.text_size("12.5s", 2)[1] == 2 * height


def test_label_alignment_and_clipping():
    right, centre = torch.zeros(30, 100, 3), torch.zeros(30, 100, 3)
    sg.draw_labels(right, [sg.Label("1kHz", 60, 2, align="right")], scale=1)
    sg.draw_labels(centre, [sg.Label("1kHz", 60, 2, align="center")], scale=1)
    assert int(_lit(right).nonzero()[:, 1].max()) <= 60
    cols = _lit(centre).nonzero()[:, 1]
    assert int(cols.min()) < 60 < int(cols.max())
    edge = torch.zeros(10, 20, 3)
    sg.draw_labels(edge, [sg.Label("clipped text", 15, 5)], scale=1)  # mostly off the canvas: no error
    assert _lit(edge).any()


def test_png_file_holds_the_image(tmp_path):
    image = sg.render_spectrogram(tone(1000, 0.5), SR, height=96, width=160)
    path = sg.save_png(image, tmp_path / "x.png")  # the first of a batch
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (160, 96)
        pixels = torch.from_numpy(np.asarray(png).copy())
    assert torch.equal(pixels, (image[0] * 255).round().to(torch.uint8))
    with pytest.raises(ValueError, match=r"PNG needs one image \(got \(96, 160\), expected \(H, W, 3\)\)"):
        sg.save_png(image[0, :, :, 0], tmp_path / "y.png")


# --- latent previews ---------------------------------------------------------------------------


class CountingDecoder(torch.nn.Module):
    """A stand-in SAME: (B, C, L) -> (B, 2, L * 8) sine-ish audio, drawing noise like SAME does."""

    samples_per_latent = 8

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def decode(self, latents, *, chunked, generator):
        self.calls.append((tuple(latents.shape), chunked, generator))
        noise = torch.randn(latents.shape, generator=generator)
        x = (latents + 1e-3 * noise).repeat_interleave(self.samples_per_latent, dim=-1)  # (B, C, S)
        return torch.tanh(x[:, :2])


def test_preview_decodes_only_the_first_seconds_with_a_private_generator():
    decoder = CountingDecoder()
    latents = torch.randn(3, 4, 100_000)
    before = latents.clone()
    state = torch.get_rng_state()
    image = sg.preview_from_latents(decoder, latents, sample_rate=SR, seconds=2.0, items=1)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(latents, before)  # the sampler's tensor is not modified
    (shape, chunked, generator), = decoder.calls
    assert shape == (1, 4, math.ceil(2.0 * SR / 8)) and chunked is False
    assert generator.initial_seed() == 0
    assert image.shape[0] == 1 and image.shape[-1] == 3
    again = sg.preview_from_latents(decoder, latents, sample_rate=SR, seconds=2.0, items=1)
    assert torch.equal(image, again)  # deterministic


def test_preview_with_the_tiny_fixture_autoencoder():
    from tests.conftest import load_model

    model = load_model("tiny-small")
    latents = torch.randn(1, model.config.latent_channels, 40, generator=torch.Generator().manual_seed(0))
    image = sg.preview_from_latents(model.autoencoder, latents, seconds=2.0)
    assert image.shape == (1, 256, 768, 3) and 0 <= image.min() and image.max() <= 1


def test_a_width_from_px_per_second_is_bounded_before_drawing():
    """A long clip at many columns per second would ask for a picture of millions of pixels: refused
    with the numbers, like an explicit width over the maximum, before the canvas is allocated."""
    long_clip = torch.zeros(1, 1, 44100 * 600).expand(1, 2, -1)  # 10 minutes, no memory of its own
    with pytest.raises(ValueError, match=r"^Stable Audio 3 spectrogram: px_per_second 200 makes a picture "
                                         r"120,\d{3} pixels wide for this 600 s clip \(got 120,\d{3}, expected at most "
                                         r"16,384\)\. Lower px_per_second or set a width\.$"):
        sg.render_spectrogram(long_clip, 44100, width=None, px_per_second=200.0)
    assert sg.render_spectrogram(long_clip[..., :44100 * 60], 44100, width=None, px_per_second=200.0).shape[2] < 16384
