"""GPU check: every device-dependent behaviour of the pack in one run, one JSON line per check.

    python bench/gpu_check.py                        # on a CUDA machine: every check (no CUDA: says so, exits 0)
    python bench/gpu_check.py --device mps           # the subset a Mac can run
    python bench/gpu_check.py --device cpu           # a fast CPU smoke run of every check (run by the tests)
    python bench/gpu_check.py --json rows.jsonl --comfyui /path/to/ComfyUI --official /path/to/stable-audio-3

Checks, in order (``--only`` picks some of them):

``fp32``    the golden cases of both tiny models (the official outputs) with ``sdpa`` and ``math``
            attention, reference padding, TF32 off (``sa3.devices.official_numerics``); judged at the
            tests' ``GOLDEN_ATOL`` on the CPU and ``DEVICE_FP32_ATOL`` on a GPU (cuBLAS / Metal sum in
            other orders than the CPU that made the goldens).
``lora``    the LoRA golden cases (the -XS ones with their stored SVD bases), fp32, judged as ``fp32``;
            plus a LoRA stack with a noise interval, judged against the same request on the CPU.
``half``    the library's default ``exact`` padding path (a batch of two durations, so padded keys
            exist and flash-attn takes its varlen branch) in fp16 and bf16 with ``sdpa`` and ``flash``,
            judged against fp32 on the same device (``HALF_REL_L2``) and flash against sdpa in the
            same dtype. The noise is drawn in fp32 on a CPU generator and cast (``sa3.rng``), so the
            rows measure precision, never a different random stream.
``sync``    one generation under ``torch.cuda.set_sync_debug_mode("warn")`` at 4 and at 8 steps: the
            host syncs must not grow with the steps (none inside the step loop). CUDA only.
``nodes``   the node graph (Model Loader -> Text Encode -> Sampler -> Decode -> SaveAudio) in a real
            ComfyUI (``--comfyui``, with its requirements in this Python) at its default VRAM policy
            and with ``--novram`` (ComfyUI's partial loading: every layer cast from the CPU as it runs);
            both judged against ``generate()`` on the same device, within the FLAC file's 16-bit step.
``medium``  random full-size ``medium`` (``bench/_random_model.py``) at 30, 120 and 380 s, cfg 7, in the
            default precision, with chunked and unchunked decoding: seconds and peak GPU memory; with
            ``--official`` (or ``SA3_OFFICIAL_PATH``) the official code on the same weights and seed
            beside it (ours with ``device_parity``, so both draw the official stream on the device).
            On the CPU the tiny-medium fixture at 30 s; on a Mac random full-size small-music at 30 s.

The goldens were drawn from a CPU random stream; generation draws from a CPU generator on every
device (``sa3.rng``), so only the arithmetic differs on a GPU. Each row is appended to ``--json``
as soon as it is measured (a crash keeps every row before it). The fixtures are ``SA3_FIXTURES``,
``../shared/fixtures``, ``shared/fixtures`` inside the repository, or the committed subset
(tiny-small only). Needs neither pytest nor anything beside the repository.
Exit status: 0 when every judged row is ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from sa3 import StableAudioModel  # noqa: E402
from sa3.attention import Attention, flash_available  # noqa: E402
from sa3.devices import official_numerics  # noqa: E402
from tests.golden_io import (  # noqa: E402  (no pytest: the fixtures' reader only)
    GOLDEN_ATOL,
    GOLDEN_ATOL_XS,
    case_id,
    cases,
    fixture_root,
    generate_kwargs,
    stored_parts,
)

CHECKS = ("fp32", "lora", "half", "sync", "nodes", "medium")
# fp32 on a GPU with TF32 off: other summation orders than the AVX-512 CPU that made the goldens
DEVICE_FP32_ATOL = 1e-4
# Half precision against fp32 on the same device, relative L2 of the audio. Measured on the CPU
# (Zen 4, sdpa) for the HALF_REQUEST below: fp16 0.038 (tiny-small) / 0.020 (tiny-medium), bf16
# 0.067 / 0.040. The tiny random models are harder on half precision than real weights (no
# trained scale); the bounds leave 2.5-3x room for other kernels and catch what is broken
# (non-finite, wrong padding, mixed-up items: relative L2 near 1).
HALF_REL_L2 = {"fp16": 0.1, "bf16": 0.2}
HALF_REQUEST = dict(prompt=["warm analog pad", "dry drum loop"], duration=[4.0, 7.0], batch_size=2, steps=8,
                    cfg_scale=3.0, seed=3)
CPU_SUBSET = ("t2a_euler", "a2a_noise0.5_sr48k")  # --device cpu: these golden cases of each tiny model
CPU_LORA_SUBSET = ("lora_lora", "lora_dora-rows-xs")
INTERVAL_LORAS = ("lora.safetensors", "dora-cols.safetensors")  # the stack, the second one inside (0.3, 0.8)
PCM16_STEP = 1 / 32768  # SaveAudio writes 16-bit FLAC
PROMPT = "warm analog synth arpeggio over a slow house beat, 120 bpm"


# --- the report ----------------------------------------------------------------------------------


class Rows:
    """The report: rows kept in memory and, with a path, appended as JSON lines as they come."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rows: list[dict] = []
        if path is not None:
            path.write_text("")

    def add(self, check: str, row: dict) -> dict:
        row = {"check": check, **row}
        self.rows.append(row)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        print("  " + "  ".join(f"{k}={_short(v)}" for k, v in row.items()), flush=True)
        return row

    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("status") == "FAIL"]


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    if device == "mps":
        return torch.mps.driver_allocated_memory() / 1e9
    return None


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


# --- fp32 and LoRA goldens -----------------------------------------------------------------------


def max_error(case: dict, result: torch.Tensor) -> float:
    """Max abs difference between a generate() result and every stored slice of the case."""
    worst = 0.0
    result = result.float().cpu()
    for key, got, ref in stored_parts(case, result):
        if got.shape != ref.shape:
            raise RuntimeError(f"{case_id(case)} {key}: shape {tuple(got.shape)} != {tuple(ref.shape)}")
        worst = max(worst, (got - ref).abs().max().item())
    return worst


def generate(model: StableAudioModel, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(**kwargs)


def dit_backend(model: StableAudioModel) -> str:
    return next(m.backend for m in model.dit.modules() if isinstance(m, Attention))


def fp32_rows(device: str, atol: float, out: Rows) -> None:
    chosen = [c for c in cases() if c["kind"] != "lora" and (device != "cpu" or c["case"] in CPU_SUBSET)]
    for attention in ("sdpa", "math"):
        for model_name in sorted({c["model"] for c in chosen}):
            model = StableAudioModel.from_pretrained(fixture_root() / model_name, device=device, dtype="fp32",
                                                     attention=attention, padding_mode="reference")
            for case in (c for c in chosen if c["model"] == model_name):
                result = generate(model, **generate_kwargs(case))
                err, finite = max_error(case, result), bool(torch.isfinite(result).all())
                out.add("fp32", {"case": case_id(case), "attention": attention, "ran": dit_backend(model),
                                 "max_abs_error": err, "atol": atol, "status": verdict(finite and err <= atol)})
            del model
            free(device)


def lora_rows(device: str, atol: float, out: Rows) -> None:
    root = fixture_root()
    chosen = [c for c in cases("lora") if c.get("lora") and (device != "cpu" or c["case"] in CPU_LORA_SUBSET)]
    for model_name in sorted({c["model"] for c in chosen}):
        model = StableAudioModel.from_pretrained(root / model_name, device=device, dtype="fp32", attention="sdpa",
                                                 padding_mode="reference")
        for case in (c for c in chosen if c["model"] == model_name):
            xs = any("-xs" in Path(f).name for f in case["lora"]["files"])
            svd = root / "loras" / model_name / "svd_bases.safetensors" if xs else None
            model.load_lora([root / f for f in case["lora"]["files"]], svd_bases_path=svd)
            try:
                for call in case["lora"]["calls"]:
                    model.set_lora_strength(call["strength"], lora_index=call["lora_index"])
                result = generate(model, **generate_kwargs(case))
            finally:
                model.unload_lora()
            err = max_error(case, result)
            out.add("lora", {"case": case_id(case), "max_abs_error": err, "atol": atol,
                             "status": verdict(bool(torch.isfinite(result).all()) and err <= atol)})
        del model
        free(device)
    out.add("lora", interval_row(device, atol))


def interval_row(device: str, atol: float) -> dict:
    """A two-LoRA stack, the second active only inside a noise interval: the device's audio against
    the CPU's for the same request (the interval is decided per DiT call from the noise level)."""
    folder = fixture_root() / "tiny-small"
    files = [fixture_root() / "loras" / "tiny-small" / name for name in INTERVAL_LORAS]
    request = dict(prompt="slow strings", duration=5.0, steps=8, cfg_scale=3.0, seed=11)
    results = {}
    for where in dict.fromkeys(("cpu", device)):
        model = StableAudioModel.from_pretrained(folder, device=where, dtype="fp32", attention="sdpa",
                                                 padding_mode="reference")
        model.load_lora(files)
        model.set_lora_strength(0.8, lora_index=1)
        model.set_lora_options(1, interval=(0.3, 0.8))
        results[where] = generate(model, **request).float().cpu()
        del model
    err = (results[device] - results["cpu"]).abs().max().item()
    return {"case": "tiny-small/interval_stack", "max_abs_error": err, "atol": atol, "against": "cpu",
            "status": verdict(bool(torch.isfinite(results[device]).all()) and err <= atol)}


# --- half precision on the default path ----------------------------------------------------------


@contextlib.contextmanager
def counting_varlen() -> Iterator[list[int]]:
    """Counts flash-attn's varlen calls while the block runs (the library imports the function at
    call time, so wrapping the module attribute sees every call)."""
    calls = [0]
    if not flash_available():
        yield calls
        return
    import flash_attn

    real = flash_attn.flash_attn_varlen_func

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    flash_attn.flash_attn_varlen_func = counted
    try:
        yield calls
    finally:
        flash_attn.flash_attn_varlen_func = real


def half_model(name: str, device: str, dtype: str, attention: str) -> StableAudioModel:
    """A fixture model on the library's default path (``exact`` padding)."""
    return StableAudioModel.from_pretrained(fixture_root() / name, device=device, dtype=dtype, attention=attention)


def half_rows(device: str, out: Rows) -> None:
    names = [n for n in ("tiny-small", "tiny-medium") if (fixture_root() / n).is_dir()]
    dtypes = ("fp16", "bf16")
    attentions = ("sdpa", "flash") if device == "cuda" else ("sdpa",)
    for name in names:
        reference = generate(half_model(name, device, "fp32", "sdpa"), **HALF_REQUEST)
        free(device)
        for dtype in dtypes:
            by_attention = {}
            for attention in attentions:
                row = {"model": name, "dtype": dtype, "attention": attention}
                if attention == "flash" and not flash_available():
                    out.add("half", {**row, "status": "skipped (flash-attn not installed)"})
                    continue
                model = half_model(name, device, dtype, attention)
                with counting_varlen() as varlen:
                    audio = generate(model, **HALF_REQUEST).float().cpu()
                ran = dit_backend(model)
                del model
                free(device)
                by_attention[attention] = audio
                err = rel_l2(audio, reference)
                ok = bool(torch.isfinite(audio).all()) and err <= HALF_REL_L2[dtype]
                if attention == "flash":  # padded keys exist, so the varlen kernel must have run
                    row["varlen_calls"] = varlen[0]
                    ok = ok and ran == "flash" and varlen[0] > 0
                out.add("half", {**row, "ran": ran, "rel_l2_vs_fp32": err, "bound": HALF_REL_L2[dtype],
                                 "status": verdict(ok)})
            if "flash" in by_attention:
                err = rel_l2(by_attention["flash"], by_attention["sdpa"])
                out.add("half", {"model": name, "dtype": dtype, "attention": "flash vs sdpa", "rel_l2": err,
                                 "bound": HALF_REL_L2[dtype], "status": verdict(err <= HALF_REL_L2[dtype])})


# --- host syncs ----------------------------------------------------------------------------------


def sync_row(device: str) -> dict:
    """Host syncs of one generation at 4 and at 8 steps: equal counts mean none per step."""
    if device != "cuda":
        return {"status": f"skipped (sync debug mode is CUDA only; device {device})"}
    model = StableAudioModel.from_pretrained(fixture_root() / "tiny-small", device=device, dtype="fp16")
    generate(model, prompt=PROMPT, duration=5.0, steps=2, seed=1)  # warm-up: lazy one-time work
    counts, places = {}, set()
    for steps in (4, 8):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                generate(model, prompt=PROMPT, duration=5.0, steps=steps, seed=1)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        counts[steps] = len(syncs)
        places |= {f"{Path(w.filename).name}:{w.lineno}" for w in syncs}
    return {"syncs_at_4_steps": counts[4], "syncs_at_8_steps": counts[8], "where": sorted(places)[:10],
            "status": verdict(counts[8] == counts[4])}


# --- the node graph in a real ComfyUI ------------------------------------------------------------


NODE_REQUEST = dict(prompt="bright marimba melody", duration=6.0, steps=8, cfg=3.0, seed=5)


def node_graph(prefix: str) -> dict:
    r = NODE_REQUEST
    return {
        "1": {"class_type": "SA3ModelLoader", "inputs": {
            "model_name": "small-music", "precision": "fp32", "attention": "sdpa", "padding_mode": "exact",
            "download": False, "low_memory": False, "autoencoder_precision": "fp32"}},
        "2": {"class_type": "SA3TextEncode", "inputs": {
            "prompt": r["prompt"], "negative_prompt": "", "duration": r["duration"], "one_prompt_per_line": False,
            "durations": "", "batch_size": 1, "model": ["1", 0]}},
        "3": {"class_type": "SA3Sampler", "inputs": {
            "seed": r["seed"], "steps": r["steps"], "cfg": r["cfg"], "sampler": "default for the model",
            "apg_scale": 1.0, "init_noise_level": 1.0, "preview_every": 0, "model": ["1", 0], "positive": ["2", 0]}},
        "4": {"class_type": "SA3Decode", "inputs": {
            "chunked": "auto", "trim": True, "decoder_seed": -1, "model": ["1", 0], "latent": ["3", 0]}},
        "5": {"class_type": "SaveAudio", "inputs": {"filename_prefix": prefix, "audio": ["4", 0]}},
    }


def node_rows(device: str, comfyui: Path | None, out: Rows) -> None:
    if comfyui is None or not (comfyui / "main.py").is_file():
        out.add("nodes", {"status": "skipped (no ComfyUI: pass --comfyui /path/to/ComfyUI)"})
        return
    import soundfile

    from tests.comfy_server import ComfyServer

    folder = fixture_root() / "tiny-small"
    model = StableAudioModel.from_pretrained(folder, device=device, dtype="fp32", attention="sdpa")
    r = NODE_REQUEST
    expected = generate(model, prompt=r["prompt"], duration=r["duration"], steps=r["steps"],
                        cfg_scale=r["cfg"], seed=r["seed"])[0].float().cpu()
    del model
    free(device)
    device_args = {"cpu": ["--cpu"], "cuda": [], "mps": []}[device]
    with tempfile.TemporaryDirectory(prefix="sa3-gpu-check-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        (models / "small-music").symlink_to(folder, target_is_directory=True)
        for policy, extra in (("default", []), ("novram", ["--novram"])):
            if policy == "novram" and device == "cpu":  # partial loading on a fake GPU: tests/nodes
                out.add("nodes", {"vram": policy, "status": "skipped (ComfyUI refuses --novram with --cpu)"})
                continue
            server = ComfyServer(Path(tmp) / policy, {"stable_audio_3": models}, comfyui=comfyui,
                                 python=sys.executable, device_args=[*device_args, *extra])
            row = {"vram": policy}
            try:
                server.start()
                entry = server.run(node_graph(f"gpu_check_{policy}"), timeout=600)
                ok = entry["status"].get("status_str") == "success"
                files = sorted((server.dirs["output"]).glob(f"gpu_check_{policy}_*.flac"))
                if not ok or not files:
                    out.add("nodes", {**row, "status": "FAIL", "log": server.log()[-2000:]})
                    continue
                audio, rate = soundfile.read(files[0], dtype="float32", always_2d=True)
                got = torch.from_numpy(audio.T.copy())
                err = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
                bound = 1.01 * PCM16_STEP + DEVICE_FP32_ATOL
                out.add("nodes", {**row, "max_abs_error": err, "bound": bound, "sample_rate": rate,
                                  "status": verdict(err <= bound)})
            except (RuntimeError, OSError, TimeoutError, AssertionError) as e:
                out.add("nodes", {**row, "status": "FAIL", "error": str(e)[-2000:]})
            finally:
                server.stop()


# --- speed and memory ----------------------------------------------------------------------------


def medium_setup(device: str) -> tuple[Path, str, tuple[float, ...]]:
    if device == "cpu":
        name = "tiny-medium" if (fixture_root() / "tiny-medium").is_dir() else "tiny-small"
        return fixture_root() / name, f"{name} fixture", (30.0,)
    from _random_model import random_model_dir

    if device == "mps":
        return random_model_dir("small-music"), "small-music, random full-size weights", (30.0,)
    return random_model_dir("medium"), "medium, random full-size weights", (30.0, 120.0, 380.0)


def timed(device: str, model, **request) -> tuple[torch.Tensor, float, float | None]:
    """One generation: its audio, seconds and peak device memory (GB; None on the CPU)."""
    sync(device)
    free(device)
    peak_reset(device)
    start = time.perf_counter()
    audio = generate(model, **request)
    sync(device)
    return audio, time.perf_counter() - start, peak_gb(device)


def official_model(folder: Path, device: str, official: Path | None):
    """The official StableAudioModel on ``folder`` with its own device defaults (fp16 on CUDA), or
    None (with the reason) where its package does not import."""
    if official is None:
        return None, "no official checkout (--official or SA3_OFFICIAL_PATH)"
    sys.path.insert(0, str(official))
    try:
        from compare_reference import build_official
    except ImportError as e:
        return None, f"official code not importable: {e}"
    return build_official(folder, device, model_half=device == "cuda"), ""


def medium_rows(device: str, official: Path | None, out: Rows) -> None:
    folder, what, durations = medium_setup(device)
    request = dict(prompt=PROMPT, steps=8, cfg_scale=7.0, seed=1, device_parity=True)
    model = StableAudioModel.from_pretrained(folder, device=device)
    generate(model, duration=5.0, **request)  # warm-up: kernels, caches
    ours = {}
    for duration in durations:
        for chunked in (False, True):
            audio, seconds, peak = timed(device, model, duration=duration, chunked_decode=chunked, **request)
            ours[duration] = audio.float().cpu()
            out.add("medium", {"impl": "sa3", "model": what, "duration_s": duration, "chunked_decode": chunked,
                               "seconds": seconds, "peak_gpu_GB": peak,
                               "status": verdict(bool(torch.isfinite(audio).all()))})
    del model
    free(device)
    ref, why = official_model(folder, device, official)
    if ref is None:
        out.add("medium", {"impl": "official", "status": f"skipped ({why})"})
        return
    kwargs = {k: v for k, v in request.items() if k != "device_parity"}
    generate(ref, duration=5.0, **kwargs)
    for duration in durations:
        audio, seconds, peak = timed(device, ref, duration=duration, **kwargs)
        audio = audio.float().cpu()
        same = audio.shape == ours[duration].shape
        out.add("medium", {"impl": "official", "model": what, "duration_s": duration, "seconds": seconds,
                           "peak_gpu_GB": peak, "ours_rel_l2": rel_l2(ours[duration], audio) if same else None,
                           "status": verdict(bool(torch.isfinite(audio).all()))})


# --- main ----------------------------------------------------------------------------------------


def describe(device: str) -> str:
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return (f"{torch.cuda.get_device_name()} (compute capability {major}.{minor}, torch {torch.__version__}, "
                f"flash-attn {'installed' if flash_available() else 'not installed'})")
    if device == "mps":
        return f"Apple MPS (torch {torch.__version__})"
    return f"the CPU (torch {torch.__version__}): the fast subset"


def device_missing(device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return ("no CUDA device here (torch.cuda.is_available() is False); nothing to check. Run it on a CUDA "
                "machine, with --device mps on a Mac, or with --device cpu for the CPU smoke run.")
    if device == "mps" and not torch.backends.mps.is_available():
        return "no MPS device here (torch.backends.mps.is_available() is False); nothing to check."
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "mps", "cpu"), default="cuda",
                        help="cuda (default; exits 0 with a note when there is none), mps, or cpu (smoke run)")
    parser.add_argument("--json", type=Path, help="also write the rows, one JSON line per check as it is measured")
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS), help="run these checks only")
    parser.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH") or None,
                        help="a ComfyUI checkout for the node graph check (default: $COMFYUI_PATH)")
    parser.add_argument("--official", type=Path, default=os.environ.get("SA3_OFFICIAL_PATH") or None,
                        help="a checkout of Stability-AI/stable-audio-3 for the side by side (default: "
                             "$SA3_OFFICIAL_PATH)")
    args = parser.parse_args(argv)
    missing = device_missing(args.device)
    if missing:
        print(f"gpu_check: {missing}")
        return 0
    if fixture_root() is None:
        print("gpu_check: golden fixtures not found (set SA3_FIXTURES)", file=sys.stderr)
        return 1
    atol = GOLDEN_ATOL if args.device == "cpu" else DEVICE_FP32_ATOL
    print(f"gpu_check on {describe(args.device)}; fixtures {fixture_root()}")
    out = Rows(args.json)
    out.add("run", {"device": args.device, "name": describe(args.device), "fp32_atol": atol,
                    "xs_atol": GOLDEN_ATOL_XS, "checks": args.only})
    steps = {"fp32": lambda: fp32_rows(args.device, atol, out), "lora": lambda: lora_rows(args.device, atol, out),
             "half": lambda: half_rows(args.device, out), "sync": lambda: out.add("sync", sync_row(args.device)),
             "nodes": lambda: node_rows(args.device, args.comfyui, out),
             "medium": lambda: medium_rows(args.device, args.official, out)}
    with official_numerics(args.device):  # TF32 and reduced-precision reductions off, for this run only
        for check in args.only:
            print(f"\n## {check}", flush=True)
            steps[check]()
    failed = out.failed()
    print(f"\ngpu_check: {f'FAILED: {len(failed)} row(s)' if failed else 'every judged row ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
