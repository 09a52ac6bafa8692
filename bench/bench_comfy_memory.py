"""Peak RSS and time per node of a text-to-audio graph run as ComfyUI runs it: the real ComfyUI
modules (``COMFYUI_PATH``, forced onto the CPU), the pack imported as a custom node, and every
node's ``execute`` under ``torch.inference_mode()`` one after another, as ComfyUI's executor does.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_comfy_memory.py [--model DIR] [--duration 120]
        [--precision fp32] [--low-memory] [--grad-mode inference|no_grad] [--threads 2]

Without ``--model`` it uses the random full-size small-music folder (``bench/_random_model.py``).
``--grad-mode no_grad`` runs the same graph under ``torch.no_grad()`` instead, to see what
inference mode itself changes. Peak RSS per node is the kernel's high-water mark
(``bench_generate.StageMonitor``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import PROMPT, StageMonitor, fmt_table, rss_bytes  # noqa: E402

PACK = "sa3_pack"


def import_comfyui_and_pack(models_parent: Path):
    """The real ComfyUI on the CPU, our model folder registered, the pack loaded as ComfyUI loads it."""
    path = os.environ.get("COMFYUI_PATH")
    if not path or not Path(path, "comfy").is_dir():
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.append(path)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management is imported
    import folder_paths

    folder_paths.add_model_folder_path("stable_audio_3", str(models_parent))
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{PACK}.nodes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: random full-size small-music under /tmp)")
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precision", default="fp32", help="loader precision: fp32, bf16, ...")
    parser.add_argument("--autoencoder-precision", default="auto", help="auto, fp32, bf16-mixed")
    parser.add_argument("--low-memory", action="store_true")
    parser.add_argument("--grad-mode", choices=["inference", "no_grad"], default="inference")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is None:
        from _random_model import random_model_dir

        args.model = random_model_dir("small-music")
    model_dir = Path(args.model)
    rss_start = rss_bytes()
    nodes = import_comfyui_and_pack(model_dir.parent)
    rss_imported = rss_bytes()
    grad_mode = torch.inference_mode if args.grad_mode == "inference" else torch.no_grad

    monitor = StageMonitor()
    times = {}

    @contextlib.contextmanager
    def node(name):
        monitor.stage(name)
        t0 = time.perf_counter()
        with grad_mode():
            yield
        times[name] = time.perf_counter() - t0
        monitor.stage(None)

    with node("loader"):
        (model,) = nodes.SA3ModelLoader.execute(model_name=model_dir.name, precision=args.precision, attention="auto",
                                                padding_mode="exact", download=False, low_memory=args.low_memory,
                                                autoencoder_precision=args.autoencoder_precision).args
    with node("text_encode"):
        pos, neg = nodes.SA3TextEncode.execute(model=model, prompt=PROMPT, negative_prompt="", duration=args.duration,
                                               one_prompt_per_line=False, durations="").args
    with node("empty_latent"):
        (latent,) = nodes.SA3EmptyLatent.execute(model=model, duration=args.duration, batch_size=1, durations="").args
    with node("sampler"):
        (sampled,) = nodes.SA3Sampler.execute(model=model, positive=pos, negative=neg, latent=latent, seed=0,
                                              steps=args.steps, cfg=1.0, sampler="default for the model",
                                              apg_scale=1.0).args
    with node("decode"):
        (audio,) = nodes.SA3Decode.execute(model=model, latent=sampled, chunked="auto", trim=True).args
    monitor.close()

    gb = 1e9
    print(f"{model_dir}, {args.duration:g} s, {args.steps} steps, precision {args.precision}, autoencoder "
          f"{args.autoencoder_precision}, low_memory {args.low_memory}, under torch.{grad_mode.__name__}(), "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"RSS at start {rss_start / gb:.2f} GB, after importing ComfyUI + the pack {rss_imported / gb:.2f} GB")
    rows = [("node", "time_s", "peak_rss_GB")]
    rows += [(name, f"{t:.2f}", f"{monitor.peak.get(name, 0) / gb:.2f}") for name, t in times.items()]
    print(fmt_table(rows))
    print(f"audio {tuple(audio['waveform'].shape)}; peak RSS over all nodes {max(monitor.peak.values()) / gb:.2f} GB; "
          f"process peak {monitor.process_peak / gb:.2f} GB")


if __name__ == "__main__":
    main()
