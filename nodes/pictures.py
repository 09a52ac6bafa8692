"""Pictures of sound (no model code): a log-mel spectrogram with a seconds axis, an optional
waveform strip above it, shaded (inpainted) regions with a legend, and cheap previews of latents.

Panels are torch tensors; text and PNG files are Pillow's (``ImageFont.load_default``, anti-aliased).
Colour maps are small tables of anchor colours interpolated linearly. The mel filterbank is ours for
a measured reason: it equals torchaudio's ``melscale_fbanks`` (tests/test_pictures.py), and the
pack cannot require torchaudio (its last release, 2.11, pins torch 2.11; none exists for newer torch).

Images follow ComfyUI's IMAGE layout: float32 (B, H, W, 3) in [0, 1], row 0 at the top. The file
imports only torch, numpy and Pillow (no ComfyUI, nothing of the pack): nodes/visualize.py imports
it as ``.pictures``; scripts and tests outside ComfyUI load it by its path (tools/file_module.py).

Picture, top to bottom: legend row (only with regions), waveform strip (optional), spectrogram
(high frequencies at the top, mel-spaced, frequency labels on the left), time axis in seconds.

Levels: power is scaled so that a full-scale sine inside one mel band reads about 0 dB ("dBFS");
``db_floor`` maps to the darkest colour and 0 dBFS (or each item's peak with ``normalize``) to the
brightest.

Legend: B batch, C audio channels, S samples, F STFT bins, M mel bands, N STFT frames,
H/W image height/width, L latent frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

Region = tuple[float, float]  # (start, end) in seconds

# --- colour maps -------------------------------------------------------------------------------

# Evenly spaced anchors from 0 (quiet) to 1 (loud); approximations of matplotlib's maps.
COLORMAPS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "magma": (
        (0.001, 0.000, 0.014), (0.080, 0.058, 0.221), (0.232, 0.060, 0.437), (0.390, 0.100, 0.502),
        (0.550, 0.161, 0.506), (0.716, 0.215, 0.475), (0.868, 0.288, 0.409), (0.967, 0.439, 0.360),
        (0.994, 0.624, 0.427), (0.996, 0.812, 0.572), (0.987, 0.991, 0.750),
    ),
    "viridis": (
        (0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553),
        (0.164, 0.471, 0.558), (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441),
        (0.478, 0.821, 0.318), (0.741, 0.873, 0.150), (0.993, 0.906, 0.144),
    ),
    "gray": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

HEIGHT_RANGE = (64, 4096)  # allowed total image height, pixels
WIDTH_RANGE = (128, 16384)  # allowed total image width, pixels
PX_PER_SECOND_RANGE = (1.0, 2000.0)  # allowed plot columns per second
DB_FLOOR_RANGE = (-200.0, -1.0)  # allowed db_floor, dB

BACKGROUND = (0.09, 0.09, 0.10)  # margins
WAVE_BACKGROUND = (0.05, 0.05, 0.06)  # behind the waveform
WAVE_COLOR = (0.55, 0.78, 0.98)  # waveform min/max envelope
TEXT_COLOR = (0.88, 0.88, 0.88)
TICK_COLOR = (0.60, 0.60, 0.62)
REGION_COLOR = (0.20, 0.90, 1.00)  # tint of shaded regions and their edges
REGION_ALPHA = 0.35  # tint strength inside a region

# --- text ---------------------------------------------------------------------------------------

TEXT_H = 7  # rows a line of text takes per text-scale unit (digit height; the baseline is its bottom)
FONT_SIZE = 10  # Pillow font size per text-scale unit: digits 7-8 px tall at scale 1
SWATCH_W = 15  # legend swatch width per text-scale unit
ANCHORS = {"left": "ls", "center": "ms", "right": "rs"}  # Pillow anchors: x alignment, y at the baseline


@cache
def _font(scale: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE * scale)


def text_size(text: str, scale: int) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` at an integer ``scale``."""
    return math.ceil(_font(scale).getlength(text)), TEXT_H * scale


@dataclass(frozen=True)
class Label:
    """One line of text: (x, y) is the top-left corner of its box (``align="center"``/``"right"``:
    x is the centre / right edge)."""

    text: str
    x: int
    y: int
    color: tuple[float, float, float] = TEXT_COLOR
    align: str = "left"


def draw_labels(canvas: torch.Tensor, labels: Sequence[Label], scale: int) -> None:
    """Blend anti-aliased ``labels`` into ``canvas`` (H, W, 3) in place; text off the canvas is clipped."""
    h, w = canvas.shape[:2]
    for color in dict.fromkeys(label.color for label in labels):  # one coverage mask per colour
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        for label in labels:
            if label.color == color:
                draw.text((label.x, label.y + TEXT_H * scale), label.text, fill=255, font=_font(scale),
                          anchor=ANCHORS[label.align])
        alpha = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[..., None].to(canvas.device)  # (H, W, 1)
        colour = torch.tensor(color, dtype=canvas.dtype, device=canvas.device)
        canvas.mul_(1 - alpha).add_(alpha * colour)


# --- options and layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectrogramOptions:
    height: int = 384  # total image height in pixels (axes and legend included)
    width: int | None = 1024  # total image width; None: derived from px_per_second
    px_per_second: float | None = None  # plot columns per second of audio, used when width is None
    colormap: str = "magma"  # one of COLORMAPS
    fmin: float = 0.0  # lowest frequency shown, Hz
    fmax: float | None = None  # highest frequency shown, Hz; None: Nyquist
    db_floor: float = -80.0  # level drawn darkest, dB below the top of the scale
    normalize: bool = False  # top of the scale = each item's loudest band (else 0 dBFS)
    waveform: bool = True  # draw the waveform strip above the spectrogram
    n_mels: int = 128  # mel bands
    n_fft: int = 2048  # STFT window (46 ms at 44.1 kHz)
    region_label: str = "regenerated"  # legend text for shaded regions

    def check(self, sample_rate: int) -> SpectrogramOptions:
        """Validate against ``sample_rate``; returns self."""
        def bad(what: str, got, expected: str, fix: str) -> ValueError:
            return ValueError(f"Stable Audio 3 spectrogram: {what} (got {got!r}, expected {expected}). {fix}.")

        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise bad("invalid sample rate", sample_rate, "a positive integer in Hz", "Pass the audio's sample rate")
        if not HEIGHT_RANGE[0] <= self.height <= HEIGHT_RANGE[1]:
            raise bad("height out of range", self.height, f"{HEIGHT_RANGE[0]}..{HEIGHT_RANGE[1]} pixels",
                      "Change height")
        if self.width is None and (self.px_per_second is None
                                   or not PX_PER_SECOND_RANGE[0] <= self.px_per_second <= PX_PER_SECOND_RANGE[1]):
            raise bad("px_per_second out of range", self.px_per_second,
                      "{:g}..{:g} columns per second".format(*PX_PER_SECOND_RANGE), "Set px_per_second or a width")
        if self.width is not None and not WIDTH_RANGE[0] <= self.width <= WIDTH_RANGE[1]:
            raise bad("width out of range", self.width, f"{WIDTH_RANGE[0]}..{WIDTH_RANGE[1]} pixels", "Change width")
        if self.colormap not in COLORMAPS:
            raise bad("unknown colour map", self.colormap, f"one of {sorted(COLORMAPS)}", "Pick a listed colour map")
        nyquist = sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not (0 <= self.fmin < fmax <= nyquist):
            raise bad("invalid frequency range", (self.fmin, fmax), f"0 <= fmin < fmax <= {nyquist:g} Hz",
                      "Lower fmin or raise fmax (0 = up to half the sample rate)")
        if not DB_FLOOR_RANGE[0] <= self.db_floor <= DB_FLOOR_RANGE[1]:
            raise bad("db_floor out of range", self.db_floor, "{:g}..{:g} dB".format(*DB_FLOOR_RANGE),
                      "Change db_floor")
        if not 8 <= self.n_mels <= 512 or self.n_fft < 64 or self.n_fft & (self.n_fft - 1):
            raise bad("invalid STFT size", (self.n_mels, self.n_fft), "8..512 mels and a power-of-two n_fft >= 64",
                      "Use the defaults (128 mels, n_fft 2048)")
        return self

    def resolved_fmax(self, sample_rate: int) -> float:
        return sample_rate / 2 if self.fmax is None else float(self.fmax)


def _hz_to_mel(hz):
    """HTK mel scale (torchaudio's default)."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


@dataclass(frozen=True)
class Layout:
    """Pixel boxes of one picture (x1/y1 exclusive) and the seconds/Hz -> pixel mappings."""

    height: int
    width: int
    scale: int  # text scale
    plot_x0: int  # first plot column (left of it: frequency labels)
    plot_x1: int
    wave_y0: int  # waveform strip rows (empty when wave_y0 == wave_y1)
    wave_y1: int
    spec_y0: int  # spectrogram rows; row spec_y0 is fmax, spec_y1 - 1 is fmin
    spec_y1: int
    axis_y: int  # first row below the plot (ticks and labels)
    duration: float  # seconds spanned by the plot
    fmin: float
    fmax: float

    @property
    def plot_width(self) -> int:
        return self.plot_x1 - self.plot_x0

    def x_of_seconds(self, seconds: float) -> int:
        """Column of time ``seconds`` (clamped to the plot's edges)."""
        frac = min(max(seconds / self.duration, 0.0), 1.0) if self.duration > 0 else 0.0
        return self.plot_x0 + round(frac * self.plot_width)

    def y_of_hz(self, hz: float) -> int:
        """Row whose centre is nearest to frequency ``hz`` on the mel axis."""
        lo, hi = _hz_to_mel(self.fmin), _hz_to_mel(self.fmax)
        frac = (_hz_to_mel(min(max(hz, self.fmin), self.fmax)) - lo) / (hi - lo)
        rows = self.spec_y1 - self.spec_y0
        return self.spec_y1 - 1 - min(int(frac * rows), rows - 1)


def _freq_label(hz: float) -> str:
    if hz >= 1000:
        k = hz / 1000
        return f"{k:g}kHz"
    return f"{hz:g}Hz"


def _freq_ticks(fmin: float, fmax: float) -> list[float]:
    candidates = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]
    return [f for f in candidates if fmin < f < fmax] or [fmax]


def _spaced_freq_ticks(layout: Layout) -> list[tuple[float, int]]:
    """(Hz, row) of the frequency ticks, top down, dropping any label that would touch the one above."""
    out, last_y = [], None
    for f in sorted(_freq_ticks(layout.fmin, layout.fmax), reverse=True):
        y = layout.y_of_hz(f)
        if last_y is None or y - last_y >= (TEXT_H + 3) * layout.scale:
            out.append((f, y))
            last_y = y
    return out


def compute_layout(options: SpectrogramOptions, duration: float, sample_rate: int, with_legend: bool) -> Layout:
    """Where everything goes for a picture of ``duration`` seconds."""
    h = options.height
    scale = max(1, h // 192)  # text is 7 * scale pixels high: 14 px at the default height
    fmin, fmax = float(options.fmin), options.resolved_fmax(sample_rate)
    label_w = max(text_size(_freq_label(f), scale)[0] for f in _freq_ticks(fmin, fmax))
    plot_x0 = label_w + 5 * scale
    if options.width is not None:
        width = options.width
    else:
        width = plot_x0 + max(64, round(duration * options.px_per_second)) + 4 * scale
        if width > WIDTH_RANGE[1]:  # bounded like an explicit width, before any pixel is allocated
            raise ValueError(f"Stable Audio 3 spectrogram: px_per_second {options.px_per_second:g} makes a picture "
                             f"{width:,} pixels wide for this {duration:g} s clip (got {width:,}, expected at most "
                             f"{WIDTH_RANGE[1]:,}). Lower px_per_second or set a width.")
    plot_x1 = width - 4 * scale  # room for the last tick label's overhang is taken from this margin
    top = (TEXT_H + 6) * scale if with_legend else 3 * scale
    axis_h = (TEXT_H + 7) * scale  # tick (3s) + gap (2s) + label (7s) + bottom margin (2s)
    body = h - top - axis_h
    if body < 24:
        raise ValueError(f"Stable Audio 3 spectrogram: height too small for the axes (got {h}, expected >= "
                         f"{top + axis_h + 24} pixels). Increase height.")
    wave_h = int(body * 0.22) if options.waveform else 0
    gap = 2 * scale if options.waveform else 0
    return Layout(height=h, width=width, scale=scale, plot_x0=plot_x0, plot_x1=plot_x1, wave_y0=top,
                  wave_y1=top + wave_h, spec_y0=top + wave_h + gap, spec_y1=h - axis_h, axis_y=h - axis_h,
                  duration=duration, fmin=fmin, fmax=fmax)


# --- mel spectrogram ---------------------------------------------------------------------------


def mel_filterbank(n_freqs: int, fmin: float, fmax: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(F, M) triangular HTK mel filters, unnormalised; equal to torchaudio's ``melscale_fbanks``."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)  # (F,) torchaudio's integer Nyquist
    m_pts = torch.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)  # (M + 2,)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)  # band edges/centres in Hz
    f_diff = f_pts[1:] - f_pts[:-1]  # (M + 1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (F, M + 2)
    down = -slopes[:, :-2] / f_diff[:-1]  # rising edge, (F, M)
    up = slopes[:, 2:] / f_diff[1:]  # falling edge, (F, M)
    return torch.clamp(torch.minimum(down, up), min=0.0)


def mel_spectrogram_db(audio: torch.Tensor, sample_rate: int, *, n_fft: int = 2048, hop: int = 512,
                       n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """(B, C, S) audio -> (B, M, N) mel power in dBFS (channels averaged in power), N = S // hop + 1.

    Frame j is centred on sample j * hop (zero padding at the ends). A full-scale sine reads
    about 0 dB in the band around its frequency; silence reads -120 dB.
    """
    b, c, s = audio.shape
    x = audio.reshape(b * c, s).float()  # float32: fp16 power underflows long before -120 dB
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (B*C, F, N)
    power = spec.real.square() + spec.imag.square()
    power = power.reshape(b, c, *power.shape[1:]).mean(dim=1)  # (B, F, N)
    power = power / (n_fft * window.square().sum() / 4)  # full-scale sine -> 1 summed over its bins
    fb = mel_filterbank(n_fft // 2 + 1, fmin, fmax or sample_rate / 2, n_mels, sample_rate).to(x.device)  # (F, M)
    mel = torch.einsum("bfn,fm->bmn", power, fb)  # (B, M, N)
    return 10.0 * torch.log10(mel.clamp(min=1e-12))


# --- drawing pieces ----------------------------------------------------------------------------


def apply_colormap(values: torch.Tensor, name: str) -> torch.Tensor:
    """(...) values in [0, 1] -> (..., 3) colours from ``COLORMAPS[name]``."""
    table = torch.tensor(COLORMAPS[name], dtype=torch.float32, device=values.device)  # (K, 3)
    pos = values.float().clamp(0, 1) * (table.shape[0] - 1)
    lo = pos.floor().long().clamp(max=table.shape[0] - 2)
    frac = (pos - lo)[..., None]
    return table[lo] * (1 - frac) + table[lo + 1] * frac


def _resize_time(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, M, N) -> (B, M, size): area average when shrinking, linear when stretching."""
    if x.shape[-1] >= size:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="linear", align_corners=False)


def _spectrogram_panel(audio: torch.Tensor, sample_rate: int, options: SpectrogramOptions,
                       layout: Layout) -> torch.Tensor:
    """(B, C, S) -> (B, rows, cols, 3) colours of the spectrogram box."""
    rows, cols = layout.spec_y1 - layout.spec_y0, layout.plot_width
    s = audio.shape[-1]
    hop = int(min(max(s // cols, 64), options.n_fft // 2))  # about one frame per column
    db = mel_spectrogram_db(audio, sample_rate, n_fft=options.n_fft, hop=hop, n_mels=options.n_mels,
                            fmin=layout.fmin, fmax=layout.fmax)  # (B, M, N)
    power = _resize_time(10.0 ** (db / 10.0), cols)  # average power, not dB, over merged frames
    db = 10.0 * torch.log10(power.clamp(min=1e-12))  # (B, M, cols)
    db = F.interpolate(db.transpose(1, 2), size=rows, mode="linear", align_corners=False)  # (B, cols, rows)
    db = db.transpose(1, 2).flip(1)  # (B, rows, cols), high frequencies on top
    top = db.amax(dim=(1, 2), keepdim=True) if options.normalize else torch.zeros_like(db[:, :1, :1])
    level = (db - (top + options.db_floor)) / -options.db_floor  # 0 at the floor, 1 at the top
    return apply_colormap(level, options.colormap)


def _waveform_panel(audio: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, C, S) -> (B, rows, cols) bool: the min/max envelope of the channel mean per column."""
    mono = audio.float().mean(dim=1)  # (B, S)
    b, s = mono.shape
    per_col = max(1, math.ceil(s / cols))
    mono = F.pad(mono, (0, per_col * cols - s))  # (B, cols * per_col); columns past the end read silent
    cells = mono.reshape(b, cols, per_col)  # (B, cols, per_col)
    hi, lo = cells.amax(-1).clamp(-1, 1), cells.amin(-1).clamp(-1, 1)  # (B, cols)
    mid = (rows - 1) / 2
    y_hi = (mid - hi * mid).floor()  # row of the maximum (row 0 = +1)
    y_lo = (mid - lo * mid).ceil()
    r = torch.arange(rows, device=mono.device, dtype=torch.float32)[None, :, None]  # (1, rows, 1)
    return (r >= y_hi[:, None, :]) & (r <= y_lo[:, None, :])


def _fill(canvas: torch.Tensor, y0: int, y1: int, x0: int, x1: int, color) -> None:
    canvas[y0:y1, x0:x1] = torch.tensor(color, dtype=canvas.dtype, device=canvas.device)


def _time_ticks(duration: float, plot_width: int, min_px: int) -> list[float]:
    """Tick times in seconds at a 1-2-5 (or minute) step leaving at least ``min_px`` between labels."""
    steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300]
    step = steps[-1]
    for candidate in steps:
        if duration <= 0 or candidate / duration * plot_width >= min_px:
            step = candidate
            break
    count = math.floor(duration / step + 1e-9)
    return [round(i * step, 6) for i in range(count + 1)]


def _seconds_label(t: float) -> str:
    return f"{t:g}s"


def normalize_regions(regions, batch: int) -> list[list[Region]]:
    """None, [(s, e), ...] (all items) or [[(s, e), ...], ...] (per item) -> per-item lists."""
    if regions is None:
        return [[] for _ in range(batch)]
    regions = list(regions)
    per_item = bool(regions) and all(isinstance(r, (list, tuple)) and (not r or isinstance(r[0], (list, tuple)))
                                     for r in regions)
    if not per_item:
        regions = [regions] * batch
    elif len(regions) != batch:
        if len(regions) != 1:
            raise ValueError(f"Stable Audio 3 spectrogram: regions given for {len(regions)} items (got "
                             f"{len(regions)}, expected 1 or {batch}). Give one list per batch item or one for all.")
        regions = regions * batch
    out = []
    for item in regions:
        checked = []
        for region in item:
            if len(region) != 2 or not float(region[0]) < float(region[1]):
                raise ValueError(f"Stable Audio 3 spectrogram: invalid region (got {tuple(region)!r}, expected "
                                 "(start, end) seconds with start < end). Swap or fix the bounds.")
            checked.append((float(region[0]), float(region[1])))
        out.append(checked)
    return out


def regions_from_mask(mask: torch.Tensor, seconds_per_frame: float) -> list[list[Region]]:
    """Keep-mask (B, 1, L) or (B, L) or (L,) (1 keep, 0 generate) -> per-item regenerated regions
    in seconds: each run of frames below 0.5 becomes (first * spf, (last + 1) * spf)."""
    m = mask.detach().float().cpu()
    m = m.reshape(1, -1) if m.dim() == 1 else m.reshape(m.shape[0], -1)  # (B, L)
    out = []
    for row in (m < 0.5).tolist():
        item, start = [], None
        for j, generated in enumerate([*row, False]):
            if generated and start is None:
                start = j
            elif not generated and start is not None:
                item.append((start * seconds_per_frame, j * seconds_per_frame))
                start = None
        out.append(item)
    return out


# --- the picture -------------------------------------------------------------------------------


def _tint(canvas: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> None:
    tint = torch.tensor(REGION_COLOR, dtype=canvas.dtype, device=canvas.device)
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - REGION_ALPHA) + tint * REGION_ALPHA


@torch.no_grad()
def render_spectrogram(audio: torch.Tensor, sample_rate: int, options: SpectrogramOptions | None = None, *,
                       regions=None, return_layout: bool = False, **overrides):
    """Draw one picture per batch item.

    audio: (B, C, S) or (C, S) float in [-1, 1]. regions: None, [(start, end), ...] seconds for
    every item, or one such list per item; they are shaded and a legend names them. ``overrides``
    replace fields of ``options`` (e.g. ``height=256, colormap="viridis"``).

    Returns (B, H, W, 3) float32 in [0, 1] on the CPU, or (image, Layout) with ``return_layout``.
    """
    options = replace(options or SpectrogramOptions(), **overrides).check(sample_rate)
    if not torch.is_tensor(audio) or audio.dim() not in (2, 3) or not audio.is_floating_point():
        raise ValueError(f"Stable Audio 3 spectrogram: audio must be a float tensor (batch, channels, samples) "
                         f"(got {getattr(audio, 'shape', type(audio).__name__)}). Pass the AUDIO waveform.")
    audio = audio[None] if audio.dim() == 2 else audio  # (B, C, S)
    if audio.shape[-1] < 2:
        raise ValueError(f"Stable Audio 3 spectrogram: audio is too short (got {audio.shape[-1]} samples, "
                         "expected at least 2). Pass longer audio.")
    audio = torch.nan_to_num(audio.float())
    b, _, s = audio.shape
    per_item = normalize_regions(regions, b)
    duration = s / sample_rate
    layout = compute_layout(options, duration, sample_rate, with_legend=any(per_item))
    sc = layout.scale

    canvas = torch.empty(b, layout.height, layout.width, 3)
    canvas[:] = torch.tensor(BACKGROUND)
    x0, x1 = layout.plot_x0, layout.plot_x1
    canvas[:, layout.spec_y0:layout.spec_y1, x0:x1] = _spectrogram_panel(audio, sample_rate, options, layout).cpu()
    if layout.wave_y1 > layout.wave_y0:
        env = _waveform_panel(audio, layout.wave_y1 - layout.wave_y0, layout.plot_width).cpu()  # (B, rows, cols)
        wave = canvas[:, layout.wave_y0:layout.wave_y1, x0:x1]
        wave[:] = torch.tensor(WAVE_BACKGROUND)
        wave[env] = torch.tensor(WAVE_COLOR)

    ticks = _time_ticks(duration, layout.plot_width, min_px=text_size("00.00s", sc)[0] + 8 * sc)
    for img, item_regions in zip(canvas, per_item, strict=True):
        labels = []
        for start, end in item_regions:  # shading first, so the axes stay on top
            rx0, rx1 = layout.x_of_seconds(start), max(layout.x_of_seconds(end), layout.x_of_seconds(start) + 1)
            for y0, y1 in ((layout.wave_y0, layout.wave_y1), (layout.spec_y0, layout.spec_y1)):
                if y1 > y0:
                    _tint(img, y0, y1, rx0, rx1)
                    _fill(img, y0, y1, rx0, min(rx0 + sc, rx1), REGION_COLOR)
                    _fill(img, y0, y1, max(rx1 - sc, rx0), rx1, REGION_COLOR)
        for t in ticks:  # time axis: tick marks and "Ns" labels below the plot
            x = min(layout.x_of_seconds(t), x1 - 1)
            _fill(img, layout.axis_y, layout.axis_y + 3 * sc, x, x + max(1, sc // 2 + 1), TICK_COLOR)
            label = _seconds_label(t)
            lw = text_size(label, sc)[0]
            labels.append(Label(label, min(max(x - lw // 2, 0), layout.width - lw), layout.axis_y + 5 * sc))
        for f, y in _spaced_freq_ticks(layout):  # frequency axis on the left
            _fill(img, y, y + 1, x0 - 3 * sc, x0, TICK_COLOR)
            ty = min(max(y - (TEXT_H * sc) // 2, layout.spec_y0), layout.spec_y1 - TEXT_H * sc)
            labels.append(Label(_freq_label(f), x0 - 4 * sc, ty, align="right"))
        if layout.wave_y1 > layout.wave_y0:
            mid = (layout.wave_y0 + layout.wave_y1) // 2
            labels.append(Label("wave", x0 - 4 * sc, mid - (TEXT_H * sc) // 2, TICK_COLOR, align="right"))
        if item_regions:  # legend: swatch + label, right-aligned in the top row
            label = options.region_label
            lx = x1 - text_size(label, sc)[0]
            sw = SWATCH_W * sc
            sx = lx - sw - 3 * sc
            _fill(img, 2 * sc, 2 * sc + TEXT_H * sc, sx, sx + sw, BACKGROUND)
            _tint(img, 2 * sc, 2 * sc + TEXT_H * sc, sx, sx + sw)
            _fill(img, 2 * sc, 2 * sc + TEXT_H * sc, sx, sx + sc, REGION_COLOR)
            _fill(img, 2 * sc, 2 * sc + TEXT_H * sc, sx + sw - sc, sx + sw, REGION_COLOR)
            labels.append(Label(label, lx, 2 * sc))
        draw_labels(img, labels, sc)
    canvas = canvas.clamp(0, 1)
    return (canvas, layout) if return_layout else canvas


# --- previews of latents -----------------------------------------------------------------------


@torch.no_grad()
def preview_from_latents(autoencoder, latents: torch.Tensor, *, sample_rate: int = 44100, seconds: float = 10.0,
                         items: int = 1, seed: int = 0, options: SpectrogramOptions | None = None,
                         **overrides) -> torch.Tensor:
    """Cheap picture of a denoised estimate: decode only the first ``seconds`` of the first
    ``items`` batch items, then ``render_spectrogram`` (waveform strip off unless overridden).

    autoencoder: a ``sa3.same.SAMEAutoencoder`` (anything with ``decode(latents, chunked=,
    generator=)`` and ``samples_per_latent``). latents: (B, C, L). The decoder's noise comes from a
    private generator seeded with ``seed``, never from the sampler's, so calling this between steps
    leaves the sampler's random stream (and so its result) untouched. Returns (items, H, W, 3).
    """
    spl = int(getattr(autoencoder, "samples_per_latent", 4096))
    frames = max(1, min(latents.shape[-1], math.ceil(seconds * sample_rate / spl)))
    param = next(autoencoder.parameters())
    z = latents[:items, :, :frames].detach().to(param.device, param.dtype)  # (items, C, frames), a copy
    generator = torch.Generator(device=param.device).manual_seed(seed)  # private stream
    audio = autoencoder.decode(z, chunked=False, generator=generator)  # (items, A, frames * spl)
    audio = audio.float().clamp(-1, 1)
    overrides.setdefault("waveform", False)
    return render_spectrogram(audio, sample_rate, options or SpectrogramOptions(height=256, width=768), **overrides)


# --- files -------------------------------------------------------------------------------------


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one (H, W, 3) float [0, 1] image (or the first of (B, H, W, 3)) as an 8-bit RGB PNG."""
    image = image[0] if image.dim() == 4 else image
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ValueError(f"Stable Audio 3 spectrogram: PNG needs one image (got {tuple(image.shape)}, expected "
                         "(H, W, 3)). Pass a single image, e.g. images[0].")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # (H, W, 3)
    path = Path(path)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


__all__ = [
    "COLORMAPS", "Label", "Layout", "SpectrogramOptions", "apply_colormap", "compute_layout", "draw_labels",
    "mel_filterbank", "mel_spectrogram_db", "normalize_regions", "preview_from_latents", "regions_from_mask",
    "render_spectrogram", "save_png", "text_size",
]
