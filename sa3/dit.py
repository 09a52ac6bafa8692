"""The SA3 diffusion transformer (DiT): adaLN blocks with memory tokens, partial rotary, q/k RMS
norm, cross-attention over the 257 conditioning tokens and per-layer inpainting embeddings.

Small models use standard attention, medium models differential attention. The module tree
mirrors the official checkpoint (``model.model.`` prefix stripped), so weights load strictly.
The network only predicts the velocity ``v``; guidance, schedules and LoRA timing live in
``sa3.sampling`` and ``sa3.stages``.

Legend: B batch, C latent channels, T latent frames, M memory tokens, N = M + T tokens,
D model width, K context tokens (257), Cl local-conditioning channels (1 + C).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .attention import Attention
from .config import DiTConfig
from .layers import (
    FeedForward,
    RotaryEmbedding,
    expo_fourier_features,
    mlp,
    residual,
    resolve_ops,
    rotary_cos_sin,
    to_input,
)
from .weight_writes import inplace_version, write_marks

logger = logging.getLogger(__name__)

ROTARY_DIMS = 32  # rotary covers the first 32 of the 64 head dims


@dataclass
class DiTConditioning:
    """Everything the DiT needs besides ``x`` and ``t``, already batched like ``x``.

    cross: (B, K, Wc) tokens; global_cond: (B, Wg); local: (B, Cl, T); padding_mask: (B, T) bool.
    """

    cross: torch.Tensor
    global_cond: torch.Tensor
    local: torch.Tensor
    padding_mask: torch.Tensor | None = None


def _tensor_signature(t: torch.Tensor) -> tuple:
    """Identity of a weight's current value: object, storage and in-place version counter (None
    for inference tensors: ``write_marks`` covers the writes there)."""
    return id(t), t.data_ptr(), inplace_version(t), t.dtype, t.device


@dataclass
class DiTCache:
    """Step-independent DiT quantities for one conditioning, computed once per ``sample()`` call
    by ``DiT.prepare`` instead of at every step. Bit-identical to recomputing them.

    context: (B, K, D) projected cross tokens; global_embed: (B, D) before the timestep term;
    cross_kv: per layer (k (P, B, H, K, D), v (B, H, K, D)) of the cross-attention;
    local_embeds: per layer (B, T, D), or (1, 1, D) broadcast when the local conditioning is all
    zeros (no inpainting); rotary: (cos, sin) (N, R); key_padding: (B, N) bool or None.
    ``signature`` records the weights used (object id, storage, version counter, write marks):
    when a LoRA changes any of them between steps, ``DiT.forward`` recomputes the cache.
    """

    cond: DiTConditioning
    signature: tuple
    context: torch.Tensor
    global_embed: torch.Tensor
    cross_kv: list = field(default_factory=list)
    local_embeds: list = field(default_factory=list)
    rotary: tuple | None = None
    key_padding: torch.Tensor | None = None


def _collapse_equal_rows(emb: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, 1, D) when every frame's row is identical (no inpainting: the local
    conditioning is all zeros), so the per-layer cache is O(D) instead of O(T*D); the broadcast
    add is bit-identical because the rows are checked equal, not assumed."""
    first = emb[:, :1]
    return first.clone() if torch.equal(emb, first.expand_as(emb)) else emb


class DiTBlock(nn.Module):
    """adaLN self-attention, unmodulated cross-attention, local add, adaLN feed-forward."""

    def __init__(self, cfg: DiTConfig, ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        d = cfg.embed_dim
        self.to_scale_shift_gate = nn.Parameter(torch.zeros(6 * d))
        self.pre_norm = ops.RMSNorm(d, force_fp32=True)
        self.self_attn = Attention(d, cfg.dim_heads, qk_norm="rms", differential=cfg.differential, ops=ops)
        self.cross_attend_norm = ops.RMSNorm(d, force_fp32=True)
        self.cross_attn = Attention(d, cfg.dim_heads, dim_context=d, qk_norm="rms", differential=cfg.differential,
                                    ops=ops)
        self.ff_norm = ops.RMSNorm(d, force_fp32=True)
        self.ff = FeedForward(d, mult=cfg.ff_mult, ops=ops)
        self.to_local_embed = mlp(cfg.local_add_cond_dim, d, d, bias=True, ops=ops)

    def forward(self, h, *, cross_kv, modulation, local_emb, rotary, key_padding, num_memory):
        """h: (B, N, D); cross_kv: cached (k, v) of the context; modulation: (B, 6D);
        local_emb: (B, T, D), or (1, 1, D) broadcast, this layer's ``to_local_embed`` output."""
        table = to_input(self.to_scale_shift_gate, modulation)  # on the activations' device
        mods = (table + modulation).unsqueeze(1).chunk(6, dim=-1)  # 6 x (B, 1, D)
        scale_sa, shift_sa, gate_sa, scale_ff, shift_ff, gate_ff = mods

        y = _modulate(self.pre_norm(h), scale_sa, shift_sa)
        h = _gated_residual(h, self.self_attn(y, rotary=rotary, key_padding=key_padding), gate_sa)
        h = residual(h, self.cross_attn(self.cross_attend_norm(h), kv=cross_kv))

        h[:, num_memory:] += local_emb  # memory tokens receive nothing; h is a fresh tensor here

        y = _modulate(self.ff_norm(h), scale_ff, shift_ff)
        return _gated_residual(h, self.ff(y), gate_ff)


# In inference the two helpers below (and ``layers.residual``) work in place on ``y``, a fresh
# tensor the block just computed (a norm, attention or feed-forward output): the same operations
# in the same order, so the same roundings, without a temporary per step (less memory traffic
# and peak memory).


def _modulate(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """adaLN: ``y * (1 + scale) + shift``."""
    if torch.is_grad_enabled():
        return y * (1 + scale) + shift
    return y.mul_(1 + scale).add_(shift)


def _gated_residual(h: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``h + y * sigmoid(1 - gate)`` (the official gate is sigmoid(1 - g))."""
    if torch.is_grad_enabled():
        return h + y * torch.sigmoid(1 - gate)
    return y.mul_(torch.sigmoid(1 - gate)).add_(h)  # y * g + h == h + y * g bit for bit


class ContinuousTransformer(nn.Module):
    """Token stack of the DiT: project in, prepend memory tokens, blocks, drop memory, project out."""

    def __init__(self, cfg: DiTConfig, ops: type | None = None):
        super().__init__()
        ops = resolve_ops(ops)
        d = cfg.embed_dim
        self.num_memory = cfg.num_memory_tokens
        self.project_in = ops.Linear(cfg.io_channels, d, bias=False)
        self.project_out = ops.Linear(d, cfg.io_channels, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(max(cfg.dim_heads // 2, ROTARY_DIMS))
        self.memory_tokens = nn.Parameter(torch.zeros(cfg.num_memory_tokens, d))
        self.global_cond_embedder = mlp(d, d, 6 * d, bias=True, ops=ops)
        self.layers = nn.ModuleList(DiTBlock(cfg, ops) for _ in range(cfg.depth))
        # called with each block once it has run (low_memory: drop its memory-mapped weights, so
        # a step holds one block's weights at a time instead of the whole DiT); None: nothing
        self.after_block: Callable[[nn.Module], object] | None = None

    def forward(self, x, *, global_embed, cache: DiTCache):
        """x: (B, T, C) -> (B, T, C)."""
        b = x.shape[0]
        h = self.project_in(x)  # (B, T, D)
        h = torch.cat([to_input(self.memory_tokens, h).expand(b, -1, -1), h], dim=1)  # (B, N, D)
        modulation = self.global_cond_embedder(global_embed)  # (B, 6D)
        for layer, cross_kv, local_emb in zip(self.layers, cache.cross_kv, cache.local_embeds, strict=True):
            h = layer(h, cross_kv=cross_kv, modulation=modulation, local_emb=local_emb, rotary=cache.rotary,
                      key_padding=cache.key_padding, num_memory=self.num_memory)
            if self.after_block is not None:
                self.after_block(layer)
        return self.project_out(h[:, self.num_memory:])


class DiT(nn.Module):
    """Velocity predictor ``v(x_t, t, cond)`` of the rectified-flow objective."""

    def __init__(self, cfg: DiTConfig, ops: type | None = None):
        """``ops``: the operations namespace the layers are built with (``layers.DefaultOps``; a
        host passes its own, as ComfyUI's nodes pass cast operations for partial loading)."""
        super().__init__()
        ops = resolve_ops(ops)
        self.config = cfg
        d, c = cfg.embed_dim, cfg.io_channels
        self.to_timestep_embed = mlp(cfg.timestep_features_dim, d, d, bias=True, ops=ops)
        self.to_cond_embed = mlp(cfg.cond_token_dim, d, d, bias=False, ops=ops)
        self.to_global_embed = mlp(cfg.global_cond_dim, d, d, bias=False, ops=ops)
        self.preprocess_conv = ops.Conv1d(c, c, 1, bias=False)
        self.postprocess_conv = ops.Conv1d(c, c, 1, bias=False)
        self.transformer = ContinuousTransformer(cfg, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.project_in.weight.dtype

    def set_attention(self, backend: str, padding_mode: str) -> None:
        """Choose the attention backend and key-padding semantics for every attention layer."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend, module.padding_mode = backend, padding_mode

    def _cached_modules(self) -> list[nn.Module]:
        """Modules whose weights the cache depends on (looked up afresh: LoRA may swap them)."""
        mods = [self.to_cond_embed, self.to_global_embed, self.transformer.rotary_pos_emb]
        for layer in self.transformer.layers:
            mods += [layer.cross_attn.to_kv, layer.cross_attn.k_norm, layer.to_local_embed]
        return mods

    def cache_signature(self) -> tuple:
        """Identity and version of every weight ``prepare`` reads; changes when any is replaced,
        re-assigned or modified in place (e.g. LoRA merging at a step boundary: marked with
        ``weight_writes.mark_written``, which inference tensors need, having no version counter)."""
        sig = []
        for module in self._cached_modules():
            sig.extend((id(module), write_marks(module)))
            sig.extend(_tensor_signature(t) for t in (*module.parameters(), *module.buffers()))
        return tuple(sig)

    @torch.no_grad()
    def prepare(self, cond: DiTConditioning) -> DiTCache:
        """Compute the step-independent quantities for ``cond`` once (see ``DiTCache``)."""
        return self.build_cache(cond)

    def build_cache(self, cond: DiTConditioning) -> DiTCache:
        """``prepare`` without its ``no_grad``: differentiable in the weights, for training,
        where the weights change at every step (same numbers)."""
        dtype = self.dtype
        tr = self.transformer
        num_memory = tr.num_memory
        context = self.to_cond_embed(cond.cross.to(dtype))  # (B, K, D)
        global_embed = self.to_global_embed(cond.global_cond.to(dtype))  # (B, D)
        local = cond.local.to(dtype)
        b, _, n_latents = local.shape
        if b > 1 and not bool(local.any()):  # no inpainting: every item gets the same embeddings
            # (a single-frame shortcut would change the GEMM's rounding; one item's rows do not)
            local = local[:1]  # (B, Cl, T) -> (1, Cl, T), broadcast over the batch when added
        local = local.transpose(1, 2)  # (B, Cl, T) -> (B, T, Cl)
        key_padding = None
        if cond.padding_mask is not None:
            memory_valid = cond.padding_mask.new_ones(b, num_memory)
            key_padding = torch.cat([memory_valid, cond.padding_mask], dim=1)  # (B, N)
        # memory tokens take positions 0..M-1; fp32 angles, cos/sin computed once for all layers
        rotary = rotary_cos_sin(tr.rotary_pos_emb.table(num_memory + n_latents, device=context.device))
        return DiTCache(
            cond=cond, signature=self.cache_signature(), context=context, global_embed=global_embed,
            cross_kv=[layer.cross_attn.project_kv(context) for layer in tr.layers],
            local_embeds=[_collapse_equal_rows(layer.to_local_embed(local)) for layer in tr.layers],
            rotary=rotary, key_padding=key_padding,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: DiTConditioning,
                cache: DiTCache | None = None) -> torch.Tensor:
        """x: (B, C, T) noisy latents; t: (B,) noise level in [0, 1]. Returns v: (B, C, T).

        ``cache`` from ``prepare(cond)`` skips the step-independent work; it is refreshed in
        place when a weight it used has changed since (LoRA step hooks).
        """
        if cache is None:  # one-off call (training): built here, differentiable when grad is on
            cache = self.build_cache(cond)
        elif cache.cond is not cond:
            raise ValueError("Stable Audio 3: DiT cache was prepared for a different conditioning.")
        elif cache.signature != self.cache_signature():
            logger.debug("Stable Audio 3: DiT weights changed, recomputing the step cache")
            cache.__dict__.update(self.prepare(cond).__dict__)
        dtype = self.dtype
        x = x.to(dtype)
        t = t.float()  # the official code keeps t in fp32 until the features (then model dtype)
        t_features = expo_fourier_features(t.to(dtype)[:, None], self.config.timestep_features_dim)
        global_embed = cache.global_embed + self.to_timestep_embed(t_features)

        x = self.preprocess_conv(x) + x
        out = self.transformer(x.transpose(1, 2), global_embed=global_embed, cache=cache)  # (B, T, C)
        out = out.transpose(1, 2)  # (B, T, C) -> (B, C, T)
        return self.postprocess_conv(out) + out
