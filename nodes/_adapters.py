"""ComfyUI dicts <-> library tensors, widget text parsing, and the pack's error shape.

LATENT, as the pack writes it (core's audio nodes read ``samples`` and ``type``, as from their
own audio latents, and carry the ``sa3_*`` keys along):
    samples        (B, C, L) float32 SAME latents (C = 256 for the released models, 4096 samples
                   per frame, no scaling: what core's SA3 VAE encodes and decodes too)
    type           "audio"
    sa3_durations  per-item requested seconds (B floats): the plan of ``generate()``
    sa3_rng        (sampler) {"state": uint8 tensor, "device": str}: the generator after sampling,
                   which the decoder continues
    sa3_padding    (sampler, only when SA3 Sampling Options set another duration padding than 6 s)
                   the headroom in seconds, so the decoder silences the same padded frames
LATENT, as the pack reads it (``read_latent``): the above; core's EmptyLatentAudio (all zeros,
64 channels at 2048 samples per frame in 0.3.64, the ratio in ``downscale_ratio_temporal`` in
newer ComfyUI), whose batch size and length are used as core's samplers use them; and a latent
of the model's channel count without ``sa3_*`` keys (core's VAEEncodeAudio with core's SA3 VAE),
whose values are SAME latents as they are.
AUDIO: {"waveform": (B, C, S) float32 CPU in [-1, 1], "sample_rate": int}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ._sa3 import DURATION_PADDING_SEC, SAMPLES_PER_LATENT, checks

LATENT_TYPE = "audio"
DURATIONS = "sa3_durations"
RATIO = "downscale_ratio_temporal"  # newer ComfyUI: audio samples per latent frame
CORE_EMPTY_RATIO = 2048  # EmptyLatentAudio without RATIO (0.3.64): Stable Audio Open's frames
RNG = "sa3_rng"
PADDING = "sa3_padding"  # seconds of headroom the sampler planned with, when not the official 6


def error(node: str, message: str) -> str:
    """``"Stable Audio 3 <node>: <message>"``; messages follow "<what> (got X, expected Y). <fix>."."""
    return f"Stable Audio 3 {node}: {message}"


# --- widget text ------------------------------------------------------------------------------


def split_prompts(text: str, one_per_line: bool) -> list[str]:
    """The prompt widget as a list: the whole text, or one prompt per non-empty line."""
    if not one_per_line:
        return [text]
    return [line.strip() for line in text.splitlines() if line.strip()]


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"


def parse_durations(text: str, node: str, input_name: str) -> list[float]:
    """``"10, 20 5.5"`` -> [10.0, 20.0, 5.5]; empty text -> []."""
    items = [t for t in re.split(r"[,;\s]+", text.strip()) if t]
    out = []
    for t in items:
        if not re.fullmatch(_NUMBER, t):
            raise ValueError(error(node, f"{input_name} must be numbers of seconds separated by commas "
                                         f"(got {t!r} in {text!r}, expected e.g. '10, 20, 5.5'). Fix the list."))
        out.append(float(t))
    return out


def parse_regions(text: str, node: str, input_name: str) -> list[tuple[float, float]]:
    """``"2-4, 8.5-10"`` (commas, semicolons or new lines between regions) -> [(2, 4), (8.5, 10)]."""
    regions = []
    for part in [p.strip() for p in re.split(r"[,;\n]+", text) if p.strip()]:
        m = re.fullmatch(rf"({_NUMBER})\s*(?:-|to|\.\.)\s*({_NUMBER})", part)
        if m is None:
            raise ValueError(error(node, f"{input_name} entry {part!r} is not a region (got {text!r}, expected "
                                         "'start-end' in seconds, e.g. '2-4, 8.5-10'). Write each region as "
                                         "start-end."))
        regions.append((float(m.group(1)), float(m.group(2))))
    return regions


def one_or_each(values, n: int, message: str) -> list:
    """``values`` for ``n`` items: as given when there are ``n``, repeated when there is one;
    otherwise ``ValueError(message)`` (the caller's sentence naming the input)."""
    values = list(values)
    return checks.per_item(values[0] if len(values) == 1 else values, "values", n, error=message)


# --- inpaint regions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InpaintRegions:
    """What travels on an ``SA3_INPAINT_REGIONS`` socket: what to regenerate, in seconds.
    Either ``regions`` ((start, end) pairs) or, for a continuation, everything from
    ``continue_from`` to the end of the duration, which only the sampler knows."""

    regions: tuple[tuple[float, float], ...] = ()
    continue_from: float | None = None

    def spans(self, duration: float) -> list[tuple[float, float]]:
        """The regions for a generation (or audio) of ``duration`` seconds."""
        if self.continue_from is not None:
            return [(self.continue_from, duration)]
        return list(self.regions)


def read_regions(value, node: str, input_name: str) -> InpaintRegions:
    if not isinstance(value, InpaintRegions):
        raise ValueError(error(node, f"{input_name} is not SA3 inpaint regions (got {type(value).__name__}, expected "
                                     "the output of SA3 Inpaint Regions). Connect SA3 Inpaint Regions."))
    return value


# --- LATENT -----------------------------------------------------------------------------------


def make_latent(samples: torch.Tensor, durations, **extra) -> dict:
    latent = {"samples": samples, "type": LATENT_TYPE, DURATIONS: [float(d) for d in durations]}
    latent.update(extra)
    return latent


@dataclass(frozen=True)
class LatentIn:
    """A LATENT input as the pack understands it (see the module docstring).

    kind: "sa3" (made by the pack), "empty" (core's EmptyLatentAudio) or "encoded" (SAME
    latents without the pack's keys: core's VAEEncodeAudio with core's SA3 VAE).
    samples: (B, C, L) SAME latents; None for "empty". frames: L in SA3 frames (4096 samples).
    durations: the pack's per-item seconds ("sa3" only, one per item).
    """

    kind: str
    batch: int
    frames: int
    samples: torch.Tensor | None
    durations: list[float] | None


def _use_instead(node: str) -> str:
    return ("Connect SA3 Encode Audio, core's EmptyLatentAudio or core's VAEEncodeAudio with the SA3 VAE, or "
            "leave it unconnected" if node == "Sampler" else
            "Decode the output of SA3 Sampler, SA3 Encode Audio or core's VAEEncodeAudio with the SA3 VAE")


def read_padding(latent: dict, node: str, input_name: str) -> float:
    """The duration padding a latent was sampled with (``sa3_padding``; the official 6 s when absent)."""
    return checks.check_number(f"{input_name} {PADDING}", latent.get(PADDING, DURATION_PADDING_SEC), 0,
                               checks.MAX_SECONDS, unit="seconds", where=node)


def read_latent(latent, node: str, input_name: str, channels: int | None) -> LatentIn:
    """Classify a LATENT input (ours, core's empty one, core's SAME-encoded one) or refuse it
    with a message saying what to use instead. ``channels``: the model's (None: not known)."""
    if not isinstance(latent, dict) or not torch.is_tensor(latent.get("samples")):
        raise ValueError(error(node, f"{input_name} is not a LATENT (got {type(latent).__name__}, expected a dict "
                                     f"with 'samples'). {_use_instead(node)}."))
    samples = latent["samples"]
    shape = tuple(samples.shape)
    if samples.dim() != 3 or 0 in shape:
        raise ValueError(error(node, f"{input_name} is not an audio latent (got shape {shape}, expected (batch, "
                                     f"channels, frames)). {_use_instead(node)}."))
    batch, got_channels, frames = shape
    if not (samples.is_floating_point() and samples.dtype.itemsize <= 8):
        raise ValueError(error(node, f"{input_name} samples must be real floating-point numbers (got {samples.dtype}). "
                                     f"{_use_instead(node)}."))
    checks.check_number(f"{input_name} batch size", batch, 1, checks.MAX_BATCH, integer=True, where=node,
                        fix="Lower the batch size of the node that made the latent.")
    if DURATIONS in latent:
        if channels is not None and got_channels != channels:
            raise ValueError(error(node, f"{input_name} was made for another model (got {got_channels} channels, "
                                         f"expected {channels}). Make it again with this model."))
        durations = _latent_durations(latent[DURATIONS], batch, node, input_name)
        return LatentIn("sa3", batch, frames, _finite(samples, node, input_name), durations)
    ratio = latent.get(RATIO)
    if not bool(samples.any()):  # core's EmptyLatentAudio: only its batch and length count
        if ratio is None:
            ratio = SAMPLES_PER_LATENT if got_channels == channels else CORE_EMPTY_RATIO
        sa3_frames = max(1, round(frames * float(ratio) / SAMPLES_PER_LATENT))  # as core converts empty latents
        return LatentIn("empty", batch, sa3_frames, None, None)
    if got_channels != channels or (ratio is not None and ratio != SAMPLES_PER_LATENT):
        raise ValueError(error(node, f"{input_name} holds latents of another audio model (got {got_channels} "
                                     f"channels at {ratio or 'unknown'} samples per frame, expected {channels} at "
                                     f"{SAMPLES_PER_LATENT}). {_use_instead(node)}."))
    return LatentIn("encoded", batch, frames, _finite(samples, node, input_name), None)


def _latent_durations(values, batch: int, node: str, input_name: str) -> list[float]:
    """The pack's per-item seconds of a LATENT (one, or one per item: core batch nodes repeat samples)."""
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= checks.MAX_BATCH:
        raise ValueError(error(node, f"{input_name} {DURATIONS} must be a list of 1 to {checks.MAX_BATCH} durations "
                                     f"(got {checks.shown(values)}). Make the latent again."))
    seconds = [checks.check_number(f"{input_name} {DURATIONS}", d, 0, checks.MAX_SECONDS, lo_open=True,
                                   unit="seconds", where=node, fix="Make the latent again.") for d in values]
    return one_or_each(seconds, batch, error(
        node, f"{input_name} has {batch} items but {len(seconds)} durations (expected one per item). Make the latent "
              "again."))


def _finite(samples: torch.Tensor, node: str, input_name: str) -> torch.Tensor:
    """Latent values must be finite: NaN or infinity (LoadLatent of a broken file, latent arithmetic)
    would decode to full-scale noise."""
    finite = torch.isfinite(samples)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(error(node, f"{input_name} values must be finite numbers (got {bad:,} NaN or infinite of "
                                     f"{samples.numel():,}). Make the latent again; check the node that made it."))
    return samples


def fit_frames(samples: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, C, L) -> (B, C, frames): cut, or zero-padded at the end (a core-encoded source of
    another length; SA3 Encode Audio pads the audio itself instead, as generate() does)."""
    if samples.shape[-1] >= frames:
        return samples[..., :frames]
    return torch.nn.functional.pad(samples, (0, frames - samples.shape[-1]))


# --- AUDIO ------------------------------------------------------------------------------------


def read_audio(audio, node: str, input_name: str) -> list[tuple[int, torch.Tensor]]:
    """ComfyUI AUDIO -> one ``(sample_rate, (C, S) float32)`` per batch item, as the library takes."""
    if not isinstance(audio, dict) or not torch.is_tensor(audio.get("waveform")) or "sample_rate" not in audio:
        raise ValueError(error(node, f"{input_name} is not AUDIO (got {type(audio).__name__}, expected "
                                     "{'waveform', 'sample_rate'}). Connect LoadAudio or another audio node."))
    wav = audio["waveform"]
    if wav.dim() == 2:
        wav = wav[None]
    if wav.dim() != 3 or wav.shape[-1] == 0 or wav.shape[1] not in (1, 2):
        raise ValueError(error(node, f"{input_name} waveform has shape {tuple(audio['waveform'].shape)} (expected "
                                     "(batch, 1 or 2 channels, samples > 0)). Use mono or stereo audio."))
    sr = checks.check_sample_rate(input_name, audio["sample_rate"], node)  # a 1 Hz header would resample for ages
    out = []
    for i in range(wav.shape[0]):
        item = f"{input_name} item {i}" if wav.shape[0] > 1 else input_name
        out.append((sr, checks.check_waveform(item, wav[i].detach().to("cpu", torch.float32), node)))
    return out


def make_audio(waveform: torch.Tensor, sample_rate: int) -> dict:
    return {"waveform": waveform.detach().to("cpu", torch.float32).contiguous(), "sample_rate": int(sample_rate)}


# --- generator state --------------------------------------------------------------------------


def save_generator(generator: torch.Generator) -> dict:
    return {"state": generator.get_state(), "device": str(generator.device)}


def restore_generator(saved, node: str = "Decode", input_name: str = "latent") -> torch.Generator:
    """The sampler's generator from a LATENT's ``sa3_rng`` (refused, naming it, when it is not one)."""
    try:
        generator = torch.Generator(device=saved["device"])
        generator.set_state(saved["state"])
    except (TypeError, KeyError, RuntimeError, ValueError):
        raise ValueError(error(node, f"{input_name} {RNG} is not a random-stream state saved by SA3 Sampler (got "
                                     f"{checks.shown(saved)}). Set decoder_seed to 0 or more, or sample the latent "
                                     "again.")) from None
    return generator
