"""Time ``generate()`` per stage (text encode, sampling, decode) and track peak RSS, on CPU.

    python bench/bench_generate.py [--model DIR] [--durations 5 30 120] [--steps 8] [--dtype fp32]

Without ``--model`` it builds (once) a random full-size small-music folder under /tmp
(``bench/_random_model.py``). Stage times come from wrapping the text encoder, the DiT and the
decoder; "sampling" is everything between text encoding and decoding (noise, the DiT cache,
every DiT step). Peak RSS per stage is the maximum resident set size (anonymous and file-backed
pages) while the stage runs, the kernel's high-water mark (see ``StageMonitor``); "load" is
from_pretrained.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROMPT = "warm analog synth arpeggio over a slow house beat, 120 bpm"
STAGES = ("text", "sampling", "decode")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _high_water_mark() -> int:
    """The process's peak RSS since the last ``_reset_high_water_mark`` (Linux VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_high_water_mark() -> bool:
    """Reset VmHWM to the current RSS (``/proc/self/clear_refs``, Linux 4.0+); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StageMonitor:
    """Per-stage wall time and peak RSS. ``stage(name)`` switches the current stage; time and
    the RSS maximum accumulate under the current name until the next switch.

    The peak is the kernel's high-water mark, reset at every switch: exact, and without a
    sampling thread. A thread waking every 2 ms measured 16 % slower on our bf16 30 s generation
    and 2 % on the official code (it preempts one of the two OpenMP threads, and the other waits
    for it at every parallel region), so it is only the fallback where the reset is refused.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.current = None
        self.peak: dict[str, int] = {}
        self.time: dict[str, float] = {}
        self.decoded = None  # the last latents given to a stage wrapped as "decode"
        self.process_peak = 0  # over the monitor's whole life, stages or not (ru_maxrss is reset with VmHWM)
        self._since = time.perf_counter()
        self._stop = threading.Event()
        self._thread = None
        if not _reset_high_water_mark():
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _poll(self):
        while not self._stop.is_set():
            self._note(rss_bytes())
            time.sleep(self.interval)

    def _note(self, rss: int):
        self.process_peak = max(self.process_peak, rss)
        if self.current is not None:
            self.peak[self.current] = max(self.peak.get(self.current, 0), rss)

    def _switch_peak(self):
        """Credit the peak since the last switch to the current stage, and start a new one."""
        if self._thread is None:
            self._note(_high_water_mark())
            _reset_high_water_mark()
        else:
            self._note(rss_bytes())

    def stage(self, name: str | None):
        now = time.perf_counter()
        self._switch_peak()
        if self.current is not None:
            self.time[self.current] = self.time.get(self.current, 0.0) + now - self._since
        self.current, self._since = name, now
        self._switch_peak()

    def reset(self):
        self.stage(None)
        self.peak, self.time = {}, {}

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def wrap(obj, attr: str, monitor: StageMonitor, inner: str, outer: str):
    """Run ``obj.attr`` under stage ``inner``, switching back to ``outer`` afterwards."""
    fn = getattr(obj, attr)

    def timed(*args, **kwargs):
        if inner == "decode":
            monitor.decoded = args[0]  # the latents, for comparing implementations
        monitor.stage(inner)
        try:
            return fn(*args, **kwargs)
        finally:
            monitor.stage(outer)

    setattr(obj, attr, timed)


def run_stages(generate, monitor: StageMonitor, durations, steps: int, seed: int = 0, repeats: int = 1,
               **kwargs) -> dict:
    """Call ``generate`` per duration; returns {duration: {"total", stage times, stage peaks}}.

    The first call of a duration is a warm-up unless ``repeats`` is 0 (then a single timed run).
    """
    results = {}
    for d in durations:
        best = None
        for i in range(max(1, repeats) + (1 if repeats else 0)):
            gc.collect()
            monitor.reset()
            monitor.stage("sampling")
            t0 = time.perf_counter()
            out = generate(prompt=PROMPT, duration=d, steps=steps, seed=seed, **kwargs)
            total = time.perf_counter() - t0
            monitor.stage(None)
            if repeats and i == 0:
                continue  # warm-up
            row = {"total": total, **{f"t_{s}": monitor.time.get(s, 0.0) for s in STAGES},
                   **{f"rss_{s}": monitor.peak.get(s, 0) for s in STAGES}, "output": out,
                   "latents": monitor.decoded}
            if best is None or row["total"] < best["total"]:
                best = row
        results[d] = best
    return results


def load_ours(model_dir, dtype: str, monitor: StageMonitor, **kwargs):
    from sa3 import StableAudioModel

    monitor.reset()
    monitor.stage("load")
    t0 = time.perf_counter()
    model = StableAudioModel.from_pretrained(model_dir, device="cpu", dtype=dtype, **kwargs)
    load_time = time.perf_counter() - t0
    monitor.stage(None)
    wrap(model.text_encoder, "forward", monitor, "text", "sampling")
    wrap(model.autoencoder, "decode", monitor, "decode", None)
    return model, load_time, monitor.peak.get("load", 0)


def fmt_table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Options shared with compare_reference.py: which model, durations, steps, our precision."""
    parser.add_argument("--model", help="model folder (default: random full-size small-music under /tmp)")
    parser.add_argument("--durations", type=float, nargs="+", default=[5, 30, 120])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", default="fp32", help="our DiT/conditioner dtype: fp32, bf16, fp16")
    parser.add_argument("--text-dtype", default=None, help="our T5Gemma dtype (default: the checkpoint's, bf16)")
    parser.add_argument("--autoencoder-dtype", default="fp32", help="our SAME precision: fp32 or bf16-mixed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--low-memory", action="store_true", help="our low_memory mode (release idle parts)")
    parser.add_argument("--blas-linear", action="store_true",
                        help="our fp32 CPU linears through F.linear (MKL) instead of oneDNN")


def parse_run_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, apply the thread count and default to the random full-size small-music folder."""
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is None:
        from _random_model import random_model_dir

        args.model = random_model_dir("small-music")
    return args


def configure_ours(args) -> dict:
    """Apply the run options to sa3; returns the extra from_pretrained kwargs."""
    from sa3.cpu_gemm import set_onednn_linear

    set_onednn_linear(not args.blas_linear)
    return {"text_dtype": args.text_dtype, "autoencoder_dtype": args.autoencoder_dtype, "low_memory": args.low_memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(parser)
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per duration after a warm-up (0: no warm-up)")
    args = parse_run_args(parser)

    monitor = StageMonitor()
    model, load_time, load_peak = load_ours(args.model, args.dtype, monitor, **configure_ours(args))
    results = run_stages(model.generate, monitor, args.durations, args.steps, repeats=args.repeats)
    gb = 1e9
    rows = [("duration_s", "total_s", "text_s", "sampling_s", "decode_s", "peak_rss_GB")]
    for d, r in results.items():
        rows.append((f"{d:g}", f"{r['total']:.2f}", f"{r['t_text']:.2f}", f"{r['t_sampling']:.2f}",
                     f"{r['t_decode']:.2f}", f"{max(r['rss_text'], r['rss_sampling'], r['rss_decode']) / gb:.2f}"))
    print(f"sa3 generate, {args.model}, dtype={args.dtype}, steps={args.steps}, threads={torch.get_num_threads()}, "
          f"low_memory={args.low_memory}, linear={'blas' if args.blas_linear else 'onednn'}")
    print(f"load: {load_time:.2f} s, peak RSS {load_peak / gb:.2f} GB")
    print(fmt_table(rows))
    print(f"process peak RSS: {monitor.process_peak / gb:.2f} GB")
    monitor.close()


if __name__ == "__main__":
    main()
