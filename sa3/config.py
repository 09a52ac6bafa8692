"""Typed configuration parsed once from an official ``model_config.json``.

Only the keys the official factory reads are accepted; a value this library cannot honour raises a
``ValueError`` naming the key, instead of being silently ignored. The SAME autoencoder section is
kept as its raw dict and parsed by ``sa3.same.SAMEConfig``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 44100
SAMPLES_PER_LATENT = 4096  # patch 256 x SAME stride 16
LATENT_ALIGN = 2 * SAMPLES_PER_LATENT  # generate() sizes are rounded up to 8192 samples
DURATION_PADDING_SEC = 6.0  # headroom the official generate() adds after the longest duration

# Official model names -> Hugging Face repos (spec 1.1).
MODEL_REPOS = {
    "small-music": "stabilityai/stable-audio-3-small-music",
    "small-sfx": "stabilityai/stable-audio-3-small-sfx",
    "medium": "stabilityai/stable-audio-3-medium",
    "small-music-base": "stabilityai/stable-audio-3-small-music-base",
    "small-sfx-base": "stabilityai/stable-audio-3-small-sfx-base",
    "medium-base": "stabilityai/stable-audio-3-medium-base",
}
AUTOENCODER_REPOS = {"same-s": "stabilityai/SAME-S", "same-l": "stabilityai/SAME-L"}
# ``sample_size`` of each official model_config.json: the longest audio it makes is
# sample_size / 44100 s (small 120 s, small base 120.7 s, medium 380.4 s), known before download.
MODEL_SAMPLE_SIZES = {
    "small-music": 5_292_032,
    "small-sfx": 5_292_032,
    "medium": 16_777_216,
    "small-music-base": 5_324_800,
    "small-sfx-base": 5_324_800,
    "medium-base": 16_777_216,
}


def _reject_unknown(section: str, cfg: dict, allowed: set[str]) -> None:
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"Stable Audio 3 config: unknown key(s) {unknown} in {section!r} "
                         f"(allowed: {sorted(allowed)}).")


def _require(section: str, cfg: dict, key: str, expected: Any) -> None:
    if cfg.get(key, expected) != expected:
        raise ValueError(
            f"Stable Audio 3 config: {section}.{key} = {cfg[key]!r} is not supported (expected {expected!r})."
        )


@dataclass(frozen=True)
class DiTConfig:
    io_channels: int = 256  # latent channels
    embed_dim: int = 1024  # transformer width D
    depth: int = 20  # transformer blocks
    num_heads: int = 16  # D / 64
    cond_token_dim: int = 768  # width of the cross-attention tokens (T5 + seconds)
    global_cond_dim: int = 768  # width of the global (seconds) embedding
    local_add_cond_dim: int = 257  # inpaint mask (1) + masked latents (io_channels)
    num_memory_tokens: int = 64  # learned tokens prepended to the sequence
    differential: bool = False  # differential attention (medium)
    ff_mult: float = 4.0  # feed-forward inner width = ff_mult * D
    timestep_features_dim: int = 256  # expo Fourier features of t

    @property
    def dim_heads(self) -> int:
        return self.embed_dim // self.num_heads

    @classmethod
    def from_official(cls, cfg: dict) -> DiTConfig:
        allowed = {"io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim",
                   "local_add_cond_dim", "num_memory_tokens", "attn_kwargs", "ff_kwargs", "norm_kwargs",
                   "norm_type", "global_cond_type", "timestep_features_type", "timestep_features_logsnr",
                   "timestep_features_dim", "patch_size", "transformer_type", "timestep_cond_type"}
        _reject_unknown("model.diffusion.config", cfg, allowed)
        for key, expected in [("norm_type", "rms_norm"), ("global_cond_type", "adaLN"),
                              ("timestep_features_type", "expo"), ("timestep_features_logsnr", False),
                              ("patch_size", 1), ("transformer_type", "continuous_transformer"),
                              ("timestep_cond_type", "global")]:
            _require("model.diffusion.config", cfg, key, expected)
        attn = dict(cfg.get("attn_kwargs", {}))
        _reject_unknown("attn_kwargs", attn, {"differential", "qk_norm", "qk_norm_eps", "feat_scale"})
        _require("attn_kwargs", attn, "qk_norm", "rms")
        _require("attn_kwargs", attn, "feat_scale", False)
        ff = dict(cfg.get("ff_kwargs", {}))
        _reject_unknown("ff_kwargs", ff, {"mult", "glu", "no_bias"})
        _require("ff_kwargs", ff, "glu", True)
        _require("ff_kwargs", ff, "no_bias", False)
        return cls(
            io_channels=cfg["io_channels"],
            embed_dim=cfg["embed_dim"],
            depth=cfg["depth"],
            num_heads=cfg["num_heads"],
            cond_token_dim=cfg["cond_token_dim"],
            global_cond_dim=cfg["global_cond_dim"],
            local_add_cond_dim=cfg["local_add_cond_dim"],
            num_memory_tokens=cfg.get("num_memory_tokens", 0),
            differential=bool(attn.get("differential", False)),
            ff_mult=float(ff.get("mult", 4.0)),
            timestep_features_dim=cfg.get("timestep_features_dim", 256),
        )


@dataclass(frozen=True)
class TextEncoderConfig:
    max_length: int = 256  # tokens; longer prompts are truncated
    padding_mode: str = "learned"  # padded positions take the learned padding embedding
    repo_id: str | None = None  # hub repo holding the T5Gemma folder
    subfolder: str | None = "t5gemma-b-b-ul2"
    model_path: str | None = None  # local override of repo_id (official key)


@dataclass(frozen=True)
class SecondsConfig:
    min_val: float = 0.0
    max_val: float = 384.0  # seconds_total is clamped to [min_val, max_val] and divided by max_val


@dataclass(frozen=True)
class ShiftConfig:
    """Sampling time shift; the default (config null) is LogSNR with rate 0 (spec 6.4)."""

    type: str = "logsnr"  # "logsnr" | "full" | "flux" | "none"
    options: dict = field(default_factory=lambda: {"rate": 0.0})  # constructor kwargs


@dataclass(frozen=True)
class ModelConfig:
    sample_rate: int
    sample_size: int  # maximum samples the model was trained on
    latent_channels: int
    cond_dim: int
    diffusion_objective: str  # "rf_denoiser" (post-trained) or "rectified_flow" (base)
    dit: DiTConfig
    text: TextEncoderConfig
    seconds: SecondsConfig
    shift: ShiftConfig
    pretransform: dict  # raw official dict, parsed by sa3.same.SAMEConfig
    svd_bases_path: str | None = None
    training_shift: ShiftConfig | None = None  # distribution_shift_options: LoRA training's time shift

    @property
    def family(self) -> str:
        return "medium" if self.dit.differential else "small"

    @property
    def max_latents(self) -> int:
        return self.sample_size // SAMPLES_PER_LATENT

    @property
    def max_duration(self) -> float:
        """Longest duration in seconds; longer requests would exceed ``sample_size``. Between
        ``max_duration - 6`` and ``max_duration`` the headroom shrinks, as in the official UI."""
        return self.sample_size / self.sample_rate

    @property
    def default_sampler(self) -> str:
        return "pingpong" if self.diffusion_objective == "rf_denoiser" else "euler"

    @classmethod
    def from_official(cls, cfg: dict) -> ModelConfig:
        _reject_unknown("model_config.json", cfg, {"model_type", "sample_rate", "sample_size", "svd_bases_path",
                                                   "model", "training", "audio_channels"})
        if cfg.get("model_type") != "diffusion_cond_inpaint":
            raise ValueError(
                f"Stable Audio 3 config: model_type {cfg.get('model_type')!r} is not a Stable Audio 3 "
                "generation model (expected 'diffusion_cond_inpaint')."
            )
        model = cfg["model"]
        diffusion = model["diffusion"]
        _require("model.diffusion", diffusion, "cross_attention_cond_ids", ["prompt", "seconds_total"])
        _require("model.diffusion", diffusion, "global_cond_ids", ["seconds_total"])
        _require("model.diffusion", diffusion, "local_add_cond_ids", ["inpaint_mask", "inpaint_masked_input"])
        for key in ("input_concat_ids", "prepend_cond_ids", "modular_local_cond_configs"):
            _require("model.diffusion", diffusion, key, [])
        objective = diffusion.get("diffusion_objective", "v")
        if objective not in ("rf_denoiser", "rectified_flow"):
            raise ValueError(f"Stable Audio 3 config: diffusion_objective {objective!r} is not supported.")

        text, seconds = None, None
        for entry in model["conditioning"]["configs"]:
            c = dict(entry["config"])
            if entry["id"] == "prompt" and entry["type"] == "t5gemma":
                _reject_unknown("prompt conditioner", c, {"max_length", "padding_mode", "repo_id", "subfolder",
                                                          "model_path", "model_name", "enable_grad", "project_out"})
                _require("prompt conditioner", c, "project_out", False)
                c.pop("model_name", None), c.pop("enable_grad", None), c.pop("project_out", None)
                text = TextEncoderConfig(**c)
            elif entry["id"] == "seconds_total" and entry["type"] == "number":
                _require("seconds_total conditioner", c, "fourier_features_type", "expo")
                seconds = SecondsConfig(min_val=c.get("min_val", 0), max_val=c.get("max_val", 1))
            else:
                raise ValueError(f"Stable Audio 3 config: unexpected conditioner {entry['id']!r} ({entry['type']!r}).")
        if text is None or seconds is None:
            raise ValueError("Stable Audio 3 config: the 'prompt' and 'seconds_total' conditioners are required.")

        shift_opts = diffusion.get("sampling_distribution_shift_options")
        shift = ShiftConfig()
        if shift_opts is not None:
            opts = dict(shift_opts)
            shift = ShiftConfig(type=opts.pop("type", "full"), options=opts)  # official default type

        train_opts = diffusion.get("distribution_shift_options")
        training_shift = None  # null: the official trainer leaves sampled times unshifted
        if train_opts is not None:
            opts = dict(train_opts)
            training_shift = ShiftConfig(type=opts.pop("type", "full"), options=opts)

        dit = DiTConfig.from_official(diffusion["config"])
        return cls(
            sample_rate=cfg["sample_rate"],
            sample_size=cfg["sample_size"],
            latent_channels=model["io_channels"],
            cond_dim=model["conditioning"]["cond_dim"],
            diffusion_objective=objective,
            dit=dit,
            text=text,
            seconds=seconds,
            shift=shift,
            pretransform=model["pretransform"],
            svd_bases_path=cfg.get("svd_bases_path"),
            training_shift=training_shift,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RuntimeError(f"Stable Audio 3: {str(path)!r} is not valid JSON ({e}).") from e
        return cls.from_official(raw)
