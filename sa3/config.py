"""Typed configuration parsed once from an official ``model_config.json``.

Only the keys the official factory reads are accepted; a value this library cannot honour raises a
``ValueError`` naming the key, instead of being silently ignored. The SAME autoencoder section is
kept as its raw dict in ``ModelConfig`` and parsed, with the same checks, by ``SAMEConfig.from_official``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_number, fail, shown

SAMPLE_RATE = 44100
MAX_SAMPLE_SIZE = 1 << 25  # samples (12.7 min at 44.1 kHz): twice the largest official model (medium, 2^24)
MAX_WIDTH = 1 << 16  # any channel count, width or token count of a config; official ones are <= 4096
# transformer blocks of any stack (DiT, SAME, T5Gemma); official ones have <= 24. Building a module,
# even on the meta device, costs time per block: 65,536 blocks take minutes before any check fails
MAX_DEPTH = 256
MAX_CONFIG_BYTES = 1 << 20  # a JSON config file (official ones are < 10 KB); larger ones are not read
SHIFT_TYPES = ("logsnr", "full", "flux", "none")  # sampling_distribution_shift_options.type
WHERE = "config"  # messages read "Stable Audio 3 config: <key> must be ..."
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


def _section(parent: dict, key: str, path: str) -> dict:
    """``parent[key]``, which must be a JSON object."""
    value = parent.get(key)
    if not isinstance(value, dict):
        raise fail(path, "a JSON object", value if key in parent else "nothing", WHERE)
    return value


def _int(cfg: dict, key: str, path: str, default: Any = None, lo: int = 1, hi: int = MAX_WIDTH) -> int:
    """``cfg[key]`` as a whole number in [lo, hi] (JSON 2.0 counts; "2", true and 2.5 do not)."""
    if key not in cfg and default is not None:
        return default
    value = cfg.get(key, "nothing")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return check_number(f"{path}.{key}", value, lo, hi, integer=True, where=WHERE)


def _float(cfg: dict, key: str, path: str, default: float) -> float:
    return check_number(f"{path}.{key}", cfg.get(key, default), where=WHERE)


def _str(cfg: dict, key: str, path: str, default: str | None = None) -> str | None:
    value = cfg.get(key, default)
    if value is not None and not isinstance(value, str):
        raise fail(f"{path}.{key}", "a string", value, WHERE)
    return value


def _shift(diffusion: dict, key: str) -> ShiftConfig | None:
    """A time-shift section of the config, or None when absent or null."""
    if diffusion.get(key) is None:
        return None
    path = f"model.diffusion.{key}"
    return shift_config(_section(diffusion, key, path), path, WHERE)


# Each shift type's parameters (the official constructors' arguments) and their allowed ranges.
# The bounds keep every schedule finite: lengths are latent frames, the shifts enter exp/sigmoid.
_LENGTH = (1, 1 << 20)
SHIFT_PARAMETERS: dict[str, dict[str, tuple[float, float] | type]] = {
    "none": {},
    "flux": {"min_length": _LENGTH, "max_length": _LENGTH, "alpha_min": (1e-3, 1e3), "alpha_max": (1e-3, 1e3)},
    "full": {"base_shift": (-20.0, 20.0), "max_shift": (-20.0, 20.0), "min_length": _LENGTH, "max_length": _LENGTH,
             "use_sine": bool},
    "logsnr": {"anchor_length": _LENGTH, "anchor_logsnr": (-50.0, 50.0), "rate": (-10.0, 10.0),
               "logsnr_end": (-50.0, 50.0)},
}


def shift_config(spec, name: str = "dist_shift", where: str | None = None) -> ShiftConfig:
    """A sampling time shift in the official config format, ``{"type": "none" | "flux" | "full" |
    "logsnr", ...its constructor's arguments}`` (``type`` defaults to ``"full"``, as officially),
    checked: known type, known parameters, finite numbers in range, a length range that is one.
    The one validator for ``model_config.json``'s shift sections and ``generate(dist_shift=...)``."""
    if callable(getattr(spec, "spec", None)):  # a ShiftConfig (from any copy of this module: the node pack's too)
        spec = spec.spec()
    if not isinstance(spec, dict):
        raise fail(name, 'a JSON object such as {"type": "flux", "alpha_min": 3, "alpha_max": 3}', spec, where)
    options = dict(spec)
    kind = options.pop("type", "full")
    if kind not in SHIFT_PARAMETERS:
        raise fail(f"{name}.type", f"one of {', '.join(map(repr, SHIFT_TYPES))}", kind, where)
    allowed = SHIFT_PARAMETERS[kind]
    for key, value in options.items():
        if key not in allowed:
            rule = f"one of {', '.join(map(repr, allowed))}" if allowed else "absent (the 'none' shift has none)"
            raise fail(f"each {name} parameter of a {kind!r} shift", rule, key, where)
        if allowed[key] is bool:
            if not isinstance(value, bool):
                raise fail(f"{name}.{key}", "true or false", value, where)
        else:
            lo, hi = allowed[key]
            options[key] = check_number(f"{name}.{key}", value, lo, hi, where=where)
    lengths = {k: options.get(k, default) for k, default in (("min_length", 256), ("max_length", 4096))}
    if kind == "full" and not lengths["min_length"] < lengths["max_length"]:
        raise fail(f"{name}.max_length", f"above min_length ({shown(lengths['min_length'])})",
                   lengths["max_length"], where)
    if kind == "flux" and not lengths["min_length"] <= lengths["max_length"]:
        raise fail(f"{name}.max_length", f"at least min_length ({shown(lengths['min_length'])})",
                   lengths["max_length"], where)
    return ShiftConfig(type=kind, options=options)


MAX_SHIFT_TEXT = 1000  # characters of a written shift; every valid one is far shorter
SHIFT_TEXT_EXAMPLE = "flux min_length=256 max_length=4096 alpha_min=3 alpha_max=3"


def parse_shift_text(text: str, name: str = "dist_shift", where: str | None = None) -> dict | None:
    """A schedule shift as people type it (the sampler node's ``schedule_shift``, the CLI's
    ``--dist-shift``): ``""`` or ``"default"`` -> None (the model's own); ``"none"``;
    ``"<type> name=value ..."`` (commas optional; values numbers or true/false) -> the official spec
    dict, checked by ``shift_config``. Parameters left out take the official defaults."""
    if not isinstance(text, str) or len(text) > MAX_SHIFT_TEXT:
        got = f"{len(text):,} characters" if isinstance(text, str) else None
        raise fail(name, f"a shift of at most {MAX_SHIFT_TEXT:,} characters such as {SHIFT_TEXT_EXAMPLE!r}", text,
                   where, got=got)
    words = text.replace(",", " ").split()
    if not words or words == ["default"]:
        return None
    spec: dict = {"type": words[0]}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not (sep and key and value):
            raise fail(name, f"'<type> name=value ...' such as {SHIFT_TEXT_EXAMPLE!r}", text, where,
                       got=f"{word!r} in {text!r}")
        spec[key] = _shift_value(value)
    shift_config(spec, name, where)
    return spec


def _shift_value(text: str):
    """``true`` / ``false`` -> bool, a number -> float, anything else stays text (refused by the check)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


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
        attn = dict(_section(cfg, "attn_kwargs", "model.diffusion.config.attn_kwargs") if "attn_kwargs" in cfg else {})
        _reject_unknown("attn_kwargs", attn, {"differential", "qk_norm", "qk_norm_eps", "feat_scale"})
        _require("attn_kwargs", attn, "qk_norm", "rms")
        _require("attn_kwargs", attn, "feat_scale", False)
        ff = dict(_section(cfg, "ff_kwargs", "model.diffusion.config.ff_kwargs") if "ff_kwargs" in cfg else {})
        _reject_unknown("ff_kwargs", ff, {"mult", "glu", "no_bias"})
        _require("ff_kwargs", ff, "glu", True)
        _require("ff_kwargs", ff, "no_bias", False)
        path = "model.diffusion.config"
        embed_dim, num_heads = _int(cfg, "embed_dim", path), _int(cfg, "num_heads", path)
        if embed_dim % num_heads:
            raise ValueError(f"Stable Audio 3 config: {path}.embed_dim must be a multiple of num_heads (got "
                             f"{embed_dim} and {num_heads}).")
        return cls(
            io_channels=_int(cfg, "io_channels", path),
            embed_dim=embed_dim,
            depth=_int(cfg, "depth", path, hi=MAX_DEPTH),
            num_heads=num_heads,
            cond_token_dim=_int(cfg, "cond_token_dim", path),
            global_cond_dim=_int(cfg, "global_cond_dim", path),
            local_add_cond_dim=_int(cfg, "local_add_cond_dim", path),
            num_memory_tokens=_int(cfg, "num_memory_tokens", path, default=0, lo=0),
            differential=bool(attn.get("differential", False)),
            ff_mult=check_number(f"{path}.ff_kwargs.mult", ff.get("mult", 4.0), 0, 64, lo_open=True, where=WHERE),
            timestep_features_dim=_int(cfg, "timestep_features_dim", path, default=256),
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

    def spec(self) -> dict:
        """The official config form: ``{"type": ..., **options}``."""
        return {"type": self.type, **self.options}


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
    pretransform: dict  # raw official dict, parsed by SAMEConfig.from_official
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
        """Parse and check a whole ``model_config.json``: every value this library reads is checked
        for presence, type and range here, so a broken file fails at load, never mid-generation."""
        if not isinstance(cfg, dict):
            raise fail("model_config.json", "a JSON object", cfg, WHERE)
        _reject_unknown("model_config.json", cfg, {"model_type", "sample_rate", "sample_size", "svd_bases_path",
                                                   "model", "training", "audio_channels"})
        if cfg.get("model_type") != "diffusion_cond_inpaint":
            raise ValueError(
                f"Stable Audio 3 config: model_type {cfg.get('model_type')!r} is not a Stable Audio 3 "
                "generation model (expected 'diffusion_cond_inpaint')."
            )
        sample_rate = _int(cfg, "sample_rate", "model_config", lo=MIN_SAMPLE_RATE, hi=MAX_SAMPLE_RATE)
        sample_size = _int(cfg, "sample_size", "model_config", lo=SAMPLES_PER_LATENT, hi=MAX_SAMPLE_SIZE)
        model = _section(cfg, "model", "model")
        diffusion = _section(model, "diffusion", "model.diffusion")
        _require("model.diffusion", diffusion, "cross_attention_cond_ids", ["prompt", "seconds_total"])
        _require("model.diffusion", diffusion, "global_cond_ids", ["seconds_total"])
        _require("model.diffusion", diffusion, "local_add_cond_ids", ["inpaint_mask", "inpaint_masked_input"])
        for key in ("input_concat_ids", "prepend_cond_ids", "modular_local_cond_configs"):
            _require("model.diffusion", diffusion, key, [])
        objective = diffusion.get("diffusion_objective", "v")
        if objective not in ("rf_denoiser", "rectified_flow"):
            raise ValueError(f"Stable Audio 3 config: diffusion_objective {objective!r} is not supported.")

        conditioning = _section(model, "conditioning", "model.conditioning")
        entries = conditioning.get("configs")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise fail("model.conditioning.configs", "a list of conditioner objects", entries, WHERE)
        text, seconds = None, None
        for entry in entries:
            c = dict(_section(entry, "config", "model.conditioning.configs[].config"))
            if entry.get("id") == "prompt" and entry.get("type") == "t5gemma":
                path = "prompt conditioner"
                _reject_unknown(path, c, {"max_length", "padding_mode", "repo_id", "subfolder",
                                          "model_path", "model_name", "enable_grad", "project_out"})
                _require(path, c, "project_out", False)
                text = TextEncoderConfig(
                    max_length=_int(c, "max_length", path, default=256, hi=4096),
                    padding_mode=_str(c, "padding_mode", path, "learned"),
                    repo_id=_str(c, "repo_id", path), subfolder=_str(c, "subfolder", path, "t5gemma-b-b-ul2"),
                    model_path=_str(c, "model_path", path))
            elif entry.get("id") == "seconds_total" and entry.get("type") == "number":
                path = "seconds_total conditioner"
                _require(path, c, "fourier_features_type", "expo")
                lo, hi = _float(c, "min_val", path, 0.0), _float(c, "max_val", path, 1.0)
                if not lo < hi:
                    raise ValueError(f"Stable Audio 3 config: {path}.max_val must be above min_val (got min_val "
                                     f"{lo:g}, max_val {hi:g}).")
                seconds = SecondsConfig(min_val=lo, max_val=hi)
            else:
                raise ValueError(f"Stable Audio 3 config: unexpected conditioner {entry.get('id')!r} "
                                 f"({entry.get('type')!r}).")
        if text is None or seconds is None:
            raise ValueError("Stable Audio 3 config: the 'prompt' and 'seconds_total' conditioners are required.")

        shift = _shift(diffusion, "sampling_distribution_shift_options") or ShiftConfig()
        training_shift = _shift(diffusion, "distribution_shift_options")  # null: training times unshifted
        dit = DiTConfig.from_official(_section(diffusion, "config", "model.diffusion.config"))
        pretransform = _section(model, "pretransform", "model.pretransform")
        svd_bases_path = _str(cfg, "svd_bases_path", "model_config")
        return cls(
            sample_rate=sample_rate,
            sample_size=sample_size,
            latent_channels=_int(model, "io_channels", "model"),
            cond_dim=_int(conditioning, "cond_dim", "model.conditioning"),
            diffusion_objective=objective,
            dit=dit,
            text=text,
            seconds=seconds,
            shift=shift,
            pretransform=pretransform,
            svd_bases_path=svd_bases_path,
            training_shift=training_shift,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read and check ``model_config.json``; any problem names the file and the key."""
        path = Path(path)
        raw = read_json_file(path, "a JSON model config")
        try:
            return cls.from_official(raw)
        except ValueError as e:
            raise ValueError(f"{str(e).rstrip('.')} in {str(path)!r}.") from e


def read_json_file(path: str | Path, what: str = "a JSON file", max_bytes: int = MAX_CONFIG_BYTES):
    """The JSON value in ``path``, read only when the file has at most ``max_bytes`` bytes: a
    RuntimeError naming the file for a missing, huge, non-UTF-8, malformed or too deeply nested one."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # never more, whatever the file's size
    except OSError as e:
        raise RuntimeError(f"Stable Audio 3: cannot read {str(path)!r} ({e}).") from e
    if len(data) > max_bytes:
        raise RuntimeError(f"Stable Audio 3: {str(path)!r} must be {what} of at most {max_bytes:,} bytes (got "
                           f"{path.stat().st_size:,} bytes). Replace it with the model's own config file.")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RuntimeError(f"Stable Audio 3: {str(path)!r} is not UTF-8 text (got byte 0x{e.object[e.start]:02x} "
                           f"at offset {e.start}, expected {what}).") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise RuntimeError(f"Stable Audio 3: {str(path)!r} is not valid JSON ({e}).") from e


# --- SAME autoencoder ------------------------------------------------------------------------------

# Keys the official code accepts (through **kwargs or unused arguments) and never reads at inference.
SAME_IGNORED_KEYS = frozenset({
    "type", "requires_grad", "enable_grad", "use_flash", "mapping_style", "conv_bias", "use_snake",
    "use_dilated_conv", "enable_inner_layer_dropout", "checkpointing", "freeze_backbone", "causal",
})
# SAME options SA3 never turns on (or off): each must keep the one value every SA3 checkpoint uses.
SAME_FIXED_FLAGS = {"conformer": False, "layer_scale": False, "feat_scale": False, "cross_attn": False, "dyt": True}
SAME_STAGE_KEYS = frozenset({
    "channels", "latent_dim", "c_mults", "strides", "transformer_depths", "sliding_window", "chunk_size",
    "chunk_midpoint_shift", "dim_heads", "sinusoidal_blocks", "ff_mult", "mapping_bias", "differential",
    "variable_stride", "mask_noise", "conv_mapping", *SAME_FIXED_FLAGS,
})


@dataclass(frozen=True)
class SAMEStageConfig:
    """One transformer resampling stage (the encoder's or the decoder's)."""

    width: int  # W: transformer width = channels * c_mults[0] (768 SAME-S, 1536 SAME-L)
    depth: int  # transformer blocks (6 SAME-S, 12 SAME-L)
    stride: int = 16  # patch frames per latent
    dim_heads: int = 128  # head dim (64 in every SA3 config); the reference default is 128
    differential: bool = True  # differential attention: attn(q, k) - attn(q2, k2)
    ff_mult: float = 3.0  # GLU inner width = W * ff_mult
    chunk_size: int = 128  # no-window attention: frames per chunk (SAME-S: 32 -> 34-token chunks)
    chunk_midpoint_shift: bool = False  # second half of the blocks uses chunks shifted by half a chunk
    sliding_window: tuple[int, int] | None = None  # (left, right) in latent groups; SAME-L: (1, 1)
    conv_mapping: bool = False  # mapping conv kernel 3 instead of 1
    mapping_bias: bool = True  # mapping conv has a bias
    sinusoidal_blocks: int = 0  # block i uses the sin(pi x) GLU iff depth - i < sinusoidal_blocks
    mask_noise: float = 0.0  # std of the noise added to the new tokens, also at inference
    variable_stride: bool = False  # one shared new-token slot instead of one per output position

    @property
    def window_tokens(self) -> tuple[int, int] | None:
        """Attention window in tokens (a latent group is stride + 1 tokens): (17, 17) for SAME-L."""
        if self.sliding_window is None:
            return None
        return (self.sliding_window[0] * (self.stride + 1), self.sliding_window[1] * (self.stride + 1))

    @property
    def chunk_tokens(self) -> int:
        """Tokens per attention chunk without a window: chunk_size frames + their new tokens (34)."""
        return self.chunk_size + self.chunk_size // self.stride


@dataclass(frozen=True)
class SAMEConfig:
    """Whole autoencoder: patching, encoder, decoder and SoftNorm bottleneck."""

    encoder: SAMEStageConfig
    decoder: SAMEStageConfig
    latent_dim: int = 256  # C
    io_channels: int = 2  # A: audio channels
    patch_size: int = 256  # samples per patch frame
    noise_regularize: bool = True  # bottleneck decode adds randn * running_std * 1e-3
    auto_scale: bool = True  # bottleneck has running_std (divides on encode, multiplies on decode)
    soft_clip: bool = False  # tanh on the decoded audio
    chunked: bool = False  # the checkpoint's default for chunked encode/decode (True in every SA3 DiT)

    @property
    def samples_per_latent(self) -> int:
        return self.patch_size * self.encoder.stride

    @property
    def windowed(self) -> bool:
        """True for SAME-L (sliding-window attention), False for SAME-S (chunked attention)."""
        return self.encoder.sliding_window is not None

    @classmethod
    def from_official(cls, cfg: dict) -> SAMEConfig:
        """Build from an official config dict, every value checked for type and range (a
        ``ValueError`` naming the key otherwise); absent keys take the official code's defaults.

        Accepts a whole ``model_config.json``, its ``model`` dict, the DiT's ``model.pretransform``
        dict (``{"chunked", "config": {"encoder", ...}}``) or the standalone SAME layout
        (``encoder``/``decoder``/``bottleneck``/... directly under ``model``).
        """
        if not isinstance(cfg, dict):
            raise fail("the SAME config", "a JSON object", cfg, WHERE)
        if "encoder" not in cfg and isinstance(cfg.get("model"), dict):
            cfg = cfg["model"]  # whole model_config.json
        if "encoder" in cfg:  # standalone SAME layout
            return _same_from_official(cfg, chunked=False, path="model")
        if isinstance(cfg.get("config"), dict) and "encoder" in cfg["config"]:  # DiT pretransform dict
            path = "model.pretransform"
            _reject_unknown(path, cfg, {"config", "chunked", "iterate_batch", "scale"} | SAME_IGNORED_KEYS)
            if _bool(cfg, "iterate_batch", path, False):
                raise fail(f"{path}.iterate_batch", "false (batched iteration is not supported)", True, WHERE)
            # `scale` is ignored: the official factory never passes it to AutoencoderPretransform.
            return _same_from_official(cfg["config"], chunked=_bool(cfg, "chunked", path, False),
                                       path=f"{path}.config")
        if isinstance(cfg.get("pretransform"), dict):  # a DiT `model` dict
            return cls.from_official(cfg["pretransform"])
        raise ValueError(f"Stable Audio 3 config: no SAME encoder/decoder found (top-level keys {sorted(cfg)}).")


def _bool(cfg: dict, key: str, path: str, default: bool) -> bool:
    """``cfg[key]`` as JSON true/false (1, "yes" and null do not count)."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise fail(f"{path}.{key}", "true or false", value, WHERE)
    return value


def _fixed(cfg: dict, key: str, path: str, expected, why: str) -> None:
    """``cfg[key]``, when present, must be ``expected``: the one value of an option SA3 does not vary."""
    value = cfg.get(key, expected)
    if value != expected or isinstance(value, bool) != isinstance(expected, bool):
        rule = ("true" if expected else "false") if isinstance(expected, bool) else shown(expected)
        raise fail(f"{path}.{key}", f"{rule} ({why})", value, WHERE)


def _one_entry(cfg: dict, key: str, path: str, default: list, lo: int = 1, hi: int | None = MAX_WIDTH) -> int:
    """The single entry of a per-stage list (``c_mults``, ``strides``, ...): SA3's SAME has one
    resampling stage, where the official code allows several."""
    value = cfg.get(key, default)
    if not (isinstance(value, list) and len(value) == 1):
        got = (f"nothing, whose official default {default} has {len(default)} entries" if key not in cfg
               else f"{len(value)} entries" if isinstance(value, list) else None)
        raise fail(f"{path}.{key}", "a list of one entry (SA3's SAME has one resampling stage)", value, WHERE, got=got)
    return _int({f"{key}[0]": value[0]}, f"{key}[0]", path, lo=lo, hi=hi)


def _same_stage(c: dict, path: str, kind: str) -> tuple[SAMEStageConfig, int, int]:
    """One ``encoder.config`` / ``decoder.config`` at ``path``: (stage, audio-side channels, latent_dim)."""
    io_key = "in_channels" if kind == "encoder" else "out_channels"
    _reject_unknown(path, c, SAME_STAGE_KEYS | {io_key} | SAME_IGNORED_KEYS)
    for key, expected in SAME_FIXED_FLAGS.items():
        _fixed(c, key, path, expected, "the only value SA3's SAME uses")
    c_mult = _one_entry(c, "c_mults", path, [1, 2, 4, 8])
    stride = _one_entry(c, "strides", path, [2, 4, 8, 8])
    depth = _one_entry(c, "transformer_depths", path, [3, 3, 3, 3], hi=MAX_DEPTH)
    channels = _int(c, "channels", path, default=128, hi=None)
    width = check_number(f"{path}.channels x c_mults[0]", channels * c_mult, 1, MAX_WIDTH, integer=True, where=WHERE)
    if isinstance(c.get("sinusoidal_blocks"), list) or (kind == "decoder" and "sinusoidal_blocks" not in c):
        # the decoder takes one count per stage (official default [0, 0, 0, 0]), the encoder one number
        sinusoidal = _one_entry(c, "sinusoidal_blocks", path, [0], lo=0, hi=MAX_DEPTH)
    else:
        sinusoidal = _int(c, "sinusoidal_blocks", path, default=0, lo=0, hi=MAX_DEPTH)
    window = c.get("sliding_window")
    if window is not None:
        if not (isinstance(window, list) and len(window) == 2):
            raise fail(f"{path}.sliding_window", "null or two latent counts [left, right]", window, WHERE,
                       got=f"{len(window)} entries" if isinstance(window, list) else None)
        window = tuple(_int({f"sliding_window[{i}]": w}, f"sliding_window[{i}]", path, lo=0)
                       for i, w in enumerate(window))
    stage = SAMEStageConfig(
        width=width,
        depth=depth,
        stride=stride,
        dim_heads=_int(c, "dim_heads", path, default=128),
        differential=_bool(c, "differential", path, True),
        ff_mult=check_number(f"{path}.ff_mult", c.get("ff_mult", 3.0), 0, 64, lo_open=True, where=WHERE),
        chunk_size=_int(c, "chunk_size", path, default=128),
        chunk_midpoint_shift=_bool(c, "chunk_midpoint_shift", path, False),
        sliding_window=window,
        conv_mapping=_bool(c, "conv_mapping", path, False),
        mapping_bias=_bool(c, "mapping_bias", path, True),
        sinusoidal_blocks=sinusoidal,
        mask_noise=check_number(f"{path}.mask_noise", c.get("mask_noise", 0.0), 0, where=WHERE),
        variable_stride=_bool(c, "variable_stride", path, False),
    )
    if stage.width % min(stage.dim_heads, stage.width):
        raise ValueError(f"Stable Audio 3 config: {path}.channels x c_mults[0] ({stage.width}) must be a multiple "
                         f"of dim_heads (got dim_heads {stage.dim_heads}).")
    if window is None and stage.chunk_size % stage.stride:
        raise ValueError(f"Stable Audio 3 config: {path}.chunk_size must be a multiple of strides[0] (got "
                         f"chunk_size {stage.chunk_size}, stride {stage.stride}).")
    return stage, _int(c, io_key, path, default=2), _int(c, "latent_dim", path, default=32)


def _same_from_official(c: dict, *, chunked: bool, path: str) -> SAMEConfig:
    """The autoencoder's own config (``encoder``, ``decoder``, ``bottleneck``, ``pretransform``, sizes) at ``path``."""
    _reject_unknown(path, c, {"encoder", "decoder", "bottleneck", "pretransform", "latent_dim", "downsampling_ratio",
                              "io_channels", "in_channels", "out_channels"})
    parts = {}
    for part, allowed in (("encoder", {"config"}), ("decoder", {"config", "soft_clip"}), ("bottleneck", {"config"}),
                          ("pretransform", {"config"})):
        section = _section(c, part, f"{path}.{part}")
        _reject_unknown(f"{path}.{part}", section, allowed | SAME_IGNORED_KEYS)
        parts[part] = _section(section, "config", f"{path}.{part}.config")
    for part, expected in (("bottleneck", "softnorm"), ("pretransform", "patched")):
        _fixed(c[part], "type", f"{path}.{part}", expected, "the only kind SA3's SAME has")

    enc, enc_in, enc_latent = _same_stage(parts["encoder"], f"{path}.encoder.config", "encoder")
    dec, dec_out, dec_latent = _same_stage(parts["decoder"], f"{path}.decoder.config", "decoder")

    patch, patch_path = parts["pretransform"], f"{path}.pretransform.config"
    _reject_unknown(patch_path, patch, {"channels", "patch_size", "oversampling", "postfilter_channels"})
    _fixed(patch, "oversampling", patch_path, 1, "oversampling is not supported")
    _fixed(patch, "postfilter_channels", patch_path, 0, "a postfilter is not supported")
    patch_size = _int(patch, "patch_size", patch_path)
    # the official factory reads io_channels (default 2) and the patching's channels apart; they must agree
    channels = _int(patch, "channels", patch_path) if "channels" in patch else None
    io_channels = _int(c, "io_channels", path, default=channels or 2)
    for section, key, where in ((c, "in_channels", path), (c, "out_channels", path), (patch, "channels", patch_path)):
        if section.get(key) is not None and _int(section, key, where) != io_channels:
            raise fail(f"{where}.{key}", f"absent, null or io_channels ({io_channels})", section[key], WHERE)
    frame_features = io_channels * patch_size
    if enc_in != frame_features or dec_out != frame_features:
        raise ValueError(f"Stable Audio 3 config: {path}.encoder.config.in_channels and decoder.config.out_channels "
                         f"must be io_channels * patch_size = {frame_features} (got {enc_in} and {dec_out}).")
    if enc.stride != dec.stride:
        raise ValueError(f"Stable Audio 3 config: {path}.encoder.config.strides and decoder.config.strides must be "
                         f"equal (got {enc.stride} and {dec.stride}).")

    bneck, bneck_path = parts["bottleneck"], f"{path}.bottleneck.config"
    _reject_unknown(bneck_path, bneck, {"dim", "noise_augment_dim", "noise_regularize", "auto_scale", "freeze"})
    _fixed(bneck, "noise_augment_dim", bneck_path, 0, "noise augmentation is not supported")
    latent_dim = _int(c, "latent_dim", path, default=enc_latent)
    dims = {"latent_dim": latent_dim, "encoder.latent_dim": enc_latent, "decoder.latent_dim": dec_latent,
            "bottleneck.dim": _int(bneck, "dim", bneck_path, default=32)}
    if len(set(dims.values())) != 1:
        raise ValueError(f"Stable Audio 3 config: {path}: the latent dims disagree (got {dims}).")
    ratio = c.get("downsampling_ratio")
    if ratio is not None and ratio != patch_size * enc.stride:
        raise fail(f"{path}.downsampling_ratio", f"null or patch_size x strides[0] ({patch_size * enc.stride})",
                   ratio, WHERE)
    return SAMEConfig(
        encoder=enc, decoder=dec, latent_dim=latent_dim, io_channels=io_channels, patch_size=patch_size,
        noise_regularize=_bool(bneck, "noise_regularize", bneck_path, False),
        auto_scale=_bool(bneck, "auto_scale", bneck_path, False),
        soft_clip=_bool(c["decoder"], "soft_clip", f"{path}.decoder", False), chunked=chunked,
    )
