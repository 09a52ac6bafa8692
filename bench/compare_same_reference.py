"""SAME decode, ours vs the official implementation, on the same random full-size weights, in one
process: where the fp32 difference between the implementations comes from.

    SA3_OFFICIAL_PATH=/path/to/stable-audio-3 python bench/compare_same_reference.py [--variant medium]
        [--latents 64] [--threads 2]

``--variant medium`` is SAME-L (sliding-window attention), ``small-music`` SAME-S (chunked full
attention). Decoded unchunked from the same latents and seed (our generator reproduces the
official code's ``torch.manual_seed`` draws). Official runs: as it runs on CPU (SAME-L's window
through torch.compile'd ``flex_attention``) and with flex_attention turned off (its chunked-halo
SDPA fallback). Ours: ``sdpa`` (query chunks over a key halo) and ``math`` (dense band mask).
Printed: relative L2 of every pair of audio outputs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _random_model import official_config, random_same
from bench_generate import fmt_table
from compare_reference import import_official, rel_l2


def official_same(variant: str, state: dict):
    """The official SAME autoencoder of ``variant`` holding ``state`` (our keys are official)."""
    from stable_audio_3.factory import create_autoencoder_from_config

    cfg = official_config(variant)
    model = create_autoencoder_from_config(cfg["model"], cfg["sample_rate"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "inv_freq" not in k]:
        raise SystemExit(f"official SAME keys differ: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval().requires_grad_(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="medium")
    parser.add_argument("--latents", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not import_official():
        raise SystemExit("set SA3_OFFICIAL_PATH to a checkout of Stability-AI/stable-audio-3")
    from stable_audio_3.models import transformer as official_transformer

    ours = random_same(args.variant)
    z = torch.randn(1, ours.config.latent_dim, args.latents, generator=torch.Generator().manual_seed(1))
    outs, seconds = {}, {}
    with torch.inference_mode():
        for backend in ("sdpa", "math"):
            ours.attention_backend = backend
            t0 = time.perf_counter()
            outs[f"ours {backend}"] = ours.decode(z, chunked=False, generator=torch.Generator().manual_seed(2))
            seconds[f"ours {backend}"] = time.perf_counter() - t0
        official = official_same(args.variant, ours.state_dict())
        del ours
        for label, flex in (("official (flex_attention)", True), ("official (no flex)", False)):
            official_transformer.flex_attention_available = flex
            torch.manual_seed(2)
            t0 = time.perf_counter()
            outs[label] = official.decode_audio(z, chunked=False)
            seconds[label] = time.perf_counter() - t0
    rows = [("a", "b", "audio_rel_l2", "max_abs_diff")]
    for a, b in itertools.combinations(outs, 2):
        rows.append((a, b, f"{rel_l2(outs[a].float(), outs[b].float()):.2e}",
                     f"{(outs[a].float() - outs[b].float()).abs().max().item():.2e}"))
    print(f"SAME decode ({args.variant}), random full-size weights, {args.latents} latents, fp32, "
          f"threads {torch.get_num_threads()}; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(fmt_table(rows))


if __name__ == "__main__":
    main()
