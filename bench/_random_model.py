"""Random full-size model folders for benchmarks (never committed; built under /tmp).

``random_model_dir("small-music")`` writes an official-layout folder with the real small-music
shapes and random weights: ``model_config.json`` (the reconstructed config, with ``model_path``
pointing at the folder, as the official code needs offline), ``model.safetensors`` (fp32, the
official ``model.model.`` / ``conditioner.`` / ``pretransform.model.`` keys) and
``t5gemma-b-b-ul2/``: a full-size T5Gemma encoder-decoder (12+12 layers, width 768, vocab
256,000, bf16 as the real file) with the fixtures' byte tokenizer. ``random_same(...)`` builds an
in-memory SAME autoencoder with random weights. Weight scales follow the modules' default
initialisation, so activations stay in a realistic range; the audio is noise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sa3.conditioners import Conditioner  # noqa: E402
from sa3.config import ModelConfig  # noqa: E402
from sa3.dit import DiT  # noqa: E402
from sa3.same import SAMEAutoencoder, SAMEConfig  # noqa: E402

logger = logging.getLogger(__name__)

SHARED = Path(os.environ.get("SA3_SHARED", REPO.parent / "shared"))
# The official configs ship with the library (sa3/configs: the reconstructed configs of
# ../shared/spec/configs without their note), and the committed fixture subset has the tiny-small
# tokenizer: a copy of the repository alone (a GPU machine) builds the random models too.
CONFIGS = REPO / "sa3" / "configs"
FIXTURE_T5 = REPO / "tests" / "fixtures" / "tiny-small" / "t5gemma-b-b-ul2"
ROOT = Path(os.environ.get("SA3_RANDOM_ROOT", "/tmp/sa3-random"))
# T5Gemma-b-b-ul2 sizes (spec 3.1); the fixture config supplies every other field
T5_SIZES = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, num_key_value_heads=12, head_dim=64,
                intermediate_size=2048, query_pre_attn_scalar=64, vocab_size=256000)


def official_config(variant: str) -> dict:
    return json.loads((CONFIGS / f"{variant}.json").read_text())


@torch.no_grad()
def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Default-style random init everywhere (our modules start some tensors at zero/one)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.numel() == 0:
            continue
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
        elif name.endswith(("gamma", "alpha")):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def random_same(variant: str = "medium", seed: int = 0) -> SAMEAutoencoder:
    """In-memory SAME (SAME-L for medium, SAME-S for small) with random weights, fp32, eval."""
    cfg = SAMEConfig.from_official(official_config(variant)["model"]["pretransform"])
    same = SAMEAutoencoder(cfg)
    _randomise(same, seed)
    return same.eval().requires_grad_(False)


def _write_t5(folder: Path, seed: int) -> None:
    from transformers import T5GemmaConfig, T5GemmaForConditionalGeneration

    cfg = json.loads((FIXTURE_T5 / "config.json").read_text())
    for part in ("encoder", "decoder"):
        cfg[part].update(T5_SIZES)
        cfg[part]["layer_types"] = ["sliding_attention", "full_attention"] * 6
    cfg["encoder"]["dtype"] = cfg["decoder"]["dtype"] = cfg["dtype"] = "bfloat16"
    cfg["decoder"]["cross_attention_hidden_size"] = 768
    cfg["vocab_size"] = T5_SIZES["vocab_size"]
    torch.manual_seed(seed)
    config = T5GemmaConfig.from_dict(cfg)
    model = T5GemmaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(FIXTURE_T5 / name, folder / name)


def random_model_dir(variant: str = "small-music", seed: int = 0, root: Path = ROOT) -> Path:
    """Build (once) and return a random full-size official-layout folder for ``variant``."""
    from safetensors.torch import save_file

    folder = root / variant
    done = folder / ".complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    raw = official_config(variant)
    prompt = next(c for c in raw["model"]["conditioning"]["configs"] if c["id"] == "prompt")
    prompt["config"]["model_path"] = str(folder)  # offline: the official loader reads model_path/subfolder
    (folder / "model_config.json").write_text(json.dumps(raw, indent=1))
    cfg = ModelConfig.from_file(folder / "model_config.json")

    logger.info("building random %s weights in %s", variant, folder)
    state = {}
    parts = [("model.model.", DiT(cfg.dit)), ("conditioner.", Conditioner(cfg.text, cfg.seconds, cfg.cond_dim)),
             ("pretransform.model.", SAMEAutoencoder(SAMEConfig.from_official(cfg.pretransform)))]
    for i, (prefix, module) in enumerate(parts):
        _randomise(module, seed + i)
        state.update({prefix + k: v.contiguous() for k, v in module.state_dict().items()})
    save_file(state, str(folder / "model.safetensors"))
    del state, parts
    t5 = folder / "t5gemma-b-b-ul2"
    t5.mkdir(exist_ok=True)
    _write_t5(t5, seed + 10)
    done.write_text("ok\n")
    return folder


if __name__ == "__main__":
    # python bench/_random_model.py [variant] [seed]; seeds other than 0 go to ROOT-seed<N>
    logging.basicConfig(level=logging.INFO)
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    root = ROOT if seed == 0 else ROOT.with_name(f"{ROOT.name}-seed{seed}")
    print(random_model_dir(sys.argv[1] if len(sys.argv) > 1 else "small-music", seed=seed, root=root))
