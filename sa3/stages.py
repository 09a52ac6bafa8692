"""Generation as public stage functions: the same functions ``StableAudioModel.generate()``
(``sa3.model``) chains and the ComfyUI nodes call one by one.

Stages:
1. ``StableAudioModel.from_pretrained`` (``sa3.model``): DiT + conditioner + text encoder + SAME.
2. ``encode_text``: prompts, negative prompts and durations -> ``TextConditioning``.
3. ``plan_latents``: durations -> ``LatentPlan`` (latent length, padding mask, schedule lengths).
4. ``make_generator`` (``sa3.rng``): the one explicit RNG stream of a generation.
5. ``prepare_sampling``: initial noise (``sa3.rng.make_noise``), source audio -> latents
   (``encode_audio``), regions -> latent keep-mask (``build_inpaint_mask``) and inpainting
   conditioning, in the stream's order; ``generate()`` and the sampler node both call it.
6. ``sample``: schedule + sampler + CFG/APG (``sa3.sampling``) -> latents.
7. ``decode``: latents -> audio, zeroed past each item's valid region, clamped.

Randomness follows the official order (spec 6.9): initial noise, SAME encoder noise (init audio
then inpaint audio), sampler noise, decoder noise; all from one ``torch.Generator``, never from
the global RNG, so a node graph and ``generate()`` give the same audio for the same seed.

Legend: B batch, C latent channels, L latent frames, S audio samples, K context tokens (257).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import audio as audio_utils
from . import checks
from .conditioners import Conditioner, TextEncoder
from .config import DURATION_PADDING_SEC, LATENT_ALIGN, SAMPLES_PER_LATENT, ModelConfig
from .dit import DiT, DiTConditioning
from .rng import make_noise
from .same import SAMEAutoencoder
from .sampling import (
    CFG_INTERVAL,
    build_schedule,
    cfg_conditioning,
    check_sampling,
    dit_call_times,
    get_sampler,
    guided_at,
    guided_velocity,
    make_shift,
)

# --- stage 2: text ---------------------------------------------------------------------------


@dataclass
class TextConditioning:
    """Conditioning tensors for a batch (on the DiT's device).

    cross: (B, K, E) prompt embeddings + seconds token; global_cond: (B, E) seconds embedding;
    negative_cross / negative_mask: (B, K, E) / (B, K), or None without a negative prompt.
    """

    cross: torch.Tensor
    global_cond: torch.Tensor
    durations: list[float]
    prompts: list[str]
    negative_cross: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.cross.shape[0]

    def unconditional(self) -> torch.Tensor:
        """Context of the CFG branch: the negative prompt with padded positions zeroed (the
        official behaviour), or all zeros without a negative prompt."""
        if self.negative_cross is None:
            return torch.zeros_like(self.cross)
        keep = self.negative_mask.to(torch.bool)[..., None]
        return torch.where(keep, self.negative_cross, torch.zeros_like(self.negative_cross))


def _encode_prompts(text_encoder: TextEncoder, conditioner: Conditioner, prompts: list[str], durations: list[float]):
    device = conditioner.conditioners["prompt"].padding_embedding.device
    hidden, mask = text_encoder(prompts)
    hidden, mask = hidden.to(device), mask.to(device)
    prompt_emb = conditioner.prompt(hidden, mask)  # (B, P, E)
    seconds = conditioner.seconds(durations)  # (B, 1, E)
    cross = torch.cat([prompt_emb, seconds.to(prompt_emb.dtype)], dim=1)  # (B, K, E)
    cross_mask = torch.cat([mask.float(), torch.ones_like(mask[:, :1], dtype=torch.float32)], dim=1)  # (B, K)
    return cross, cross_mask, seconds[:, 0]


@torch.no_grad()
def encode_text(text_encoder: TextEncoder, conditioner: Conditioner, prompts: Sequence[str],
                durations: Sequence[float], negative_prompts: Sequence[str] | None = None) -> TextConditioning:
    """Encode per-item prompts and durations (and optional negative prompts, which reuse the
    durations) into DiT conditioning."""
    prompts = [checks.check_text("prompt", p) for p in prompts]
    checks.check_number("prompt count", len(prompts), 1, checks.MAX_BATCH, integer=True)
    durations = checks.check_durations("duration", durations, checks.MAX_SECONDS)
    checks.check_count("duration", len(durations), len(prompts))
    if negative_prompts is not None:
        negative_prompts = [checks.check_text("negative_prompt", p) for p in negative_prompts]
        checks.check_count("negative_prompt", len(negative_prompts), len(prompts))
    cross, _, global_cond = _encode_prompts(text_encoder, conditioner, prompts, durations)
    out = TextConditioning(cross=cross, global_cond=global_cond, durations=durations, prompts=prompts)
    if negative_prompts is not None:
        out.negative_cross, out.negative_mask, _ = _encode_prompts(text_encoder, conditioner, negative_prompts,
                                                                   durations)
    return out


# --- stage 3: latent plan --------------------------------------------------------------------


@dataclass(frozen=True)
class LatentPlan:
    """Sizes of one generation (spec 6.2, 6.8).

    audio_samples: padded audio length S = latents * 4096; latents: L;
    effective: (B,) latent lengths of the requested durations (the schedule's lengths);
    valid: (B,) effective + 6 s headroom, clamped to L (the DiT's padding mask).
    """

    audio_samples: int
    latents: int
    effective: tuple[int, ...]
    valid: tuple[int, ...]
    durations: tuple[float, ...]

    def padding_mask(self, device=None) -> torch.Tensor:
        """(B, L) bool, True on valid latents."""
        valid = torch.tensor(self.valid, device=device)
        return torch.arange(self.latents, device=device)[None, :] < valid[:, None]


def plan_latents(cfg: ModelConfig, durations: Sequence[float], padding_sec: float = DURATION_PADDING_SEC,
                 latents: int | None = None) -> LatentPlan:
    """Latent length for a batch: ``align8192((max duration + 6 s) * sr)``, capped at the
    model's ``sample_size`` (from its config, so medium reaches 380 s).

    ``latents``: a length fixed elsewhere instead (ComfyUI's EmptyLatentAudio sizes latents from
    its own seconds, rounded to the nearest frame, without headroom); each item's valid region
    is capped at it, and the longest duration must fit in it (to that same rounding).
    """
    durations = checks.check_durations("duration", durations, cfg.max_duration)
    checks.check_number("batch size", len(durations), 1, checks.MAX_BATCH, integer=True)
    padding_sec = checks.check_number("duration_padding_sec", padding_sec, 0, checks.MAX_SECONDS, unit="seconds")
    sr = cfg.sample_rate
    headroom = int(padding_sec * sr / SAMPLES_PER_LATENT)
    effective = tuple(max(1, math.ceil(int(d * sr) / SAMPLES_PER_LATENT)) for d in durations)
    if latents is None:
        n = int((max(durations) + padding_sec) * sr)
        n = math.ceil(n / SAMPLES_PER_LATENT) * SAMPLES_PER_LATENT
        n = math.ceil(n / LATENT_ALIGN) * LATENT_ALIGN
        n = min(n, cfg.sample_size // LATENT_ALIGN * LATENT_ALIGN)
        latents = n // SAMPLES_PER_LATENT
    elif not (needed := round(max(durations) * sr / SAMPLES_PER_LATENT)) <= latents <= cfg.max_latents:
        raise ValueError(f"Stable Audio 3: a latent of {latents} frames ({latents * SAMPLES_PER_LATENT / sr:.2f} s) "
                         f"does not fit {max(durations):g} s (expected {needed} to {cfg.max_latents} frames).")
    valid = tuple(min(e + headroom, latents) for e in effective)
    return LatentPlan(latents * SAMPLES_PER_LATENT, latents, effective, valid, tuple(durations))


# --- stage 4: audio in -----------------------------------------------------------------------


AudioInput = tuple  # (sample_rate, tensor (C, S) or numpy (S, C)), as in the official interface


def check_audio_input(name: str, audio_input: AudioInput, where: str | None = None) -> tuple[int, torch.Tensor]:
    """``(sample_rate, audio)`` as the official interface takes it -> ``(rate, (C, S))`` with the rate
    in range. ``name`` says which input is wrong (init_audio, inpaint_audio)."""
    if not (isinstance(audio_input, (tuple, list)) and len(audio_input) == 2):
        raise checks.fail(name, "a (sample_rate, audio) pair", audio_input, where)
    in_sr, data = audio_input
    if torch.is_tensor(in_sr) and not torch.is_tensor(data):
        raise ValueError(checks.message(f"{name} must be (sample_rate, audio) with the sample rate first (got "
                                        "(tensor, number)); torchaudio.load returns (audio, sr), so swap it.",
                                        where))
    rate = checks.check_sample_rate(name, in_sr, where)
    return rate, audio_utils.as_channels_first(data, name)


def audio_at_rate(name: str, wav: torch.Tensor, rate: int, sample_rate: int, *, keep: int | None = None,
                  where: str | None = None) -> torch.Tensor:
    """(C, S) audio at ``rate`` Hz (a checked rate) -> (C, S') float32 at ``sample_rate``: the
    resampling filter's cost bounded, every sample used finite. With ``keep`` (output samples), only
    the first two channels and the samples that reach those ``keep`` outputs are checked and
    resampled (the same numbers, bounded work for long files). ``prepare_audio`` and
    ``sa3.autoencoder.AutoencoderModel`` take their sources through it."""
    checks.check_resample(name, rate, sample_rate, where)
    if keep is not None:
        wav = wav[:2, : audio_utils.samples_needed(keep, rate, sample_rate)]  # (C, S) -> (<=2, <=needed)
    wav = checks.check_waveform(name, wav, where).float()
    return audio_utils.resample(wav, rate, sample_rate)


def prepare_audio(audio_input: AudioInput, sample_rate: int, length: int, name: str = "audio",
                  where: str | None = None) -> torch.Tensor:
    """(sample_rate, audio) -> (1, 2, length) float32 at the model rate: resample, then keep the
    first ``length`` samples (zero-padded), then mono -> stereo (official order). Only the first two
    channels and the samples that reach those ``length`` outputs are resampled (the same numbers,
    bounded work for long files); each of those samples must be finite."""
    in_sr, wav = check_audio_input(name, audio_input, where)
    wav = audio_at_rate(name, wav, in_sr, sample_rate, keep=length, where=where)
    wav = audio_utils.pad_crop(wav, length)
    return audio_utils.to_stereo(wav[None])


@torch.no_grad()
def encode_audio(autoencoder: SAMEAutoencoder, audio: torch.Tensor, *, chunked: bool,
                 generator: torch.Generator | None) -> torch.Tensor:
    """(1, 2, S) audio -> (1, C, S / 4096) latents. SAME-L draws encoder noise from ``generator``."""
    return autoencoder.encode(audio.to(autoencoder.device, autoencoder.dtype), chunked=chunked, generator=generator)


def build_inpaint_mask(plan: LatentPlan, regions: Sequence[tuple[float, float]], sample_rate: int,
                       device=None) -> torch.Tensor:
    """Latent keep-mask (1, 1, L): 1 = keep the source, 0 = generate.

    Built at audio rate over ``[int(start * sr), int(end * sr))`` per region, zeroed past the
    longest duration (the headroom is generated), then nearest-sampled at sample 4096 * j.
    """
    regions = checks.check_regions("inpaint region", regions, max(plan.durations))
    mask = torch.ones(1, plan.audio_samples, device=device)
    for start, end in regions:
        s = min(int(start * sample_rate), plan.audio_samples)
        e = min(int(end * sample_rate), plan.audio_samples)
        mask[:, s:e] = 0
    mask[:, int(max(plan.durations) * sample_rate):] = 0
    return F.interpolate(mask[:, None], size=plan.latents, mode="nearest")  # (1, 1, S) -> (1, 1, L)


# --- stage 5: sources and noise ---------------------------------------------------------------


def local_conditioning(batch_size: int, latents: int, channels: int, inpaint_latents: torch.Tensor | None,
                       inpaint_mask: torch.Tensor | None, device=None) -> torch.Tensor:
    """(B, 1 + C, L): the keep-mask and the masked source latents; zeros without inpainting."""
    if inpaint_mask is None:
        return torch.zeros(batch_size, 1 + channels, latents, device=device)
    mask = inpaint_mask.to(device).expand(batch_size, 1, latents)
    source = torch.zeros(batch_size, channels, latents, device=device) if inpaint_latents is None \
        else inpaint_latents.to(device).expand(batch_size, -1, -1)
    return torch.cat([mask, source * mask], dim=1)


def encode_sources(autoencoder: SAMEAutoencoder, waveforms: Sequence[torch.Tensor], *, chunked: bool,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Prepared sources, one (1, 2, S) waveform per item -> (N, C, L) latents, encoded one item
    after the other (SAME-L draws each item's encoder noise in turn)."""
    return torch.cat([encode_audio(autoencoder, wav, chunked=chunked, generator=generator) for wav in waveforms])


@dataclass
class SamplingStart:
    """What ``sample`` starts from: noise (B, C, L) float32; init_latents (1 or B, C, L) or None
    (text-to-audio); local_cond (B, 1 + C, L), the inpainting conditioning (zeros without)."""

    noise: torch.Tensor
    init_latents: torch.Tensor | None
    local_cond: torch.Tensor


def prepare_sampling(autoencoder: SAMEAutoencoder, cfg: ModelConfig, plan: LatentPlan, generator: torch.Generator, *,
                     batch_size: int, init_audio: Sequence[torch.Tensor] | None = None,
                     init_latents: torch.Tensor | None = None, inpaint_audio: Sequence[torch.Tensor] | None = None,
                     inpaint_latents: torch.Tensor | None = None, inpaint_regions: Sequence[tuple[float, float]] = (),
                     device=None) -> SamplingStart:
    """Stages 4-5 in the official random order (spec 6.9): the initial noise, then the init source,
    then the inpaint source, each SAME-encoded here when given as audio (SAME-L draws encoder
    noise from ``generator``), then the inpaint keep-mask and the local conditioning.

    A source is either audio, ``prepare_audio`` waveforms (1, 2, plan.audio_samples) one per
    item, or latents (1 or B, C, L) encoded before (used as given: no encoder draw here).
    ``inpaint_regions`` (seconds) are regenerated; without regions an inpaint source is kept
    whole up to the longest duration (continuation past its end).
    """
    for name, audio, latents in (("init", init_audio, init_latents), ("inpaint", inpaint_audio, inpaint_latents)):
        if audio is not None and latents is not None:
            raise ValueError(f"Stable Audio 3: give the {name} source as audio or as latents, not both.")
    device = device or generator.device
    channels = cfg.latent_channels
    chunked = autoencoder.config.chunked  # the checkpoint's default
    noise = make_noise(batch_size, channels, plan.latents, generator, device)
    if init_audio is not None:
        init_latents = encode_sources(autoencoder, init_audio, chunked=chunked, generator=generator)
    if inpaint_audio is not None:
        inpaint_latents = encode_sources(autoencoder, inpaint_audio, chunked=chunked, generator=generator)
    mask = None
    if inpaint_latents is not None:
        mask = build_inpaint_mask(plan, inpaint_regions, cfg.sample_rate, device)
    elif inpaint_regions:
        raise ValueError("Stable Audio 3: inpaint regions need an inpaint source.")
    local = local_conditioning(batch_size, plan.latents, channels, inpaint_latents, mask, device)
    return SamplingStart(noise, None if init_latents is None else init_latents.to(device), local)


# --- stage 6: sampling -----------------------------------------------------------------------


@torch.no_grad()
def sample(dit: DiT, noise: torch.Tensor, text: TextConditioning, plan: LatentPlan, *, cfg: ModelConfig,
           steps: int = 8, cfg_scale: float = 1.0, apg_scale: float = 1.0, sampler_type: str | None = None,
           init_latents: torch.Tensor | None = None, init_noise_level: float = 1.0,
           local_cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
           callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
           step_hooks: Sequence[Callable[[torch.Tensor], None]] = (), scale_phi: float = 0.0,
           cfg_norm_threshold: float = 0.0, cfg_interval: tuple[float, float] = CFG_INTERVAL,
           dist_shift=None) -> torch.Tensor:
    """Run the sampler from ``noise`` (B, C, L) and return the final latents (B, C, L).

    ``init_latents`` (1 or B, C, L) with ``init_noise_level`` < 1 starts from
    ``init * (1 - level) + noise * level`` (audio-to-audio). ``local_cond`` is the inpainting
    conditioning from ``local_conditioning``. ``callback(step, x, denoised)`` runs once per step;
    ``step_hooks`` run before every DiT call with its t (B,) as a float32 CPU tensor (LoRA timing:
    reading it costs no device sync; ``sampling.dit_call_times``). With ``cfg_scale`` != 1,
    guidance runs in the DiT calls whose noise level lies in ``cfg_interval``; the others run the
    conditional branch alone. ``dist_shift`` (an official shift spec or ``ShiftConfig``) replaces the
    model's sampling time shift.
    """
    checked = check_sampling(steps, cfg_scale, apg_scale, init_noise_level, sampler_type, scale_phi, cfg_norm_threshold,
                             cfg_interval, dist_shift)
    steps, cfg_scale, apg_scale = checked["steps"], checked["cfg_scale"], checked["apg_scale"]
    init_noise_level, scale_phi, cfg_norm_threshold, cfg_interval = (
        checked[k] for k in ("init_noise_level", "scale_phi", "cfg_norm_threshold", "cfg_interval"))
    shift = make_shift(checked["dist_shift"] or cfg.shift)
    sampler = get_sampler(sampler_type or cfg.default_sampler)
    device, dtype = noise.device, dit.dtype
    b = noise.shape[0]
    padding_mask = plan.padding_mask(device)
    if b != text.batch_size or b != len(plan.valid):
        raise ValueError(f"Stable Audio 3: batch sizes differ (noise {b}, text {text.batch_size}, "
                         f"plan {len(plan.valid)}).")
    local = local_cond
    if local is None:
        local = local_conditioning(b, plan.latents, noise.shape[1], None, None, device)
    cond = DiTConditioning(cross=text.cross.to(device, dtype), global_cond=text.global_cond.to(device, dtype),
                           local=local.to(device, dtype), padding_mask=padding_mask)
    guided = cfg_scale != 1.0
    if guided:
        batch_cond = cfg_conditioning(cond, text.unconditional().to(device, dtype))

    # step-independent DiT work (context K/V, local embeddings, rotary) once per conditioning, made
    # on first use (an interval may leave one branch unused); the DiT refreshes a cache itself if a
    # step hook (LoRA) changes a weight it depends on
    caches = {}

    def run_dit(x: torch.Tensor, t: torch.Tensor, c: DiTConditioning) -> torch.Tensor:
        if id(c) not in caches:
            caches[id(c)] = dit.prepare(c)
        return dit(x, t, c, cache=caches[id(c)])

    host_times = iter(())  # each DiT call's t on the CPU, set once the schedule is known

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.float()  # the DiT and guidance use float32 time (spec 4.2)
        t_host = next(host_times)
        for hook in step_hooks:
            hook(t_host)
        x = x.to(dtype)
        if not (guided and guided_at(t_host, cfg_interval)):
            return run_dit(x, t, cond)
        return guided_velocity(run_dit, x, t, batch_cond, cfg_scale=cfg_scale, apg_scale=apg_scale,
                               padding_mask=padding_mask, norm_threshold=cfg_norm_threshold, scale_phi=scale_phi)

    sigma_max = 1.0
    x = noise
    if init_latents is not None:
        sigma_max = float(init_noise_level)
        x = init_latents.to(device) * (1 - sigma_max) + noise * sigma_max
    x = x.to(dtype)
    effective = torch.tensor(plan.effective, dtype=torch.float32, device=device)
    sigmas = build_schedule(steps, sigma_max, shift, effective)
    host_times = iter(dit_call_times(sampler, sigmas, x.dtype))
    return sampler(velocity, x, sigmas, generator=generator, callback=callback)


# --- stage 7: decode -------------------------------------------------------------------------


@torch.no_grad()
def decode(autoencoder: SAMEAutoencoder, latents: torch.Tensor, plan: LatentPlan, *, chunked: bool,
           generator: torch.Generator | None, on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(B, C, L) latents -> (B, 2, L * 4096) float32 audio: samples past each item's valid
    latents are zeroed, then clamped to [-1, 1]. Draws the decoder noise from ``generator``."""
    audio = autoencoder.decode(latents.to(autoencoder.device, autoencoder.dtype), chunked=chunked,
                               generator=generator, on_chunk=on_chunk)
    keep = plan.padding_mask(audio.device).repeat_interleave(SAMPLES_PER_LATENT, dim=-1)[:, None]  # (B, 1, S)
    audio = audio * keep[..., : audio.shape[-1]].to(audio.dtype)
    return audio.float().clamp(-1, 1)


def trim_to_duration(audio: torch.Tensor, durations: Sequence[float], sample_rate: int) -> torch.Tensor:
    """Crop to the duration when all items share it; mixed durations keep the padded length
    (official behaviour; items are already silent past their own length + headroom)."""
    if len(set(durations)) == 1:
        return audio[..., : int(durations[0] * sample_rate)]
    return audio
