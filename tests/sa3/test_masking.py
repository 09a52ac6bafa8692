"""Exact key masking: with ``padding_mode="exact"`` the DiT's valid-token outputs do not depend on
how much padding follows them (the flash-attn varlen behaviour the models were trained with), on
every portable backend, for standard and differential attention. The official CPU semantics
(``"reference"``, V-zeroing) do depend on it, which the last test pins so the first is meaningful.
(The sliding-window backend against a brute-force mask is tested in ``test_same.py``.)
"""

from __future__ import annotations

import pytest
import torch

from sa3.config import DiTConfig
from sa3.dit import DiT, DiTConditioning

CFG = DiTConfig(io_channels=8, embed_dim=128, depth=2, num_heads=2, cond_token_dim=48, global_cond_dim=48,
                local_add_cond_dim=9, num_memory_tokens=4, timestep_features_dim=32)
VALID = 37  # valid latents of every item


def _dit(differential: bool, backend: str, padding_mode: str) -> DiT:
    torch.manual_seed(0)
    dit = DiT(DiTConfig(**{**CFG.__dict__, "differential": differential})).eval().requires_grad_(False)
    with torch.no_grad():
        for p in dit.parameters():  # unit-gain random weights keep rounding from being amplified
            p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5 if p.dim() > 1 else 1 + 0.1 * torch.randn_like(p))
    dit.set_attention(backend, padding_mode)
    return dit


def _inputs(pad: int, seed: int = 0):
    """Valid frames identical for every ``pad``; padded frames get unrelated random values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, CFG.io_channels, VALID, generator=g)
    local = torch.randn(2, CFG.local_add_cond_dim, VALID, generator=g)
    cross = torch.randn(2, 7, CFG.cond_token_dim, generator=g)
    global_cond = torch.randn(2, CFG.global_cond_dim, generator=g)
    junk = torch.Generator().manual_seed(1000 + pad)
    x = torch.cat([x, 5 * torch.randn(2, CFG.io_channels, pad, generator=junk)], dim=-1)  # (B, C, VALID + pad)
    local = torch.cat([local, torch.randn(2, CFG.local_add_cond_dim, pad, generator=junk)], dim=-1)
    mask = torch.arange(VALID + pad)[None, :].expand(2, -1) < VALID  # (B, L)
    return x, DiTConditioning(cross=cross, global_cond=global_cond, local=local, padding_mask=mask)


def _valid_out(dit: DiT, pad: int) -> torch.Tensor:
    x, cond = _inputs(pad)
    with torch.no_grad():
        return dit(x, torch.tensor([0.7, 0.2]), cond)[..., :VALID]


@pytest.mark.parametrize("differential", [False, True], ids=["standard", "differential"])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_exact_masking_is_independent_of_padding(differential, backend):
    dit = _dit(differential, backend, "exact")
    ref = _valid_out(dit, 0)
    for pad in (1, 2, 27, 91):
        err = (_valid_out(dit, pad) - ref).abs().max().item() / ref.abs().max().item()
        assert err < 2e-6, f"{pad} padding latents changed valid outputs by {err:.2e} (relative; fp32 rounding only)"


@pytest.mark.parametrize("differential", [False, True], ids=["standard", "differential"])
def test_exact_sdpa_equals_math(differential):
    out = _valid_out(_dit(differential, "sdpa", "exact"), 27)
    ref = _valid_out(_dit(differential, "math", "exact"), 27)
    assert (out - ref).abs().max().item() / ref.abs().max().item() < 2e-6


@pytest.mark.parametrize("differential", [False, True], ids=["standard", "differential"])
def test_reference_masking_depends_on_padding(differential):
    dit = _dit(differential, "sdpa", "reference")
    ref = _valid_out(dit, 0)
    assert (_valid_out(dit, 27) - ref).abs().max().item() / ref.abs().max().item() > 1e-2


def test_flash_varlen_layout_is_computed_once_per_mask():
    from sa3.attention import _varlen_layout

    mask = torch.arange(6)[None] < torch.tensor([[4], [6]])  # (2, 6): 4 and 6 valid tokens
    idx, cu = _varlen_layout(mask)
    assert idx.tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 10, 11] and cu.tolist() == [0, 4, 10]
    assert cu.dtype == torch.int32
    again = _varlen_layout(mask)
    assert again[0] is idx and again[1] is cu  # memoised: no second host sync
    mask[0, 4] = True  # changed in place: recomputed
    assert _varlen_layout(mask)[1].tolist() == [0, 5, 11]
    other = mask.clone()
    assert _varlen_layout(other)[0] is not idx
    with torch.inference_mode():  # ComfyUI runs nodes in inference mode (no version counter)
        frozen = torch.ones(1, 3, dtype=torch.bool)
        assert _varlen_layout(frozen)[1].tolist() == [0, 3]
        assert _varlen_layout(frozen)[1].tolist() == [0, 3]


def test_exact_sdpa_prefix_and_mask_paths_equal_math():
    """Rows sharing one valid prefix attend to that prefix alone (no mask); rows of different
    lengths, or a mask that is not a prefix, take the masked call; all equal the dense reference."""
    from sa3.attention import _shared_prefix, attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 64, generator=g) for _ in range(3))
    holes = torch.ones(2, 20, dtype=torch.bool)
    holes[:, 5] = False
    cases = {(13, 13): 13, (20, 20): 20, (13, 20): None, (7, 13): None}
    for lengths, prefix in cases.items():
        mask = torch.arange(20)[None] < torch.tensor(lengths)[:, None]
        assert _shared_prefix(mask) == prefix
    assert _shared_prefix(holes) is None
    for mask in [torch.arange(20)[None] < torch.tensor(n)[:, None] for n in cases] + [holes]:
        out = attention(q, k, v, key_padding=mask, backend="sdpa", padding_mode="exact")
        ref = attention(q, k, v, key_padding=mask, backend="math", padding_mode="exact")
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
