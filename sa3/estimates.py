"""Activation memory of sampling and decoding, for a host's memory manager (ComfyUI's
``load_models_gpu(memory_required=...)``, as core passes its own models' estimates), beyond the
weights the host already accounts for.

SAME decode, derived from the measured datum in the README (SAME-L, unchunked, fp32: 0.86 GB at
30 s and 3.55 GB at 120 s, linear in duration through about zero): the decoder runs its transformer
over ``stride + 1`` tokens per latent frame at width ``W``; 3.55 GB / (1292 latents * 17 tokens *
1536 * 4 bytes) = 26.3 and 0.86 GB at 323 latents gives 25.5, so the peak is about
``SAME_ACTIVATION_COPIES = 27`` copies of the (tokens, W) residual stream (the GLU's 2 x 3W
projection, the fused differential q/k/v of 5W, attention outputs, norms, residuals). Chunked
decoding holds one 128-latent chunk at a time plus the output audio. The residual stream is
float32 also under ``bf16-mixed``, so the element size is the part's parameter dtype's.

DiT sampling: counted, not measured (no GPU was lent to this work): per token of the sequence
(memory tokens + latent frames), for both guidance branches of each batch item, about
``DIT_ACTIVATION_COPIES = 24`` copies of the width-``D`` stream (the block's h, y, q/k/v up to 5D
for differential attention, the attention outputs, the feed-forward's blocked intermediate
counted as 4D, the step's x, v and sampler state), plus the step-independent cache (the cross
attention's k/v per layer over the 257 context tokens and the per-layer local embeddings).
Both are estimates for eviction decisions, not bounds; an out-of-memory error still names the
part and the figure (``nodes`` catch it).
"""

from __future__ import annotations

import torch

SAME_ACTIVATION_COPIES = 27
DIT_ACTIVATION_COPIES = 24
CONTEXT_TOKENS = 257
AUDIO_CHANNELS = 2


def same_decode_bytes(cfg, latents: int, batch: int = 1, *, chunked: bool, dtype: torch.dtype = torch.float32) -> int:
    """Peak activation bytes of ``SAMEAutoencoder.decode`` for ``batch`` x ``latents`` frames.

    cfg: a ``SAMEConfig``. Grows linearly with ``latents`` unchunked; chunked, the transformer
    part stops growing at 128 latents (``same.CHUNK_LATENTS``) and only the output audio grows."""
    from .same import CHUNK_LATENTS

    dec = cfg.decoder
    size = torch.empty((), dtype=dtype).element_size()
    run = min(latents, CHUNK_LATENTS) if chunked else latents
    stream = batch * run * (dec.stride + 1) * dec.width * size
    audio = batch * AUDIO_CHANNELS * latents * cfg.samples_per_latent * size * (2 if chunked else 1)
    return int(SAME_ACTIVATION_COPIES * stream + audio)


def dit_sampling_bytes(cfg, latents: int, batch: int = 1, *, dtype: torch.dtype = torch.float32,
                       guidance: bool = True) -> int:
    """Peak activation bytes of sampling the DiT (``DiTConfig`` ``cfg``) for ``batch`` x
    ``latents`` frames, with classifier-free guidance (two branches) unless ``guidance`` is off."""
    size = torch.empty((), dtype=dtype).element_size()
    rows = batch * (2 if guidance else 1)
    d = cfg.embed_dim
    tokens = cfg.num_memory_tokens + latents
    stream = rows * tokens * d * size * DIT_ACTIVATION_COPIES
    k_per_layer = 3 if cfg.differential else 2  # k[, k2], v of the cross-attention
    cache = rows * cfg.depth * (CONTEXT_TOKENS * k_per_layer + latents) * d * size
    return int(stream + cache)
