"""See the sound: the spectrogram node (AUDIO -> IMAGE) and live previews while sampling.

IMAGE: float32 (B, H, W, 3) in [0, 1] on the CPU, one picture per AUDIO batch item (log-mel
spectrogram with a seconds axis, optional waveform strip, shaded inpaint regions + legend).

Live preview: ``make_preview_callback`` builds the sampler's per-step callback. Every
``preview_every`` steps it decodes the first ``PREVIEW_SECONDS`` of the current denoised estimate
of item 0 with SAME, draws its spectrogram and sends it through ComfyUI's progress bar
(``update_absolute(value, total, ("JPEG", PIL.Image, max_size))``), the channel core samplers use
for latent previews. The decode draws its noise from a private generator and reads a copy of the
latents, so the sampler's random stream and its result are the same with previews on or off.

Legend: B batch, C channels, S samples, L latent frames, H/W image height/width.
"""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io

from . import comfy_models, pictures
from ._adapters import error, parse_regions, read_audio, read_regions
from ._sa3 import checks
from ._validate import checked
from .search import schema_aliases
from .types import CATEGORY, SA3InpaintRegions

NODE = "Spectrogram"
PREVIEW_SECONDS = 6.0  # seconds of audio decoded per live preview (cost grows with it)
PREVIEW_HEIGHT, PREVIEW_WIDTH = 256, 768  # live preview picture, pixels
PREVIEW_MAX_SIZE = 768  # longest side ComfyUI may send (its own latent previews use --preview-size, 512)
PREVIEW_SEED = 0  # the preview decoder's private noise; never the sampler's generator
OPTIONS = pictures.SpectrogramOptions()  # defaults shown on the node


def _shaded_regions(inpaint_mask, regions: str, duration: float) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    if inpaint_mask is not None:
        spans += read_regions(inpaint_mask, NODE, "inpaint_mask").spans(duration)
    spans += parse_regions(regions or "", NODE, "regions")
    return checks.check_regions("regions", spans, math.inf, NODE)


def _check_picture(width, fmin, fmax, regions) -> None:
    """The settings that need no audio: refused naming the input, the rule and the value."""
    if 0 < width < pictures.WIDTH_RANGE[0]:
        raise ValueError(error(NODE, f"width {width} is too small (got {width}, expected 0 or >= "
                                     f"{pictures.WIDTH_RANGE[0]}). Raise width or set 0 to use px_per_second."))
    if fmax > 0 and fmin >= fmax:
        raise ValueError(error(NODE, f"fmin must be below fmax (got fmin {fmin:g} Hz, fmax {fmax:g} Hz, expected "
                                     "fmin < fmax). Lower fmin or set fmax to 0 for the full range."))
    _shaded_regions(None, regions or "", math.inf)


class SA3Spectrogram(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        lo_h, hi_h = pictures.HEIGHT_RANGE
        lo_w, hi_w = pictures.WIDTH_RANGE
        lo_db, hi_db = pictures.DB_FLOOR_RANGE
        return io.Schema(
            node_id="SA3Spectrogram",
            **schema_aliases("SA3Spectrogram"),
            display_name="SA3 Spectrogram",
            category=CATEGORY,
            description="Draws each audio clip as a log-mel spectrogram (time axis in seconds, frequency axis in "
                        "Hz, optional waveform above) and shades inpainted regions with a 'regenerated' legend. "
                        "Connect the IMAGE to Preview Image or Save Image to see it next to the audio.",
            inputs=[
                io.Audio.Input("audio", lazy=True,  # asked for after the checks (check_lazy_status)
                               tooltip="Audio to draw (any sample rate, mono or stereo); one picture per batch item."),
                io.Int.Input("height", default=OPTIONS.height, min=lo_h, max=hi_h, step=8,
                             tooltip="Picture height in pixels, axes included; text grows with it."),
                io.Int.Input("width", default=OPTIONS.width, min=0, max=hi_w, step=8,
                             tooltip=f"Picture width in pixels ({lo_w}-{hi_w}). 0 = from px_per_second, so "
                                     "longer clips give wider pictures."),
                io.Float.Input("px_per_second", default=50.0, min=pictures.PX_PER_SECOND_RANGE[0],
                               max=pictures.PX_PER_SECOND_RANGE[1], step=1.0,
                               tooltip="Plot columns per second of audio; used only when width is 0."),
                io.Combo.Input("colormap", options=list(pictures.COLORMAPS), default=OPTIONS.colormap,
                               tooltip="Colours from quiet to loud: magma (black-purple-orange-white), viridis "
                                       "(purple-green-yellow) or gray."),
                io.Float.Input("fmin", default=0.0, min=0.0, max=96000.0, step=10.0,
                               tooltip="Lowest frequency shown, Hz."),
                io.Float.Input("fmax", default=0.0, min=0.0, max=96000.0, step=10.0,
                               tooltip="Highest frequency shown, Hz; 0 = half the sample rate (22050 Hz at 44.1 kHz)."),
                io.Float.Input("db_floor", default=OPTIONS.db_floor, min=lo_db, max=hi_db, step=1.0,
                               tooltip="Level drawn darkest, in dB below the top of the scale; higher (e.g. -60) "
                                       "hides quiet detail, lower (e.g. -100) shows it."),
                io.Boolean.Input("normalize", default=OPTIONS.normalize,
                                 tooltip="On: the loudest band of each clip is the top of the scale. Off: 0 dBFS is, "
                                         "so clips of a batch compare by level."),
                io.Boolean.Input("waveform", default=OPTIONS.waveform,
                                 tooltip="Draw the waveform (min/max per column) above the spectrogram."),
                SA3InpaintRegions.Input("inpaint_mask", optional=True,
                                        tooltip="Optional: the SA3 Inpaint Regions used for this audio; its regions "
                                                "are shaded and labelled 'regenerated'."),
                io.String.Input("regions", default="", optional=True,
                                tooltip="Optional extra regions to shade, start-end in seconds separated by commas, "
                                        "e.g. '2-4, 8.5-10'."),
            ],
            outputs=[io.Image.Output(display_name="image",
                                     tooltip="IMAGE (batch, height, width, 3), values 0..1: one spectrogram per "
                                             "clip.")],
        )

    @classmethod
    def validate_inputs(cls, regions=None):
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py);
        # the numbers are range-checked by ComfyUI per input; width, fmin/fmax and colormap (and NaN) by
        # check_lazy_status when the run starts, before the audio is made, and again in execute
        if regions is not None:
            try:
                _shaded_regions(None, regions, math.inf)
            except ValueError as e:
                return str(e)
        return True

    @classmethod
    @checked(NODE)
    def check_lazy_status(cls, audio=None, width=0, fmin=0.0, fmax=0.0, regions="", **widgets) -> list[str]:
        """The checks of every setting, before the audio is asked for. ``validate_inputs`` can take one
        input only (see nodes/_validate.py), so width, fmin/fmax and colormap are checked here: the
        audio is lazy, so ComfyUI reaches this node when the run starts (it feeds an output node),
        before the sampler that makes the audio has run, and a refusal costs nothing."""
        _check_picture(width, fmin, fmax, regions)
        return ["audio"] if audio is None else []

    @classmethod
    @checked(NODE)
    def execute(cls, audio, height, width, px_per_second, colormap, fmin, fmax, db_floor, normalize, waveform,
                inpaint_mask=None, regions="") -> io.NodeOutput:
        _check_picture(width, fmin, fmax, regions)  # (again: a direct call skips check_lazy_status)
        items = read_audio(audio, NODE, "audio")  # [(sr, (C, S))]
        sample_rate = items[0][0]
        waves = torch.stack([wav for _, wav in items])  # (B, C, S)
        spans = _shaded_regions(inpaint_mask, regions, waves.shape[-1] / sample_rate)
        nyquist = sample_rate / 2
        if fmin >= min(fmax or nyquist, nyquist):
            raise ValueError(error(NODE, f"fmin {fmin:g} Hz leaves no frequencies to draw (got fmin {fmin:g}, "
                                         f"fmax {fmax or nyquist:g}, expected fmin < min(fmax, {nyquist:g} Hz)). "
                                         "Lower fmin."))
        options = pictures.SpectrogramOptions(
            height=height, width=width or None, px_per_second=px_per_second, colormap=colormap, fmin=fmin,
            fmax=min(fmax, nyquist) if fmax > 0 else None, db_floor=db_floor, normalize=normalize, waveform=waveform)
        image = pictures.render_spectrogram(waves, sample_rate, options, regions=spans or None)
        return io.NodeOutput(image)


# --- live preview while sampling ---------------------------------------------------------------


def preview_image(handle, denoised: torch.Tensor, seconds: float = PREVIEW_SECONDS) -> torch.Tensor:
    """(1, H, W, 3) spectrogram of the first ``seconds`` of item 0 of ``denoised`` (B, C, L),
    decoded with the handle's SAME where it is. The sampler loads SAME together with the DiT once,
    before its loop (``preview_parts``): a load here, inside the loop, could let ComfyUI unload
    part of the DiT mid-sampling."""
    options = pictures.SpectrogramOptions(height=PREVIEW_HEIGHT, width=PREVIEW_WIDTH, waveform=False)
    return pictures.preview_from_latents(handle.model.autoencoder, denoised, sample_rate=handle.sample_rate,
                                         seconds=seconds, items=1, seed=PREVIEW_SEED, options=options)


def _preview_tuple(image: torch.Tensor):
    """(H, W, 3) float -> ComfyUI's preview tuple ("JPEG", PIL.Image, max_size), or None without PIL."""
    try:
        from PIL import Image
    except ImportError:  # ComfyUI always has Pillow; a bare test environment may not
        return None
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(pixels), PREVIEW_MAX_SIZE)


def preview_parts(every: int) -> tuple[str, ...]:
    """The parts the sampler loads besides the DiT: SAME when previews are on."""
    return ("autoencoder",) if every > 0 else ()


def make_preview_callback(handle, every: int, total_steps: int, bar=None, seconds: float = PREVIEW_SECONDS):
    """The sampler's ``callback(step, x, denoised)``: advances the progress bar at every step and,
    when ``every`` > 0, attaches a spectrogram preview every ``every`` steps (the last step is
    skipped: the final audio follows at once). ``every`` = 0 only reports progress."""
    bar = bar if bar is not None else comfy_models.progress_bar(total_steps)

    def callback(step: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        done = step + 1
        preview = None
        if every > 0 and done % every == 0 and done < total_steps:
            preview = _preview_tuple(preview_image(handle, denoised, seconds)[0])
        bar.update_absolute(done, total_steps, preview)

    return callback


NODES = [SA3Spectrogram]
