"""Time a DiT forward with LoRA: cached effective weights (``sa3.lora``) vs recomputing every
adapted weight on every forward through torch parametrizations (the official approach).

    python bench/bench_lora.py [--width 768] [--depth 8] [--latents 256] [--batch 2]
                               [--types lora dora-rows lora-xs] [--rank 16] [--repeats 5] [--device cpu]

A random DiT of the given size gets a synthetic LoRA on every Linear/Conv1d (official keys and
metadata, written to a temp .safetensors and loaded with ``LoRAStack``). Three timings per adapter
type, each the median of ``--repeats`` forwards after one warm-up (the DiT step cache from
``DiT.prepare`` is shared by all three, as in ``sample()``):
- base: no LoRA;
- cached: the LoRA written into the weights once (what ``sample()`` runs at every step);
- per-forward: the same adapters as ``torch.nn.utils.parametrize`` parametrizations evaluating
  ``adapt_weight`` on each weight access (the official code's cost per DiT call).
Also reported: the one-off cost of writing all effective weights (a strength change).

Legend: B batch, C latent channels, T latent frames, K context tokens (257), D width.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sa3.config import DiTConfig  # noqa: E402
from sa3.dit import DiT, DiTConditioning  # noqa: E402
from sa3.lora import ADAPTER_KINDS, LoRAStack, adapt_weight  # noqa: E402


def random_dit(width: int, depth: int, channels: int) -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(io_channels=channels, embed_dim=width, depth=depth, num_heads=width // 64,
                    local_add_cond_dim=channels + 1, num_memory_tokens=64)
    dit = DiT(cfg).eval().requires_grad_(False)
    with torch.no_grad():
        for p in dit.parameters():
            p.copy_(torch.randn_like(p) / max(1, p.shape[-1]) ** 0.5)
    return dit


def synthetic_lora(dit: DiT, adapter_type: str, rank: int, path: Path) -> Path:
    """Official layout: ``model.<path>.parametrizations.weight.0.<param>``, fp16, lora_config."""
    delta, norm = ADAPTER_KINDS[adapter_type]
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for name, m in dit.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d)):
            continue
        w = m.weight.reshape(m.weight.shape[0], -1)  # (O, I)
        o, i = w.shape
        key = f"model.{name}.parametrizations.weight.0."
        if delta == "ab":
            tensors[key + "lora_A"] = torch.randn(rank, i, generator=g) / i ** 0.5
            tensors[key + "lora_B"] = torch.randn(o, rank, generator=g) * 0.01
        else:
            tensors[key + "M_xs"] = torch.randn(rank, rank, generator=g) * 0.01
        if norm in ("rows", "cols"):
            tensors[key + "magnitude"] = w.norm(dim=1 if norm == "rows" else 0)
        elif norm == "both":
            tensors[key + "magnitude_r"], tensors[key + "magnitude_c"] = w.norm(dim=1), w.norm(dim=0)
    config = {"rank": rank, "alpha": float(rank), "adapter_type": adapter_type, "dropout": 0.0,
              "include": None, "exclude": None}
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"lora_config": json.dumps(config)})
    return path


class _PerForward(nn.Module):
    """A parametrization that recomputes the adapted weight at every access (official style)."""

    def __init__(self, layer, adapter_type: str, scaling: float, strength: float):
        super().__init__()
        self.layer, self.adapter_type, self.scaling, self.strength = layer, adapter_type, scaling, strength

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = adapt_weight(w.reshape(w.shape[0], -1).float(), self.layer, self.adapter_type, self.scaling,
                           self.strength)
        return out.reshape(w.shape).to(w.dtype)


def per_forward_copy(dit: DiT, stack: LoRAStack) -> DiT:
    """A copy of the base DiT with the stack's adapters as per-forward parametrizations."""
    twin = copy.deepcopy(dit)
    lora = stack._loras[0]
    for (part, path), target in stack._targets.items():
        module = twin.get_submodule(path)
        with torch.no_grad():
            module.weight.copy_(target.base)
        param = _PerForward(lora.layers[(part, path)], lora.file.adapter_type, lora.file.scaling, 1.0)
        parametrize.register_parametrization(module, "weight", param, unsafe=True)
    return twin


def interleaved_medians(fns: dict, repeats: int, sync) -> dict[str, float]:
    """Median seconds per call of each function, run in rotation so load drift hits all alike."""
    for fn in fns.values():  # warm-up
        fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--latents", type=int, default=64, help="64 latents ~ 6 s of audio")
    ap.add_argument("--batch", type=int, default=2, help="2 = one CFG step of one item")
    ap.add_argument("--types", nargs="+", default=["lora", "dora-rows", "lora-xs"], choices=sorted(ADAPTER_KINDS))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    dit = random_dit(args.width, args.depth, args.channels).to(device, dtype)
    b, c, t = args.batch, args.channels, args.latents
    cond = DiTConditioning(cross=torch.randn(b, 257, 768, device=device, dtype=dtype),
                           global_cond=torch.randn(b, 768, device=device, dtype=dtype),
                           local=torch.zeros(b, c + 1, t, device=device, dtype=dtype),
                           padding_mask=torch.ones(b, t, dtype=torch.bool, device=device))
    x = torch.randn(b, c, t, device=device, dtype=dtype)
    tt = torch.full((b,), 0.7, device=device)
    n_params = sum(p.numel() for p in dit.parameters()) / 1e6
    print(f"DiT width {args.width}, depth {args.depth}, {n_params:.0f}M params, {args.dtype} on {device}; "
          f"x (B={b}, C={c}, T={t}), rank {args.rank}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats} interleaved runs")
    print(f"{'adapter':<14}{'base ms':>10}{'cached ms':>11}{'per-fwd ms':>12}{'per-fwd/cached':>16}"
          f"{'refresh ms':>12}")
    base_cache = dit.prepare(cond)
    with tempfile.TemporaryDirectory() as tmp:
        for adapter_type in args.types:
            path = synthetic_lora(dit, adapter_type, args.rank, Path(tmp) / f"{adapter_type}.safetensors")
            adapted = copy.deepcopy(dit)
            stack = LoRAStack(adapted, nn.Module())
            stack.load([path])
            cache = adapted.prepare(cond)
            twin = per_forward_copy(dit, stack)
            twin_cache = twin.prepare(cond)
            same = (twin(x, tt, cond, cache=twin_cache) - adapted(x, tt, cond, cache=cache)).abs().max().item()
            flip = iter([0.5, 1.0] * (args.repeats + 1))
            ms = interleaved_medians({
                "base": lambda: dit(x, tt, cond, cache=base_cache),
                "cached": partial(adapted, x, tt, cond, cache=cache),
                "per_forward": partial(twin, x, tt, cond, cache=twin_cache),
                # one strength change: every weight rewritten
                "refresh": lambda stack=stack, flip=flip: stack.set_strength(next(flip)),
            }, args.repeats, sync)
            print(f"{adapter_type:<14}{ms['base'] * 1e3:>10.1f}{ms['cached'] * 1e3:>11.1f}"
                  f"{ms['per_forward'] * 1e3:>12.1f}{ms['per_forward'] / ms['cached']:>15.2f}x"
                  f"{ms['refresh'] * 1e3:>12.1f}   (outputs max |diff| {same:.1e})")


if __name__ == "__main__":
    main()
