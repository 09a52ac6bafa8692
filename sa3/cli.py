"""Command line: ``python -m sa3 generate --model small-music --prompt "..." --duration 10 -o out.wav``
and ``python -m sa3 train --data-dir clips/ -o my_lora.safetensors`` (LoRA training).

Runs the library's main job without ComfyUI. Flags follow the official ``stable-audio`` CLI; a
batch writes ``name_0.wav``, ``name_1.wav``, ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from .attention import BACKENDS, PADDING_MODES
from .config import DURATION_PADDING_SEC, SHIFT_TEXT_EXAMPLE, parse_shift_text
from .precision import AUTOENCODER_PRECISIONS, PRECISIONS
from .sampling import SAMPLERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sa3", description="Stable Audio 3 inference without ComfyUI.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="text-to-audio, audio-to-audio, inpainting and continuation")
    g.add_argument("--model", default="small-music", help="one of the six official names, or a local model folder")
    g.add_argument("-p", "--prompt", nargs="+", required=True, help="prompt(s); several prompts make a batch")
    g.add_argument("--negative-prompt", nargs="+", help="negative prompt(s), one or one per prompt")
    g.add_argument("--duration", nargs="+", type=float, default=[10.0], help="seconds, one or one per prompt")
    g.add_argument("--steps", type=int, default=8)
    g.add_argument("--cfg-scale", type=float, default=1.0)
    g.add_argument("--apg-scale", type=float, default=1.0, help="1 = APG (default), 0 = vanilla CFG")
    g.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (printed)")
    g.add_argument("--batch-size", type=int, help="items to generate (default: number of prompts)")
    g.add_argument("--sampler", choices=SAMPLERS, help="default: pingpong (post-trained) / euler (base)")
    g.add_argument("--init-audio", type=Path, help="audio file (WAV, FLAC, OGG, MP3) for audio-to-audio")
    g.add_argument("--init-noise-level", type=float, default=0.9, help="0..1; lower keeps more of the init audio")
    g.add_argument("--inpaint-audio", type=Path, help="audio file (WAV, FLAC, OGG, MP3) to inpaint or continue")
    g.add_argument("--inpaint-start", type=float, action="append", help="region start in seconds (repeatable)")
    g.add_argument("--inpaint-end", type=float, action="append", help="region end in seconds (repeatable)")
    g.add_argument("--cfg-interval", type=float, nargs=2, metavar=("MIN", "MAX"), default=[0.0, 1.0],
                   help="with --cfg-scale != 1, guide only the steps whose noise level is in [MIN, MAX] (default 0 1)")
    g.add_argument("--cfg-rescale", type=float, default=0.0, help="CFG rescale (official scale_phi), 0..1")
    g.add_argument("--cfg-norm-threshold", type=float, default=0.0, help="cap of the guidance's norm; 0 = off")
    g.add_argument("--dist-shift", default="default",
                   help="schedule shift: default, none, or 'TYPE name=value ...' with TYPE flux, full or logsnr, "
                        f"e.g. '{SHIFT_TEXT_EXAMPLE}'")
    g.add_argument("--duration-padding", type=float, default=DURATION_PADDING_SEC,
                   help="seconds of headroom after the longest duration (official default 6)")
    chunk = g.add_mutually_exclusive_group()
    chunk.add_argument("--chunked-decode", dest="chunked_decode", action="store_true", default=None)
    chunk.add_argument("--no-chunked-decode", dest="chunked_decode", action="store_false")
    g.add_argument("--lora", type=Path, action="append", default=[], help="LoRA file (repeatable, stacked in order)")
    g.add_argument("--lora-strength", type=float, action="append", default=[],
                   help="strength per --lora (in order), or one value for all")
    g.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    g.add_argument("--dtype", default="auto", choices=PRECISIONS)
    g.add_argument("--autoencoder-dtype", default="fp32", choices=AUTOENCODER_PRECISIONS,
                   help="SAME precision: fp32 (exact) or bf16-mixed (bf16 matrix products, the rest fp32; faster)")
    g.add_argument("--attention", default="auto", choices=BACKENDS)
    g.add_argument("--padding-mode", default="exact", choices=PADDING_MODES,
                   help="exact = flash-attn semantics (as trained); reference = official CPU numbers")
    g.add_argument("--low-memory", action="store_true",
                   help="CPU: keep only the running stage's weights in RAM (peak = largest part, not the sum)")
    g.add_argument("-o", "--output", type=Path, default=Path("output.wav"))
    g.add_argument("-v", "--verbose", action="store_true")
    _add_train_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    """``python -m sa3 train``: the official scripts/train_lora.py options, our defaults."""
    from .training import ADAPTER_TYPES, BASE_PRECISIONS, LoRATrainingOptions

    d = LoRATrainingOptions()
    t = sub.add_parser("train", help="train a LoRA on a folder of clips with .txt captions (official recipe)")
    t.add_argument("--model", default="small-music-base", help="official name or local folder (-base recommended)")
    t.add_argument("--data-dir", type=Path, required=True, help="audio files, each with a same-name .txt caption")
    t.add_argument("-o", "--output", type=Path, help="the LoRA file to write (.safetensors)")
    t.add_argument("--adapter-type", default=d.adapter_type, choices=ADAPTER_TYPES)
    t.add_argument("--rank", type=int, default=d.rank)
    t.add_argument("--alpha", type=float, help="default: the rank")
    t.add_argument("--dropout", type=float, default=d.dropout)
    t.add_argument("--include", nargs="*", help="only layers whose name contains one of these ([a-b] ranges)")
    t.add_argument("--exclude", nargs="*", help="skip layers whose name contains one of these")
    t.add_argument("--official-defaults", action="store_true",
                   help="the official train_lora.py defaults for --steps (10000), --clip-seconds (380, at most "
                        "the model's maximum) and --base-precision (bf16) instead of ours (500, 30, fp32)")
    t.add_argument("--steps", type=int, help=f"default {d.steps}")
    t.add_argument("--lr", type=float, default=d.learning_rate)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--clip-seconds", type=float, help=f"crop/pad length per clip (default {d.clip_seconds})")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--base-precision", choices=list(BASE_PRECISIONS), help=f"default {d.base_precision}")
    t.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    t.add_argument("--validate-every", type=int, default=d.validate_every,
                   help="validation loss into <output>.csv every N steps (0: never; loss is logged every step)")
    t.add_argument("--demo-every", type=int, default=d.demo_every,
                   help="a demo clip <output>_demo_<step>.flac every N steps (0: never)")
    t.add_argument("--demo-prompt", default=d.demo_prompt, help="the demo clips' prompt")
    t.add_argument("--demo-seconds", type=float, default=d.demo_seconds)
    t.add_argument("--demo-seed", type=int, default=d.demo_seed)
    t.add_argument("--demo-steps", type=int, default=d.demo_steps)
    t.add_argument("--svd-bases-path", type=Path, help="-XS bases (official torch.save dict or .safetensors)")
    t.add_argument("--encoded-dir", type=Path,
                   help="cache of encoded datasets: reused while the clips, model and options (--clip-seconds, "
                        "--seed, --base-precision: bf16 encodes the prompts as the official bf16 run) are the same")
    t.add_argument("--pre-encode-only", action="store_true", help="encode the clips into --encoded-dir and stop")
    t.add_argument("--resume-from", type=Path, help="a LoRA file to continue (exactly, with its .sa3state)")
    t.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    t.add_argument("-v", "--verbose", action="store_true")


def run_train(args: argparse.Namespace) -> Path:
    from .model import StableAudioModel
    from .training import LoRATrainingOptions, check_options, check_output, encoded_folder, train_lora
    from .training_data import find_clips

    defaults = LoRATrainingOptions.official() if args.official_defaults else LoRATrainingOptions()
    given = {"steps": args.steps, "clip_seconds": args.clip_seconds, "base_precision": args.base_precision}
    options = LoRATrainingOptions(
        adapter_type=args.adapter_type, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        include=tuple(args.include) if args.include else None, exclude=tuple(args.exclude) if args.exclude else None,
        learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, demo_every=args.demo_every, demo_prompt=args.demo_prompt,
        demo_seconds=args.demo_seconds, demo_seed=args.demo_seed, demo_steps=args.demo_steps,
        **{k: getattr(defaults, k) if v is None else v for k, v in given.items()})
    check_options(options, float("inf"))  # model-independent checks before loading anything
    if args.pre_encode_only and args.encoded_dir is None:
        raise ValueError("--pre-encode-only needs --encoded-dir (where the encoded dataset goes)")
    if not args.pre_encode_only and args.output is None:
        raise ValueError("-o/--output is required (the LoRA file to write)")
    find_clips(args.data_dir)  # the folder and every caption, before the model is loaded
    if not args.pre_encode_only:
        check_output(Path(args.output))
    model = StableAudioModel.from_pretrained(args.model, device=args.device, dtype="fp32")
    if args.official_defaults and args.clip_seconds is None:  # 380 s, or the model's maximum when shorter
        options = replace(options, clip_seconds=min(options.clip_seconds, model.config.max_duration))
    if args.pre_encode_only:
        data = encoded_folder(model, args.data_dir, options, args.encoded_dir)
        print(f"encoded {len(data)} clip(s) into {args.encoded_dir}", file=sys.stderr)
        return args.encoded_dir
    bar = tqdm(total=options.steps, desc="training", unit="step")

    def on_step(step: int, total: int, loss: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}")

    try:
        result = train_lora(model, args.data_dir, args.output, options, resume_from=args.resume_from,
                            on_step=on_step, svd_bases_path=args.svd_bases_path, cache_dir=args.encoded_dir)
    finally:
        bar.close()
    print(f"wrote {result.path} ({result.steps_done} steps)", file=sys.stderr)
    return result.path


def run_generate(args: argparse.Namespace) -> list[Path]:
    from . import audio as audio_utils
    from . import checks
    from .loading import CONFIG_FILE, read_config, resolve_model_dir
    from .model import StableAudioModel
    from .request import check_request
    from .rng import random_seed

    batch = args.batch_size or len(args.prompt)
    prompt = args.prompt[0] if len(args.prompt) == 1 else args.prompt
    duration = args.duration[0] if len(args.duration) == 1 else args.duration
    negative = None
    if args.negative_prompt:
        negative = args.negative_prompt[0] if len(args.negative_prompt) == 1 else args.negative_prompt
    if (args.inpaint_start is None) != (args.inpaint_end is None):
        raise SystemExit("error: --inpaint-start and --inpaint-end must be given together")
    if args.inpaint_start and not args.inpaint_audio:
        raise SystemExit("error: --inpaint-start/--inpaint-end need --inpaint-audio")
    if args.lora_strength and len(args.lora_strength) not in (1, len(args.lora)):
        raise SystemExit("error: give one --lora-strength, or one per --lora")
    for s in args.lora_strength:
        checks.check_number("--lora-strength", s, -checks.MAX_LORA_STRENGTH, checks.MAX_LORA_STRENGTH)

    seed = random_seed() if args.seed == -1 else args.seed
    kwargs = dict(prompt=prompt, negative_prompt=negative, duration=duration, steps=args.steps,
                  cfg_scale=args.cfg_scale, apg_scale=args.apg_scale, seed=seed, batch_size=batch,
                  sampler_type=args.sampler, cfg_interval=tuple(args.cfg_interval), scale_phi=args.cfg_rescale,
                  cfg_norm_threshold=args.cfg_norm_threshold, duration_padding_sec=args.duration_padding,
                  dist_shift=parse_shift_text(args.dist_shift, "--dist-shift"))
    if args.init_audio:
        kwargs.update(init_audio=audio_utils.read_audio(args.init_audio), init_noise_level=args.init_noise_level)
    if args.inpaint_audio:
        starts, ends = args.inpaint_start or [], args.inpaint_end or []
        kwargs.update(inpaint_audio=audio_utils.read_audio(args.inpaint_audio),
                      inpaint_mask_start_seconds=starts if len(starts) > 1 else (starts[0] if starts else None),
                      inpaint_mask_end_seconds=ends if len(ends) > 1 else (ends[0] if ends else None))
    # check the whole request against the model's config before loading any weights
    model_dir = resolve_model_dir(args.model)
    check_request(read_config(model_dir / CONFIG_FILE)[0], **kwargs)
    model = StableAudioModel.from_pretrained(model_dir, device=args.device, dtype=args.dtype,
                                             attention=args.attention, padding_mode=args.padding_mode,
                                             autoencoder_dtype=args.autoencoder_dtype, low_memory=args.low_memory)
    if args.lora:
        model.load_lora(args.lora)
        for i, s in enumerate(args.lora_strength):
            model.set_lora_strength(s, lora_index=None if len(args.lora_strength) == 1 else i)
    kwargs["chunked_decode"] = args.chunked_decode

    bars: dict[str, tqdm] = {}  # the step callback runs once per step, whatever the sampler

    def advance(name: str, done: int, total: int) -> None:
        bar = bars.setdefault(name, tqdm(total=total, desc=name, unit="step" if name == "sampling" else "chunk"))
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    try:
        audio = model.generate(**kwargs, callback=lambda i, x, d: advance("sampling", i + 1, args.steps),
                               on_decode_chunk=lambda i, n: advance("decoding", i, n))
    finally:
        for bar in bars.values():
            bar.close()
    print(f"seed: {seed}", file=sys.stderr)
    outputs = []
    for i, item in enumerate(audio.cpu()):
        path = args.output if batch == 1 else args.output.with_name(f"{args.output.stem}_{i}{args.output.suffix}")
        audio_utils.write_audio(path, item, model.sample_rate)
        outputs.append(path)
        print(f"wrote {path}", file=sys.stderr)
    return outputs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        run_train(args) if args.command == "train" else run_generate(args)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
