"""Train a LoRA on a ``StableAudioModel`` with the official recipe; write the official file.

Use::

    from sa3 import StableAudioModel
    from sa3.training import LoRATrainingOptions, train_lora

    model = StableAudioModel.from_pretrained("small-music-base")
    result = train_lora(model, "my_loops/", "my_loops.safetensors",
                        LoRATrainingOptions(steps=500, rank=16, clip_seconds=30, seed=42))
    model.load_lora(result.path)            # or the official load_lora / load_and_apply_loras

The dataset folder holds ``clip.wav`` + ``clip.txt`` (prompt) pairs (``sa3.training_data``). The
model itself is not changed: training runs on a private, frozen, eval-mode copy of the DiT and
the ``seconds_total`` conditioner (optionally bf16/fp16), with the LoRA parameters in fp32 and
AdamW (betas 0.9/0.95, weight decay 0.01). The per-step maths is ``sa3.training_recipe``.

The file (``save_lora_file``) is what the official ``save_lora_safetensors`` writes: fp16
tensors ``model.<DiT layer>.parametrizations.weight.0.<param>`` and
``conditioners.seconds_total.embedder.embedding.1.parametrizations.weight.0.<param>``, metadata
``lora_config`` = JSON ``{rank, alpha, adapter_type, dropout, include, exclude}``. Beside it, a
``<name>.sa3state`` file (safetensors) keeps the fp32 parameters, the optimizer state and the
step count, so ``resume_from`` continues exactly where training stopped. Without that file
(e.g. an official LoRA) resuming starts from the file's weights with a fresh optimizer, as
the official ``--lora_checkpoint`` does.

Deterministic: every random draw comes from ``torch.Generator`` objects derived from ``seed``
(LoRA init, clip polarity, SAME noise, and one stream per step), never from the global RNG, so on
a CPU the same inputs give the same file bit for bit.

Legend: B batch, C latent channels, L latent frames, O fan_out, I fan_in, r rank.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import training_recipe as recipe
from .checks import MAX_PROMPT_CHARS, MAX_SEED, shown
from .checks import MAX_STEPS as MAX_SAMPLING_STEPS
from .config import SAMPLE_RATE, SAMPLES_PER_LATENT
from .dit import DiTConditioning
from .lora import (
    ADAPTER_KINDS,
    OFFICIAL_PREFIX,
    SVD_NAME_PREFIX,
    LayerAdapter,
    adapt_weight,
    adapt_weight_cast_bases,
    svd_bases,
)
from .lora_files import (
    ADAPTER_PARAMS,
    SLOT,
    LoRALoadError,
    check_rule,
    read_lora_file,
    read_svd_bases,
    selected,
)
from .rng import randn
from .sampling import make_shift
from .stages import local_conditioning
from .training_data import (
    EncodedDataset,
    TrainingClip,
    crop_latents,
    encode_clips_cached,
    encode_dataset,
    encode_folder_cached,
    find_clips,
    load_training_folder,
    new_beside,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ADAPTER_TYPES",
    "BASE_PRECISIONS",
    "LoRATrainingOptions",
    "TrainingError",
    "TrainingResult",
    "check_options",
    "check_output",
    "encoded_folder",
    "log_path",
    "read_training_bases",
    "save_lora_file",
    "state_path",
    "train_lora",
    "validation_loss",
]

ADAPTER_TYPES = tuple(ADAPTER_KINDS)  # lora, dora-rows, dora-cols, bora and the -xs variants
BASE_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# bf16 is scripts/train_lora.py's bf16 run: the model is cast to bf16 when loaded, before the adapters
# are added (so DoRA magnitudes and -XS SVD bases come from the bf16 weights), and Lightning's
# precision="bf16-mixed" runs each step's forward under torch.autocast(bfloat16). (The older bf16 mode,
# adapters from the fp32 weights and no autocast, was not measurably faster on a CPU: bench/RESULTS.md.)
OFFICIAL_BF16 = "bf16"
OFFICIAL_STEPS = 10_000  # train_lora.py --steps default
OFFICIAL_CLIP_SECONDS = 380.0  # train_lora.py --duration default (the medium model's maximum)
MAX_STEPS = 1_000_000
MAX_BATCH = 64
MAX_RANK = 1024
MAX_ALPHA = 4096.0  # the node's widget maximum; scaling = alpha / rank
MAX_DEMO_STEPS = MAX_SAMPLING_STEPS  # demo clips are sampled as generate() samples
DEMO_CFG = 4.0  # demo clips' CFG scale (the middle of the official demo callback's 2 / 4 / 7)
DEMO_STEPS_DEFAULT = 8  # demo clips' sampler steps (the node's; LoRATrainingOptions.demo_steps)
STATE_SUFFIX = ".sa3state"
KAIMING_A = math.sqrt(5)  # official lora_A init: kaiming_uniform_(a=sqrt(5))


class TrainingError(ValueError):
    """Bad training options or inputs; raised before any work, nothing is written."""


def _error(what: str, fix: str) -> TrainingError:
    return TrainingError(f"Stable Audio 3 training: {what}. {fix}.")


@dataclass(frozen=True)
class LoRATrainingOptions:
    """Everything a training run can choose (defaults: the official ``train_lora.py``'s, except
    steps, clip length and base precision, which suit a CPU better)."""

    adapter_type: str = "dora-rows"  # one of ADAPTER_TYPES (official default)
    rank: int = 16  # r
    alpha: float | None = None  # scaling = alpha / rank; None = rank
    dropout: float = 0.0  # dropout on the LoRA input features (lora_A columns), in [0, 1)
    include: tuple[str, ...] | None = None  # layer-name substrings, [a-b] ranges; None = every layer
    exclude: tuple[str, ...] | None = None  # layer-name substrings skipped
    steps: int = 500  # optimizer steps in total (official default 10000)
    learning_rate: float = 1e-4  # AdamW lr
    batch_size: int = 1  # clips per step (at most the number of clips)
    clip_seconds: float = 30.0  # crop length (official default 380, the full song)
    seed: int = 42
    base_precision: str = "fp32"  # frozen base copy: fp32 | bf16 (the official default, as it trains) | fp16
    checkpoint_every: int = 0  # also write <name>-step<N>.safetensors every N steps; 0 = never
    validate_every: int = 0  # official validation loss (into the CSV log) every N steps; 0 = never
    demo_every: int = 0  # a demo clip <name>_demo_<step>.flac beside the LoRA every N steps; 0 = never
    demo_prompt: str = ""  # its prompt (required when demo_every > 0)
    demo_seconds: float = 10.0  # its length
    demo_seed: int = 0  # its noise seed
    demo_steps: int = DEMO_STEPS_DEFAULT  # its sampler steps (the model's own sampler)

    @classmethod
    def official(cls, max_duration: float = 380.0, **changes) -> LoRATrainingOptions:
        """The official ``train_lora.py`` defaults: 10,000 steps, clips up to 380 s (capped at
        ``max_duration``, the model's maximum: 120 s on small), bf16 as it trains;
        the rest are already the official ones. ``changes`` override any of them."""
        official = {"steps": OFFICIAL_STEPS, "clip_seconds": min(OFFICIAL_CLIP_SECONDS, float(max_duration)),
                    "base_precision": OFFICIAL_BF16}
        return cls(**{**official, **changes})

    def lora_config(self) -> dict:
        """The file's ``lora_config`` metadata, in the official key order."""
        return {"rank": self.rank, "alpha": self.rank if self.alpha is None else self.alpha,
                "adapter_type": self.adapter_type, "dropout": self.dropout,
                "include": None if self.include is None else list(self.include),
                "exclude": None if self.exclude is None else list(self.exclude)}

    def crop_latents(self) -> int:
        """Latent frames per clip: the clip length aligned down to whole latents (official)."""
        return int(self.clip_seconds * SAMPLE_RATE) // SAMPLES_PER_LATENT

    def prompt_precision(self) -> str:
        """How the prompt states are encoded for this run (``training_data.PROMPT_PRECISIONS``): the
        official bf16 run's way ("bf16": T5Gemma under bf16 autocast, padding rounded) in bf16,
        "fp32" otherwise. An EncodedDataset made another way is refused by ``train_lora``."""
        return "bf16" if self.base_precision == OFFICIAL_BF16 else "fp32"


@dataclass
class TrainingResult:
    path: Path | None  # the LoRA file written; None when stopped before the first step
    losses: list[float]  # loss of every step run in this call
    steps_done: int  # total optimizer steps the file holds (including resumed ones)
    stopped: bool  # True when should_stop ended training early
    checkpoints: list[Path] = field(default_factory=list)


# --- checks ------------------------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _rules(name: str, value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _error(f"{name} must be a list of non-empty layer-name parts (got {shown(value)})",
                     "Use e.g. ['transformer.layers.[0-3]', 'cross_attn'], or None")
    try:
        return tuple(check_rule(name, v.strip(), "training") for v in value)
    except ValueError as e:  # the rule's own message, as this module's error type
        raise TrainingError(str(e)) from e


def check_options(options: LoRATrainingOptions, max_duration: float) -> LoRATrainingOptions:
    """Validate every option (model-dependent limits from ``max_duration``); returns the options
    with include/exclude normalised to tuples. Raises ``TrainingError`` naming the option."""
    if not isinstance(options, LoRATrainingOptions):
        raise _error(f"options must be LoRATrainingOptions (got {type(options).__name__})",
                     "Build them with sa3.training.LoRATrainingOptions(...)")
    o = options
    if o.adapter_type not in ADAPTER_TYPES:
        raise _error(f"adapter_type {o.adapter_type!r} is unknown (expected one of {list(ADAPTER_TYPES)})",
                     "Pick one of the listed types (dora-rows is the official default)")
    if not _is_int(o.rank) or not 1 <= o.rank <= MAX_RANK:
        raise _error(f"rank must be an integer in 1..{MAX_RANK} (got {o.rank!r})", "Use e.g. 16")
    if o.alpha is not None and (not _is_number(o.alpha) or not 0 < o.alpha <= MAX_ALPHA):
        raise _error(f"alpha must be a number above 0 and at most {MAX_ALPHA:g}, or None (got {shown(o.alpha)})",
                     "Use the rank, e.g. 16")
    if not _is_number(o.dropout) or not 0 <= o.dropout < 1:
        raise _error(f"dropout must be in [0, 1) (got {o.dropout!r})", "Use 0 (official) or e.g. 0.1")
    if not _is_int(o.steps) or not 1 <= o.steps <= MAX_STEPS:
        raise _error(f"steps must be an integer in 1..{MAX_STEPS} (got {o.steps!r})", "Use e.g. 500")
    if not _is_number(o.learning_rate) or not 0 < o.learning_rate <= 1:
        raise _error(f"learning_rate must be in (0, 1] (got {o.learning_rate!r})", "Use 1e-4 (official)")
    if not _is_int(o.batch_size) or not 1 <= o.batch_size <= MAX_BATCH:
        raise _error(f"batch_size must be an integer in 1..{MAX_BATCH} (got {o.batch_size!r})", "Use 1 on a CPU")
    shortest = SAMPLES_PER_LATENT / SAMPLE_RATE  # one latent frame
    if not _is_number(o.clip_seconds) or not shortest <= o.clip_seconds <= max_duration:
        raise _error(f"clip_seconds must be in [{shortest:.3f}, {max_duration:.1f}] s for this model "
                     f"(got {o.clip_seconds!r})", "Use e.g. 30")
    if not _is_int(o.seed) or not 0 <= o.seed <= MAX_SEED:
        raise _error(f"seed must be an integer in [0, {MAX_SEED}] (got {o.seed!r})", "Use e.g. 42")
    if o.base_precision not in BASE_PRECISIONS:
        raise _error(f"base_precision {o.base_precision!r} is unknown (expected one of {list(BASE_PRECISIONS)})",
                     "Use fp32 on a CPU, bf16 on a GPU")
    _check_demo(o, max_duration)
    for name in ("checkpoint_every", "validate_every", "demo_every"):
        if not _is_int(getattr(o, name)) or not 0 <= getattr(o, name) <= MAX_STEPS:
            raise _error(f"{name} must be an integer from 0 to {MAX_STEPS} (got {shown(getattr(o, name))})",
                         "Use 0 for none")
    include, exclude = _rules("include", o.include), _rules("exclude", o.exclude)
    return LoRATrainingOptions(**{**asdict(o), "include": include, "exclude": exclude})


def _check_demo(o: LoRATrainingOptions, max_duration: float) -> None:
    if not o.demo_every:
        return
    if not isinstance(o.demo_prompt, str) or not o.demo_prompt.strip() or len(o.demo_prompt) > MAX_PROMPT_CHARS:
        got = f"{len(o.demo_prompt):,} characters" if isinstance(o.demo_prompt, str) and o.demo_prompt.strip() \
            else shown(o.demo_prompt)
        raise _error(f"demo_prompt must be non-empty text of at most {MAX_PROMPT_CHARS:,} characters when demo_every "
                     f"is set (got {got})", "Write the prompt of the demo clips, or set demo_every to 0")
    if not _is_number(o.demo_seconds) or not 0 < o.demo_seconds <= max_duration:
        raise _error(f"demo_seconds must be in (0, {max_duration:.1f}] s for this model (got {o.demo_seconds!r})",
                     "Use e.g. 10")
    if not _is_int(o.demo_seed) or not 0 <= o.demo_seed <= MAX_SEED:
        raise _error(f"demo_seed must be an integer in [0, {MAX_SEED}] (got {o.demo_seed!r})", "Use e.g. 0")
    if not _is_int(o.demo_steps) or not 1 <= o.demo_steps <= MAX_DEMO_STEPS:
        raise _error(f"demo_steps must be an integer in 1..{MAX_DEMO_STEPS} (got {o.demo_steps!r})", "Use e.g. 8")


def check_output(path: Path) -> None:
    """The LoRA file to write: a .safetensors name in an existing, writable folder."""
    if path.suffix.lower() != ".safetensors":
        raise _error(f"output {str(path)!r} must end in .safetensors", "Name the file <name>.safetensors")
    if not path.parent.is_dir():
        raise _error(f"the folder of output {str(path)!r} does not exist", "Create it or choose another path")
    if not os.access(path.parent, os.W_OK):
        raise _error(f"the folder of output {str(path)!r} is not writable", "Choose a writable folder")
    if path.is_dir():
        raise _error(f"output {str(path)!r} is a folder", "Give a file name")


# --- the LoRA parameters ------------------------------------------------------------------------


def _targets(dit: nn.Module, conditioner: nn.Module, options: LoRATrainingOptions) -> list[tuple[str, str, nn.Module]]:
    """(part, our path, module) of every layer the LoRA adapts, in the official order (DiT
    modules, then the conditioner's), selected by include/exclude on the official names."""
    out = []
    for part, root in (("dit", dit), ("conditioner", conditioner)):
        for path, module in root.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv1d)) and \
                    selected(OFFICIAL_PREFIX[part] + path, options.include, options.exclude):
                out.append((part, path, module))
    return out


def file_key(part: str, path: str) -> str:
    """The file's layer prefix (spec 7.2): ``model.<DiT path>`` or the conditioner path."""
    return OFFICIAL_PREFIX[part] + path


Bases = dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]  # (part, path) -> U (O, r), V (I, r)


def read_training_bases(path: str | Path, targets, rank: int) -> Bases:
    """-XS bases for the adapted layers from ``svd_bases_path``: the official ``torch.save`` dict
    (weight name -> {"U", "V"}, read with ``weights_only``) or a ``.safetensors`` with
    ``<weight name>.U`` / ``.V`` keys. Names as the official trainer looks them up
    (``model.<path>.weight``, ``conditioners.<...>.weight``) or as the loader does
    (``model.model.<path>.weight``, ``conditioner.<...>.weight``, the fixtures'). Layers the file
    lacks get their own SVD, as officially (logged); a file matching no layer, or bases of the
    wrong shape, are refused."""
    try:
        raw = read_svd_bases(path)
    except LoRALoadError as e:
        raise _error(f"svd_bases_path {str(path)!r} cannot be used ({e})",
                     "Give the svd_bases file made for this model, or none to compute the bases") from e
    out: Bases = {}
    for part, p, module in targets:
        names = [prefix[part] + p + ".weight" for prefix in (SVD_NAME_PREFIX, OFFICIAL_PREFIX)]
        name = next((n for n in names if n in raw), None)
        if name is None:
            continue
        u, v = raw[name]
        o, i = module.weight.shape[0], module.weight[0].numel()
        if u.dim() != 2 or v.dim() != 2 or u.shape[0] != o or v.shape[0] != i or min(u.shape[1], v.shape[1]) < rank:
            raise _error(f"svd_bases_path {str(path)!r} holds bases of shapes {tuple(u.shape)} / {tuple(v.shape)} "
                         f"for {name!r} (expected ({o}, >= {rank}) / ({i}, >= {rank}))",
                         "Give the svd_bases file made for this model, or lower the rank")
        out[(part, p)] = (u[:, :rank].contiguous(), v[:, :rank].contiguous())
    if not out:
        raise _error(f"svd_bases_path {str(path)!r} holds no bases for this model's layers (e.g. expected "
                     f"{SVD_NAME_PREFIX[targets[0][0]] + targets[0][1] + '.weight'!r})",
                     "Give the svd_bases file made for this model, or none to compute the bases")
    if len(out) < len(targets):
        logger.warning("Stable Audio 3 training: SVD bases for %d of %d layers from %s; the rest computed",
                       len(out), len(targets), path)
    return out


class _TrainableLoRA(nn.Module):
    """fp32 LoRA parameters for every target layer, initialised as the official
    ``LoRAParametrization``: lora_A kaiming-uniform (a = sqrt 5), lora_B and M_xs zero,
    magnitudes the base weight's norms, -XS bases the base weight's top singular vectors (or
    ``bases``, from ``svd_bases_path``)."""

    def __init__(self, targets, options: LoRATrainingOptions, generator: torch.Generator, device,
                 bases: Bases | None = None, init_dtype: torch.dtype | None = None):
        super().__init__()
        self.adapter_type = options.adapter_type
        self.scaling = options.lora_config()["alpha"] / options.rank
        self.dropout = options.dropout
        self.keys: list[tuple[str, str]] = []
        self.params = nn.ParameterDict()
        self.bases: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        delta_kind, norm = ADAPTER_KINDS[self.adapter_type]
        r = options.rank
        for part, path, module in targets:
            w = module.weight.detach().float().reshape(module.weight.shape[0], -1)  # (O, I) fp32
            if init_dtype is not None:  # bf16: from the weights as cast (norms taken in that dtype)
                w = w.to(init_dtype)
            o, i = w.shape
            key = (part, path)
            self.keys.append(key)
            p = {}
            if delta_kind == "ab":
                a = torch.zeros(r, i, device=generator.device)  # drawn where the generator is (sa3.rng)
                nn.init.kaiming_uniform_(a, a=KAIMING_A, generator=generator)
                p["lora_A"], p["lora_B"] = a.to(device), torch.zeros(o, r, device=device)
            else:
                p["M_xs"] = torch.zeros(r, r, device=device)
                # the loader computes the same bases from the same weight, or reads the same file
                u, v = (bases or {}).get(key) or svd_bases(w.float(), r)
                # bf16: the official cast of the model after add_lora rounds the bases (buffers) to bf16
                # too, and its -XS maths then runs in bf16 (_adapted); clones: not inference tensors (ComfyUI)
                base_dtype = torch.float32 if init_dtype is None else init_dtype
                self.bases[key] = (u.to(device, base_dtype).clone(), v.to(device, base_dtype).clone())
            if norm in ("rows", "cols"):
                p["magnitude"] = w.norm(dim=1 if norm == "rows" else 0).float().to(device)
            elif norm == "both":
                p["magnitude_r"] = w.norm(dim=1).float().to(device)
                p["magnitude_c"] = w.norm(dim=0).float().to(device)
            for name in ADAPTER_PARAMS[self.adapter_type]:
                self.params[self._name(key, name)] = nn.Parameter(p[name])

    @staticmethod
    def _name(key: tuple[str, str], param: str) -> str:
        return (file_key(*key) + SLOT + param).replace(".", "/")  # ParameterDict keys may not hold dots

    def get(self, key, param) -> torch.Parameter:
        return self.params[self._name(key, param)]

    def layer(self, key, generator: torch.Generator | None) -> LayerAdapter:
        """This layer's adapter; with dropout, lora_A's columns are dropped as the official
        ``A * Dropout(ones(1, I))`` does (mask drawn from ``generator``)."""
        names = ADAPTER_PARAMS[self.adapter_type]
        t = {n: self.get(key, n) for n in names}
        a = t.get("lora_A")
        if a is not None and self.dropout > 0 and generator is not None:
            keep = (torch.rand(1, a.shape[1], generator=generator) >= self.dropout).to(a.device)
            a = a * keep / (1 - self.dropout)  # inverted dropout, as nn.Dropout in training mode
        u, v = self.bases.get(key, (None, None))
        return LayerAdapter(A=a, B=t.get("lora_B"), M=t.get("M_xs"), U=u, V=v, magnitude=t.get("magnitude"),
                            magnitude_r=t.get("magnitude_r"), magnitude_c=t.get("magnitude_c"))

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """Official file keys -> fp32 tensors (detached, CPU)."""
        return {file_key(*key) + SLOT + n: self.get(key, n).detach().float().cpu()
                for key in self.keys for n in ADAPTER_PARAMS[self.adapter_type]}

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key in self.keys:
                for n in ADAPTER_PARAMS[self.adapter_type]:
                    name, target = file_key(*key) + SLOT + n, self.get(key, n)
                    if tuple(tensors[name].shape) != tuple(target.shape):
                        raise _error(f"resume_from tensor {name!r} must have shape {tuple(target.shape)} (got "
                                     f"{tuple(tensors[name].shape)})", "Resume a LoRA trained for this model")
                    target.copy_(tensors[name])


# --- files --------------------------------------------------------------------------------------


def state_path(path: str | Path) -> Path:
    """The exact-resume state file beside a LoRA file: ``<name>.sa3state``."""
    path = Path(path)
    return path.with_suffix(STATE_SUFFIX)


LOG_SUFFIX = ".csv"
LOG_HEADER = "step,loss,validation_loss\n"


def log_path(path: str | Path) -> Path:
    """The training log beside a LoRA file: ``<name>.csv`` (step, loss, validation_loss)."""
    return Path(path).with_suffix(LOG_SUFFIX)


class _CsvLog:
    """``step,loss,validation_loss`` rows appended as training goes, one write and a flush per
    row (a reader or a crash sees whole rows); the usual file mode (0666 less the umask).
    ``keep_until``: an exact resume into the same file continues its log, keeping the rows up to
    that step (later ones were never saved); None starts a new log in place of any old one."""

    def __init__(self, path: Path, keep_until: int | None):
        self.path, self.keep_until, self.file = path, keep_until, None

    def _open(self) -> None:
        """At the first row, so a run stopped before its first step leaves an old log as it is."""
        kept = _log_rows(self.path, self.keep_until) if self.keep_until is not None else []
        self.file = open(self.path, "w", encoding="utf-8", newline="")
        self._write(LOG_HEADER + "".join(kept))

    def _write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()

    def row(self, step: int, loss: float, validation: float | None) -> None:
        if self.file is None:
            self._open()
        self._write(f"{step},{loss:.8g},{'' if validation is None else f'{validation:.8g}'}\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _log_rows(path: Path, until: int) -> list[str]:
    """The rows of an existing log up to step ``until`` (none when it is missing or unreadable)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[1:]
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in lines if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= until
            and line.endswith("\n")]


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = new_beside(path)
    try:
        mode = stat.S_IMODE(tmp.stat().st_mode)  # the usual mode, so the file is readable like ComfyUI's others
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, mode)  # safetensors may write through its own owner-only (0600) file (0.8 does)
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_lora_file(tensors: dict[str, torch.Tensor], lora_config: dict, path: str | Path) -> Path:
    """Write an official LoRA ``.safetensors``: every float tensor halved to fp16 (as the official
    ``save_lora_safetensors``), ``lora_config`` as JSON metadata."""
    path = Path(path)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    _atomic_save(half, {"lora_config": json.dumps(lora_config)}, path)
    return path


def _save(lora: _TrainableLoRA, optimizer: torch.optim.Optimizer, options: LoRATrainingOptions, step: int,
          fingerprint: str, path: Path) -> None:
    """The LoRA file and its exact-resume state (fp32 parameters, AdamW moments, step)."""
    tensors = lora.file_tensors()
    save_lora_file(tensors, options.lora_config(), path)
    state = {f"param/{k}": v for k, v in tensors.items()}
    names = {id(p): k for k, p in zip(tensors, (lora.get(key, n) for key in lora.keys
                                                for n in ADAPTER_PARAMS[lora.adapter_type]), strict=False)}
    adam_steps = set()
    for p, s in optimizer.state.items():
        state[f"exp_avg/{names[id(p)]}"] = s["exp_avg"].detach().cpu().contiguous()
        state[f"exp_avg_sq/{names[id(p)]}"] = s["exp_avg_sq"].detach().cpu().contiguous()
        adam_steps.add(float(s["step"]))
    meta = {"step": step, "adam_step": max(adam_steps, default=0.0), "seed": options.seed,
            "lora_config": options.lora_config(), "dataset": fingerprint}
    _atomic_save(state, {"sa3_training": json.dumps(meta)}, state_path(path))


def _read_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    sp = state_path(path)
    if not sp.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(sp), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["sa3_training"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a broken or foreign file: say so rather than resume wrongly
        raise _error(f"the resume state {str(sp)!r} cannot be read ({type(e).__name__}: {e})",
                     "Delete it to resume from the LoRA weights only") from e
    return meta, tensors


def _check_resume(path: Path, options: LoRATrainingOptions) -> None:
    """The resume file must be a LoRA of the same shape of training (type, rank, alpha, rules)."""
    try:
        f = read_lora_file(path)
    except LoRALoadError as e:  # corrupt, foreign or of another shape: named as resume_from
        raise _error(f"resume_from {str(path)!r} cannot be used ({str(e).removeprefix('Stable Audio 3 LoRA: ')})",
                     "Pick a LoRA trained for this model") from e
    ours = options.lora_config()
    got = {"adapter_type": f.adapter_type, "rank": f.rank, "alpha": f.alpha,
           "include": None if f.include is None else list(f.include),
           "exclude": None if f.exclude is None else list(f.exclude)}
    want = {"adapter_type": ours["adapter_type"], "rank": ours["rank"], "alpha": float(ours["alpha"]),
            "include": ours["include"], "exclude": ours["exclude"]}
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    if diff:
        k, (g, w) = next(iter(diff.items()))
        raise _error(f"resume_from {str(path)!r} was trained with {k} {g!r}, but this run asks for {w!r} "
                     f"(differences: {sorted(diff)})", f"Set {k} to {g!r} to continue that LoRA")


# --- determinism helpers ------------------------------------------------------------------------


def _derived_generator(seed: int, *tags) -> torch.Generator:
    """A CPU generator for one purpose of one run, from the seed and tags (independent streams)."""
    digest = hashlib.blake2b(repr((seed, *tags)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") % (2**63))


ENCODING_VERSION = "official-pre-encode-2"  # bump when the encoded latents change (resume warns then)


def _fingerprint(data: EncodedDataset) -> str:
    """Tells apart the datasets (and encodings) a resume state was trained on."""
    h = hashlib.blake2b(digest_size=16)
    h.update(ENCODING_VERSION.encode())
    if data.prompt_precision != "fp32":  # bf16 prompt states (fp32 keeps the fingerprints made before the choice)
        h.update(f"|prompts {data.prompt_precision}|".encode())
    for c in data.clips:
        h.update(f"{c.name}|{c.seconds_total}|{tuple(c.latents.shape)}|".encode())
        h.update(c.latents.numpy().tobytes()[:4096])  # a sample of the values is enough to tell datasets apart
    return h.hexdigest()


def _batch_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    """Shuffled epochs without replacement, incomplete last batch dropped (the official
    DataLoader(shuffle=True, drop_last=True)); a function of (seed, step) so resuming finds it."""
    per_epoch = n // batch
    epoch, pos = divmod(step, per_epoch)
    order = torch.randperm(n, generator=_derived_generator(seed, "epoch", epoch))
    return order[pos * batch:(pos + 1) * batch].tolist()


# --- the frozen base -----------------------------------------------------------------------------


@dataclass
class _Frozen:
    """A module run through ``torch.func.functional_call`` with ``tensors`` (every parameter and
    buffer, frozen) in place of its own, so training never changes it: detached views of the
    model's own tensors when possible (no copy), else a private eval-mode copy's."""

    module: nn.Module
    tensors: dict[str, torch.Tensor]

    def __call__(self, weights: dict[str, torch.Tensor], *args):
        from torch.func import functional_call

        return functional_call(self.module, {**self.tensors, **weights}, args)


def _frozen(module: nn.Module, dtype: torch.dtype, device: torch.device) -> _Frozen:
    """Views when ``module`` already has ``dtype``, sits on ``device`` and holds ordinary tensors;
    else a copy: when the precision or device differs (ComfyUI may keep the conditioner offloaded)
    or its tensors were made under inference mode (ComfyUI), which autograd refuses."""
    state = list(module.parameters()) + list(module.buffers())
    if all((t.dtype == dtype or not t.is_floating_point()) and t.device == device and not t.is_inference()
           for t in state):
        named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        return _Frozen(module, {n: t.detach() for n, t in named.items()})
    with torch.inference_mode(False):
        twin = copy.deepcopy(module)
        twin.to(device, dtype)  # the frozen base precision; LoRA parameters stay fp32
    twin.eval().requires_grad_(False)
    return _Frozen(twin, dict([*twin.named_parameters(), *twin.named_buffers()]))


# --- training -----------------------------------------------------------------------------------


ADAPTER_FIELDS = ("A", "B", "M", "U", "V", "magnitude", "magnitude_r", "magnitude_c")  # LayerAdapter's


def _adapted(adapter_type: str, scaling: float, w: torch.Tensor, *tensors) -> torch.Tensor:
    """w (O, ...) in the base precision -> adapted weight, fp32 (-XS with bf16 bases: the official
    bf16 maths, ``adapt_weight_cast_bases``); ``tensors`` in ADAPTER_FIELDS order."""
    layer = LayerAdapter(**dict(zip(ADAPTER_FIELDS, tensors, strict=True)))
    if layer.U is not None and layer.U.dtype != torch.float32:  # official bf16 run: bases cast with the model
        return adapt_weight_cast_bases(w.reshape(w.shape[0], -1), layer, adapter_type, scaling, 1.0).reshape(w.shape)
    return adapt_weight(w.float().reshape(w.shape[0], -1), layer, adapter_type, scaling, 1.0).reshape(w.shape)


def _effective_weights(lora: _TrainableLoRA, base: _Frozen, prefix: str, part: str,
                       generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """``<path>.weight`` -> adapted weight (differentiable in the LoRA parameters) for one part.
    The adapter maths runs in fp32 (-XS in the official bf16 run: in bf16, as officially) under
    activation checkpointing: only the adapted weight is kept for backward (recomputed from the
    small LoRA tensors then), not its O x I intermediates."""
    from torch.utils.checkpoint import checkpoint

    out = {}
    for key in lora.keys:
        if key[0] != part:
            continue
        name = key[1][len(prefix):] + ".weight"
        w = base.tensors[name]  # frozen, in the base precision
        layer = lora.layer(key, generator)  # dropout masks drawn here, outside the recomputed part
        tensors = [getattr(layer, f) for f in ADAPTER_FIELDS]
        adapted = checkpoint(_adapted, lora.adapter_type, lora.scaling, w, *tensors, use_reentrant=False)
        out[name] = adapted.to(w.dtype)  # back to the base precision
    return out


SECONDS_PREFIX = "conditioners.seconds_total."  # the conditioner part trained: its seconds_total embedder


def _step_loss(dit: _Frozen, seconds: _Frozen, lora, data: EncodedDataset, indices, options, shift, step_gen,
               device):
    """One official training step's loss (see ``sa3.training_recipe``)."""
    crop = options.crop_latents()
    items = [data.clips[i] for i in indices]
    crops = [crop_latents(c, data.silence, crop, step_gen) for c in items]
    x0 = torch.stack([z for z, _ in crops]).to(device)  # (B, C, L) float32
    padding = torch.stack([m for _, m in crops])  # (B, L) bool, CPU
    b = x0.shape[0]

    t = recipe.sample_timesteps(b, step_gen)
    t = recipe.shift_timesteps(t, shift, recipe.effective_lengths([c.seconds_total for c in items]))
    noise = randn(x0.shape, step_gen, device)  # on step_gen's CPU, then moved (sa3.rng)
    noise = recipe.ot_couple(x0, noise)
    t = t.to(device)
    x_t = x0 * (1 - t[:, None, None]) + noise * t[:, None, None]
    target = noise - x0

    padding = recipe.extend_padding(padding, step_gen)
    keep = recipe.inpaint_masks(padding, step_gen)  # (B, 1, L)
    local = local_conditioning(b, crop, x0.shape[1], x0, keep.to(device), device)

    # conditioning: frozen prompt states + the (adapted) seconds_total embedding, then CFG dropout
    sec = seconds(_effective_weights(lora, seconds, SECONDS_PREFIX, "conditioner", step_gen),
                  [c.seconds_total for c in items])  # (B, 1, E)
    prompt = torch.stack([c.prompt for c in items]).to(device)  # (B, P, E)
    cross = torch.cat([prompt, sec.to(prompt.dtype)], dim=1)  # (B, K, E)
    cross = recipe.cfg_dropout(cross, step_gen)
    cond = DiTConditioning(cross=cross, global_cond=sec[:, 0], local=local, padding_mask=padding.to(device))

    v = dit(_effective_weights(lora, dit, "", "dit", step_gen), x_t, t, cond)  # (B, C, L)
    return recipe.masked_loss(v.float(), target, padding.to(device), keep.to(device))  # fp32 loss


def train_lora(model, dataset: str | Path | Sequence[TrainingClip] | EncodedDataset, output: str | Path,
               options: LoRATrainingOptions = LoRATrainingOptions(), *, resume_from: str | Path | None = None,
               on_step: Callable[[int, int, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               on_stage: Callable[[str], None] | None = None,
               svd_bases_path: str | Path | None = None, cache_dir: str | Path | None = None,
               on_demo: Callable[[int, Path, torch.Tensor], None] | None = None) -> TrainingResult:
    """Train a LoRA on ``model`` (a ``StableAudioModel`` without LoRAs) and write ``output``.

    dataset: a folder of clip + ``.txt`` caption pairs, clips from ``load_training_folder``, or an
    ``EncodedDataset`` from ``training_data.encode_dataset``. output: ``<name>.safetensors``.
    resume_from: a LoRA file to continue (exactly, when its ``.sa3state`` is beside it; then
    ``options.steps`` counts the steps already done). on_step(step, steps, loss) runs after every
    step; should_stop() is polled before every step: True saves what was trained and returns.
    on_stage(part) runs before the model's "text", "autoencoder" and "dit" parts are used.
    svd_bases_path: precomputed -XS bases (see ``read_training_bases``; ignored by other types);
    a resumed run needs the same file as the run it continues. cache_dir: with a folder dataset
    or a clip list, keep its encoding there (``encoded_folder``; clips keyed by their contents)
    so later runs and resumes skip re-encoding. With ``options.demo_every``, every N steps a demo
    clip is generated with the adapters trained so far (``demo_*`` options, the model's own
    sampler, under inference mode) and written as ``<name>_demo_<step>.flac`` beside ``output``;
    on_demo(step, path, audio (2, S)) runs after each.
    Every input is checked before any work; the model is left unchanged.
    """
    cfg = model.config
    options = check_options(options, cfg.max_duration)
    output = Path(output).expanduser()
    check_output(output)
    if model.lora is not None and len(model.lora):
        raise _error(f"the model has {len(model.lora)} LoRA(s) applied (expected none: a LoRA is trained on "
                     "the plain model)", "Unload them (unload_lora) or pass resume_from to continue a LoRA")
    state = None
    if resume_from is not None:
        resume_from = Path(resume_from).expanduser()
        if not resume_from.is_file():
            raise _error(f"resume_from {str(resume_from)!r} does not exist", "Give an existing LoRA file")
        _check_resume(resume_from, options)
        state = _read_state(resume_from)
        if state is not None and state[0]["step"] >= options.steps:
            raise _error(f"resume_from {str(resume_from)!r} already holds {state[0]['step']} steps (got steps "
                         f"{options.steps}, expected more)", "Raise steps to the new total")
    targets = _targets(model.dit, model.conditioner, options)
    if not targets:
        raise _error(f"no layer matches include={options.include} / exclude={options.exclude}",
                     "Loosen the rules (names look like 'model.transformer.layers.0.self_attn.to_qkv')")
    smallest = min(min(m.weight.shape[0], m.weight[0].numel()) for _, _, m in targets)
    if options.rank > smallest:
        raise _error(f"rank {options.rank} exceeds the smallest adapted layer's dimension {smallest}",
                     f"Use rank <= {smallest}, or exclude the small layers")
    bases = None
    if svd_bases_path is not None and options.adapter_type.endswith("-xs"):
        bases = read_training_bases(Path(svd_bases_path).expanduser(), targets, options.rank)
    folder, given, n = _dataset_input(dataset, cache_dir)
    if isinstance(given, EncodedDataset) and given.prompt_precision != options.prompt_precision():
        raise _error(f"the EncodedDataset's prompt states were encoded in {given.prompt_precision} (got "
                     f"{given.prompt_precision!r}, expected {options.prompt_precision()!r} for base_precision "
                     f"{options.base_precision!r})", "Encode the clips again with these options "
                     "(encoded_folder, or training_data.encode_dataset with prompt_precision="
                     f"{options.prompt_precision()!r}), or pass the clips or their folder instead")
    if options.batch_size > n:
        raise _error(f"batch_size {options.batch_size} exceeds the {n} clip(s) of the dataset (incomplete "
                     "batches are dropped, as officially)", f"Use batch_size <= {n} or add clips")

    resume_tensors = None
    if resume_from is not None:
        resume_tensors = _resume_tensors(resume_from, state, targets, options)
    with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes under inference mode
        if folder is not None:
            dataset = encoded_folder(model, folder, options, cache_dir, on_stage)
        elif isinstance(given, EncodedDataset):
            dataset = given
        elif cache_dir is not None:  # clips already read (SA3 Training Dataset): cached by their contents
            dataset = encode_clips_cached(model, given, cache_dir, options.crop_latents(), options.seed,
                                          lambda: _derived_generator(options.seed, "encode"), on_stage,
                                          options.prompt_precision())
        else:
            dataset = encode_dataset(model, given, options.crop_latents(),
                                     _derived_generator(options.seed, "encode"), on_stage, options.prompt_precision())
        dataset = _normal_tensors(dataset)
        if on_stage is not None:
            on_stage("dit")
        device = next(model.dit.parameters()).device  # where the DiT runs (ComfyUI moved it just now)
        demo = _demo_hook(model, options, output, on_stage, on_demo)
        return _run(model, dataset, output, options, targets, bases, device, resume_from, resume_tensors, state,
                    on_step, should_stop, demo)


def _dataset_input(dataset, cache_dir) -> tuple[Path | None, list[TrainingClip] | EncodedDataset | None, int]:
    """(folder to encode through the cache, else None; the clips or EncodedDataset; clip count),
    checked. A cached folder only has its captions checked here: audio is read on a cache miss."""
    if isinstance(dataset, (str, Path)) and cache_dir is not None:
        return Path(dataset).expanduser(), None, len(find_clips(dataset))
    if isinstance(dataset, (str, Path)):
        dataset = load_training_folder(dataset)
    if isinstance(dataset, EncodedDataset):
        return None, dataset, len(dataset.clips)
    clips = list(dataset)
    if not clips or not all(isinstance(c, TrainingClip) for c in clips):
        raise _error("dataset must be a folder, TrainingClip list or EncodedDataset with at least one clip",
                     "Use sa3.training_data.load_training_folder")
    return None, clips, len(clips)


def encoded_folder(model, folder: str | Path, options: LoRATrainingOptions, cache_dir: str | Path,
                   on_stage: Callable[[str], None] | None = None) -> EncodedDataset:
    """The clip folder encoded as ``train_lora`` encodes it (crop length and seed of ``options``),
    read from the cache in ``cache_dir`` when the clips, the model and those options (crop, seed,
    ``prompt_precision`` from base_precision) are the same,
    else encoded and stored there (``python -m sa3 train --pre-encode-only``)."""
    options = check_options(options, model.config.max_duration)
    with torch.inference_mode(False):
        return encode_folder_cached(model, folder, cache_dir, options.crop_latents(), options.seed,
                                    lambda: _derived_generator(options.seed, "encode"), on_stage,
                                    options.prompt_precision())


def _normal_tensors(data: EncodedDataset) -> EncodedDataset:
    """Copies of tensors encoded under inference mode (ComfyUI), which autograd refuses to save."""
    return EncodedDataset(clips=[replace(c, latents=c.latents.clone(), prompt=c.prompt.clone()) for c in data.clips],
                          silence=data.silence.clone(), prompt_precision=data.prompt_precision)


def _resume_tensors(path: Path, state, targets, options: LoRATrainingOptions) -> dict[str, torch.Tensor]:
    """The fp32 parameters to start from: the exact-resume state's, else the file's (fp16)."""
    if state is not None:
        tensors = {k[len("param/"):]: t for k, t in state[1].items() if k.startswith("param/")}
    else:
        tensors = {k: t.float() for k, t in _file_tensors(path).items()}
    wanted = [file_key(part, p) + SLOT + n for part, p, _ in targets for n in ADAPTER_PARAMS[options.adapter_type]]
    missing = [k for k in wanted if k not in tensors]
    if missing:
        raise _error(f"resume_from {str(path)!r} lacks {len(missing)} tensor(s) this model needs (e.g. "
                     f"{missing[0]!r})", "Resume a LoRA trained for this model with the same include/exclude")
    broken = [k for k in wanted if not bool(torch.isfinite(tensors[k]).all())]
    if broken:
        raise _error(f"resume_from {str(path)!r} must hold finite numbers (got NaN or infinity in {len(broken)} "
                     f"tensor(s), e.g. {broken[0]!r})", "Resume an earlier checkpoint of that LoRA")
    return {k: tensors[k] for k in wanted}


def _run(model, data, output, options, targets, bases, device, resume_from, resume_tensors, state, on_step,
         should_stop, demo=None) -> TrainingResult:
    dtype = BASE_PRECISIONS[options.base_precision]
    dit = _frozen(model.dit, dtype, device)  # a copy keeps the attention settings (backend, padding semantics)
    seconds = _frozen(model.conditioner.conditioners["seconds_total"], dtype, device)
    # bf16 initialises from the bf16-cast weights, as the official trainer (which casts the
    # model before adding the adapters); the other precisions from the model's own weights
    lora = _TrainableLoRA(targets, options, _derived_generator(options.seed, "init"), device, bases,
                          init_dtype=torch.bfloat16 if options.base_precision == OFFICIAL_BF16 else None)
    fingerprint = _fingerprint(data)
    start = 0
    if resume_tensors is not None:
        lora.load_file_tensors(resume_tensors)
        start = int(state[0]["step"]) if state is not None else 0
        if state is not None and state[0].get("dataset") != fingerprint:
            logger.warning("Stable Audio 3 training: resuming on other clips than the run that wrote the state "
                           "(the result differs from an uninterrupted run)")
    params = [lora.get(key, n) for key in lora.keys for n in ADAPTER_PARAMS[lora.adapter_type]]
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    if state is not None:
        _restore_optimizer(optimizer, lora, state)
    shift = make_shift(model.config.training_shift) if model.config.training_shift is not None else None

    same_file = resume_from is not None and Path(resume_from).resolve() == output.resolve()
    log = _CsvLog(log_path(output), keep_until=start if state is not None and same_file else None)
    try:
        return _loop(dit, seconds, lora, optimizer, data, output, options, shift, device, start, fingerprint, log,
                     on_step, should_stop, demo)
    finally:
        log.close()


def _loop(dit, seconds, lora, optimizer, data, output, options, shift, device, start, fingerprint, log, on_step,
          should_stop, demo=None) -> TrainingResult:
    losses, checkpoints, stopped, step = [], [], False, start
    while step < options.steps:
        if should_stop is not None and should_stop():
            stopped = True
            break
        step_gen = _derived_generator(options.seed, "step", step)
        indices = _batch_indices(len(data), options.batch_size, step, options.seed)
        with _autocast(options, device):  # the forward only, as Lightning's bf16-mixed
            loss = _step_loss(dit, seconds, lora, data, indices, options, shift, step_gen, device)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"Stable Audio 3 training: the loss became {float(loss.detach())} at step "
                                     f"{step + 1}. Lower learning_rate or use base_precision fp32.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        validation = None
        if options.validate_every and (step % options.validate_every == 0 or step == options.steps):
            with _autocast(options, device):
                validation = _training_validation(dit, seconds, lora, data, options, device)
        log.row(step, losses[-1], validation)
        if demo is not None and step % options.demo_every == 0:
            demo(step, lora)
        if on_step is not None:
            on_step(step, options.steps, losses[-1])
        if options.checkpoint_every and step % options.checkpoint_every == 0 and step < options.steps:
            ckpt = output.with_name(f"{output.stem}-step{step:06d}.safetensors")
            _save(lora, optimizer, options, step, fingerprint, ckpt)
            checkpoints.append(ckpt)
    if not losses:  # stopped before the first step: nothing new to save (an existing file stays as it is)
        logger.info("Stable Audio 3 training: stopped before the first step; %s not written", output)
        return TrainingResult(path=None, losses=[], steps_done=step, stopped=stopped)
    _save(lora, optimizer, options, step, fingerprint, output)
    logger.info("Stable Audio 3 training: %d step(s) -> %s%s", step, output, " (stopped early)" if stopped else "")
    return TrainingResult(path=output, losses=losses, steps_done=step, stopped=stopped, checkpoints=checkpoints)


def _autocast(options: LoRATrainingOptions, device) -> torch.autocast:
    """bf16: torch.autocast(bfloat16) on the training device (Lightning's bf16-mixed);
    a disabled autocast (no change) otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                          enabled=options.base_precision == OFFICIAL_BF16)


def demo_path(path: str | Path, step: int) -> Path:
    """A demo clip beside a LoRA file: ``<name>_demo_<step>.flac``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_demo_{step}.flac")


def _demo_hook(model, options: LoRATrainingOptions, output: Path, on_stage, on_demo):
    """``demo(step, lora)`` for the training loop, or None when demo_every is 0."""
    if not options.demo_every:
        return None
    return lambda step, lora: _demo(model, lora, options, step, output, on_stage, on_demo)


def _demo(model, lora: _TrainableLoRA, options: LoRATrainingOptions, step: int, output: Path,
          on_stage: Callable[[str], None] | None, on_demo) -> Path:
    """Generate the demo clip with the adapters as trained so far: they are written as a LoRA file
    (fp16, as the saved file will be; a private temporary beside the output), loaded into the model,
    the model's own sampler runs under inference mode, and the model is left without LoRA again."""
    from .audio import write_audio

    if on_stage is not None:  # the sampler uses every part (ComfyUI moves each to its device), before the
        for part in ("text", "autoencoder", "dit"):  # LoRA is loaded: ComfyUI re-applies its own chain there
            on_stage(part)
    tmp = output.with_name(f".{output.stem}.demo-{secrets.token_hex(8)}.safetensors")  # the loader reads by suffix
    try:
        save_lora_file(lora.file_tensors(), options.lora_config(), tmp)
        model.load_lora(tmp)  # the model had no LoRA (checked): unload restores it bit for bit
        try:
            with torch.inference_mode():
                audio = model.generate(options.demo_prompt, duration=options.demo_seconds, steps=options.demo_steps,
                                       cfg_scale=DEMO_CFG, seed=options.demo_seed)[0].float().cpu()
        finally:
            model.unload_lora()
    finally:
        tmp.unlink(missing_ok=True)
    path = demo_path(output, step)
    write_audio(path, audio, SAMPLE_RATE)  # a new file the ordinary way: the usual mode (0666 less the umask)
    logger.info("Stable Audio 3 training: demo at step %d -> %s", step, path)
    if on_stage is not None:
        on_stage("dit")  # back to training
    if on_demo is not None:
        on_demo(step, path, audio)
    return path


VALIDATION_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the official validation_step's


@torch.no_grad()
def validation_loss(model, data: EncodedDataset, clip_seconds: float, seed: int = 0) -> float:
    """The official validation loss of ``model`` as it is (with any LoRA it has loaded): every clip
    cropped from the start, fixed timesteps 0.1..0.9, noise from ``seed``, no inpainting context,
    no silence extension, no CFG dropout. Lower is better; comparable across runs with the same
    data, clip length and seed."""
    device = next(model.dit.parameters()).device
    return _validation(model.dit, model.conditioner.seconds, data, clip_seconds, seed, device)


def _validation(dit: Callable, seconds: Callable, data: EncodedDataset, clip_seconds: float, seed: int,
                device) -> float:
    """``validation_loss`` with the DiT ``dit(x, t, cond)`` and ``seconds(list) -> (B, 1, E)``
    given as callables (the model's own, or the frozen base with the LoRA being trained)."""
    crop = LoRATrainingOptions(clip_seconds=clip_seconds).crop_latents()
    generator = _derived_generator(seed, "validation")
    total, count = 0.0, 0
    for clip in data.clips:
        z, padding = crop_latents(clip, data.silence, crop, generator=None)
        x0, padding = z[None].to(device), padding[None].to(device)
        sec = seconds([clip.seconds_total])  # (1, 1, E)
        cross = torch.cat([clip.prompt[None].to(device), sec.to(torch.float32)], dim=1)
        local = local_conditioning(1, crop, x0.shape[1], None, None, device)
        cond = DiTConditioning(cross=cross, global_cond=sec[:, 0], local=local, padding_mask=padding)
        keep = torch.zeros(1, 1, crop, device=device)
        for value in VALIDATION_TIMESTEPS:
            t = torch.full((1,), value, device=device)
            noise = randn(x0.shape, generator, device)
            v = dit(x0 * (1 - value) + noise * value, t, cond)
            total += float(recipe.masked_loss(v.float(), noise - x0, padding, keep))
            count += 1
    return total / count


@torch.no_grad()
def _training_validation(dit: _Frozen, seconds: _Frozen, lora: _TrainableLoRA, data: EncodedDataset,
                         options: LoRATrainingOptions, device) -> float:
    """The validation loss of the base with the LoRA as trained so far (no dropout)."""
    dit_weights = _effective_weights(lora, dit, "", "dit", None)
    sec_weights = _effective_weights(lora, seconds, SECONDS_PREFIX, "conditioner", None)
    return _validation(lambda x, t, cond: dit(dit_weights, x, t, cond), lambda s: seconds(sec_weights, s),
                       data, options.clip_seconds, options.seed, device)


def _file_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return {k: (v.squeeze() if k.endswith(".magnitude") and v.dim() == 2 else v) for k, v in tensors.items()}


def _restore_optimizer(optimizer: torch.optim.Optimizer, lora: _TrainableLoRA, state) -> None:
    meta, tensors = state
    keys = [file_key(*key) + SLOT + n for key in lora.keys for n in ADAPTER_PARAMS[lora.adapter_type]]
    sd = optimizer.state_dict()
    for i, k in enumerate(keys):
        if f"exp_avg/{k}" in tensors:
            sd["state"][i] = {"step": torch.tensor(meta["adam_step"]),  # clones: read under inference mode
                              "exp_avg": tensors[f"exp_avg/{k}"].clone(),
                              "exp_avg_sq": tensors[f"exp_avg_sq/{k}"].clone()}
    optimizer.load_state_dict(sd)
