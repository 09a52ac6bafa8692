"""ComfyUI dicts <-> library tensors, widget text parsing, and the pack's error shape.

LATENT (ComfyUI's audio latent dict, extended with ``sa3_*`` keys that core nodes carry along):
    samples        (B, C, L) float32 on the intermediate device
    type           "audio"
    sa3_durations  per-item requested seconds (B floats): the plan of ``generate()``
    sa3_sample_rate
    sa3_source     (encode node) per item {"waveform": (C, S) float32 CPU, "sample_rate": int}: the
                   source audio as given, so the sampler can encode it at the plan's length and at
                   the right point of the seed's random stream (see nodes/sampling.py)
    sa3_rng        (sampler) {"state": uint8 tensor, "device": str}: the generator after sampling,
                   which the decoder continues
AUDIO: {"waveform": (B, C, S) float32 CPU in [-1, 1], "sample_rate": int}.
"""

from __future__ import annotations

import math
import re

import torch

LATENT_TYPE = "audio"
DURATIONS = "sa3_durations"
SAMPLE_RATE = "sa3_sample_rate"
SOURCE = "sa3_source"
RNG = "sa3_rng"


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
    if len(values) == n:
        return values
    if len(values) == 1:
        return values * n
    raise ValueError(message)


def check_durations(durations: list[float], max_duration: float, node: str, input_name: str) -> None:
    for d in durations:
        if not math.isfinite(d) or d <= 0 or d > max_duration:
            raise ValueError(error(node, f"{input_name} {d:g} s is outside this model's range (got {d:g}, "
                                         f"expected 0 < seconds <= {max_duration:.2f}). Choose a shorter duration."))


def check_regions(regions: list[tuple[float, float]], duration: float, node: str, input_name: str) -> None:
    if not regions:
        raise ValueError(error(node, f"{input_name} is empty (got no region, expected at least one "
                                     "'start-end'). Add a region such as '2-4'."))
    for s, e in regions:
        if s < 0 or e <= s:
            raise ValueError(error(node, f"region {s:g}-{e:g} s in {input_name} is empty or reversed (got start "
                                         f"{s:g}, end {e:g}, expected 0 <= start < end). Swap or fix the numbers."))
        if s >= duration:
            raise ValueError(error(node, f"region {s:g}-{e:g} s in {input_name} starts outside the audio (got "
                                         f"start {s:g} s, expected < the {duration:g} s duration). Move the region "
                                         "or lengthen the duration."))


# --- LATENT -----------------------------------------------------------------------------------


def make_latent(samples: torch.Tensor, durations, sample_rate: int, **extra) -> dict:
    latent = {"samples": samples, "type": LATENT_TYPE, DURATIONS: [float(d) for d in durations],
              SAMPLE_RATE: int(sample_rate)}
    latent.update(extra)
    return latent


def read_latent(latent, node: str, input_name: str, channels: int) -> tuple[torch.Tensor, list[float]]:
    """Samples and per-item durations of an SA3 latent, or a readable error."""
    if not isinstance(latent, dict) or not torch.is_tensor(latent.get("samples")):
        raise ValueError(error(node, f"{input_name} is not a LATENT (got {type(latent).__name__}, expected a dict "
                                     "with 'samples'). Connect an SA3 latent."))
    samples = latent["samples"]
    if samples.dim() != 3 or samples.shape[1] != channels:
        raise ValueError(error(node, f"{input_name} has the wrong shape for this model (got {tuple(samples.shape)}, "
                                     f"expected (batch, {channels}, frames)). Use SA3 Empty Latent or SA3 Encode "
                                     "Audio with the same model."))
    durations = latent.get(DURATIONS)
    if durations is None:
        raise ValueError(error(node, f"{input_name} carries no SA3 durations (got keys {sorted(latent)}, expected "
                                     f"{DURATIONS!r}). Make it with SA3 Empty Latent or SA3 Encode Audio."))
    durations = [float(d) for d in durations]
    if len(durations) != samples.shape[0]:
        if len(durations) == 1:
            durations = durations * samples.shape[0]  # a core batch node repeated the samples
        else:
            raise ValueError(error(node, f"{input_name} has {samples.shape[0]} items but {len(durations)} "
                                         "durations (expected one per item). Re-create the latent."))
    return samples, durations


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
    sr = int(audio["sample_rate"])
    return [(sr, wav[i].detach().to("cpu", torch.float32)) for i in range(wav.shape[0])]


def make_audio(waveform: torch.Tensor, sample_rate: int) -> dict:
    return {"waveform": waveform.detach().to("cpu", torch.float32).contiguous(), "sample_rate": int(sample_rate)}


# --- generator state --------------------------------------------------------------------------


def save_generator(generator: torch.Generator) -> dict:
    return {"state": generator.get_state(), "device": str(generator.device)}


def restore_generator(saved: dict) -> torch.Generator:
    generator = torch.Generator(device=saved["device"])
    generator.set_state(saved["state"])
    return generator
