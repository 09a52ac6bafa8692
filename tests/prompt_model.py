"""A tiny random Qwen3.5 chat model in Hugging Face layout, built in code (never downloaded), for
the Prompt Assistant tests.

It has the real model's layout: a ``qwen3_5`` vision-language config and checkpoint (keys
``model.language_model.*`` and ``model.visual.*``), which ``AutoModelForCausalLM`` reads as the
text-only ``Qwen3_5ForCausalLM``, and a tokenizer with a chat template in
the real tokenizer's class (byte-level BPE) with merges trained on a small vocabulary (words of
prompts, the tags, the rule-breaking words and marks). Its random answers are text salad.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

import pytest
import torch

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 400  # 256 bytes, the special tokens, merges
WORDS = ("system user assistant music instrument sfx one-shot sound idea prompt warm bright deep soft punchy dry "
         "distant close slow fast ambient house jazz rock techno piano guitar drums bass synth pad strings cello "
         "rain thunder wind door glass metal wood kick snare hat loop hit riff groove reverb tape room vocals singer "
         "voice lyrics choir BPM Length seconds TrackType VocalType Instrumental Music SFX Instrument "
         "with and a the of in . , : - [ ] * # 1 2 3 5 6 8 10 12 30 60 90 120").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}")


def _tokenizer():
    """A byte-level BPE trained on WORDS, in the real model's tokenizer class (``Qwen3_5Tokenizer``,
    which AutoTokenizer picks for a ``qwen3_5`` folder), with the chat template."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen3_5Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    tokenizer = Qwen3_5Tokenizer(vocab=bpe.get_vocab(), merges=merges, unk_token=None, eos_token="<|im_end|>",
                                 pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build(folder: Path) -> Path:
    """Write the tiny model and tokenizer into ``folder`` (seeded: the same weights every time)."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    tokenizer = _tokenizer()
    vocab = tokenizer.get_vocab()
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16, linear_key_head_dim=8,
                linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=2,
                max_position_embeddings=1024, tie_word_embeddings=True,
                layer_types=["linear_attention"] * 3 + ["full_attention"],
                pad_token_id=vocab["<|endoftext|>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=None)
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16)
    config = Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen3_5ForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread for the test (autouse where imported): the tiny model's many small operations
    run 20x slower on two threads of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def tiny_prompt_model() -> Path:
    """The tiny model, built once per process in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="sa3-tiny-qwen-")) / "Qwen3.5-2B"
    return build(folder)


def copy_to(target: Path) -> Path:
    """A copy of the tiny model's folder at ``target``."""
    shutil.copytree(tiny_prompt_model(), target)
    return target
