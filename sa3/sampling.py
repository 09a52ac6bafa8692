"""Rectified-flow sampling: time-shift schedules, samplers, classifier-free guidance (CFG/APG, the
CFG batch and its rescale) and the checks of the sampler's settings.

Convention: ``x_t = (1 - t) x0 + t eps``; the model predicts ``v = eps - x0``, so the denoised
estimate is ``x_t - t v``. Samplers are plain functions ``(velocity, x, sigmas, generator,
callback) -> x`` and know nothing of modules. Schedules are per item: (B, steps + 1).

Legend: B batch, C latent channels, T latent frames, S schedule points (steps + 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from . import checks
from .config import ShiftConfig, shift_config
from .dit import DiTConditioning
from .rng import randn

SAMPLERS = ("pingpong", "euler", "dpmpp", "rk4")

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B,C,T), t (B,)) -> v (B,C,T)
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step, x, denoised)


# --- time shifts -----------------------------------------------------------------------------


class TimeShift(Protocol):
    def shift(self, t: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        """t: (S,) in [0, 1]; seq_len: (B,) latent lengths. Returns (B, S)."""


class LogSNRShift:
    """Steps spaced uniformly in log-SNR: ``t' = sigmoid(-(end - t (end - start)))`` where
    ``start = anchor_logsnr - rate * log2(seq_len / anchor_length)``; endpoints kept exact."""

    def __init__(self, anchor_length: float = 2000, anchor_logsnr: float = -6.2, rate: float = 1.0,
                 logsnr_end: float = 2.0):
        self.anchor_length, self.anchor_logsnr = anchor_length, anchor_logsnr
        self.rate, self.logsnr_end = rate, logsnr_end

    def shift(self, t, seq_len):
        start = self.anchor_logsnr - self.rate * torch.log2(seq_len.float() / self.anchor_length)  # (B,)
        logsnr = self.logsnr_end - t[None, :] * (self.logsnr_end - start[:, None])  # (B, S)
        out = torch.sigmoid(-logsnr)
        out = torch.where(t[None, :] <= 0, torch.zeros_like(out), out)
        return torch.where(t[None, :] >= 1, torch.ones_like(out), out)


class FullShift:
    """The training shift ("full"): a Flux-style shift whose strength grows with length."""

    def __init__(self, base_shift: float = 0.5, max_shift: float = 1.15, max_length: int = 4096,
                 min_length: int = 256, use_sine: bool = False):
        self.base_shift, self.max_shift = base_shift, max_shift
        self.min_length, self.max_length, self.use_sine = min_length, max_length, use_sine

    def shift(self, t, seq_len):
        length = seq_len.float().clamp(self.min_length, self.max_length)[:, None]  # (B, 1)
        # the official order of operations: (max - base) * (len - min), then / (max_len - min_len)
        mu = -(self.base_shift + (self.max_shift - self.base_shift) * (length - self.min_length)
               / (self.max_length - self.min_length))
        out = 1 - torch.exp(mu) / (torch.exp(mu) + (1 / (1 - t[None, :]) - 1))
        return torch.sin(out * math.pi / 2) if self.use_sine else out


class FluxShift:
    """``alpha t / (1 + (alpha - 1) t)`` with alpha log-interpolated over the length range."""

    def __init__(self, min_length: int = 256, max_length: int = 4096, alpha_min: float = 1.0,
                 alpha_max: float = 1.0):
        self.min_length, self.max_length = min_length, max_length
        self.log_alpha = (math.log(max(alpha_min, 1e-8)), math.log(max(alpha_max, 1e-8)))
        self.log_len = (math.log(min_length), max(math.log(max_length), math.log(min_length) + 1e-8))

    def shift(self, t, seq_len):
        log_seq = torch.log(seq_len.float().clamp(self.min_length, self.max_length))[:, None]
        frac = (log_seq - self.log_len[0]) / (self.log_len[1] - self.log_len[0])
        alpha = torch.exp(self.log_alpha[0] + frac * (self.log_alpha[1] - self.log_alpha[0]))
        return alpha * t[None, :] / (1 + (alpha - 1.0) * t[None, :])


class NoShift:
    """The linear schedule, unshifted (``{"type": "none"}``)."""

    def shift(self, t, seq_len):
        return t[None, :].expand(seq_len.shape[0], -1).clone()


_SHIFTS = {"logsnr": LogSNRShift, "full": FullShift, "flux": FluxShift, "none": NoShift}


def make_shift(cfg: ShiftConfig | dict) -> TimeShift:
    """The time shift of a ``ShiftConfig`` or an official spec dict (checked by ``config.shift_config``)."""
    cfg = shift_config(cfg)
    return _SHIFTS[cfg.type](**cfg.options)


def build_schedule(steps: int, sigma_max: float, shift: TimeShift, effective_lengths: torch.Tensor) -> torch.Tensor:
    """Per-item noise levels (B, steps + 1) from ``sigma_max`` down to 0.

    Only the first point is forced back to ``sigma_max`` after shifting, so ``sigma_max < 1`` gives
    the official non-monotone schedule.
    """
    t = torch.linspace(sigma_max, 0, steps + 1, device=effective_lengths.device)
    sigmas = shift.shift(t, effective_lengths.clamp(min=1))
    sigmas[:, 0] = sigma_max
    return sigmas


# --- guidance --------------------------------------------------------------------------------


def apg_project(diff: torch.Tensor, direction: torch.Tensor, padding_mask: torch.Tensor | None):
    """Split ``diff`` into parts parallel / orthogonal to ``direction`` per item, over valid
    positions. Computed in float32. Returns (parallel, orthogonal), both (B, C, T)."""
    dtype = diff.dtype
    diff, direction = diff.float(), direction.float()
    dims = [-1, -2]
    if padding_mask is None:
        unit = torch.nn.functional.normalize(direction, dim=dims)
        parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
        return parallel.to(dtype), (diff - parallel).to(dtype)
    mask = padding_mask.unsqueeze(1).float()  # (B, 1, T)
    masked_dir = direction * mask
    unit = masked_dir / masked_dir.norm(dim=dims, keepdim=True).clamp(min=1e-8)
    parallel = (diff * mask * unit).sum(dim=dims, keepdim=True) * unit
    orthogonal = (diff - (diff * unit).sum(dim=dims, keepdim=True) * unit) * mask
    return parallel.to(dtype), orthogonal.to(dtype)


CFG_INTERVAL = (0.0, 1.0)  # official default: guidance at every noise level


def guided_at(t: torch.Tensor, interval: tuple[float, float]) -> bool:
    """Whether a DiT call at noise levels ``t`` (B,) runs guidance: officially
    ``interval[0] <= t[0] <= interval[1]``, batch item 0 deciding for the whole batch, compared in
    t's float32. An interval holding all of [0, 1] needs no look at t (no host sync per call)."""
    lo, hi = interval
    if lo <= 0.0 and hi >= 1.0:
        return True
    sigma = t.reshape(-1)[0]
    return bool((sigma >= lo) & (sigma <= hi))


def guide(x: torch.Tensor, t: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, *,
          cfg_scale: float, apg_scale: float, padding_mask: torch.Tensor | None,
          norm_threshold: float = 0.0, scale_phi: float = 0.0) -> torch.Tensor:
    """Combine conditional and unconditional velocities (official batch-CFG maths, spec 4.6):
    the guidance difference capped at ``norm_threshold`` (> 0), APG, CFG, then the CFG rescale
    towards the conditional velocity's spread over channels (``scale_phi`` in (0, 1]).

    x, v_*: (B, C, T); t: (B,) float32. Returns the guided velocity in float32.
    """
    sigma = t[:, None, None]
    cond_denoised = x - v_cond * sigma
    diff = cond_denoised - (x - v_uncond * sigma)
    if norm_threshold > 0:
        masked = diff if padding_mask is None else diff * padding_mask.unsqueeze(1).float()
        norm = masked.norm(p=2, dim=[-1, -2], keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    if apg_scale == 0.0:
        cfg_diff = diff
    else:
        _, orthogonal = apg_project(diff, cond_denoised, padding_mask)
        cfg_diff = orthogonal if apg_scale == 1.0 else apg_scale * orthogonal + (1 - apg_scale) * diff
    guided = cond_denoised + (cfg_scale - 1) * cfg_diff
    return rescale_cfg((x - guided) / sigma, v_cond, scale_phi)


def rescale_cfg(v: torch.Tensor, v_cond: torch.Tensor, scale_phi: float) -> torch.Tensor:
    """The CFG rescale: the guided velocity ``v`` scaled towards the conditional one's spread over
    channels, by ``scale_phi`` in (0, 1]; 0 returns ``v`` unchanged. v, v_cond: (B, C, T)."""
    if not scale_phi:
        return v
    return scale_phi * (v * (v_cond.std(dim=1, keepdim=True) / v.std(dim=1, keepdim=True))) + (1 - scale_phi) * v


def cfg_conditioning(cond: DiTConditioning, uncond_cross: torch.Tensor) -> DiTConditioning:
    """The conditioning of the CFG batch: the B conditional items, then the same B items with the
    unconditional context ``uncond_cross`` (B, K, E), so both branches run in one DiT call (2B)."""
    return DiTConditioning(
        cross=torch.cat([cond.cross, uncond_cross]), global_cond=cond.global_cond.repeat(2, 1),
        local=cond.local.repeat(2, 1, 1), padding_mask=cond.padding_mask.repeat(2, 1),
    )


def guided_velocity(model: Callable[[torch.Tensor, torch.Tensor, DiTConditioning], torch.Tensor], x: torch.Tensor,
                    t: torch.Tensor, batch_cond: DiTConditioning, **guidance) -> torch.Tensor:
    """One guided velocity: ``model(x, t, cond)`` run once on the CFG batch (``cfg_conditioning``),
    its two halves combined by ``guide`` (``guidance``: its keyword arguments).

    x: (B, C, T); t: (B,) float32. Returns (B, C, T) float32."""
    v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([t, t]), batch_cond).chunk(2)  # (2B, C, T) -> 2 x (B, C, T)
    return guide(x, t, v_cond, v_uncond, **guidance)


# --- settings ----------------------------------------------------------------------------------


def check_sampling(steps: int, cfg_scale: float, apg_scale: float, init_noise_level: float,
                   sampler_type: str | None, scale_phi: float = 0.0, cfg_norm_threshold: float = 0.0,
                   cfg_interval=CFG_INTERVAL, dist_shift=None) -> dict:
    """The sampler's settings, checked and normalised (``sample`` and ``generate`` step 0)."""
    return dict(
        steps=checks.check_number("steps", steps, 1, checks.MAX_STEPS, integer=True),
        cfg_scale=checks.check_number("cfg_scale", cfg_scale, 0, checks.MAX_CFG_SCALE),
        apg_scale=checks.check_number("apg_scale", apg_scale, 0, checks.MAX_APG_SCALE),
        init_noise_level=checks.check_number("init_noise_level", init_noise_level, 0, 1),
        sampler_type=None if sampler_type is None else checks.check_choice("sampler_type", sampler_type, SAMPLERS),
        **check_controls(scale_phi, cfg_norm_threshold, cfg_interval, dist_shift),
    )


def check_controls(scale_phi: float = 0.0, cfg_norm_threshold: float = 0.0, cfg_interval=CFG_INTERVAL,
                   dist_shift=None, where: str | None = None) -> dict:
    """The official app's advanced controls, checked: CFG rescale, norm threshold and interval, and
    the schedule shift override (an official spec dict or ``ShiftConfig`` -> ``ShiftConfig``;
    None keeps the model's)."""
    return dict(
        scale_phi=checks.check_number("scale_phi", scale_phi, 0, 1, where=where),
        cfg_norm_threshold=checks.check_number("cfg_norm_threshold", cfg_norm_threshold, 0,
                                               checks.MAX_CFG_NORM_THRESHOLD, where=where),
        cfg_interval=checks.check_noise_interval("cfg_interval", cfg_interval, where),
        dist_shift=None if dist_shift is None else shift_config(dist_shift, "dist_shift", where),
    )


# --- samplers --------------------------------------------------------------------------------


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Noise for ``x`` by the one rule of ``sa3.rng`` (a CPU generator works with a CUDA ``x``)."""
    return randn(x.shape, generator, x.device, x.dtype)


def sample_pingpong(velocity: Velocity, x, sigmas, generator=None, callback: StepCallback | None = None):
    """Denoise fully, then re-noise to the next level with fresh noise (post-trained models).

    Draws one noise tensor per step, the last one included (scaled by 0), as the official code.
    """
    for i in range(sigmas.shape[1] - 1):
        t_cur = sigmas[:, i].to(x.dtype)
        t_next = sigmas[:, i + 1].to(x.dtype)[:, None, None]
        denoised = x - t_cur[:, None, None] * velocity(x, t_cur)
        if callback is not None:
            callback(i, x, denoised)
        x = (1 - t_next) * denoised + t_next * _noise_like(x, generator)
    return x


def sample_euler(velocity: Velocity, x, sigmas, generator=None, callback: StepCallback | None = None):
    """First-order ODE steps (base models)."""
    for i in range(sigmas.shape[1] - 1):
        t_cur = sigmas[:, i].to(x.dtype)
        dt = (sigmas[:, i + 1].to(x.dtype) - t_cur)[:, None, None]
        v = velocity(x, t_cur)
        if callback is not None:
            callback(i, x, x - t_cur[:, None, None] * v)
        x = x + dt * v
    return x


def sample_dpmpp(velocity: Velocity, x, sigmas, generator=None, callback: StepCallback | None = None):
    """DPM-Solver++(2M) for rectified flow; first order at the first and last step."""
    def log_snr(t):
        return ((1 - t).clamp(min=1e-10) / t.clamp(min=1e-10)).log()

    old_denoised = None
    n = sigmas.shape[1] - 1
    ends_at_zero = (sigmas[:, 1:] == 0).all(dim=0).tolist()  # one host sync, not one per step
    for i in range(n):
        t_cur, t_next = sigmas[:, i], sigmas[:, i + 1]
        tc, tn = t_cur[:, None, None], t_next[:, None, None]
        denoised = x - tc * velocity(x, t_cur)
        if callback is not None:
            callback(i, x, denoised)
        coeff = (tn - tc) / ((1 - tn).clamp(min=1e-10) * tc.clamp(min=1e-10))
        if old_denoised is not None and not ends_at_zero[i]:
            tp = sigmas[:, i - 1][:, None, None]
            r = (log_snr(tc) - log_snr(tp)) / (log_snr(tn) - log_snr(tc))
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (tn / tc.clamp(min=1e-10)) * x - (1 - tn) * coeff * denoised_d
        old_denoised = denoised
    return x


def sample_rk4(velocity: Velocity, x, sigmas, generator=None, callback: StepCallback | None = None):
    """Classic 4th-order Runge-Kutta on per-item schedules (the official one silently returns the
    initial noise through generate(); this one samples). The last evaluation uses
    ``max(t_next, 1e-5)`` because the models are not trained at t = 0."""
    for i in range(sigmas.shape[1] - 1):
        t_cur, t_next = sigmas[:, i].to(x.dtype), sigmas[:, i + 1].to(x.dtype)
        dt = (t_next - t_cur)[:, None, None]
        k1 = velocity(x, t_cur)
        if callback is not None:
            callback(i, x, x - t_cur[:, None, None] * k1)
        t_mid = t_cur + (t_next - t_cur) / 2
        k2 = velocity(x + dt / 2 * k1, t_mid)
        k3 = velocity(x + dt / 2 * k2, t_mid)
        k4 = velocity(x + dt * k3, t_next.clamp(min=1e-5))
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


_SAMPLER_FNS = {"pingpong": sample_pingpong, "euler": sample_euler, "dpmpp": sample_dpmpp, "rk4": sample_rk4}


def dit_call_times(sampler, sigmas: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """The t (B,) of each DiT call ``sampler`` will make on schedule ``sigmas`` with latents in
    ``dtype``, as float32 CPU tensors in call order: the sampler run once on the CPU with a zero
    velocity on (B, 1, 1) latents (its times never depend on the latents). One device -> host copy
    of the schedule per generation lets per-call decisions on t (CFG and LoRA intervals) read the
    host copy instead of syncing at every DiT call."""
    times: list[torch.Tensor] = []

    def record(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times.append(t.float())
        return torch.zeros_like(x)

    host = sigmas.cpu()
    sampler(record, torch.zeros(host.shape[0], 1, 1, dtype=dtype), host, generator=torch.Generator())
    return times


def get_sampler(name: str):
    if name not in _SAMPLER_FNS:
        raise ValueError(f"Stable Audio 3: unknown sampler_type {name!r} (expected one of {SAMPLERS}).")
    return _SAMPLER_FNS[name]

