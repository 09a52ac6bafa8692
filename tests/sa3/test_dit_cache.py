"""The DiT's per-generation cache (``DiT.prepare``) equals recomputing every step, and is
refreshed when a weight it depends on changes (LoRA step hooks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sa3.config import DiTConfig
from sa3.dit import DiT, DiTConditioning
from sa3.layers import rotary_cos_sin

CFG = DiTConfig(io_channels=8, embed_dim=128, depth=2, num_heads=2, cond_token_dim=48, global_cond_dim=48,
                local_add_cond_dim=9, num_memory_tokens=4, timestep_features_dim=32)


def _dit(differential: bool = False, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    dit = DiT(DiTConfig(**{**CFG.__dict__, "differential": differential})).eval().requires_grad_(False)
    with torch.no_grad():
        for p in dit.parameters():  # zero-initialised tensors would hide mistakes
            p.copy_(torch.randn_like(p) * 0.2)
    return dit


def _cond(b: int = 2, t: int = 24, inpaint: bool = True, valid: int | None = 20) -> DiTConditioning:
    g = torch.Generator().manual_seed(1)
    shape = (b, CFG.local_add_cond_dim, t)
    local = torch.randn(*shape, generator=g) if inpaint else torch.zeros(*shape)
    mask = None if valid is None else (torch.arange(t)[None] < valid).expand(b, t)
    return DiTConditioning(cross=torch.randn(b, 7, CFG.cond_token_dim, generator=g),
                           global_cond=torch.randn(b, CFG.global_cond_dim, generator=g), local=local, padding_mask=mask)


@pytest.mark.parametrize("differential", [False, True])
@pytest.mark.parametrize("inpaint", [True, False])
def test_cached_quantities_equal_recomputed(differential, inpaint):
    dit, cond = _dit(differential), _cond(inpaint=inpaint)
    cache = dit.prepare(cond)
    context = dit.to_cond_embed(cond.cross)
    assert torch.equal(cache.context, context)
    assert torch.equal(cache.global_embed, dit.to_global_embed(cond.global_cond))
    n = CFG.num_memory_tokens + cond.local.shape[-1]
    cos, sin = rotary_cos_sin(dit.transformer.rotary_pos_emb.table(n))
    assert torch.equal(cache.rotary[0], cos) and torch.equal(cache.rotary[1], sin)
    for layer, (k, v), local_emb in zip(dit.transformer.layers, cache.cross_kv, cache.local_embeds, strict=True):
        _, k_ref, v_ref = layer.cross_attn.project_qk_v(torch.zeros(2, 3, CFG.embed_dim), context)
        assert torch.equal(k, k_ref) and torch.equal(v, v_ref)
        local_ref = layer.to_local_embed(cond.local.transpose(1, 2))  # (B, T, D)
        assert torch.equal(local_emb.expand_as(local_ref), local_ref)


@pytest.mark.parametrize("differential", [False, True])
def test_forward_with_cache_is_bit_identical(differential):
    dit, cond = _dit(differential), _cond()
    cache = dit.prepare(cond)
    x, t = torch.randn(2, CFG.io_channels, 24), torch.tensor([0.9, 0.3])
    ref = dit(x, t, cond)
    for _ in range(2):  # reused across steps
        assert torch.equal(dit(x, t, cond, cache=cache), ref)


def test_cache_refreshes_after_in_place_weight_change():
    dit, cond = _dit(), _cond()
    cache = dit.prepare(cond)
    x, t = torch.randn(2, CFG.io_channels, 24), torch.tensor([0.5, 0.5])
    before = dit(x, t, cond, cache=cache)
    with torch.no_grad():  # what a LoRA merge at a step boundary does
        dit.transformer.layers[1].cross_attn.to_kv.weight.add_(0.05)
        dit.transformer.layers[0].to_local_embed[2].bias.mul_(1.5)
    after = dit(x, t, cond, cache=cache)
    assert not torch.equal(after, before)
    assert torch.equal(after, dit(x, t, cond))  # equals an uncached forward with the new weights


def test_cache_refreshes_after_module_or_tensor_replacement():
    dit, cond = _dit(), _cond()
    cache = dit.prepare(cond)
    x, t = torch.randn(2, CFG.io_channels, 24), torch.tensor([0.5, 0.5])
    old = dit.transformer.layers[0].cross_attn.to_kv
    new = nn.Linear(old.in_features, old.out_features, bias=False).requires_grad_(False)
    with torch.no_grad():
        new.weight.copy_(old.weight * 0.5)
    dit.transformer.layers[0].cross_attn.to_kv = new  # a LoRA wrapper swapping the module
    assert torch.equal(dit(x, t, cond, cache=cache), dit(x, t, cond))
    dit.to_cond_embed[0].weight = nn.Parameter(dit.to_cond_embed[0].weight * 2, requires_grad=False)
    assert torch.equal(dit(x, t, cond, cache=cache), dit(x, t, cond))


def test_cache_for_another_conditioning_is_rejected():
    dit = _dit()
    cache = dit.prepare(_cond())
    with pytest.raises(ValueError, match="Stable Audio 3: DiT cache was prepared for a different conditioning"):
        dit(torch.randn(2, CFG.io_channels, 24), torch.tensor([0.5, 0.5]), _cond(), cache=cache)
