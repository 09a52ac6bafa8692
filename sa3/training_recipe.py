"""The official LoRA training recipe's per-step maths, as plain functions of tensors and an
explicit ``torch.Generator`` (``stable_audio_3/training/diffusion.py`` and ``training/utils.py``,
with the options ``scripts/train_lora.py`` passes):

- timesteps: truncated logit-normal (left truncation 0.075), flipped (t -> 1 - t), then shifted
  per item by the config's training shift at the effective length from ``seconds_total``;
- rectified flow: ``x_t = (1 - t) x0 + t eps``, target ``v = eps - x0``;
- minibatch optimal-transport coupling of noise to data (Sinkhorn, 20 iterations, greedy
  assignment; MelodyFlow 2.5.2);
- padding mask extended into the silence by an exponential number of frames (mean 4 s);
- inpainting: per item a random-segments (p 0.1), full (0.8) or causal (0.1) mask, padding
  masked out;
- CFG dropout: the cross-attention tokens of 10 % of the items are zeroed;
- loss: MSE over valid frames to generate, plus the MSE over the provided context (weight 1).

Legend: B batch, C latent channels, L latent frames.
"""

from __future__ import annotations

import math

import torch

from .config import SAMPLE_RATE, SAMPLES_PER_LATENT

LEFT_TRUNCATION = 0.075  # truncated_logistic_normal_rescaled(left_trunc)
OT_SINKHORN_ITERS = 20
SILENCE_EXTENSION_SECONDS = 4.0  # silence_extension_scale_seconds
MASK_TYPE_PROBS = (0.1, 0.8, 0.1)  # random segments, full mask, causal (inpainting_config)
MAX_MASK_SEGMENTS = 10  # random_inpaint_mask default
CFG_DROPOUT = 0.1  # DiffusionCondTrainingWrapper default
CONTEXT_LOSS_WEIGHT = 1.0  # mask_loss_weight
LOSS_EPS = 1e-8


def _randint(lo: int, hi: int, generator: torch.Generator) -> int:
    """Uniform integer in [lo, hi], both ends included (Python's random.randint)."""
    return int(torch.randint(lo, hi + 1, (), generator=generator))


def sample_timesteps(batch: int, generator: torch.Generator) -> torch.Tensor:
    """(B,) noise levels: the truncated logit-normal flipped towards noise, float32.

    u ~ N(0, 1) -> Phi(u) rescaled into [Phi(logit(0.075)), 1] -> sigmoid(Phi^-1(.)), rescaled so
    0.075 maps to 0, then t = 1 - that."""
    normal = torch.distributions.Normal(0.0, 1.0)
    cdf = normal.cdf(torch.randn(batch, generator=generator))
    lower = normal.cdf(torch.logit(torch.tensor(LEFT_TRUNCATION)))
    samples = torch.sigmoid(normal.icdf(lower + (1 - lower) * cdf))
    return 1 - (samples - LEFT_TRUNCATION) / (1 - LEFT_TRUNCATION)


def effective_lengths(seconds_total: list[int]) -> torch.Tensor:
    """(B,) latent lengths of the durations: ceil(int(seconds * 44100) / 4096), as at inference."""
    return torch.tensor([math.ceil(int(s * SAMPLE_RATE) / SAMPLES_PER_LATENT) for s in seconds_total])


def shift_timesteps(t: torch.Tensor, shift, lengths: torch.Tensor) -> torch.Tensor:
    """Shift each item's t by its own length: (B,), (B,) -> (B,). ``shift`` None: unchanged."""
    if shift is None:
        return t
    return torch.stack([shift.shift(t[i:i + 1], lengths[i:i + 1])[0, 0] for i in range(t.shape[0])])


def ot_couple(data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Permute ``noise`` (B, C, L) to the data items it is closest to (squared L2), via a
    Sinkhorn soft assignment made a permutation greedily, row by row. B = 1: unchanged."""
    b = data.shape[0]
    if b < 2:
        return noise
    with torch.no_grad():
        x, e = data.reshape(b, -1), noise.reshape(b, -1)  # (B, C, L) -> (B, C*L)
        cost = (x * x).sum(1, keepdim=True) + (e * e).sum(1, keepdim=True).T - 2.0 * (x @ e.T)  # (B, B)
        log_p = -cost / cost.mean()  # normalised for stability
        for _ in range(OT_SINKHORN_ITERS):
            log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
            log_p = log_p - torch.logsumexp(log_p, dim=0, keepdim=True)
        p = log_p.exp()
        used = torch.zeros(b, dtype=torch.bool)
        order = []
        for i in range(b):
            p[i, used] = -1
            j = int(p[i].argmax())
            order.append(j)
            used[j] = True
    return noise[torch.tensor(order)]


def extend_padding(padding_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, L) bool -> (B, L) bool with each valid prefix extended by floor(Exp(mean 4 s in frames))
    frames, so the model learns to end in silence."""
    b, n = padding_mask.shape
    scale = SILENCE_EXTENSION_SECONDS * SAMPLE_RATE / SAMPLES_PER_LATENT
    extra = torch.empty(b).exponential_(1.0 / scale, generator=generator).long()
    lengths = (padding_mask.sum(dim=-1) + extra).clamp(max=n)
    return torch.arange(n)[None, :] < lengths[:, None]


def inpaint_masks(padding_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, L) valid frames -> (B, 1, L) float keep-mask (1 = provided context, 0 = generate)."""
    b, n = padding_mask.shape
    probs = torch.tensor(MASK_TYPE_PROBS)
    masks = []
    for i in range(b):
        real = int(padding_mask[i].sum())
        kind = int(torch.multinomial(probs, 1, generator=generator))
        mask = torch.ones(n)
        if kind == 1:  # full mask: generate everything
            mask.zero_()
        elif real > 0:
            if kind == 0:  # random segments (they may overlap)
                segments = _randint(1, MAX_MASK_SEGMENTS, generator)
                longest = max(1, real // segments)
                for _ in range(segments):
                    length = _randint(1, longest, generator)
                    if real - length >= 0:
                        start = _randint(0, real - length, generator)
                        mask[start:start + length] = 0
            else:  # causal: keep a random prefix, generate the rest
                prefix = _randint(0, real, generator)
                mask[prefix:real] = 0
            mask[real:] = 0  # padding is never context (attention masking is on)
        masks.append(mask)
    return torch.stack(masks)[:, None]  # (B, L) -> (B, 1, L)


def cfg_dropout(cross: torch.Tensor, generator: torch.Generator, p: float = CFG_DROPOUT) -> torch.Tensor:
    """Zero the whole cross-attention context (B, K, E) of each item with probability p."""
    drop = torch.bernoulli(torch.full((cross.shape[0], 1, 1), p), generator=generator).to(torch.bool)
    return torch.where(drop.to(cross.device), torch.zeros_like(cross), cross)


def masked_loss(output: torch.Tensor, target: torch.Tensor, padding_mask: torch.Tensor,
                keep_mask: torch.Tensor) -> torch.Tensor:
    """The official loss: per-item mean squared error over valid frames that are generated,
    averaged over the batch, plus (weight 1) the same over valid frames given as context.
    output, target: (B, C, L) float32; padding_mask: (B, L) bool; keep_mask: (B, 1, L)."""
    mse = (output - target) ** 2  # (B, C, L)
    channels = mse.shape[1]
    keep = keep_mask[:, 0].to(torch.bool)  # (B, L)

    def region_mean(region: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B,)
        total = torch.where(region[:, None], mse, 0.0).sum(dim=(1, 2))
        return total / (region.sum(dim=1) * channels + LOSS_EPS)

    loss = region_mean(padding_mask & ~keep).mean()
    context = padding_mask & keep
    if bool(context.any()):
        loss = loss + CONTEXT_LOSS_WEIGHT * region_mean(context).mean()
    return loss
