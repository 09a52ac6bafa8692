"""Find official model files (local folder or Hugging Face hub) and load them into our modules
with strict key checking.

An official model folder holds ``model_config.json``, ``model.safetensors`` (keys
``model.model.*`` for the DiT, ``conditioner.*``, ``pretransform.model.*`` for SAME) and the
``t5gemma-b-b-ul2/`` text-encoder folder. Standalone SAME folders hold bare SAME keys.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import mmap
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from .config import AUTOENCODER_REPOS, MODEL_REPOS, ModelConfig, read_json_file
from .same import SAMEConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_FOLDER = "t5gemma-b-b-ul2"
TEXT_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer.model",
              "tokenizer_config.json", "special_tokens_map.json"]
TEXT_REQUIRED = ["config.json", "model.safetensors"]  # the others are optional tokenizer extras
CHECKPOINT_PREFIXES = {"dit": "model.model.", "conditioner": "conditioner.", "autoencoder": "pretransform.model."}
# A safetensors file starts with the byte length of its JSON header (little-endian u64). The official
# SA3 medium checkpoint's header is 134 KB (about 1,000 tensors); bounding it keeps a hostile header
# (millions of tensors, or a pickle whose first bytes read as an absurd length) from costing seconds and
# gigabytes before anything is checked.
MAX_HEADER_BYTES = 2 << 20
MAX_TENSORS = 20_000  # tensors in one file (official: < 1,000)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def hub_download(repo_id: str, files: list[str], required: list[str], *, cache_dir: str | Path | None = None,
                 local_dir: str | Path | None = None, download: bool = True) -> Path:
    """Fetch ``files`` (paths in the repo; a missing one is fine unless it is in ``required``) with
    ``huggingface_hub.snapshot_download`` and return the snapshot folder (``local_dir`` when given).
    Honours HF_TOKEN, HF_HUB_OFFLINE and the HF cache; ``download=False`` only looks in the local
    cache. Every failure is a RuntimeError that says what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=files, cache_dir=cache_dir, local_dir=local_dir,
                                        token=os.environ.get("HF_TOKEN"), local_files_only=not download))
    except GatedRepoError as e:  # a subclass of RepositoryNotFoundError, so caught first
        raise RuntimeError(
            f"Stable Audio 3: {repo_id!r} is a gated model. Accept its license on huggingface.co/{repo_id} "
            "and set HF_TOKEN (or run `huggingface-cli login`), then try again."
        ) from e
    except RepositoryNotFoundError as e:
        raise RuntimeError(f"Stable Audio 3: hub repository {repo_id!r} not found "
                           "(or no access: check HF_TOKEN).") from e
    except LocalEntryNotFoundError as e:  # offline, no network, or download=False without a cached copy
        raise RuntimeError(
            f"Stable Audio 3: {required} of {repo_id!r} are not in the local cache and downloading is not possible "
            "(offline mode or no network). Download the model once with network access, or pass a local folder."
        ) from e
    missing = [name for name in required if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"Stable Audio 3: {repo_id!r} has no file {missing[0]!r}.")
    return folder


@contextmanager
def staged_download(target: str | Path) -> Iterator[Path]:
    """A hidden folder beside ``target`` to download into; its files move into ``target`` when the
    block succeeds. A failed or interrupted download leaves nothing behind: no partial files, and
    no ``target`` (or parent) folder that was not there before."""
    target = Path(target)
    created = [p for p in (target, *target.parents) if not p.exists()]  # deepest first
    stage = target.parent / f".{target.name}.download"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage, ignore_errors=True)  # left by a killed process
    try:
        yield stage
        for file in sorted(stage.rglob("*")):
            rel = file.relative_to(stage)
            if file.is_file() and rel.parts[0] != ".cache":  # .cache: huggingface_hub's bookkeeping
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target / rel)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _folder_or_hub(name_or_path: str | Path, repos: dict[str, str], kind: str, layout: str, **hub_kwargs) -> Path:
    """A local folder holding ``model_config.json``, or a name of ``repos`` fetched from the hub
    (config and weights). ``kind`` and ``layout`` word the errors."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise RuntimeError(f"Stable Audio 3: {str(path)!r} has no {CONFIG_FILE}; expected {layout}.")
        return path
    name = str(name_or_path)
    if name not in repos:
        raise ValueError(f"Stable Audio 3: unknown {kind} {name!r}: neither a folder nor one of {sorted(repos)}.")
    return hub_download(repos[name], [CONFIG_FILE, WEIGHTS_FILE], [CONFIG_FILE, WEIGHTS_FILE], **hub_kwargs)


def resolve_model_dir(name_or_path: str | Path, *, cache_dir: str | Path | None = None,
                      local_dir: str | Path | None = None, download: bool = True) -> Path:
    """A local official folder, or one of the six model names downloaded from the hub."""
    return _folder_or_hub(name_or_path, MODEL_REPOS, "model",
                          f"an official model folder ({CONFIG_FILE}, {WEIGHTS_FILE}, {TEXT_FOLDER}/)",
                          cache_dir=cache_dir, local_dir=local_dir, download=download)


def resolve_text_dir(model_dir: Path, repo_id: str | None, subfolder: str | None, *,
                     cache_dir=None, local_dir=None, download: bool = True) -> Path:
    """The model folder's own text-encoder subfolder, else the repo the config names (from the
    local cache only with ``download=False``)."""
    sub = subfolder or TEXT_FOLDER
    local = model_dir / sub
    if (local / "config.json").is_file():
        return local
    if repo_id is None:
        raise RuntimeError(f"Stable Audio 3: text encoder folder {str(local)!r} is missing.")
    root = hub_download(repo_id, [f"{sub}/{name}" for name in TEXT_FILES],
                        [f"{sub}/{name}" for name in TEXT_REQUIRED], cache_dir=cache_dir, local_dir=local_dir,
                        download=download)
    return root / sub


# safe_open memory-maps the whole file, and the pages a conversion reads stay resident until that
# handle is closed and its tensors are gone: converted tensors are read through short-lived handles
# of their own, each closed after this many source bytes (measured converting a 400 MB fp32 file to
# bf16: one handle peaks at +604 MB RSS, one handle per 64 MB at +285 MB, the bf16 copy + a chunk)
CONVERT_CHUNK_BYTES = 64 << 20


def _read_converted(path: Path, targets: dict[str, torch.dtype]) -> dict[str, torch.Tensor]:
    """Converted copies of ``targets`` (key -> dtype), read in chunks of CONVERT_CHUNK_BYTES."""
    out: dict[str, torch.Tensor] = {}
    pending = list(targets)
    while pending:
        read = 0
        with safe_open(str(path), framework="pt") as f:
            while pending and read < CONVERT_CHUNK_BYTES:
                key = pending.pop(0)
                source = f.get_tensor(key)  # memory-mapped; only this chunk's pages become resident
                read += source.numel() * source.element_size()
                out[key] = source.to(targets[key])
                del source
    return out


def read_checkpoint(path: str | Path, dtype: torch.dtype | None = None,
                    dtype_by_prefix: dict[str, torch.dtype] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file.

    Tensors kept in their stored dtype are zero-copy memory-mapped views: nothing is read until
    used, and parts never used (the SAME encoder for text-to-audio) never become resident.
    Floating tensors converted (``dtype`` for all, or ``dtype_by_prefix`` for keys starting with
    a prefix) are read through separate, short-lived handles into the converted copy, so loading
    a bf16 model from an fp32 file never holds the fp32 weights as well.
    """
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"Stable Audio 3: checkpoint {str(path)!r} does not exist.")
    check_safetensors_header(path)
    rules = dict(dtype_by_prefix or {})
    tensors: dict[str, torch.Tensor] = {}
    targets: dict[str, torch.dtype] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                tensor = f.get_tensor(key)  # memory-mapped, zero-copy: no data is read here
                want = next((d for prefix, d in rules.items() if key.startswith(prefix)), dtype)
                if want is not None and tensor.is_floating_point() and tensor.dtype != want:
                    targets[key] = want
                else:
                    tensors[key] = tensor
        tensors.update(_read_converted(path, targets))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise RuntimeError(f"Stable Audio 3: cannot read checkpoint {str(path)!r} ({e}).") from e
    return {key: tensors[key] for key in keys}  # the file's order


_MADV_DONTNEED = 4  # Linux
# /proc/self/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst); readable without privileges
_PAGE_PRESENT, _PAGE_FILE = 63, 61  # bit 61: a file page; a written page of a private mapping is anonymous


def _private_file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's private file mappings, sorted (Linux /proc/self/maps)."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[1].endswith("p") and fields[5].startswith("/"):
                start, end = (int(v, 16) for v in fields[0].split("-"))
                ranges.append((start, end))
    return sorted(ranges)


def _file_page_runs(pagemap, first: int, last: int, page: int) -> list[tuple[int, int]]:
    """Address runs [start, end) of the pages in [first, last) that are resident and still the
    file's own pages (never written: writing a page of a private mapping replaces it with an
    anonymous copy), from this process's pagemap."""
    n = (last - first) // page
    pagemap.seek(first // page * 8)
    entries = torch.frombuffer(bytearray(pagemap.read(n * 8)), dtype=torch.int64)  # (n,) one per page
    both = 1 | 1 << (_PAGE_PRESENT - _PAGE_FILE)  # the file bit and the present bit, shifted down to bits 0 and 2
    keep = ((entries >> _PAGE_FILE) & both) == both  # (n,) bool (>> copies the sign bit; & drops the copies)
    edges = torch.diff(keep.to(torch.int8), prepend=keep.new_zeros(1, dtype=torch.int8),
                       append=keep.new_zeros(1, dtype=torch.int8))  # +1 where a run starts, -1 after it ends
    starts = (edges == 1).nonzero().flatten().tolist()
    ends = (edges == -1).nonzero().flatten().tolist()
    return [(first + a * page, first + b * page) for a, b in zip(starts, ends, strict=True)]


def release_mapped_weights(module: nn.Module, trim_heap: bool = True) -> int:
    """Drop the resident pages of ``module``'s memory-mapped weights from this process (Linux).

    Only pages that are still exactly what the checkpoint file holds are dropped: pages of
    contiguous tensors inside a private file mapping that the kernel still maps from the file
    (``/proc/self/pagemap``). A page written since loading (a LoRA merge, any in-place write) is
    an anonymous copy and stays, since dropping it would restore the file's values. This asks
    the kernel instead of tensor version counters, which inference tensors (every model loaded
    inside ComfyUI) do not keep. The next access reads the pages again from the page cache (or
    disk), so this trades a little time at the next use for a lower peak resident memory while
    other stages run. Returns the number of bytes released (0 where pagemap is not readable).
    ``trim_heap=False`` skips the heap trim (for calls in the middle of a stage).
    """
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    if trim_heap and hasattr(libc, "malloc_trim"):  # glibc: hand freed heap memory (the last stage's activations) back
        libc.malloc_trim(0)
    mappings = _private_file_mappings()
    starts = [start for start, _ in mappings]
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    released, seen = 0, set()
    try:
        pagemap = open("/proc/self/pagemap", "rb", buffering=0)
    except OSError:
        return 0
    with pagemap:
        for t in (*module.parameters(), *module.buffers()):
            if t.device.type != "cpu" or not t.is_contiguous() or t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            begin, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
            i = bisect.bisect_right(starts, begin) - 1
            if i < 0 or end > mappings[i][1]:
                continue  # not (entirely) a file mapping: an ordinary allocation
            first, last = -(-begin // page) * page, end // page * page  # whole pages inside the tensor
            if last <= first:
                continue
            for run_start, run_end in _file_page_runs(pagemap, first, last, page):
                if madvise(run_start, run_end - run_start, _MADV_DONTNEED) == 0:
                    released += run_end - run_start
    return released


def split_checkpoint(state: dict[str, torch.Tensor], path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official SA3 state dict into dit / conditioner / autoencoder parts (prefixes
    stripped). Keys outside the three prefixes are an error."""
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in CHECKPOINT_PREFIXES}
    stray = []
    for key, value in state.items():
        for name, prefix in CHECKPOINT_PREFIXES.items():
            if key.startswith(prefix):
                parts[name][key[len(prefix):]] = value
                break
        else:
            stray.append(key)
    if stray:
        raise RuntimeError(
            f"Stable Audio 3: {str(path)!r} has {len(stray)} key(s) that belong to no SA3 part, e.g. {stray[:3]} "
            "(is this a Stable Audio 3 checkpoint?)."
        )
    return parts


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, path: str | Path) -> nn.Module:
    """Load ``state`` into ``module`` requiring the exact same keys and shapes; ``assign`` avoids a
    second copy of the weights (build the module on the meta device)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RuntimeError(
            f"Stable Audio 3: the {what} weights in {str(path)!r} do not match the model config: "
            f"{len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}."
        )
    wrong = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in expected
             if state[k].shape != expected[k].shape]
    if wrong:
        k, got, want = wrong[0]
        raise RuntimeError(
            f"Stable Audio 3: the {what} weights in {str(path)!r} have {len(wrong)} tensor(s) of the wrong shape, "
            f"e.g. {k!r}: {got} (expected {want})."
        )
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def check_safetensors_header(path: Path) -> None:
    """Refuse a file whose first 8 bytes do not announce a safetensors header of at most
    ``MAX_HEADER_BYTES`` inside the file (an empty or truncated file, a pickle or any other format
    under a .safetensors name), reading only those 8 bytes; nothing in the file is ever unpickled."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            lead = f.read(8)
    except OSError as e:
        raise RuntimeError(f"Stable Audio 3: cannot read {str(path)!r} ({e}).") from e
    length = int.from_bytes(lead, "little") if len(lead) == 8 else None
    if length is None or not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
        got = (f"a {size}-byte file" if length is None else
               f"a header of {length:,} bytes in a file of {size:,} bytes")
        raise RuntimeError(f"Stable Audio 3: {str(path)!r} must be a safetensors file with a header of at most "
                           f"{MAX_HEADER_BYTES:,} bytes (got {got}). Use the model's .safetensors file as downloaded; "
                           "other formats (.ckpt, .pt, pickles) are never read.")


def read_json(path: Path) -> dict:
    return read_json_file(path)


def resolve_autoencoder_dir(name_or_path: str | Path, **hub_kwargs) -> Path:
    """A local SAME folder (or a full SA3 folder), or 'same-s' / 'same-l' from the hub."""
    return _folder_or_hub(name_or_path, AUTOENCODER_REPOS, "autoencoder",
                          f"a SAME or SA3 model folder ({CONFIG_FILE}, {WEIGHTS_FILE})", **hub_kwargs)


def read_config(path: str | Path) -> tuple[ModelConfig, SAMEConfig]:
    """``model_config.json`` parsed and checked whole (DiT, conditioners and SAME parts) before any
    weights are read; a problem names the file and the key."""
    config = ModelConfig.from_file(path)
    return config, same_config(config, path)


def same_config(config: ModelConfig, path: str | Path) -> SAMEConfig:
    """The SAME part of ``config``, parsed and every size bounded; a problem is a ValueError naming
    the key and the file it came from (``path``)."""
    try:
        return SAMEConfig.from_official(config.pretransform)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(e).rstrip('.')} in {str(path)!r}.") from e
