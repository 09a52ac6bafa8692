"""Our pipeline vs the official implementation on the same random full-size weights and inputs,
in one process: time and peak RSS per stage (text encode, sampling, decode) and their ratios.

    SA3_OFFICIAL_PATH=/path/to/stable-audio-3 python bench/compare_reference.py \
        [--durations 5 30 120] [--steps 8] [--dtype fp32|bf16] [--model DIR] [--repeats N]
        [--cfg-scale G] [--padding-mode reference|exact]

``SA3_OFFICIAL_PATH`` is a checkout of Stability-AI/stable-audio-3 (the folder holding the
``stable_audio_3`` package); without it, or if it does not import, only our figures are printed.
The official model runs fp32 on CPU (its ``model_half`` is forced off without CUDA); ``--dtype``
sets ours. Ours runs with ``padding_mode="reference"`` (the official CPU semantics; ``--padding-mode
exact`` for the library's default), so at fp32 the two outputs must agree, which is printed too.
Each implementation is loaded, warmed up with one short generation, timed once per duration (the
fastest of ``--repeats`` runs), then freed before the other one loads.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import (
    STAGES,
    StageMonitor,
    add_run_args,
    configure_ours,
    fmt_table,
    load_ours,
    parse_run_args,
    run_stages,
    wrap,
)

from sa3.cpu_gemm import cpu_routes


def build_official(model_dir: Path, device: str = "cpu", model_half: bool = False):
    """The official StableAudioModel built from a local folder (its from_pretrained only takes hub
    names): load_diffusion_cond + the StableAudioModel constructor, exactly as from_pretrained."""
    from stable_audio_3.loading_utils import load_diffusion_cond
    from stable_audio_3.model import StableAudioModel as OfficialModel

    cfg = json.loads((model_dir / "model_config.json").read_text())
    for c in cfg["model"]["conditioning"]["configs"]:  # offline: the official T5 loader reads model_path
        if c["id"] == "prompt":
            c["config"].setdefault("model_path", str(model_dir))
    inner = load_diffusion_cond(cfg, str(model_dir / "model.safetensors"), device=device, model_half=model_half)
    inner.use_lora, inner.lora_names = False, []
    return OfficialModel(inner, cfg, device, model_half)


def load_official(model_dir: Path, monitor: StageMonitor):
    """``build_official`` on the CPU in fp32 (its ``model_half`` is forced off without CUDA), timed."""
    monitor.reset()
    monitor.stage("load")
    t0 = time.perf_counter()
    model = build_official(model_dir)
    load_time = time.perf_counter() - t0
    monitor.stage(None)
    wrap(model.model.conditioner, "forward", monitor, "text", "sampling")
    wrap(model.model.pretransform, "decode", monitor, "decode", None)
    return model, load_time, monitor.peak.get("load", 0)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def latents_rel_l2(ours: torch.Tensor, official: torch.Tensor) -> float:
    """Relative L2 of the latents each side decoded, over the frames both have (the official code
    decodes its padded length, ours may crop first)."""
    n = min(ours.shape[-1], official.shape[-1])
    return rel_l2(ours[..., :n], official[..., :n])


def import_official() -> bool:
    path = os.environ.get("SA3_OFFICIAL_PATH")
    if not path:
        return False
    sys.path.insert(0, path)
    try:
        import stable_audio_3  # noqa: F401
    except ImportError as e:
        print(f"official package not importable from {path!r} ({e}); printing our figures only")
        return False
    return True


def bench(label, load, monitor, args):
    model, load_time, load_peak = load(monitor)
    extra = {"cfg_scale": args.cfg_scale}
    run_stages(model.generate, monitor, [min(args.durations)], args.steps, repeats=0, **extra)  # warm-up
    results = {}
    for _ in range(args.repeats):  # the fastest of the timed runs per duration (the VM is shared)
        for d, row in run_stages(model.generate, monitor, args.durations, args.steps, repeats=0, **extra).items():
            if d not in results or row["total"] < results[d]["total"]:
                results[d] = row
    outputs = {d: (r.pop("output"), r.pop("latents")) for d, r in results.items()}
    del model
    gc.collect()
    return {"label": label, "load_time": load_time, "load_peak": load_peak, "results": results}, outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(parser)
    parser.add_argument("--official-first", action="store_true", help="run the official model first")
    parser.add_argument("--padding-mode", default="reference", choices=("reference", "exact"),
                        help="ours: reference (the official CPU semantics, the default here) or exact "
                             "(the library's default, flash-attn semantics: not the official CPU output)")
    parser.add_argument("--cfg-scale", type=float, default=1.0,
                        help="classifier-free guidance for both (1: none, the default; 7: the docs' stronger setting)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per duration after the warm-up, the fastest reported (default 1)")
    args = parse_run_args(parser)
    model_dir = Path(args.model)
    have_official = import_official()
    monitor = StageMonitor()

    def ours(mon):
        return load_ours(model_dir, args.dtype, mon, padding_mode=args.padding_mode, attention="sdpa",
                         **configure_ours(args))

    runs = [("sa3", ours)] + ([("official", lambda mon: load_official(model_dir, mon))] if have_official else [])
    if args.official_first:
        runs.reverse()
    stats, outs = {}, {}
    for label, load in runs:
        stats[label], outs[label] = bench(label, load, monitor, args)
    monitor.close()

    gb = 1e9
    print(f"model {model_dir}, steps {args.steps}, cfg {args.cfg_scale:g}, padding {args.padding_mode}, "
          f"threads {torch.get_num_threads()}, "
          f"our dtype {args.dtype}, "
          f"SAME {args.autoencoder_dtype}, low_memory {args.low_memory}, "
          f"linear {'blas' if args.blas_linear else 'onednn'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"torch {torch.__version__}; {cpu_routes().describe()}")  # the CPU kind the figures belong to
    header = ["impl", "duration_s", "total_s"] + [f"{s}_s" for s in STAGES] + [f"{s}_peak_GB" for s in STAGES]
    rows = [tuple(header)]
    for label, st in stats.items():
        rows.append((label, "load", f"{st['load_time']:.2f}", "", "", "", "", f"{st['load_peak'] / gb:.2f}", ""))
        for d, r in st["results"].items():
            rows.append((label, f"{d:g}", f"{r['total']:.2f}", *(f"{r['t_' + s]:.2f}" for s in STAGES),
                         *(f"{r['rss_' + s] / gb:.2f}" for s in STAGES)))
    print(fmt_table(rows))
    if "official" in stats:
        o, s = stats["official"], stats["sa3"]
        rows = [("duration_s", "speedup_total", *(f"speedup_{x}" for x in STAGES), "peak_ratio", "max_abs_diff",
                 "rel_l2", "latents_rel_l2")]
        rows.append(("load", f"{o['load_time'] / s['load_time']:.2f}", "", "", "",
                     f"{s['load_peak'] / o['load_peak']:.2f}", "", "", ""))
        for d in args.durations:
            ro, rs = o["results"][d], s["results"][d]
            peak_o = max(ro["rss_" + x] for x in STAGES)
            peak_s = max(rs["rss_" + x] for x in STAGES)
            (a, za), (b, zb) = outs["sa3"][d], outs["official"][d]
            a, b = a.float(), b.float()
            same = a.shape == b.shape
            diff = f"{(a - b).abs().max().item():.2e}" if same else f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
            rel = f"{rel_l2(a, b):.2e}" if same else ""
            rows.append((f"{d:g}", f"{ro['total'] / rs['total']:.2f}",
                         *(f"{ro['t_' + x] / max(rs['t_' + x], 1e-9):.2f}" for x in STAGES),
                         f"{peak_s / peak_o:.2f}", diff, rel, f"{latents_rel_l2(za, zb):.2e}"))
        print("official / sa3 time (>1: we are faster); sa3 / official peak RSS (<1: we use less)")
        print(fmt_table(rows))
    print(f"process peak RSS: {monitor.process_peak / gb:.2f} GB")


if __name__ == "__main__":
    main()
