"""Input checks: one function per rule, shared by ``generate()``, the stage functions, config
parsing, the CLI and (with ``where=`` set to the node's name) the ComfyUI nodes.

Every check raises a plain ``ValueError`` (the error type ComfyUI shows) with one message shape,
``"Stable Audio 3[ <where>]: <input> must be <what is allowed> (got <value>)."``, before any model
work. The bounds are named constants so the node schemas show the same limits the library enforces.
Python's comparisons are false for NaN, so every range test here is written as ``not lo <= x <= hi``
and NaN/infinity can never pass one.

Legend: C channels, S samples.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .sinc import resample_taps

# --- bounds (the node schemas use the same numbers) --------------------------------------------

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds
MAX_STEPS = 1000  # sampling steps; base models need ~50, distilled 8
MAX_BATCH = 64  # items per generation (and prompts per batch: one prompt per item)
MAX_SECONDS = 384.0  # the seconds conditioner's range; each model's own maximum is lower (sample_size)
MAX_PROMPT_CHARS = 100_000  # T5Gemma keeps 256 tokens (~1,500 characters); this bounds tokenizer work
MAX_CFG_SCALE = 30.0  # classifier-free guidance; the official UI stays below 15
MAX_APG_SCALE = 10.0  # 1 = APG, 0 = CFG; values in between blend
MAX_CFG_NORM_THRESHOLD = 1000.0  # caps the guidance difference's L2 norm; the official UI offers 0-100
MAX_LORA_STRENGTH = 10.0  # |strength|; 1 = as trained
MIN_SAMPLE_RATE = 1_000  # lower "rates" are broken headers; 8 kHz telephone audio is the lowest real one
MAX_SAMPLE_RATE = 384_000  # the highest rate audio interfaces and DXD files use
# The windowed-sinc resampler's filter has (new rate / g) x (~2 x 6 + old rate / g) taps, g = gcd of the
# two rates: 48 kHz, 96 kHz, 22.05 kHz... need a few thousand, a rate like 44.101 kHz needs 1.9 billion
# (16 GB in float64). The limit keeps the filter's float64 work under ~400 MB.
MAX_RESAMPLE_TAPS = 1 << 24


def message(text: str, where: str | None = None) -> str:
    """The pack's prefix: ``"Stable Audio 3: ..."`` or, for a node, ``"Stable Audio 3 <node>: ..."``."""
    return f"Stable Audio 3{' ' + where if where else ''}: {text}"


def shown(value) -> str:
    """A value as messages print it: floats short but exact (``380.44``, ``120.0001``, ``nan``), text quoted."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if not math.isfinite(value) or float(short) == value else repr(value)
    if isinstance(value, (str, bytes)):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, bool) or value is None or isinstance(value, numbers.Number):
        return repr(value)
    return f"a {type(value).__name__}"


def fail(name: str, rule: str, value, where: str | None = None, fix: str = "", *, got: str | None = None) -> ValueError:
    """The error for ``name``: ``"<name> must be <rule> (got <value>).[ <fix>]"``; ``got`` replaces
    the printed value (a size instead of a huge text)."""
    got = shown(value) if got is None else got
    return ValueError(message(f"{name} must be {rule} (got {got}).{' ' + fix if fix else ''}", where))


def floor_to(value: float, decimals: int = 2) -> float:
    """``value`` rounded down, so a printed maximum is one the check accepts (380.435... -> 380.43)."""
    scale = 10**decimals
    return math.floor(value * scale) / scale


def _range_text(lo, hi, lo_open: bool, unit: str) -> str:
    unit = f" {unit}" if unit else ""
    low = None if lo is None else (f"above {shown(lo)}" if lo_open else f"at least {shown(lo)}")
    if lo is not None and hi is not None and not lo_open:
        return f"from {shown(lo)} to {shown(hi)}{unit}"
    if hi is None:
        return f"{low}{unit}"
    return f"{low} and at most {shown(hi)}{unit}" if low else f"at most {shown(hi)}{unit}"


def check_number(name: str, value, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
                 lo_open: bool = False, unit: str = "", where: str | None = None, fix: str = "") -> float | int:
    """A finite real number (an integer with ``integer=True``) in ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_open``); returns it as ``float`` / ``int``. Text, ``bool``, NaN and infinity are refused."""
    if lo is None and hi is None:
        rule = f"a finite {'integer' if integer else 'number'}{' of ' + unit if unit else ''}"
    else:
        rule = f"{'an integer' if integer else 'a number'} {_range_text(lo, hi, lo_open, unit)}"
    ok_type = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
        raise fail(name, rule, value, where, fix)
    number = int(value) if integer else float(value)
    if (lo is not None and not (number > lo if lo_open else number >= lo)) or (hi is not None and not number <= hi):
        raise fail(name, rule, value, where, fix)
    return number


def check_choice(name: str, value, choices: Sequence[str], where: str | None = None) -> str:
    """One of ``choices`` (exact spelling)."""
    if not isinstance(value, str) or value not in choices:
        raise fail(name, f"one of {', '.join(map(repr, choices))}", value, where)
    return value


def check_text(name: str, value, where: str | None = None) -> str:
    """A prompt: a string of at most ``MAX_PROMPT_CHARS`` characters."""
    if not isinstance(value, str) or len(value) > MAX_PROMPT_CHARS:
        got = f"{len(value):,} characters" if isinstance(value, str) else None
        raise fail(name, f"a string of at most {MAX_PROMPT_CHARS:,} characters", value, where, got=got)
    return value


def check_durations(name: str, durations: Iterable, max_duration: float, where: str | None = None,
                    fix: str = "") -> list[float]:
    """Seconds per item, each in ``(0, max_duration]``. The printed maximum is rounded down, so it
    is itself accepted."""
    top = floor_to(max_duration)
    return [check_number(name, d, 0, top if top > 0 else max_duration, lo_open=True, unit="seconds", where=where,
                         fix=fix) for d in durations]


def check_regions(name: str, regions: Iterable, duration: float, where: str | None = None) -> list[tuple[float, float]]:
    """Inpaint regions ``[(start, end)]`` in seconds: finite, ``0 <= start < end``, and starting
    inside the ``duration`` being generated (an end past it only means "to the end")."""
    out = []
    for region in regions:
        if not (isinstance(region, (tuple, list)) and len(region) == 2):
            raise fail(name, "(start, end) pairs in seconds", region, where)
        start = check_number(f"{name} start", region[0], 0, where=where, unit="seconds")
        end = check_number(f"{name} end", region[1], where=where, unit="seconds")
        if not start < end:
            raise ValueError(message(f"{name} region {shown(start)}-{shown(end)} s must end after it starts (got "
                                     f"start {shown(start)}, end {shown(end)}).", where))
        if not start < duration:
            raise ValueError(message(f"{name} region {shown(start)}-{shown(end)} s must start before the "
                                     f"{shown(float(duration))} s duration (got start {shown(start)}).", where))
        out.append((start, end))
    return out


def check_noise_interval(name: str, value, where: str | None = None, fix: str = "") -> tuple[float, float]:
    """A ``(from, to)`` pair of noise levels with ``0 <= from <= to <= 1`` (the CFG interval, a LoRA's
    active interval): the sampler compares each DiT call's noise level with it."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise fail(name, "two noise levels (from, to) with 0 <= from <= to <= 1", value, where, fix)
    lo = check_number(f"{name} from", value[0], 0, 1, where=where, fix=fix)
    hi = check_number(f"{name} to", value[1], 0, 1, where=where, fix=fix)
    if not lo <= hi:
        raise ValueError(message(f"{name} must run from a lower to a higher noise level (got from {shown(lo)}, to "
                                 f"{shown(hi)}). Swap the two values.", where))
    return lo, hi


def check_count(name: str, count: int, expected: int, where: str | None = None, what: str = "entries") -> None:
    """A per-item list has one entry per batch item."""
    if count != expected:
        raise ValueError(message(f"{name} must have {expected} {what}, one per batch item, or be a single value "
                                 f"(got {count}).", where))


def per_item(value, name: str, batch_size: int, where: str | None = None, *, error: str | None = None) -> list:
    """A per-item argument for ``batch_size`` items: a single value (not a list or tuple) repeated, or
    a list or tuple with exactly one entry per item. ``error`` replaces ``check_count``'s message
    (a node's own sentence)."""
    if not isinstance(value, (list, tuple)):
        return [value] * batch_size
    if error is not None and len(value) != batch_size:
        raise ValueError(error)
    check_count(name, len(value), batch_size, where)
    return list(value)


# --- audio -------------------------------------------------------------------------------------


def check_sample_rate(name: str, value, where: str | None = None) -> int:
    """A whole number of Hz in ``[MIN_SAMPLE_RATE, MAX_SAMPLE_RATE]`` (``True``, 44100.5, NaN refused)."""
    rate = value.item() if isinstance(value, np.generic) else value
    if isinstance(rate, float) and rate.is_integer() and abs(rate) < 2**53:
        rate = int(rate)
    return check_number(f"{name} sample rate", rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, integer=True, unit="Hz",
                        where=where, fix="Resample the file to 44100 or 48000 Hz.")


def check_resample(name: str, orig_sr: int, new_sr: int, where: str | None = None) -> None:
    """Refuse a rate pair whose exact resampling filter is too big to build (see ``MAX_RESAMPLE_TAPS``)."""
    taps = resample_taps(orig_sr, new_sr)  # (new phases, taps) float32, built through float64
    if taps > MAX_RESAMPLE_TAPS:
        raise ValueError(message(
            f"{name} sample rate {orig_sr} Hz cannot be converted to {new_sr} Hz at a sane cost (got a "
            f"{taps:,}-tap filter, expected at most {MAX_RESAMPLE_TAPS:,}: the two rates share no large common "
            "divisor). Resample the file to 44100 or 48000 Hz first.", where))


def check_waveform(name: str, wav: torch.Tensor, where: str | None = None) -> torch.Tensor:
    """Audio samples (C, S): at least one sample, every one finite (NaN/inf would turn the whole
    generation into full-scale noise)."""
    if wav.shape[-1] == 0:
        raise ValueError(message(f"{name} must hold at least one sample (got an empty waveform, shape "
                                 f"{tuple(wav.shape)}).", where))
    finite = torch.isfinite(wav)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(message(f"{name} samples must be finite numbers (got {bad:,} NaN or infinite sample(s) of "
                                 f"{wav.numel():,}). Fix or re-export the audio.", where))
    return wav


# --- a generation request ------------------------------------------------------------------------

def official_regions(starts, ends) -> list[tuple[float, float]]:
    """The official ``inpaint_mask_start_seconds`` / ``inpaint_mask_end_seconds`` (two numbers or two
    equal-length lists) as ``[(start, end)]``; their order is checked by ``check_regions``."""
    start_name, end_name = "inpaint_mask_start_seconds", "inpaint_mask_end_seconds"
    if (starts is None) != (ends is None):
        raise ValueError(message(f"give both {start_name} and {end_name} (got only "
                                 f"{end_name if starts is None else start_name})."))
    if starts is None:
        return []
    if isinstance(starts, (list, tuple)) != isinstance(ends, (list, tuple)):
        raise ValueError(message(f"{start_name} and {end_name} must both be numbers or both be lists "
                                 f"(got {type(starts).__name__} and {type(ends).__name__})."))
    starts, ends = (list(starts), list(ends)) if isinstance(starts, (list, tuple)) else ([starts], [ends])
    check_count(end_name, len(ends), len(starts), what=f"entries, one per {start_name} entry")
    return [(check_number(start_name, s, 0, unit="seconds"), check_number(end_name, e, unit="seconds"))
            for s, e in zip(starts, ends, strict=True)]
