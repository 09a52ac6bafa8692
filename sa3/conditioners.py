"""Text and duration conditioning: the T5Gemma encoder (through transformers), the learned padding
embedding and the ``seconds_total`` number embedder.

The T5Gemma encoder lives outside the checkpoint's module tree (as in the official code): it is
loaded from the model folder's ``t5gemma-b-b-ul2/`` subfolder, keeping only the encoder weights,
and it is never adapted by LoRA. ``Conditioner`` holds the checkpoint's ``conditioner.*`` tensors.

Legend: B batch, P prompt tokens (256), E embedding width (768).
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from .config import SecondsConfig, TextEncoderConfig
from .layers import expo_fourier_features

logger = logging.getLogger(__name__)

TEXT_DIM = 768  # T5Gemma-b hidden width


TRANSFORMERS_FLOOR = "4.56"  # the first transformers with T5Gemma (T5GemmaEncoderModel)


def require_transformers() -> None:
    """Raise a RuntimeError that says what to install when transformers is missing or too old for
    T5Gemma (instead of an ImportError from deep inside the text-encoder load)."""
    try:
        found = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        found = None
    if found is not None:
        from packaging.version import Version  # installed with transformers

        if Version(found) >= Version(TRANSFORMERS_FLOOR):
            return
    raise RuntimeError(
        f"Stable Audio 3: the T5Gemma text encoder needs transformers >= {TRANSFORMERS_FLOOR} (got "
        f"{'none installed' if found is None else found}). Update it in the Python that runs ComfyUI: "
        f'python -m pip install -U "transformers>={TRANSFORMERS_FLOOR}".'
    )


def check_vocabulary(pieces: int, rows: int, where: str) -> None:
    """A tokenizer's ids must all have a row in the encoder's embedding: ``pieces`` (its vocabulary
    size) at most ``rows`` (the embedding's), else prompts would fail mid-encode with an index error."""
    if not 1 <= pieces <= rows:
        raise RuntimeError(f"Stable Audio 3: {where} must have a tokenizer of 1 to {rows:,} pieces, one per row of "
                           f"its encoder's token embedding (got {pieces:,} pieces). Use the tokenizer and "
                           "encoder of the same model.")


class TextEncoder(nn.Module):
    """Tokenizer + T5Gemma encoder. ``forward(prompts)`` returns hidden states and the mask."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_folder(cls, folder: str | Path, cfg: TextEncoderConfig, dtype: torch.dtype | None = None) -> TextEncoder:
        """Load tokenizer and encoder-only weights from a ``t5gemma-b-b-ul2`` folder.

        ``dtype=None`` keeps the checkpoint's dtype (bf16 for the official files), which is what
        the official code runs with under transformers >= 5.
        """
        require_transformers()
        from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel
        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"Stable Audio 3: no T5Gemma text encoder in {str(folder)!r} (config.json missing).")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        config.is_encoder_decoder = False
        # transformers picks the attention backend, as in the official code. Its load report
        # lists the decoder weights we deliberately skip, so it is silenced.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model = T5GemmaEncoderModel.from_pretrained(folder, config=config,
                                                        dtype=dtype if dtype is not None else "auto")
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        model.eval().requires_grad_(False)
        return cls(model, tokenizer, cfg.max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and bool mask, both (B, P)."""
        enc = self.tokenizer(prompts, truncation=True, max_length=self.max_length, padding="max_length",
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].to(torch.bool)

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns hidden (B, P, E) in the encoder's dtype and mask (B, P) bool, on its device."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        return hidden, mask


class _ExpoFeatures(nn.Module):
    """Parameter-free slot 0 of the number embedder (keeps key index ``embedding.1``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return expo_fourier_features(x, self.dim)


class NumberEmbedder(nn.Module):
    def __init__(self, features: int, dim: int = 256):
        super().__init__()
        self.embedding = nn.Sequential(_ExpoFeatures(dim), nn.Linear(dim, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class NumberConditioner(nn.Module):
    """``seconds_total`` -> one (B, 1, E) token; normalised to [0, 1] by the configured range."""

    def __init__(self, output_dim: int, cfg: SecondsConfig):
        super().__init__()
        self.min_val, self.max_val = cfg.min_val, cfg.max_val
        self.embedder = NumberEmbedder(output_dim)

    def forward(self, seconds: list[float]) -> torch.Tensor:
        weight = self.embedder.embedding[1].weight
        x = torch.tensor([float(s) for s in seconds], device=weight.device)  # fp32, as official
        x = (x.clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        # the official code casts the normalised value to the embedder dtype (fp16 quantises it)
        return self.embedder(x.to(weight.dtype)).unsqueeze(1)


class PromptPadding(nn.Module):
    """Holds the learned padding embedding that replaces masked T5 positions."""

    def __init__(self, dim: int):
        super().__init__()
        self.padding_embedding = nn.Parameter(torch.zeros(dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # bf16 hidden + fp32 padding promote to fp32, exactly as torch.where does officially
        return torch.where(mask[..., None], hidden, self.padding_embedding.expand_as(hidden))


class Conditioner(nn.Module):
    """The checkpoint's ``conditioner.*`` tensors: prompt padding and the seconds embedder."""

    def __init__(self, text_cfg: TextEncoderConfig, seconds_cfg: SecondsConfig, cond_dim: int = TEXT_DIM):
        super().__init__()
        if text_cfg.padding_mode != "learned":
            raise ValueError(f"Stable Audio 3: prompt padding_mode {text_cfg.padding_mode!r} is not supported.")
        self.conditioners = nn.ModuleDict({
            "prompt": PromptPadding(cond_dim),
            "seconds_total": NumberConditioner(cond_dim, seconds_cfg),
        })

    def prompt(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conditioners["prompt"](hidden, mask)

    def seconds(self, seconds: list[float]) -> torch.Tensor:
        return self.conditioners["seconds_total"](seconds)
