"""SAME autoencoder (SAME-S for the small models, SAME-L for the medium ones).

Audio <-> latents at 4096 samples per latent: a parameter-free patching step (256 samples x 2
channels -> 512 features per frame), one transformer resampling stage (16 frames <-> 1 latent) and a
SoftNorm bottleneck. Decoding is stochastic (bottleneck noise and new-token "mask noise"); every draw
comes from the caller's ``torch.Generator`` in the reference order, so a generator seeded with s
reproduces ``torch.manual_seed(s)`` on CPU bit for bit.

Legend: B batch, S audio samples, A audio channels (2), P patch features (A * 256 = 512),
F patch frames (S / 256), C latent channels, L latents (F / 16), W transformer width,
G token groups, T tokens per group (stride + 1 = 17), N tokens (G * T).

Module names follow the official ``pretransform.model.*`` keys (``encoder.layers.0.mapping.weight_g``,
``decoder.layers.3.transformers.5.ff.ff.0.proj``, ...), so the official tensors load with
``strict=True`` once the prefix is removed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attention import Attention, resolve_backend
from .config import SAMEConfig, SAMEStageConfig
from .layers import FeedForward, Linear, RotaryEmbedding, WNConv1d, residual, resolve_ops, rotary_cos_sin, to_input
from .precision import MIXED_BF16
from .rng import randn

CHUNK_LATENTS = 128  # chunked encode/decode: latents per chunk (reference default)
CHUNK_OVERLAP = 32  # latents shared by neighbouring chunks; half of it is trimmed on each side
BOTTLENECK_NOISE_SCALE = 1e-3  # SoftNorm noise_regularize scale in eval mode (training uses 5e-2)

# --- helpers ---------------------------------------------------------------------------------


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``torch.randn_like`` from ``generator`` in ``like``'s dtype (the reference draws in the
    tensor's dtype), by the one rule of ``sa3.rng``."""
    return randn(shape, generator, like.device, like.dtype)


def _pad_to_multiple(x: torch.Tensor, multiple: int, dim: int) -> torch.Tensor:
    """Zero-pad ``dim`` at the end to a multiple of ``multiple``."""
    extra = -x.shape[dim] % multiple
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _check_input(x: torch.Tensor, stage: str, name: str, channels: int, axis: str, fix: str = "") -> None:
    """A float (batch, channels, length > 0) tensor, or a ValueError naming the argument."""
    if x.dim() != 3 or x.shape[1] != channels or not x.is_floating_point():
        raise ValueError(f"Stable Audio 3 SAME {stage}: {name} must be a float tensor (batch, {channels}, {axis}) "
                         f"(got {tuple(x.shape)}, {x.dtype}).{fix}")
    if x.shape[-1] == 0:
        raise ValueError(f"Stable Audio 3 SAME {stage}: {name} has no {axis} (got 0, expected > 0).")


def _chunk_starts(total: int, chunk: int, hop: int) -> list[int]:
    """Chunk starts every ``hop``, plus a last chunk anchored at ``total - chunk``."""
    starts = list(range(0, total - chunk + 1, hop))
    if starts[-1] != total - chunk:
        starts.append(total - chunk)
    return starts


# --- modules ---------------------------------------------------------------------------------


class SAMEBlock(nn.Module):
    """Pre-norm transformer block: DyT norms, differential self-attention with partial rotary
    (first dim_heads/2 dims), GLU feed-forward; no conditioning, no layer scale."""

    def __init__(self, dim: int, dim_heads: int, differential: bool, ff_mult: float, sinusoidal: bool,
                 ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        dim_heads = min(dim_heads, dim)
        self.pre_norm = ops.DynamicTanh(dim)
        self.self_attn = Attention(dim, dim_heads=dim_heads, qk_norm="dyt", differential=differential, ops=ops)
        self.ff_norm = ops.DynamicTanh(dim)
        self.ff = FeedForward(dim, mult=ff_mult, sinusoidal=sinusoidal, ops=ops)
        self.rope = RotaryEmbedding(dim_heads // 2)

    def forward(self, x: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B', N, W); rotary positions 0..N-1 of the sequence as given. Returns (B', N, W)."""
        # (N, dim_heads/2) fp32, once for q and k
        rotary = rotary_cos_sin(self.rope.table(x.shape[-2], device=x.device))
        q, k, v = self.self_attn.project_qk_v(self.pre_norm(x))
        x = residual(x, self.self_attn.attend(q, k, v, rotary=rotary, window=window))
        return residual(x, self.ff(self.ff_norm(x)))


class ResamplingBlock(nn.Module):
    """The official ``TransformerResamplingBlock``: token groups of [stride frames, 1 new token]
    (encoder) or [1 latent, stride new tokens] (decoder), a transformer, then keep the new tokens."""

    def __init__(self, cfg: SAMEStageConfig, kind: str, frame_features: int, ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        self.cfg, self.kind = cfg, kind
        self.in_seg = cfg.stride if kind == "encoder" else 1  # tokens per group taken from the input
        self.out_seg = 1 if kind == "encoder" else cfg.stride  # new tokens per group (= output)
        width = cfg.width
        in_ch, out_ch = (frame_features, width) if kind == "encoder" else (width, frame_features)
        kernel = 3 if cfg.conv_mapping else 1
        self.mapping = ops.WNConv1d(in_ch, out_ch, kernel, cfg.mapping_bias) if in_ch != out_ch else nn.Identity()
        slots = 1 if cfg.variable_stride else self.out_seg
        self.new_tokens = nn.Parameter(torch.empty(1, slots, width).uniform_(-1e-5, 1e-5))  # placeholder, loaded
        self.transformers = nn.ModuleList(
            SAMEBlock(width, cfg.dim_heads, cfg.differential, cfg.ff_mult,
                      sinusoidal=(cfg.depth - i) < cfg.sinusoidal_blocks, ops=ops)
            for i in range(cfg.depth)
        )

    def _new_tokens(self, groups: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        """(groups, out_seg, W) new tokens on ``like``'s device, plus mask noise when configured
        (also at inference)."""
        tokens = to_input(self.new_tokens, like).expand(groups, self.out_seg, -1)
        if self.cfg.mask_noise > 0:
            tokens = tokens + _randn(tuple(tokens.shape), generator, tokens) * self.cfg.mask_noise
        return tokens

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, W) with N = G * T -> (B, N, W)."""
        cfg = self.cfg
        if cfg.window_tokens is not None:  # SAME-L: one sequence, band attention
            for block in self.transformers:
                x = block(x, window=cfg.window_tokens)
            return x
        b, n, w = x.shape
        cc = cfg.chunk_tokens
        split = cfg.depth // 2 if cfg.chunk_midpoint_shift else cfg.depth
        x = x.reshape(b * (n // cc), cc, w)  # (B, N, W) -> (B * N/cc, cc, W)
        for block in self.transformers[:split]:
            x = block(x)
        x = x.reshape(b, n, w)  # (B * N/cc, cc, W) -> (B, N, W)
        if split == cfg.depth:
            return x
        # Second half: chunk boundaries at the first half's midpoints. The ends are padded by
        # duplicating the first/last half chunk (whole token groups), then cropped off again.
        shift = cc // 2
        x = torch.cat([x[:, :shift], x, x[:, -shift:]], dim=1)  # (B, N + cc, W)
        x = x.reshape(-1, cc, w)  # (B, N + cc, W) -> (B * (N/cc + 1), cc, W)
        for block in self.transformers[split:]:
            x = block(x)
        return x.reshape(b, n + 2 * shift, w)[:, shift:-shift]  # -> (B, N, W)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Encoder: (B, P, F) -> (B, W, F/16). Decoder: (B, W, L) -> (B, P, 16 L)."""
        cfg = self.cfg
        b = x.shape[0]
        if self.kind == "encoder":
            # pad frames before the mapping, so padding goes through the mapping's bias
            x = _pad_to_multiple(x, cfg.chunk_size if cfg.sliding_window is None else self.in_seg, dim=-1)
            x = self.mapping(x)  # (B, P, F) -> (B, W, F)
        x = x.transpose(1, 2)  # (B, W, F|L) -> (B, F|L, W)
        if self.kind == "decoder":
            x = _pad_to_multiple(x, cfg.chunk_size // cfg.stride if cfg.sliding_window is None else 1, dim=1)
        w = x.shape[-1]
        groups = x.shape[1] // self.in_seg
        x = x.reshape(b * groups, self.in_seg, w)  # (B, G*in_seg, W) -> (B*G, in_seg, W)
        x = torch.cat([x, self._new_tokens(b * groups, generator, x)], dim=1)  # (B*G, T, W)
        x = self._transform(x.reshape(b, -1, w))  # (B*G, T, W) -> (B, G*T, W)
        x = x.reshape(b * groups, -1, w)[:, -self.out_seg:]  # keep the new tokens: (B*G, out_seg, W)
        x = x.reshape(b, groups * self.out_seg, w).transpose(1, 2)  # -> (B, W, G*out_seg)
        if self.kind == "decoder":
            x = self.mapping(x)  # (B, W, 16 L) -> (B, P, 16 L)
        return x


class SAMEEncoder(nn.Module):
    """``layers = [ResamplingBlock, Transpose, Linear(W, C), Transpose]`` (index slots as official)."""

    def __init__(self, cfg: SAMEStageConfig, frame_features: int, latent_dim: int, ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        self.layers = nn.ModuleList([
            ResamplingBlock(cfg, "encoder", frame_features, ops),
            nn.Identity(),  # Transpose slot
            ops.Linear(cfg.width, latent_dim),
            nn.Identity(),  # Transpose slot
        ])

    def forward(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """frames: (B, P, F) -> (B, C, L)."""
        x = self.layers[0](frames, generator)  # (B, W, L)
        return self.layers[2](x.transpose(1, 2)).transpose(1, 2)  # (B, L, W) -> (B, L, C) -> (B, C, L)


class SAMEDecoder(nn.Module):
    """``layers = [Transpose, Linear(C, W), Transpose, ResamplingBlock]`` (index slots as official)."""

    def __init__(self, cfg: SAMEStageConfig, frame_features: int, latent_dim: int, ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        self.layers = nn.ModuleList([
            nn.Identity(),  # Transpose slot
            ops.Linear(latent_dim, cfg.width),
            nn.Identity(),  # Transpose slot
            ResamplingBlock(cfg, "decoder", frame_features, ops),
        ])

    def forward(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """z: (B, C, L) -> frames (B, P, 16 L') with L' = L rounded up to the attention chunk."""
        x = self.layers[1](z.transpose(1, 2)).transpose(1, 2)  # (B, L, C) -> (B, L, W) -> (B, W, L)
        return self.layers[3](x, generator)


class SoftNormBottleneck(nn.Module):
    """``z = (x * scaling_factor + bias) / running_std``; decode undoes the std and, with
    noise_regularize, adds ``randn * running_std * 1e-3`` (also at inference)."""

    def __init__(self, dim: int, noise_regularize: bool, auto_scale: bool):
        super().__init__()
        self.noise_regularize = noise_regularize
        self.scaling_factor = nn.Parameter(torch.ones(1, dim, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1))
        self.noise_scaling_factor = nn.Parameter(torch.ones(1, 0, 1))  # empty; present in the files
        self.running_std = nn.Parameter(torch.ones(1), requires_grad=False) if auto_scale else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x * to_input(self.scaling_factor, x) + to_input(self.bias, x)
        return x / to_input(self.running_std, x) if self.running_std is not None else x

    def decode(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        running_std = to_input(self.running_std, z)
        if running_std is not None:
            z = z * running_std
        if self.noise_regularize:
            scale = running_std if running_std is not None else z.std(dim=-1, keepdim=True)
            z = z + _randn(tuple(z.shape), generator, z) * scale * BOTTLENECK_NOISE_SCALE
        return z


class SAMEAutoencoder(nn.Module):
    """SAME autoencoder: ``encode`` (B, A, S) audio at 44.1 kHz -> (B, C, L) latents, ``decode`` back.

    State-dict keys are the official ``pretransform.model.*`` keys without that prefix.
    """

    def __init__(self, config: SAMEConfig, ops: type | None = None):
        """``ops``: the operations namespace the layers are built with (``layers.DefaultOps``)."""
        super().__init__()
        self.config = config
        frame_features = config.io_channels * config.patch_size
        self.encoder = SAMEEncoder(config.encoder, frame_features, config.latent_dim, ops)
        self.decoder = SAMEDecoder(config.decoder, frame_features, config.latent_dim, ops)
        self.bottleneck = SoftNormBottleneck(config.latent_dim, config.noise_regularize, config.auto_scale)
        self._attention_backend = "sdpa"

    # -- attention backend --

    @property
    def attention_backend(self) -> str:
        return self._attention_backend

    @attention_backend.setter
    def attention_backend(self, backend: str) -> None:
        """``"sdpa"`` (default, linear-memory window), ``"math"`` (dense reference), ``"flash"``
        (CUDA + flash-attn, fp16/bf16 only) or ``"auto"``; applied to every attention module.
        Resolved for the module's current device and dtype: in float32 it is never flash."""
        backend = resolve_backend(backend, self.device, self.dtype)
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = backend
        self._attention_backend = backend

    # -- precision --

    @property
    def compute_dtype(self) -> torch.dtype:
        """The GEMMs' and convolutions' dtype: ``dtype``, or bfloat16 under ``use_mixed_bf16``."""
        return self.decoder.layers[1].compute_dtype or self.dtype

    def use_mixed_bf16(self) -> None:
        """``"bf16-mixed"``: every linear layer and convolution computes in bfloat16 (linear weights
        converted once, half their memory); the residual stream, the DyT norms, attention with its
        softmax, rotary angles, the bottleneck and every noise draw stay float32, so the random
        stream and the attention numerics are those of the fp32 decode. Plain bf16 (the whole
        module cast) breaks SAME attention; see bench/RESULTS.md for this mode's deviation.
        Needs a float32 module; one-way (the weights are rounded)."""
        if self.dtype != torch.float32:
            raise ValueError(f"Stable Audio 3 SAME: {MIXED_BF16!r} needs a float32 autoencoder (got {self.dtype}).")
        for module in self.modules():
            if isinstance(module, (Linear, WNConv1d)):
                module.compute_dtype = torch.bfloat16
            if isinstance(module, Linear):
                module.to(torch.bfloat16)  # weights stored in the compute dtype, converted once

    def to_precision(self, device: torch.device | str, precision: torch.dtype | str) -> SAMEAutoencoder:
        """Move to ``device`` in ``precision``: a torch dtype (the whole module cast) or
        ``"bf16-mixed"`` (float32 module, bf16 GEMMs and convolutions: ``use_mixed_bf16``)."""
        if isinstance(precision, str):
            if precision != MIXED_BF16:
                raise ValueError(f"Stable Audio 3 SAME: unknown precision {precision!r} (expected a torch dtype "
                                 f"or {MIXED_BF16!r}).")
            self.to(device, torch.float32)
            self.use_mixed_bf16()
            return self
        return self.to(device, precision)

    # -- properties --

    @property
    def samples_per_latent(self) -> int:
        return self.config.samples_per_latent

    @property
    def dtype(self) -> torch.dtype:
        return self.bottleneck.scaling_factor.dtype

    @property
    def device(self) -> torch.device:
        return self.bottleneck.scaling_factor.device

    # -- single calls (one chunk) --

    def _patch(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, A, S) -> (B, P, F); P index = channel * patch_size + offset."""
        h = self.config.patch_size
        audio = _pad_to_multiple(audio, h, dim=-1)
        b, a, s = audio.shape
        return audio.reshape(b, a, s // h, h).transpose(2, 3).reshape(b, a * h, s // h)  # b c (l h) -> b (c h) l

    def _unpatch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, P, F) -> (B, A, F * patch_size)."""
        h, a = self.config.patch_size, self.config.io_channels
        b, _, f = frames.shape
        return frames.reshape(b, a, h, f).transpose(2, 3).reshape(b, a, f * h)  # b (c h) l -> b c (l h)

    def _encode_once(self, audio: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.bottleneck.encode(self.encoder(self._patch(audio), generator))

    def _decode_once(self, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        audio = self._unpatch(self.decoder(self.bottleneck.decode(latents, generator), generator))
        return torch.tanh(audio) if self.config.soft_clip else audio

    def _generator(self, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        fresh = torch.Generator()  # on the CPU, as every generator (sa3.rng)
        fresh.seed()  # non-deterministic seed; the global RNG is left alone
        return fresh

    # -- public API --

    def encode(self, audio: torch.Tensor, *, chunked: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode 44.1 kHz audio (B, A, S) to latents (B, C, L).

        S is zero-padded to a multiple of 4096 first, so L = ceil(S / 4096); SAME-S (chunked
        attention) rounds an odd L up to even, as the reference does. With ``chunked`` and at least
        128 latents, 128-latent chunks with hop 96 are encoded independently (the last one anchored
        at the end) and their inner 16-latent edges trimmed. SAME-L draws mask noise from
        ``generator`` once per chunk.
        """
        _check_input(audio, "encode", "audio", self.config.io_channels, "samples",
                     " Duplicate mono to stereo first.")
        generator = self._generator(generator)
        spl = self.samples_per_latent
        audio = audio.to(self.dtype)  # the reference casts the input to the autoencoder's dtype
        audio = _pad_to_multiple(audio, spl, dim=-1)
        total = audio.shape[-1] // spl
        if not chunked or total < CHUNK_LATENTS:
            return self._encode_once(audio, generator)
        starts = _chunk_starts(total, CHUNK_LATENTS, CHUNK_LATENTS - CHUNK_OVERLAP)
        chunks = [self._encode_once(audio[..., s * spl:(s + CHUNK_LATENTS) * spl], generator) for s in starts]
        out = chunks[0].new_zeros(*chunks[0].shape[:-1], total)
        self._stitch(out, chunks, starts, total, scale=1)
        return out

    def decode(self, latents: torch.Tensor, *, chunked: bool, generator: torch.Generator | None = None,
               on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Decode latents (B, C, L) to 44.1 kHz audio (B, A, L * 4096), in the module's dtype.

        Stochastic, as in the reference: per call (per chunk when chunked) one bottleneck draw
        (B, C, L) then one mask-noise draw (B * L, 16, W) from ``generator``. With ``chunked`` and
        L >= 128, chunks as in ``encode``. ``on_chunk(i, n)`` is called after chunk i of n (1-based),
        once with (1, 1) when unchunked. No clamp; SAME-S's internal even-length padding is cropped.
        """
        _check_input(latents, "decode", "latents", self.config.latent_dim, "frames")
        generator = self._generator(generator)
        latents = latents.to(self.dtype)  # the reference casts sampler output to the autoencoder's dtype
        spl, total = self.samples_per_latent, latents.shape[-1]
        if not chunked or total < CHUNK_LATENTS:
            audio = self._decode_once(latents, generator)[..., :total * spl]
            if on_chunk is not None:
                on_chunk(1, 1)
            return audio
        starts = _chunk_starts(total, CHUNK_LATENTS, CHUNK_LATENTS - CHUNK_OVERLAP)
        chunks = []
        for i, s in enumerate(starts):
            chunks.append(self._decode_once(latents[..., s:s + CHUNK_LATENTS], generator))
            if on_chunk is not None:
                on_chunk(i + 1, len(starts))
        out = chunks[0].new_zeros(*chunks[0].shape[:-1], total * spl)
        self._stitch(out, chunks, starts, total, scale=spl)
        return out

    @staticmethod
    def _stitch(out: torch.Tensor, chunks: list[torch.Tensor], starts: list[int], total: int, scale: int) -> None:
        """Write chunks into ``out`` (units: ``scale`` per latent), trimming half the overlap off
        every edge that faces a neighbour; later chunks overwrite earlier ones."""
        size, half = CHUNK_LATENTS * scale, (CHUNK_OVERLAP // 2) * scale
        last = len(chunks) - 1
        for i, (start, chunk) in enumerate(zip(starts, chunks, strict=True)):
            pos = (total - CHUNK_LATENTS) * scale if i == last else start * scale
            left = 0 if i == 0 else half
            right = size if i == last else size - half
            out[..., pos + left:pos + right] = chunk[..., left:right]
