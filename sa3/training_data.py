"""LoRA training data: a folder of audio clips with same-name ``.txt`` captions, checked, read
and pre-encoded once (SAME latents + T5Gemma prompt embeddings), then cropped per step.

Official recipe (``scripts/pre_encode_dataset.py``, ``train_lora.py``, ``data/dataset.py``):
- every ``clip.wav|flac|mp3|ogg`` needs ``clip.txt`` (its prompt); audio is resampled to 44.1 kHz,
  made stereo, randomly polarity-flipped (p = 0.5), clamped to [-1, 1]; silent clips (peak below
  -60 dBFS) are rejected; ``seconds_total`` = ceil(samples / 44100) of the whole clip;
- each clip is encoded once, whole, by SAME, unchunked, zero-padded to ``sample_size`` and cut
  after its last valid frame (ceil(S / 4096) frames; ``encode_exact`` pads only as far as the
  encoder reaches, which gives the same values); a latent of silence pads shorter clips;
- per step, a clip longer than the crop is cropped at a random start, a shorter one padded with
  the silence latent and its padding mask set to 0 there.

Everything random draws from explicit ``torch.Generator`` objects (never the global RNG).

Legend: C latent channels, L latent frames, S audio samples, P prompt tokens (256), E width (768).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import audio as audio_utils
from .config import SAMPLE_RATE, SAMPLES_PER_LATENT

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")  # the official trainer's
CAPTION_EXTENSION = ".txt"
MIN_SOURCE_RATE = 8000  # Hz; below this a clip cannot carry the music SA3 makes
MAX_SOURCE_RATE = 384000  # Hz; above this the resampling kernel grows past any real recording
SILENCE_DB = -60.0  # official is_silence threshold (peak, dBFS)
MAX_CLIP_SECONDS = 16777216 / SAMPLE_RATE  # the largest model's sample_size (medium, ~380 s)
MAX_DATASET_SECONDS = 4 * 3600.0  # total audio held in memory (float32 stereo ~5 GB)
MAX_CLIPS = 10000
PHASE_FLIP_P = 0.5  # official PhaseFlipper


class TrainingDataError(ValueError):
    """A training folder or clip that cannot be used; nothing was trained."""


def _error(what: str, fix: str) -> TrainingDataError:
    return TrainingDataError(f"Stable Audio 3 training data: {what}. {fix}.")


@dataclass(frozen=True)
class TrainingClip:
    """One checked clip: audio at 44.1 kHz stereo float32, its caption and official seconds_total."""

    path: Path
    caption: str
    audio: torch.Tensor  # (2, S) float32 in [-1, 1]
    source_rate: int  # the file's own sample rate (before resampling)
    seconds_total: int  # ceil(S / 44100) of the whole clip, the official duration conditioning

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / SAMPLE_RATE


MAX_FOLDER_ENTRIES = 100_000  # files and folders looked at under a training folder before refusing it
MAX_CAPTION_CHARS = 100_000  # as a prompt (sa3.checks.MAX_PROMPT_CHARS); T5Gemma keeps ~1,500 of them
MAX_CAPTION_BYTES = 4 * MAX_CAPTION_CHARS  # UTF-8 takes at most 4 bytes a character
MAX_CHANNELS = 64  # channels of one clip (it is mixed to stereo)


def _walk(folder: Path) -> list[Path]:
    """The audio files under ``folder`` (recursive, sorted), looking at no more than
    ``MAX_FOLDER_ENTRIES`` entries and collecting no more than ``MAX_CLIPS`` files; linked
    folders are not entered, and a linked file must lie inside ``folder``."""
    root = folder.resolve()
    if root == Path(root.anchor):
        raise _error(f"folder {str(folder)!r} is the filesystem root", "Give the folder holding the clips")
    audio, seen = [], 0

    def refuse(e: OSError) -> None:
        raise _error(f"folder {str(folder)!r} cannot be listed ({type(e).__name__}: {e})",
                     "Give a folder you can read")

    for here, dirs, files in os.walk(root, onerror=refuse):
        seen += len(dirs) + len(files)
        if seen > MAX_FOLDER_ENTRIES:
            raise _error(f"folder {str(folder)!r} holds more than {MAX_FOLDER_ENTRIES:,} files and folders",
                         "Put only the clips to train on (and their captions) there")
        dirs.sort()
        for name in files:
            path = Path(here) / name
            if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
                continue
            if path.is_symlink() and root not in path.resolve().parents:
                raise _error(f"audio file {str(path)!r} links outside the folder (to {str(path.resolve())!r})",
                             "Copy the clip into the folder instead of linking it")
            audio.append(path)
            if len(audio) > MAX_CLIPS:
                raise _error(f"folder {str(folder)!r} holds more than {MAX_CLIPS} audio files (at most {MAX_CLIPS})",
                             "Train on a smaller selection")
    return sorted(audio)


def read_caption(path: Path, folder: Path | None = None) -> str:
    """A clip's caption: a UTF-8 file inside ``folder`` (when given) of at most ``MAX_CAPTION_CHARS``
    characters, not empty; its size is checked before it is read."""
    if folder is not None and path.is_symlink() and folder.resolve() not in path.resolve().parents:
        raise _error(f"caption {str(path)!r} links outside the folder (to {str(path.resolve())!r})",
                     "Copy the caption into the folder instead of linking it")
    try:
        size = path.stat().st_size
        if size > MAX_CAPTION_BYTES:
            raise _error(f"caption {str(path)!r} must be at most {MAX_CAPTION_CHARS:,} characters (got {size:,} "
                         "bytes)", "Shorten it to the clip's prompt")
        with path.open("rb") as f:
            caption = f.read(MAX_CAPTION_BYTES + 1).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise _error(f"caption {str(path)!r} cannot be read ({type(e).__name__}: {e})",
                     "Save it as UTF-8 text") from e
    if len(caption) > MAX_CAPTION_CHARS:
        raise _error(f"caption {str(path)!r} must be at most {MAX_CAPTION_CHARS:,} characters (got "
                     f"{len(caption):,})", "Shorten it to the clip's prompt")
    if not caption:
        raise _error(f"caption {str(path)!r} is empty", "Write the clip's prompt into it")
    return caption


def find_clips(folder: str | Path) -> list[tuple[Path, Path]]:
    """(audio file, caption file) pairs under ``folder`` (recursive, sorted), checked: every audio
    file has a non-empty caption of bounded size. Reads no audio. The walk is bounded
    (``MAX_FOLDER_ENTRIES``, ``MAX_CLIPS``), linked folders are skipped and linked files must stay
    inside ``folder``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise _error(f"folder {str(folder)!r} does not exist or is not a folder",
                     "Give a folder holding audio files with a same-name .txt caption each")
    audio = _walk(folder)
    if not audio:
        raise _error(f"folder {str(folder)!r} holds no audio files (expected {', '.join(AUDIO_EXTENSIONS)})",
                     "Put the clips to train on there, each with a same-name .txt caption")
    missing = [p for p in audio if not p.with_suffix(CAPTION_EXTENSION).is_file()]
    if missing:
        names = ", ".join(repr(p.name) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise _error(f"{len(missing)} of {len(audio)} audio files have no caption (got {names}, expected "
                     f"e.g. {missing[0].with_suffix(CAPTION_EXTENSION).name!r} beside {missing[0].name!r})",
                     "Write each clip's prompt into a .txt file of the same name")
    pairs = []
    for path in audio:
        caption_path = path.with_suffix(CAPTION_EXTENSION)
        read_caption(caption_path, folder)
        pairs.append((path, caption_path))
    return pairs


def _header(path: Path) -> tuple[int, int, int]:
    """(sample rate, frames, channels) from the file's header, without decoding it."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise _error(f"audio file {str(path)!r} cannot be read ({type(e).__name__}: {e})",
                     "Convert it to WAV or FLAC, or remove it and its caption") from e
    return int(info.samplerate), int(info.frames), int(info.channels)


def check_clip_header(path: Path) -> float:
    """A clip's header, checked before it is decoded: a usable sample rate, at least one and at
    most ``MAX_CLIP_SECONDS`` of samples, at most ``MAX_CHANNELS`` channels. Returns its seconds."""
    rate, frames, channels = _header(path)
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise _error(f"audio file {str(path)!r} has sample rate {rate} Hz (expected {MIN_SOURCE_RATE}.."
                     f"{MAX_SOURCE_RATE} Hz)", "Resample it, e.g. to 44100 Hz")
    if frames <= 0:
        raise _error(f"audio file {str(path)!r} holds no samples (got {frames} frames)", "Remove it and its caption")
    if not 1 <= channels <= MAX_CHANNELS:
        raise _error(f"audio file {str(path)!r} has {channels} channels (expected 1..{MAX_CHANNELS})",
                     "Mix it down to stereo")
    if frames / rate > MAX_CLIP_SECONDS:
        raise _error(f"audio file {str(path)!r} is {frames / rate:.1f} s long (at most {MAX_CLIP_SECONDS:.0f} s)",
                     "Cut it into shorter clips")
    return frames / rate


def _read(path: Path) -> tuple[int, torch.Tensor]:
    try:
        rate, wav = audio_utils.read_audio(path)
    except RuntimeError as e:  # a broken or unsupported file (libsndfile's message inside)
        raise _error(f"audio file {str(path)!r} cannot be read ({type(e).__name__}: {e})",
                     "Convert it to WAV or FLAC, or remove it and its caption") from e
    return int(rate), wav


def load_clip(path: str | Path, caption: str) -> TrainingClip:
    """Read and check one clip: resampled to 44.1 kHz, stereo, clamped (official preprocessing;
    the random polarity flip happens at encoding, from the training seed)."""
    path = Path(path)
    check_clip_header(path)  # before decoding: a header claiming hours is refused, not read
    rate, wav = _read(path)
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise _error(f"audio file {str(path)!r} has sample rate {rate} Hz (expected {MIN_SOURCE_RATE}.."
                     f"{MAX_SOURCE_RATE} Hz)", "Resample it, e.g. to 44100 Hz")
    if wav.dim() != 2 or wav.shape[-1] == 0 or wav.shape[0] == 0:
        raise _error(f"audio file {str(path)!r} holds no samples (got shape {tuple(wav.shape)})",
                     "Remove it and its caption")
    if wav.shape[-1] / rate > MAX_CLIP_SECONDS:
        raise _error(f"audio file {str(path)!r} is {wav.shape[-1] / rate:.1f} s long (at most "
                     f"{MAX_CLIP_SECONDS:.0f} s)", "Cut it into shorter clips")
    if not bool(torch.isfinite(wav).all()):
        raise _error(f"audio file {str(path)!r} contains NaN or infinite samples", "Re-export it")
    wav = audio_utils.resample(wav.float(), rate, SAMPLE_RATE)
    peak = float(wav.abs().max())
    if peak == 0 or 20 * math.log10(peak) < SILENCE_DB:
        got = "-inf" if peak == 0 else f"{20 * math.log10(peak):.1f}"
        raise _error(f"audio file {str(path)!r} is silent (peak {got} dBFS, expected above {SILENCE_DB:g} dBFS)",
                     "Remove it and its caption")
    wav = audio_utils.to_stereo(wav.clamp(-1, 1)[None])[0]  # (C, S) -> (2, S)
    return TrainingClip(path=path, caption=caption, audio=wav.contiguous(), source_rate=rate,
                        seconds_total=math.ceil(wav.shape[-1] / SAMPLE_RATE))


def load_training_folder(folder: str | Path) -> list[TrainingClip]:
    """Check and read every clip of ``folder`` (see ``find_clips``). Raises
    ``TrainingDataError`` naming the first bad file."""
    pairs = find_clips(folder)
    total = 0.0
    for audio_path, _ in pairs:  # every header first: nothing is decoded when the folder is too much
        total += check_clip_header(audio_path)
        if total > MAX_DATASET_SECONDS:
            raise _error(f"folder {str(folder)!r} holds more than {MAX_DATASET_SECONDS / 3600:g} h of audio",
                         "Train on a smaller selection")
    clips, total = [], 0.0
    for audio_path, caption_path in pairs:
        clip = load_clip(audio_path, read_caption(caption_path, Path(folder)))
        total += clip.seconds
        if total > MAX_DATASET_SECONDS:  # a header may understate an MP3's length
            raise _error(f"folder {str(folder)!r} holds more than {MAX_DATASET_SECONDS / 3600:g} h of audio",
                         "Train on a smaller selection")
        clips.append(clip)
    return clips


# --- pre-encoding ----------------------------------------------------------------------------


@dataclass
class EncodedClip:
    """One clip after the one-off encoding, on the CPU."""

    name: str
    latents: torch.Tensor  # (C, L) float32 SAME latents of the whole clip
    prompt: torch.Tensor  # (P, E) float32 T5Gemma states with the learned padding in place
    seconds_total: int


@dataclass
class EncodedDataset:
    """What training reads: every clip encoded once, plus the latent of silence used as padding."""

    clips: list[EncodedClip]
    silence: torch.Tensor  # (C, Ls) float32
    prompt_precision: str = "fp32"  # how the prompt states were computed (PROMPT_PRECISIONS)

    def __len__(self) -> int:
        return len(self.clips)


# How the prompt states are computed, per training base precision (LoRATrainingOptions.prompt_precision):
# "fp32": T5Gemma in its own dtype, no autocast, the learned padding as stored (fp32 and fp16 training);
# "bf16": as the official bf16-mixed step computes them inside every step: T5Gemma under
#   torch.autocast(bfloat16) (its weights keep their dtype: the official model does not register the
#   encoder as a submodule, so the bf16 cast misses it) and the learned padding rounded to bf16 (that cast
#   does reach it). The states do not change between steps, so computing them once is the same.
PROMPT_PRECISIONS = ("fp32", "bf16")


def _prompt_states(text_encoder, conditioner, caption: str, precision: str) -> torch.Tensor:
    """One caption -> (1, P, E) prompt states computed as ``precision`` says (PROMPT_PRECISIONS)."""
    prompt = conditioner.conditioners["prompt"]
    if precision == "fp32":
        hidden, mask = text_encoder([caption])  # (1, P, E), (1, P)
        device = prompt.padding_embedding.device
        return conditioner.prompt(hidden.to(device), mask.to(device))  # fp32 after promotion
    from torch.func import functional_call

    device = getattr(text_encoder, "device", prompt.padding_embedding.device)  # where T5Gemma runs
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):  # Lightning's bf16-mixed
        hidden, mask = text_encoder([caption])
    pad = prompt.padding_embedding.detach().to(torch.bfloat16)  # the official model-wide bf16 cast
    hidden, mask = hidden.to(pad.device), mask.to(pad.device)
    return functional_call(prompt, {"padding_embedding": pad}, (hidden, mask))  # where() promotes as officially


@torch.no_grad()
def encode_captions(text_encoder, conditioner, captions: Sequence[str], precision: str = "fp32") -> list[torch.Tensor]:
    """Captions -> (P, E) prompt embeddings (T5Gemma + learned padding), float32 on the CPU, computed
    as ``precision`` says (PROMPT_PRECISIONS: match the training base precision). Frozen parts only,
    so they are computed once (T5Gemma is never adapted by LoRA)."""
    if precision not in PROMPT_PRECISIONS:
        raise ValueError(f"Stable Audio 3 training data: prompt precision {precision!r} is unknown (expected one "
                         f"of {list(PROMPT_PRECISIONS)})")
    out = []
    for caption in captions:
        prompt = _prompt_states(text_encoder, conditioner, caption, precision)  # (1, P, E)
        out.append(prompt[0].float().cpu())  # float32 (exact for bf16 states): the DiT casts at use
    return out


def tail_latents(config) -> int:
    """Zero latent frames to append after a clip so that SAME encodes its frames as the official
    ``pre_encode_dataset.py`` does (every clip zero-padded to ``sample_size``, ~285 s): the
    encoder's reach past the clip's end. ``config`` is the autoencoder's ``SAMEConfig``.

    SAME-L (sliding window of w groups right, D blocks): w * D. SAME-S (chunks of c groups,
    the second half of the blocks shifted by c / 2): one more chunk, whose first-half values the
    shifted chunk reads; the encoder rounds up to whole chunks itself. Unshifted chunks: none.
    """
    enc = config.encoder
    if enc.sliding_window is not None:
        return enc.sliding_window[1] * enc.depth
    return enc.chunk_size // enc.stride if enc.chunk_midpoint_shift else 0


def valid_latents(samples: int) -> int:
    """Latent frames of a clip of ``samples`` audio samples: ceil(S / 4096), the official count
    (its audio-rate padding mask nearest-sampled at sample 4096 * j, cut after the last 1)."""
    return math.ceil(samples / SAMPLES_PER_LATENT)


@torch.no_grad()
def encode_exact(autoencoder, audio: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(2, S) audio -> (C, ceil(S / 4096)) float32 CPU latents equal to the official pre-encoding's:
    unchunked, trailing zeros as far as the encoder reaches (``tail_latents``), cut after the last
    valid frame."""
    from .stages import encode_audio

    valid = valid_latents(audio.shape[-1])
    padded = audio.new_zeros(1, audio.shape[0], (valid + tail_latents(autoencoder.config)) * SAMPLES_PER_LATENT)
    padded[0, :, :audio.shape[-1]] = audio  # (2, S) -> (1, 2, (valid + tail) * 4096)
    return encode_audio(autoencoder, padded, chunked=False, generator=generator)[0, :, :valid].float().cpu()


@torch.no_grad()
def encode_clip_audio(autoencoder, clips: Sequence[TrainingClip], silence_latents: int,
                      generator: torch.Generator | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """SAME-encode each whole clip once (polarity flipped with p = 0.5 first, the official
    PhaseFlipper; drawn from ``generator``, None: never), then ``silence_latents`` frames of
    silence (the official ``silence.npy``'s first frames). Returns per-clip (C, L) latents and
    the silence (C, Ls), float32 on the CPU; see ``encode_exact``."""
    latents = []
    for clip in clips:
        wav = clip.audio
        if generator is not None and float(torch.rand((), generator=generator)) < PHASE_FLIP_P:
            wav = -wav  # official PhaseFlipper augmentation
        latents.append(encode_exact(autoencoder, wav, generator))
    silence = torch.zeros(2, max(1, silence_latents) * SAMPLES_PER_LATENT)
    return latents, encode_exact(autoencoder, silence, generator)


def encode_dataset(model, clips: Sequence[TrainingClip], crop_latents: int, generator: torch.Generator | None,
                   on_stage: Callable[[str], None] | None = None, prompt_precision: str = "fp32") -> EncodedDataset:
    """Pre-encode ``clips`` with the model's text encoder and SAME (the official
    ``pre_encode_dataset.py`` step, in memory), the prompt states as ``prompt_precision`` says
    (``encode_captions``). ``on_stage("text" | "autoencoder")`` runs before each part is used
    (ComfyUI moves that part to its device there)."""
    if on_stage is not None:
        on_stage("text")
    prompts = encode_captions(model.text_encoder, model.conditioner, [c.caption for c in clips], prompt_precision)
    if on_stage is not None:
        on_stage("autoencoder")
    latents, silence = encode_clip_audio(model.autoencoder, clips, crop_latents, generator)
    return EncodedDataset(
        clips=[EncodedClip(name=c.path.name, latents=z, prompt=p, seconds_total=c.seconds_total)
               for c, z, p in zip(clips, latents, prompts, strict=False)],
        silence=silence, prompt_precision=prompt_precision)


def crop_latents(clip: EncodedClip, silence: torch.Tensor, length: int,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The official per-step crop: (C, L) -> (C, length) latents and (length,) bool padding mask.
    Longer clips start at a random frame in [0, L - length]; shorter ones are padded with the
    silence latent (tiled if needed) and masked there. ``generator`` None: crop from the start."""
    z = clip.latents
    n = z.shape[-1]
    if n > length:
        last = n - 1  # every stored frame is valid (cut after the last valid one, as officially)
        start = 0
        if last > length and generator is not None:
            start = int(torch.randint(0, last - length + 1, (), generator=generator))
        return z[:, start:start + length], torch.ones(length, dtype=torch.bool)
    mask = torch.zeros(length, dtype=torch.bool)
    mask[:n] = True
    if n == length:
        return z, mask
    need = length - n
    reps = math.ceil(need / silence.shape[-1])
    pad = silence.repeat(1, reps)[:, :need]  # (C, Ls) -> (C, need)
    return torch.cat([z, pad], dim=-1), mask


def new_beside(path: Path, folder: bool = False) -> Path:
    """A new, empty file (or folder, with ``folder``) beside ``path``, created exclusively under a
    random hidden name, with the mode every new one gets (0666 / 0777 less the umask: 0644 / 0755
    under the usual 022), not ``mkstemp``'s owner-only 0600; the umask is never changed (other
    threads of the process write files too). For writes that are renamed into place once whole."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # another writer's name (2**-64): draw again
            continue


# --- the encoded-dataset cache -----------------------------------------------------------------

CACHE_VERSION = "sa3-encoded-1"  # bump when the encoding changes: old entries are then never found
CACHE_INDEX = "dataset.json"
CACHE_TENSORS = "latents.safetensors"


def _tensor_sample(module: torch.nn.Module, h) -> None:
    """Feed names, shapes, dtypes and 64 evenly spaced values of every tensor into ``h``: cheap,
    and tells two checkpoints apart (hashing gigabytes of weights per run would not be)."""
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        flat = t.detach().reshape(-1)
        values = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(values.numpy().tobytes())


def _hash_encoders(model, h) -> None:
    """The weights that make the encoding (SAME, T5Gemma, the conditioner), sampled into ``h``."""
    for module in (model.autoencoder, model.text_encoder, model.conditioner):
        _tensor_sample(module, h)


def _through_cache(entry: Path, encode: Callable[[], EncodedDataset]) -> EncodedDataset:
    """The cache entry ``entry`` when it is there, else ``encode()`` stored there."""
    cached = load_cached(entry)
    if cached is not None:
        return cached
    data = encode()
    save_cached(data, entry)
    return data


def cache_key(model, pairs: Sequence[tuple[Path, Path]], crop: int, seed: int | None,
              prompt_precision: str = "fp32") -> str:
    """The encoded-dataset cache key: the clips (path, size, mtime of each audio file and its
    caption's text), the encoders' weights (sampled, ``_tensor_sample``) and the encoding options
    (silence length ``crop``, polarity/noise ``seed``, None: no flip; ``prompt_precision``). Any
    change gives another key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_VERSION}|{crop}|{seed}|{prompt_precision}|".encode())
    for audio, caption in pairs:
        st = audio.stat()
        h.update(f"{audio.resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode())
        h.update(caption.read_bytes() + b"\0")
    _hash_encoders(model, h)
    return h.hexdigest()


def load_cached(folder: Path) -> EncodedDataset | None:
    """A cache entry written by ``save_cached``; None when it is missing or incomplete. An entry
    whose index names no prompt precision was written before there was a choice: fp32."""
    try:
        index = json.loads((folder / CACHE_INDEX).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / CACHE_TENSORS))
        clips = [EncodedClip(name=c["name"], latents=tensors[f"latents/{i}"], prompt=tensors[f"prompt/{i}"],
                             seconds_total=int(c["seconds_total"])) for i, c in enumerate(index["clips"])]
        precision = index.get("prompt_precision", "fp32")
        if precision not in PROMPT_PRECISIONS:
            return None
        return EncodedDataset(clips=clips, silence=tensors["silence"], prompt_precision=precision)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_cached(data: EncodedDataset, folder: Path) -> Path:
    """Write ``data`` as a cache entry (safetensors + JSON index) into ``folder``, atomically: the
    entry is built beside it and renamed into place, so readers see all of it or nothing."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_beside(folder, folder=True)
    file_mode = stat.S_IMODE(tmp.stat().st_mode) & 0o666  # the folder's usual mode, as a file's
    try:
        tensors = {"silence": data.silence.contiguous()}
        for i, c in enumerate(data.clips):
            tensors[f"latents/{i}"], tensors[f"prompt/{i}"] = c.latents.contiguous(), c.prompt.contiguous()
        save_file(tensors, str(tmp / CACHE_TENSORS))
        index = {"version": CACHE_VERSION, "prompt_precision": data.prompt_precision,
                 "clips": [{"name": c.name, "seconds_total": c.seconds_total} for c in data.clips]}
        (tmp / CACHE_INDEX).write_text(json.dumps(index), encoding="utf-8")
        for f in tmp.iterdir():
            os.chmod(f, file_mode)  # safetensors may write through its own owner-only (0600) file
        try:
            os.replace(tmp, folder)
        except OSError:  # another run wrote the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def encode_folder_cached(model, folder: str | Path, cache_dir: str | Path, crop: int, generator_seed: int | None,
                         make_generator: Callable[[], torch.Generator | None],
                         on_stage: Callable[[str], None] | None = None,
                         prompt_precision: str = "fp32") -> EncodedDataset:
    """``encode_dataset`` of a clip folder through the cache in ``cache_dir``: a hit reads no
    audio and runs no encoder; a miss checks, reads and encodes the clips and stores them."""
    pairs = find_clips(folder)
    entry = Path(cache_dir).expanduser() / cache_key(model, pairs, crop, generator_seed, prompt_precision)
    return _through_cache(entry, lambda: encode_dataset(model, load_training_folder(folder), crop, make_generator(),
                                                        on_stage, prompt_precision))


def clips_cache_key(model, clips: Sequence[TrainingClip], crop: int, seed: int | None,
                    prompt_precision: str = "fp32") -> str:
    """``cache_key`` for clips already read (SA3 Training Dataset's): the clips' names, captions
    and audio samples themselves (hashed), the encoders' weights and the encoding options."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_VERSION}|clips|{crop}|{seed}|{prompt_precision}|".encode())
    for c in clips:
        h.update(f"{c.path.name}|{c.seconds_total}|{tuple(c.audio.shape)}|".encode())
        h.update(c.caption.encode("utf-8") + b"\0")
        h.update(c.audio.detach().float().contiguous().cpu().numpy().tobytes())
    _hash_encoders(model, h)
    return h.hexdigest()


def encode_clips_cached(model, clips: Sequence[TrainingClip], cache_dir: str | Path, crop: int,
                        generator_seed: int | None, make_generator: Callable[[], torch.Generator | None],
                        on_stage: Callable[[str], None] | None = None,
                        prompt_precision: str = "fp32") -> EncodedDataset:
    """``encode_dataset`` of clips already read, through the cache in ``cache_dir``: a hit runs no
    encoder; a miss encodes the clips and stores them."""
    entry = Path(cache_dir).expanduser() / clips_cache_key(model, clips, crop, generator_seed, prompt_precision)
    return _through_cache(entry, lambda: encode_dataset(model, clips, crop, make_generator(), on_stage,
                                                        prompt_precision))
