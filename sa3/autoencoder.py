"""``AutoencoderModel``: the SAME autoencoder alone (encode audio to latents, decode back), as in the
official interface.

Accepts ``"same-s"`` / ``"same-l"`` (standalone hub repos, bare keys), a local SAME folder, or a
full SA3 model folder (its ``pretransform.model.*`` tensors are used).

Legend: B batch, C latent channels, L latent frames, S samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from . import audio as audio_utils
from . import checks
from .config import SAMPLE_RATE, SAMPLES_PER_LATENT
from .cpu_gemm import set_weight_packing
from .loading import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    default_device,
    load_strict,
    read_checkpoint,
    read_json,
    resolve_autoencoder_dir,
    split_checkpoint,
)
from .same import SAMEAutoencoder, SAMEConfig
from .stages import audio_at_rate


class AutoencoderModel:
    def __init__(self, autoencoder: SAMEAutoencoder, sample_rate: int, device: torch.device):
        self.autoencoder = autoencoder
        self.sample_rate = sample_rate
        self.device = device
        set_weight_packing(autoencoder, True)  # bf16 CPU GEMMs on prepacked weights, as StableAudioModel

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | str = torch.float32, attention: str = "auto") -> AutoencoderModel:
        """Load SAME from a folder or name. ``dtype``: a torch dtype, or ``"bf16-mixed"`` (bf16
        GEMMs and convolutions, the rest fp32; see ``SAMEAutoencoder.use_mixed_bf16``)."""
        device = torch.device(device) if device is not None else default_device()
        folder = resolve_autoencoder_dir(name_or_path)
        raw = read_json(folder / CONFIG_FILE)
        weights = folder / WEIGHTS_FILE
        state = read_checkpoint(weights)
        if raw.get("model_type") == "diffusion_cond_inpaint":  # a full SA3 folder: take its SAME part
            state = split_checkpoint(state, weights)["autoencoder"]
        cfg = SAMEConfig.from_official(raw)
        with torch.device("meta"):
            autoencoder = SAMEAutoencoder(cfg)
        load_strict(autoencoder, state, "SAME autoencoder", weights)
        autoencoder.to_precision(device, dtype)
        autoencoder.attention_backend = attention
        return cls(autoencoder, raw.get("sample_rate", SAMPLE_RATE), device)

    def _batch(self, audio, sr) -> torch.Tensor:
        """(C, S) tensor, list of (C, S) tensors, or (B, C, S) -> (B, 2, S') at the model rate,
        zero-padded to a multiple of 4096 samples (and to the longest item)."""
        items = list(audio) if isinstance(audio, (list, tuple)) or (torch.is_tensor(audio) and audio.dim() == 3) \
            else [audio]
        rates = sr if isinstance(sr, (list, tuple)) else [sr] * len(items)
        if len(rates) != len(items):
            raise ValueError(f"Stable Audio 3: {len(items)} audio item(s) but {len(rates)} sample rate(s).")
        wavs = []
        for i, (a, r) in enumerate(zip(items, rates, strict=True)):
            name = "audio" if len(items) == 1 else f"audio item {i}"
            rate = checks.check_sample_rate(name, r)
            wavs.append(audio_at_rate(name, audio_utils.as_channels_first(a, name), rate, self.sample_rate))
        length = max(w.shape[-1] for w in wavs)
        length = -(-length // SAMPLES_PER_LATENT) * SAMPLES_PER_LATENT
        batch = torch.cat([audio_utils.to_stereo(audio_utils.pad_crop(w, length)[None]) for w in wavs])
        return batch.to(self.device, self.autoencoder.dtype)

    @torch.inference_mode()
    def encode(self, audio: torch.Tensor | Sequence[torch.Tensor], sr: int | Sequence[int], chunked: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Audio (any rate, mono or stereo) -> latents (B, C, L)."""
        return self.autoencoder.encode(self._batch(audio, sr), chunked=chunked, generator=generator)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, chunked: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (B, C, L) -> audio (B, 2, L * 4096) float32 at 44.1 kHz."""
        if latents.dim() != 3:
            raise ValueError(f"Stable Audio 3: latents must be (batch, channels, frames), got {tuple(latents.shape)}.")
        out = self.autoencoder.decode(latents.to(self.device, self.autoencoder.dtype), chunked=chunked,
                                      generator=generator)
        return out.float()

