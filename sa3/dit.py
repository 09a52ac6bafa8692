"""The SA3 diffusion transformer (DiT): adaLN blocks with memory tokens, partial rotary, q/k RMS
norm, cross-attention over the 257 conditioning tokens and per-layer inpainting embeddings.

Small models use standard attention, medium models differential attention. The module tree
mirrors the official checkpoint (``model.model.`` prefix stripped), so weights load strictly.
The network only predicts the velocity ``v``; guidance, schedules and LoRA timing live in
``sa3.sampling`` and ``sa3.pipeline``.

Legend: B batch, C latent channels, T latent frames, M memory tokens, N = M + T tokens,
D model width, K context tokens (257), Cl local-conditioning channels (1 + C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention
from .config import DiTConfig
from .layers import FeedForward, RMSNorm, RotaryEmbedding, expo_fourier_features, mlp

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


class DiTBlock(nn.Module):
    """adaLN self-attention, unmodulated cross-attention, local add, adaLN feed-forward."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.to_scale_shift_gate = nn.Parameter(torch.zeros(6 * d))
        self.pre_norm = RMSNorm(d, force_fp32=True)
        self.self_attn = Attention(d, cfg.dim_heads, qk_norm="rms", differential=cfg.differential)
        self.cross_attend_norm = RMSNorm(d, force_fp32=True)
        self.cross_attn = Attention(d, cfg.dim_heads, dim_context=d, qk_norm="rms", differential=cfg.differential)
        self.ff_norm = RMSNorm(d, force_fp32=True)
        self.ff = FeedForward(d, mult=cfg.ff_mult)
        self.to_local_embed = mlp(cfg.local_add_cond_dim, d, d, bias=True)

    def forward(self, h, *, context, modulation, local, rotary, key_padding, num_memory):
        """h: (B, N, D); context: (B, K, D); modulation: (B, 6D); local: (B, T, Cl)."""
        mods = (self.to_scale_shift_gate + modulation).unsqueeze(1).chunk(6, dim=-1)  # 6 x (B, 1, D)
        scale_sa, shift_sa, gate_sa, scale_ff, shift_ff, gate_ff = mods

        y = self.pre_norm(h) * (1 + scale_sa) + shift_sa
        y = self.self_attn(y, rotary=rotary, key_padding=key_padding)
        h = h + y * torch.sigmoid(1 - gate_sa)  # the official gate is sigmoid(1 - g)

        h = h + self.cross_attn(self.cross_attend_norm(h), context)

        local_emb = self.to_local_embed(local)  # (B, T, D); memory tokens receive nothing
        h = torch.cat([h[:, :num_memory], h[:, num_memory:] + local_emb], dim=1)

        y = self.ff_norm(h) * (1 + scale_ff) + shift_ff
        return h + self.ff(y) * torch.sigmoid(1 - gate_ff)


class ContinuousTransformer(nn.Module):
    """Token stack of the DiT: project in, prepend memory tokens, blocks, drop memory, project out."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.num_memory = cfg.num_memory_tokens
        self.project_in = nn.Linear(cfg.io_channels, d, bias=False)
        self.project_out = nn.Linear(d, cfg.io_channels, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(max(cfg.dim_heads // 2, ROTARY_DIMS))
        self.memory_tokens = nn.Parameter(torch.zeros(cfg.num_memory_tokens, d))
        self.global_cond_embedder = mlp(d, d, 6 * d, bias=True)
        self.layers = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))

    def forward(self, x, *, context, global_embed, local, padding_mask):
        """x: (B, T, C) -> (B, T, C)."""
        b = x.shape[0]
        h = self.project_in(x)  # (B, T, D)
        h = torch.cat([self.memory_tokens.expand(b, -1, -1), h], dim=1)  # (B, N, D)
        rotary = self.rotary_pos_emb.table(h.shape[1])  # memory tokens take positions 0..M-1
        modulation = self.global_cond_embedder(global_embed)  # (B, 6D)
        key_padding = None
        if padding_mask is not None:
            memory_valid = padding_mask.new_ones(b, self.num_memory)
            key_padding = torch.cat([memory_valid, padding_mask], dim=1)  # (B, N)
        for layer in self.layers:
            h = layer(h, context=context, modulation=modulation, local=local, rotary=rotary,
                      key_padding=key_padding, num_memory=self.num_memory)
        return self.project_out(h[:, self.num_memory:])


class DiT(nn.Module):
    """Velocity predictor ``v(x_t, t, cond)`` of the rectified-flow objective."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        d, c = cfg.embed_dim, cfg.io_channels
        self.to_timestep_embed = mlp(cfg.timestep_features_dim, d, d, bias=True)
        self.to_cond_embed = mlp(cfg.cond_token_dim, d, d, bias=False)
        self.to_global_embed = mlp(cfg.global_cond_dim, d, d, bias=False)
        self.preprocess_conv = nn.Conv1d(c, c, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(c, c, 1, bias=False)
        self.transformer = ContinuousTransformer(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.project_in.weight.dtype

    def set_attention(self, backend: str, padding_mode: str) -> None:
        """Choose the attention backend and key-padding semantics for every attention layer."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend, module.padding_mode = backend, padding_mode

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: DiTConditioning) -> torch.Tensor:
        """x: (B, C, T) noisy latents; t: (B,) noise level in [0, 1]. Returns v: (B, C, T)."""
        dtype = self.dtype
        x = x.to(dtype)
        t = t.float()  # the official code keeps t in fp32 until the features (then model dtype)
        context = self.to_cond_embed(cond.cross.to(dtype))  # (B, K, D)
        global_embed = self.to_global_embed(cond.global_cond.to(dtype))  # (B, D)
        t_features = expo_fourier_features(t.to(dtype)[:, None], self.config.timestep_features_dim)
        global_embed = global_embed + self.to_timestep_embed(t_features)
        local = cond.local.to(dtype).transpose(1, 2)  # (B, Cl, T) -> (B, T, Cl)

        x = self.preprocess_conv(x) + x
        out = self.transformer(x.transpose(1, 2), context=context, global_embed=global_embed,
                               local=local, padding_mask=cond.padding_mask)  # (B, T, C)
        out = out.transpose(1, 2)  # (B, T, C) -> (B, C, T)
        return self.postprocess_conv(out) + out

