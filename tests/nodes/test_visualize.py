"""SA3 Spectrogram node and the sampler's live preview: IMAGE shape/range, shaded inpaint regions,
messages, and previews on vs off giving bit-identical audio (same random stream) on the tiny models.

Legend: B batch, C channels, S samples, H/W image height/width.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from tests.nodes.conftest import PACK, load_handle, nodes
from tests.nodes.test_graph_parity import run_graph

visualize = importlib.import_module(f"{PACK}.nodes.visualize")
pictures = visualize.pictures
SR = 44100
DEFAULTS = dict(height=256, width=640, px_per_second=50.0, colormap="gray", fmin=0.0, fmax=0.0, db_floor=-80.0,
                normalize=False, waveform=True)


def _tone(freq: float, seconds: float, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float()


def _spectrogram(audio: dict, **kwargs) -> torch.Tensor:
    (image,) = visualize.SA3Spectrogram.execute(audio=audio, **(DEFAULTS | kwargs)).args
    return image


# --- the node ----------------------------------------------------------------------------------


def test_image_is_one_picture_per_clip():
    wave = torch.stack([_tone(440, 2.0, 32000).repeat(2, 1), _tone(3000, 2.0, 32000).repeat(2, 1)])  # (2, 2, S)
    image = _spectrogram({"waveform": wave, "sample_rate": 32000}, colormap="magma")
    assert image.shape == (2, 256, 640, 3) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    mono = _spectrogram({"waveform": _tone(440, 1.0)[None, None], "sample_rate": SR}, width=0, px_per_second=200)
    assert mono.shape[0] == 1 and mono.shape[2] > 200  # width follows the duration


def test_inpaint_mask_regions_are_shaded():
    (mask,) = nodes.SA3InpaintMask.execute(mode="regions", regions="1-2, 3-3.5", keep_seconds=0.0).args
    audio = {"waveform": torch.zeros(1, 2, 4 * SR), "sample_rate": SR}
    shaded = _spectrogram(audio, inpaint_mask=mask)
    same = _spectrogram(audio, regions="1-2, 3-3.5")
    assert torch.equal(shaded, same)  # the mask's regions and the same text regions draw the same picture
    options = pictures.SpectrogramOptions(height=256, width=640)
    layout = pictures.compute_layout(options, 4.0, SR, with_legend=True)
    row = shaded[0, layout.spec_y0 + 4, layout.plot_x0:layout.plot_x1].sum(-1) > 0  # silence is black in gray
    cols = row.nonzero().flatten() + layout.plot_x0
    expected = torch.cat([torch.arange(layout.x_of_seconds(1), layout.x_of_seconds(2)),
                          torch.arange(layout.x_of_seconds(3), layout.x_of_seconds(3.5))])
    assert torch.equal(cols, expected)
    plain = _spectrogram(audio)
    assert plain[0, :, layout.plot_x0:layout.plot_x1].sum() < shaded[0, :, layout.plot_x0:layout.plot_x1].sum()


def test_continuation_mask_shades_to_the_end():
    """The continuation ends where the audio does (the generation's duration)."""
    (mask,) = nodes.SA3InpaintMask.execute(mode="continuation", regions="", keep_seconds=1.0).args
    image = _spectrogram({"waveform": torch.zeros(1, 2, 3 * SR), "sample_rate": SR}, inpaint_mask=mask)
    layout = pictures.compute_layout(pictures.SpectrogramOptions(height=256, width=640), 3.0, SR, True)
    row = image[0, layout.spec_y0 + 4, layout.plot_x0:layout.plot_x1].sum(-1) > 0
    cols = row.nonzero().flatten() + layout.plot_x0
    assert torch.equal(cols, torch.arange(layout.x_of_seconds(1.0), layout.plot_x1))


def test_messages_follow_the_error_shape():
    audio = {"waveform": torch.zeros(1, 2, SR), "sample_rate": SR}
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Spectrogram: regions entry 'x' is not a region \(got 'x', "
                                         r"expected 'start-end' in seconds.*\)\. Write each region as start-end\.$"):
        _spectrogram(audio, regions="x")
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Spectrogram: inpaint_mask is not SA3 inpaint regions "
                                         r"\(got str, expected .*\)\. Connect SA3 Inpaint Regions\.$"):
        _spectrogram(audio, inpaint_mask="1-2")
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Spectrogram: fmin 30000 Hz leaves no frequencies to draw "
                                         r"\(got fmin 30000, fmax 22050, expected fmin < min\(fmax, 22050 Hz\)\)\. "
                                         r"Lower fmin\.$"):
        _spectrogram(audio, fmin=30000.0)
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Spectrogram: audio is not AUDIO"):
        _spectrogram([1, 2, 3])
    v = visualize.SA3Spectrogram.validate_inputs
    assert v() is True and v(regions="2-4, 8.5-10") is True
    assert v(regions="4-2").startswith("Stable Audio 3 Spectrogram: regions region 4-2 s must end after it starts "
                                       "(got start 4")
    with pytest.raises(ValueError) as e:
        _spectrogram(audio, fmin=5000.0, fmax=1000.0)
    assert str(e.value) == ("Stable Audio 3 Spectrogram: fmin must be below fmax (got fmin 5000 Hz, fmax 1000 Hz, "
                            "expected fmin < fmax). Lower fmin or set fmax to 0 for the full range.")
    with pytest.raises(ValueError, match=r"^Stable Audio 3 Spectrogram: width 100 is too small \(got 100, expected 0 "
                                         r"or >= 128\)"):
        _spectrogram(audio, width=100)


def test_settings_are_checked_before_the_audio_is_asked_for():
    """check_lazy_status (ComfyUI calls it when the run reaches the node, the audio not made yet):
    every setting refused as execute refuses it; good settings ask for the audio, then nothing."""
    lazy = visualize.SA3Spectrogram.check_lazy_status
    assert lazy(audio=None, **DEFAULTS) == ["audio"]
    assert lazy(audio={"waveform": torch.zeros(1, 2, SR), "sample_rate": SR}, **DEFAULTS) == []
    for change, message in (({"width": 100}, "width 100 is too small (got 100, expected 0 or >= 128)"),
                            ({"fmin": 5000.0, "fmax": 1000.0}, "fmin must be below fmax (got fmin 5000 Hz"),
                            ({"colormap": "jet"}, "colormap must be one of 'magma', 'viridis', 'gray' (got 'jet')"),
                            ({"db_floor": math.nan}, "db_floor must be a number from"),
                            ({"regions": "4-2"}, "regions region 4-2 s must end after it starts")):
        with pytest.raises(ValueError) as e:
            lazy(audio=None, **(DEFAULTS | change))
        assert str(e.value).startswith(f"Stable Audio 3 Spectrogram: {message}"), e.value


def test_node_is_registered():
    assert visualize.SA3Spectrogram in nodes.NODES and visualize.NODES == [visualize.SA3Spectrogram]
    sampler_inputs = {i.id: i for i in nodes.SA3Sampler.GET_SCHEMA().inputs}
    assert sampler_inputs["preview_every"].default == 0  # off unless asked for


# --- live preview ------------------------------------------------------------------------------


class PreviewBar:
    """Records what the sampler sends through ComfyUI's progress bar."""

    def __init__(self, total, node_id=None):
        self.total, self.current, self.sent = total, 0, []

    def update_absolute(self, value, total=None, preview=None):
        self.total = total if total is not None else self.total
        self.current = value
        self.sent.append((value, self.total, preview))


@pytest.fixture
def bars(monkeypatch):
    """Every progress bar the nodes create, and the number of preview decodes."""
    created, decodes = [], []
    comfy_models = importlib.import_module(f"{PACK}.nodes.comfy_models")

    def make_bar(total):
        created.append(PreviewBar(total))
        return created[-1]

    real = visualize.preview_image

    def counting(handle, denoised, seconds=visualize.PREVIEW_SECONDS):
        decodes.append(tuple(denoised.shape))
        return real(handle, denoised, seconds)

    monkeypatch.setattr(comfy_models, "progress_bar", make_bar)
    monkeypatch.setattr(visualize, "preview_image", counting)
    return created, decodes


@pytest.mark.parametrize("name, sampler", [("tiny-small", "pingpong"), ("tiny-medium", "pingpong"),
                                           ("tiny-small", "dpmpp")])
def test_previews_on_or_off_give_bit_identical_audio(name, sampler, bars, monkeypatch):
    created, decodes = bars
    h = load_handle(name)
    sampler_execute = nodes.SA3Sampler.execute

    def with_previews(every):
        def execute(**kwargs):
            return sampler_execute(**kwargs, preview_every=every)
        return execute

    monkeypatch.setattr(nodes.SA3Sampler, "execute", with_previews(0))
    off = run_graph(h, steps=5, seed=21, sampler=sampler)
    assert decodes == []
    monkeypatch.setattr(nodes.SA3Sampler, "execute", with_previews(2))
    on = run_graph(h, steps=5, seed=21, sampler=sampler)
    assert len(decodes) == 2  # after steps 2 and 4 (not after the last)
    assert torch.equal(on["waveform"], off["waveform"])
    sampler_bar = next(b for b in reversed(created) if b.total == 5)
    assert [v for v, _, _ in sampler_bar.sent] == [1, 2, 3, 4, 5]
    previews = [p for _, _, p in sampler_bar.sent]
    assert [p is not None for p in previews] in ([False, True, False, True, False], [False] * 5)  # [False]*5: no PIL
    try:
        import PIL.Image
    except ImportError:
        return
    kind, image, max_size = previews[1]
    assert kind == "JPEG" and isinstance(image, PIL.Image.Image) and max_size == visualize.PREVIEW_MAX_SIZE
    assert image.size == (visualize.PREVIEW_WIDTH, visualize.PREVIEW_HEIGHT)


def test_preview_image_is_a_spectrogram_of_the_first_seconds():
    h = load_handle("tiny-small")
    denoised = torch.randn(2, h.config.latent_channels, 64, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    image = visualize.preview_image(h, denoised, seconds=1.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert image.shape == (1, visualize.PREVIEW_HEIGHT, visualize.PREVIEW_WIDTH, 3)
    assert torch.equal(image, visualize.preview_image(h, denoised, seconds=1.0))  # private, fixed-seed decoder noise


def test_callback_without_previews_only_reports_progress():
    bar = PreviewBar(3)
    callback = visualize.make_preview_callback(handle=None, every=0, total_steps=3, bar=bar)
    for i in range(3):
        callback(i, torch.zeros(1), torch.zeros(1))
    assert bar.sent == [(1, 3, None), (2, 3, None), (3, 3, None)]
