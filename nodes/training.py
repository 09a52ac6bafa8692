"""LoRA training in the graph: a folder of captioned clips -> a LoRA file in models/loras, the
model with it applied (as SA3 LoRA Loader applies it) and a picture of the loss curve.

The work is ``sa3.training.train_lora`` (the official recipe); these nodes parse widgets, move
the model's parts with ComfyUI's model management, report progress per step, and stop cleanly
on Cancel (what was trained is saved, then the run ends as cancelled).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import re
from pathlib import Path

import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from . import comfy_models
from ._adapters import error, make_audio
from ._sa3 import check_rule, checks
from ._validate import checked
from .loaders import SVD_BASES_FILE, SA3LoraLoader, _require_model  # the pack's one check of the model socket
from .search import schema_aliases
from .types import CATEGORY, SA3Model, SA3TrainingData

if __package__ and "." in __package__:  # <pack>.nodes: the library is <pack>.sa3 (see _sa3.py)
    from ..sa3 import training, training_data
else:
    from sa3 import training, training_data

logger = logging.getLogger(__name__)

DATASET_NODE = "Training Dataset"
TRAIN_NODE = "Train LoRA"
NO_RESUME = "none"
NO_BASES = "none"
CACHE_FOLDER = "sa3_encoded"  # the encoded-dataset cache, in ComfyUI's temp folder (emptied when ComfyUI starts)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
DEFAULTS = training.LoRATrainingOptions()
CURVE_SIZE = (768, 320)
MAX_FOLDER_CHARS = 4096  # PATH_MAX  # loss-curve picture, pixels (width, height)


# --- dataset ---------------------------------------------------------------------------------


def _dataset_folder(folder: str) -> Path:
    """A folder inside ComfyUI's input folder (a name, or an absolute path that resolves there):
    '..', absolute paths and symbolic links leading elsewhere are refused."""
    text = (folder or "").strip()
    if not text:
        raise ValueError(error(DATASET_NODE, "folder is empty (got '', expected a folder name in ComfyUI's input "
                                             "folder). Enter the folder holding the clips."))
    if "\0" in text or len(text) > MAX_FOLDER_CHARS:
        raise ValueError(error(DATASET_NODE, f"folder must be a folder name of at most {MAX_FOLDER_CHARS} characters "
                                             f"without NUL (got {checks.shown(text)}). Enter the folder's name."))
    base = Path(folder_paths.get_input_directory()).resolve()
    resolved = (base / text).resolve()  # an absolute text replaces base; links are followed
    if resolved != base and base not in resolved.parents:
        shown = checks.shown(text)
        raise ValueError(error(DATASET_NODE, f"folder {shown} points outside the input folder (got {shown}, "
                                             f"resolving to {str(resolved)!r}, expected a folder inside "
                                             f"{str(base)!r}). Move the clips into a folder there and give its "
                                             "name."))
    return resolved


def _node_message(node: str, e: Exception) -> str:
    """A library error as the node's own message (the library names itself, the node replaces it)."""
    text = str(e)
    for prefix in ("Stable Audio 3 training data: ", "Stable Audio 3 training: ", f"Stable Audio 3 {node}: "):
        text = text.removeprefix(prefix)
    return error(node, text)


def _dataset_message(folder, look_inside: bool = True) -> str | None:
    """The problem with ``folder`` (None: usable). ``look_inside`` also lists the clips and checks
    every caption; queue-time checks skip it, since the shipped workflow names a folder the user
    fills (as LoRA names are checked when the node runs)."""
    try:
        path = _dataset_folder(folder)
        if look_inside:
            training_data.find_clips(path)
    except ValueError as e:  # TrainingDataError is a ValueError
        return _node_message(DATASET_NODE, e)
    return None


class SA3TrainingDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SA3TrainingDataset",
            **schema_aliases("SA3TrainingDataset"),
            display_name="SA3 Training Dataset",
            category=CATEGORY,
            description="Reads a folder of audio clips (.wav, .flac, .ogg, .mp3), each "
                        "with a same-name .txt file holding its prompt, for SA3 Train LoRA. Every file is checked: "
                        "missing or empty captions, unreadable or silent audio and unusable sample rates are "
                        "refused naming the file.",
            inputs=[
                io.String.Input("folder", default="sa3_training",
                                tooltip="The folder of clips: a name inside ComfyUI's input folder (e.g. "
                                        "'my_loops' for input/my_loops). Sub-folders are "
                                        "included. clip.wav needs clip.txt with its prompt beside it."),
            ],
            outputs=[SA3TrainingData.Output(display_name="dataset",
                                            tooltip="The checked clips (44.1 kHz stereo) and their captions.")],
        )

    @classmethod
    def validate_inputs(cls, folder=None) -> bool | str:
        if folder is None:
            return True
        return _dataset_message(folder, look_inside=False) or True

    @classmethod
    def fingerprint_inputs(cls, folder=None):
        """Re-read the folder when any clip or caption changes (name, size or time)."""
        bound = training_data.MAX_FOLDER_ENTRIES
        try:
            path = _dataset_folder(folder)
            entries = list(itertools.islice(path.rglob("*"), bound + 1))  # bounded: execute refuses more
            if len(entries) > bound:
                return f"{folder}|more than {bound} entries"
            files = sorted(p for p in entries if p.is_file())
        except (ValueError, OSError):
            return folder
        h = hashlib.blake2b(digest_size=16)
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    @classmethod
    @checked(DATASET_NODE)
    def execute(cls, folder) -> io.NodeOutput:
        message = _dataset_message(folder)
        if message is not None:
            raise ValueError(message)
        clips = training_data.load_training_folder(_dataset_folder(folder))
        logger.info("Stable Audio 3 training dataset: %d clip(s), %.1f s", len(clips), sum(c.seconds for c in clips))
        return io.NodeOutput(tuple(clips))


# --- trainer ---------------------------------------------------------------------------------


def _rules(text: str) -> tuple[str, ...] | None:
    """'a, b' -> ('a', 'b'); '' -> None (no rule)."""
    parts = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    return parts or None


def _name_message(output_name) -> str | None:
    name = (output_name or "").strip()
    if name.lower().endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not NAME_PATTERN.match(name):
        return error(TRAIN_NODE, f"output_name {output_name!r} is not a plain file name (got {output_name!r}, "
                                 "expected letters, digits, spaces, '_', '-' or '.', starting with a letter or "
                                 "digit, at most 100 characters). Rename it.")
    return None


def _rules_message(include, exclude) -> str | None:
    """include/exclude through the library's one rule check (``check_rule``: text, brackets only as
    [a-b] ranges, bounded expansion), counted, never expanded; None when both pass. That a rule
    matches a layer of the model is checked when training starts."""
    for name, text in (("include", include), ("exclude", exclude)):
        for part in _rules(text) or ():
            try:
                check_rule(name, part, TRAIN_NODE)
            except ValueError as e:
                return str(e)
    return None


def _lora_file_name(output_name: str) -> str:
    name = output_name.strip()
    return name if name.lower().endswith(".safetensors") else f"{name}.safetensors"


def _replacing(output: Path, resume: str | None, output_name: str) -> str | None:
    """The warning when training would replace an existing file that is not the one it resumes
    (continuing a LoRA into its own file is what resume_from is for), else None."""
    if not output.exists() or (resume is not None and Path(resume).resolve() == output.resolve()):
        return None
    return (f"output_name {output_name!r} names an existing file ({str(output)!r}): it is replaced when training "
            "finishes or is cancelled. Rename output_name to keep it.")


def _resume_choices() -> list[str]:
    return [NO_RESUME] + [n for n in folder_paths.get_filename_list("loras") if n.lower().endswith(".safetensors")]


def _bases_choices() -> list[str]:
    """-XS bases files in models/loras: SA3 LoRA Loader reads svd_bases.safetensors beside a LoRA,
    so only files of that name can give the trained LoRA the bases it was trained with."""
    return [NO_BASES] + [n for n in folder_paths.get_filename_list("loras") if Path(n).name == SVD_BASES_FILE]


def _bases_path(svd_bases: str, adapter_type: str, output: Path) -> Path | None:
    """The chosen bases file (None: compute them), checked: it must be the one SA3 LoRA Loader reads
    beside the output, so the returned model and later loads use the bases trained with."""
    if svd_bases in (None, NO_BASES):
        return None
    full = folder_paths.get_full_path("loras", svd_bases)
    if full is None:
        raise ValueError(error(TRAIN_NODE, f"svd_bases {svd_bases!r} is not in models/loras (got {svd_bases!r}, "
                                           "expected one of the listed files or 'none'). Refresh the node list."))
    if not adapter_type.endswith("-xs"):
        return None  # only -XS adapters use bases (as the library and the official trainer)
    if Path(full).resolve().parent != output.parent.resolve():
        raise ValueError(error(TRAIN_NODE, f"svd_bases {svd_bases!r} is not beside the LoRA written (got "
                                           f"{str(full)!r}, expected {str(output.parent / SVD_BASES_FILE)!r}, "
                                           "where SA3 LoRA Loader looks for the bases of -XS LoRAs). Move the file "
                                           "there or choose 'none'."))
    return Path(full)


def _options(adapter_type, rank, alpha, steps, learning_rate, batch_size, clip_seconds, seed, include, exclude,
             dropout, base_precision, checkpoint_every, validate_every=0, demo_every=0, demo_prompt="",
             demo_seconds=DEFAULTS.demo_seconds, demo_seed=0) -> training.LoRATrainingOptions:
    return training.LoRATrainingOptions(
        adapter_type=adapter_type, rank=int(rank), alpha=None if float(alpha) == 0 else float(alpha),
        dropout=float(dropout), include=_rules(include), exclude=_rules(exclude), steps=int(steps),
        learning_rate=float(learning_rate), batch_size=int(batch_size), clip_seconds=float(clip_seconds),
        seed=int(seed), base_precision=base_precision, checkpoint_every=int(checkpoint_every),
        validate_every=int(validate_every), demo_every=int(demo_every), demo_prompt=(demo_prompt or "").strip(),
        demo_seconds=float(demo_seconds), demo_seed=int(demo_seed))


def loss_curve_image(losses: list[float], steps: int, size: tuple[int, int] = CURVE_SIZE) -> torch.Tensor:
    """The loss of every step (and its running mean) as an IMAGE (1, H, W, 3) float32 in [0, 1]."""
    from PIL import Image, ImageDraw

    width, height = size
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 16, 16, height - 40
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    values = [v for v in losses if math.isfinite(v)]
    if values:
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1.0
        total = max(steps, len(losses), 2)

        def xy(i: int, v: float) -> tuple[float, float]:
            return (left + (right - left) * i / (total - 1), bottom - (bottom - top) * (v - lo) / (hi - lo))

        finite = [(i, v) for i, v in enumerate(losses) if math.isfinite(v)]  # a NaN step is left out
        if len(finite) > 1:
            draw.line([xy(i, v) for i, v in finite], fill=(150, 180, 230), width=1)
            window = max(1, len(finite) // 20)
            smooth = [(i, float(np.mean([v for _, v in finite[max(0, k - window + 1): k + 1]])))
                      for k, (i, _) in enumerate(finite)]
            draw.line([xy(i, v) for i, v in smooth], fill=(20, 60, 160), width=2)
        draw.text((4, top), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((4, bottom - 10), f"{lo:.3g}", fill=(0, 0, 0))
        draw.text((left, bottom + 6), "1", fill=(0, 0, 0))
        draw.text((right - 40, bottom + 6), f"{total}", fill=(0, 0, 0))
        draw.text((left + 8, top + 4), f"loss, {len(losses)} step(s); last {losses[-1]:.4f}", fill=(0, 0, 0))
    draw.text((width // 2 - 20, height - 18), "step", fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


class SA3TrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        o = DEFAULTS
        return io.Schema(
            node_id="SA3TrainLoRA",
            **schema_aliases("SA3TrainLoRA"),
            display_name="SA3 Train LoRA",
            category=CATEGORY,
            description="Trains a LoRA on the model with the official Stable Audio 3 recipe (scripts/train_lora.py) "
                        "and writes models/loras/<output_name>.safetensors in the official format (it also loads in "
                        "the official code). Returns the model with the new LoRA applied, as SA3 LoRA Loader applies "
                        "it, and a picture of the loss curve. Cancel stops after the current step and saves what was "
                        "trained. Train on a -base model for best results.",
            hidden=[io.Hidden.unique_id],
            inputs=[
                SA3Model.Input("model", lazy=True,  # asked for after the checks (check_lazy_status)
                               tooltip="The SA3 model to train on, straight from SA3 Model Loader (no LoRA "
                                       "applied). The official trainer uses the -base models."),
                SA3TrainingData.Input("dataset", lazy=True,
                                      tooltip="Clips and captions from SA3 Training Dataset."),
                io.String.Input("output_name", default="my_sa3_lora",
                                tooltip="File name in models/loras (.safetensors is added). An existing file of "
                                        "that name is replaced when training finishes or is cancelled (said under "
                                        "the node and in the log when the run starts)."),
                io.Combo.Input("adapter_type", options=list(training.ADAPTER_TYPES), default=o.adapter_type,
                               tooltip="lora: low-rank update; dora-rows/dora-cols: LoRA plus learned row/column "
                                       "magnitudes (dora-rows is the official default); bora: both; -xs variants "
                                       "train only an r x r core between the weight's singular vectors (fewest "
                                       "parameters)."),
                io.Int.Input("rank", default=o.rank, min=1, max=training.MAX_RANK,
                             tooltip="LoRA rank r: more = more capacity and a larger file (official default 16)."),
                io.Float.Input("alpha", default=0.0, min=0.0, max=4096.0, step=1.0,
                               tooltip="LoRA alpha; the update is scaled by alpha / rank. 0 = same as rank "
                                       "(official default)."),
                io.Int.Input("steps", default=o.steps, min=1, max=training.MAX_STEPS,
                             tooltip="Total optimizer steps (the official default is 10000; a few hundred already "
                                     "change the sound). With resume_from, steps already done count."),
                io.Float.Input("learning_rate", default=o.learning_rate, min=1e-7, max=1.0, step=1e-5, round=False,
                               tooltip="AdamW learning rate (official 1e-4; betas 0.9/0.95, weight decay 0.01)."),
                io.Int.Input("batch_size", default=o.batch_size, min=1, max=training.MAX_BATCH,
                             tooltip="Clips per step (at most the number of clips). Above 1 the noise is "
                                     "matched to the clips by optimal transport, as officially."),
                io.Float.Input("clip_seconds", default=o.clip_seconds, min=0.1, max=380.0, step=0.5,
                               tooltip="Length each clip is cropped (random start) or padded to, in seconds; at "
                                       "most the model's maximum (120 s small, 380 s medium). Cost grows with it."),
                io.Int.Input("seed", default=o.seed, min=0, max=2**63 - 1,
                             tooltip="Seed of every random choice (initialisation, crops, noise, masks); the same "
                                     "seed and inputs give the same file on the same machine.",
                             control_after_generate=False),
                io.String.Input("include", default="",
                                tooltip="Only adapt layers whose name contains one of these comma-separated parts "
                                        "(e.g. 'transformer.layers.[0-7], seconds_total'; [a-b] is a range). "
                                        "Empty: every Linear/Conv1d of the DiT and the seconds conditioner."),
                io.String.Input("exclude", default="",
                                tooltip="Skip layers whose name contains one of these comma-separated parts (e.g. "
                                        "'cross_attn'). Empty: none."),
                io.Float.Input("dropout", default=o.dropout, min=0.0, max=0.95, step=0.05, optional=True,
                               tooltip="Dropout on the LoRA's input features while training (0 = off; the official "
                                       "script records it but trains with 0)."),
                io.Combo.Input("base_precision", options=list(training.BASE_PRECISIONS), default=o.base_precision,
                               optional=True,
                               tooltip="Precision of the frozen copy of the model trained against (LoRA weights "
                                       "stay fp32). bf16 is the official trainer's bf16 run (adapters from the "
                                       "bf16-cast weights, forward under bf16 autocast) and halves its memory on a "
                                       "GPU; fp32 is exact and fastest on most CPUs."),
                io.Int.Input("checkpoint_every", default=o.checkpoint_every, min=0, max=training.MAX_STEPS,
                             optional=True,
                             tooltip="Also save <output_name>-step<N>.safetensors every N steps (resumable). "
                                     "0 = only the final file."),
                io.Combo.Input("resume_from", options=_resume_choices(), default=NO_RESUME, optional=True,
                               tooltip="Continue a LoRA from models/loras: exactly where it stopped when its "
                                       ".sa3state file is beside it (files trained here), else from its weights "
                                       "with a fresh optimizer. adapter_type, rank, alpha, include and exclude "
                                       "must match it."),
                io.Int.Input("validate_every", default=o.validate_every, min=0, max=training.MAX_STEPS,
                             optional=True,
                             tooltip="Every N steps (and at the last), the official validation loss (fixed "
                                     "timesteps and noise, clips from their start) goes into the CSV log beside "
                                     "the LoRA. 0 = off."),
                io.Combo.Input("svd_bases", options=_bases_choices(), default=NO_BASES, optional=True,
                               tooltip="-XS adapters only: the official precomputed singular vectors "
                                       "(svd_bases.safetensors in models/loras, where SA3 LoRA Loader reads them "
                                       "beside -XS LoRAs). none = computed from the model's weights."),
                io.Boolean.Input("cache_encoded", default=True, optional=True,
                                 tooltip="Keep the encoded clips (SAME latents, prompt states) in ComfyUI's temp "
                                         "folder, so a rerun or resume on the same clips, model, clip_seconds, "
                                         "seed and base_precision (bf16 encodes the prompts under bf16, as the "
                                         "official bf16 run) skips encoding. Off: encode every run."),
                io.Int.Input("demo_every", default=o.demo_every, min=0, max=training.MAX_STEPS, optional=True,
                             tooltip="Every N steps, generate a demo clip with the LoRA trained so far (the "
                                     "model's own sampler, 8 steps, CFG 4) into models/loras/<output_name>_demo_"
                                     "<step>.flac; the demos are the demos output. 0 = off."),
                io.String.Input("demo_prompt", default="", optional=True,
                                tooltip="The demo clips' prompt (needed when demo_every is set), e.g. a caption "
                                        "of the dataset."),
                io.Float.Input("demo_seconds", default=o.demo_seconds, min=0.1, max=380.0, step=0.5,
                               optional=True, tooltip="Length of each demo clip, in seconds (at most the model's "
                                                      "maximum). Each demo costs about one short generation."),
                io.Int.Input("demo_seed", default=o.demo_seed, min=0, max=2**63 - 1, optional=True,
                             control_after_generate=False,
                             tooltip="Noise seed of the demo clips: the same for every demo, so they differ only "
                                     "by the training between them."),
            ],
            outputs=[
                SA3Model.Output(display_name="model", tooltip="The model with the trained LoRA applied (strength 1)."),
                io.Image.Output(display_name="loss_curve", tooltip="The training loss per step (light) and its "
                                                                   "running mean (dark)."),
                io.Audio.Output(display_name="demos", tooltip="The demo clips of this run as one batch, in step "
                                                              "order (demo_every); 0.1 s of silence when none was "
                                                              "made."),
            ],
        )

    @classmethod
    def validate_inputs(cls, output_name=None) -> bool | str:
        # one input only: ComfyUI labels the message with every input named here (nodes/_validate.py);
        # ComfyUI range-checks the numbers per input, and execute checks them all again (NaN, combos)
        return (output_name is not None and _name_message(output_name)) or True

    @classmethod
    @checked(TRAIN_NODE, skip=("resume_from", "svd_bases"))
    def check_lazy_status(cls, model=None, dataset=None, output_name="", include="", exclude="",
                          **widgets) -> list[str]:
        """Every setting checked before the model and the clips are asked for. ``validate_inputs`` can
        take one input only (output_name, see nodes/_validate.py), so the numbers, combos and the
        include/exclude rules are checked here: model and dataset are lazy, so ComfyUI reaches this
        node when the run starts (it feeds an output node), before the model is loaded."""
        message = _name_message(output_name) or _rules_message(include, exclude)
        if message is not None:
            raise ValueError(message)
        return [name for name, value in (("model", model), ("dataset", dataset)) if value is None]

    @classmethod
    @checked(TRAIN_NODE, skip=("resume_from", "svd_bases"))
    def execute(cls, model, dataset, output_name, adapter_type, rank, alpha, steps, learning_rate, batch_size,
                clip_seconds, seed, include, exclude, dropout=DEFAULTS.dropout,
                base_precision=DEFAULTS.base_precision, checkpoint_every=DEFAULTS.checkpoint_every,
                resume_from=NO_RESUME, validate_every=DEFAULTS.validate_every, svd_bases=NO_BASES,
                cache_encoded=True, demo_every=DEFAULTS.demo_every, demo_prompt="",
                demo_seconds=DEFAULTS.demo_seconds, demo_seed=DEFAULTS.demo_seed) -> io.NodeOutput:
        model = _require_model(model, TRAIN_NODE)
        if model.loras:
            raise ValueError(error(TRAIN_NODE, f"model already has {len(model.loras)} LoRA(s) applied (got "
                                               f"{[s.name for s in model.loras]}, expected none). Connect SA3 Model "
                                               "Loader directly; use resume_from to continue a LoRA."))
        if not isinstance(dataset, tuple) or not dataset or \
                not all(isinstance(c, training_data.TrainingClip) for c in dataset):
            raise ValueError(error(TRAIN_NODE, f"dataset is not a training dataset (got {type(dataset).__name__}, "
                                               "expected the output of SA3 Training Dataset). Connect it."))
        message = _name_message(output_name) or _rules_message(include, exclude)
        if message is not None:
            raise ValueError(message)
        resume = None
        if resume_from not in (None, NO_RESUME):
            resume = folder_paths.get_full_path("loras", resume_from)
            if resume is None:
                raise ValueError(error(TRAIN_NODE, f"resume_from {resume_from!r} is not in models/loras (got "
                                                   f"{resume_from!r}, expected one of the listed files or 'none'). "
                                                   "Refresh the node list."))
        options = _options(adapter_type, rank, alpha, steps, learning_rate, batch_size, clip_seconds, seed, include,
                           exclude, dropout, base_precision, checkpoint_every, validate_every, demo_every,
                           demo_prompt, demo_seconds, demo_seed)
        file_name = _lora_file_name(output_name)
        output = Path(folder_paths.get_folder_paths("loras")[0]) / file_name
        bases = _bases_path(svd_bases, adapter_type, output)
        cache_dir = Path(folder_paths.get_temp_directory()) / CACHE_FOLDER if cache_encoded else None
        output.parent.mkdir(parents=True, exist_ok=True)
        node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)  # where the loss text goes
        replacing = _replacing(output, resume, output_name)
        if replacing is not None:  # said before the run starts, under the node and in the log
            logger.warning("Stable Audio 3 Train LoRA: %s", replacing)
            comfy_models.progress_text(node_id, replacing)

        model.model.apply_loras(())  # the shared modules carry no LoRA (another branch of the graph may have left some)
        cancel = comfy_models.HeldCancel(int(steps))  # progress, and Cancel held until the file is saved

        def on_step(step: int, total: int, loss: float) -> None:
            cancel.update(step, total)
            comfy_models.progress_text(node_id, f"step {step}/{total}  loss {loss:.4f}")
            if step == total or step % 50 == 0:
                logger.info("Stable Audio 3 training: step %d/%d, loss %.4f", step, total, loss)

        demos: list[torch.Tensor] = []

        def on_demo(step: int, path: Path, audio: torch.Tensor) -> None:
            demos.append(audio)
            comfy_models.progress_text(node_id, f"step {step}/{int(steps)}  demo {path.name}")

        try:
            result = training.train_lora(model.model, list(dataset), output, options, resume_from=resume,
                                         on_step=on_step, should_stop=cancel.requested,
                                         on_stage=lambda part: comfy_models.load_parts(model, part),
                                         svd_bases_path=bases, cache_dir=cache_dir, on_demo=on_demo)
        except (training.TrainingError, training_data.TrainingDataError) as e:
            raise ValueError(_node_message(TRAIN_NODE, e)) from e
        if result.stopped:
            logger.info("Stable Audio 3 training: cancelled after %d step(s); %s", result.steps_done,
                        f"saved {output}" if result.path else "nothing new to save")
        if result.path is not None:
            log = training.log_path(result.path)
            comfy_models.progress_text(node_id, f"step {result.steps_done}/{int(steps)}  saved {result.path.name}"
                                                f"{' (replaced the earlier file)' if replacing else ''}  log {log}")
            logger.info("Stable Audio 3 training: loss log (step, loss, validation_loss) in %s", log)
        cancel.release()  # Cancel: the file holds what was trained; the run ends as cancelled
        curve = loss_curve_image(result.losses, int(steps) - (result.steps_done - len(result.losses)))
        applied = SA3LoraLoader.execute(model=model, lora_name=file_name, strength_dit=1.0,
                                        strength_conditioner=1.0).result[0]
        waveform = torch.stack(demos) if demos else torch.zeros(1, 2, training_data.SAMPLE_RATE // 10)
        return io.NodeOutput(applied, curve, make_audio(waveform, training_data.SAMPLE_RATE))

