"""``StableAudioModel``: the official Python interface (``from_pretrained`` / ``generate`` / LoRA).

Loading builds the four parts (DiT, conditioner, T5Gemma text encoder, SAME) from an official folder
or core ComfyUI's single files; ``generate()`` checks the whole request (``sa3.request``), then
chains the public stages of ``sa3.stages`` in numbered steps, the same functions the ComfyUI nodes
call; the memory policy (``low_memory``) releases each part once its stage is done.

Legend: B batch, C latent channels, L latent frames, S audio samples.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checks, single_file, stages
from .attention import BACKENDS, PADDING_MODES, resolve_backend
from .conditioners import Conditioner, TextEncoder, require_transformers
from .config import DURATION_PADDING_SEC, ModelConfig
from .cpu_gemm import set_weight_packing
from .devices import official_numerics
from .dit import DiT
from .loading import (
    CHECKPOINT_PREFIXES,
    WEIGHTS_FILE,
    default_device,
    load_strict,
    read_checkpoint,
    read_config,
    release_mapped_weights,
    resolve_model_dir,
    resolve_text_dir,
    same_config,
    split_checkpoint,
)
from .precision import resolve_autoencoder_precision, resolve_dtype
from .request import Request, check_request
from .rng import make_generator, random_seed, stream_device
from .same import SAMEAutoencoder, SAMEConfig
from .stages import AudioInput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """Device, attention, dtypes and padding mode of one load, checked before any file is read."""

    device: torch.device
    attention: str  # as asked (SAME resolves its own backend)
    backend: str  # the DiT's
    dtype: torch.dtype  # the DiT's and the conditioner's
    padding_mode: str
    text_dtype: torch.dtype | None  # None: the checkpoint's
    autoencoder_dtype: torch.dtype | str  # or "bf16-mixed"

    @classmethod
    def check(cls, device, dtype, attention: str, padding_mode: str, text_dtype, autoencoder_dtype) -> LoadOptions:
        """The options of ``from_pretrained`` / ``from_single_file``, checked and resolved."""
        checks.check_choice("padding_mode", padding_mode, PADDING_MODES)
        checks.check_choice("attention", attention, BACKENDS)
        require_transformers()  # T5Gemma: a clear message before any weight is read
        device = torch.device(device) if device is not None else default_device()
        model_dtype = resolve_dtype(dtype, device)
        return cls(device=device, attention=attention, backend=resolve_backend(attention, device, model_dtype),
                   dtype=model_dtype, padding_mode=padding_mode,
                   text_dtype=resolve_dtype(text_dtype, device, "text_dtype") if text_dtype else None,
                   autoencoder_dtype=resolve_autoencoder_precision(autoencoder_dtype, device, model_dtype))


def _release_block(block: nn.Module) -> None:
    """``low_memory`` during sampling: drop one DiT block's memory-mapped CPU weights (no heap
    trim in the middle of a step)."""
    release_mapped_weights(block, trim_heap=False)


class StableAudioModel:
    """The official Stable Audio 3 Python interface (``from_pretrained`` / ``generate`` / LoRA)."""

    def __init__(self, config: ModelConfig, dit: DiT, conditioner: Conditioner, text_encoder: TextEncoder,
                 autoencoder: SAMEAutoencoder, device: torch.device, model_dir: Path | None = None,
                 low_memory: bool = False):
        self.config = config
        self.dit = dit
        self.conditioner = conditioner
        self.text_encoder = text_encoder
        self.autoencoder = autoencoder
        self.device = device
        self.model_dir = model_dir
        self.sample_rate = config.sample_rate
        self.lora = None  # sa3.lora.LoRAStack once load_lora() is called
        self.low_memory = low_memory  # see from_pretrained
        # low_memory also streams the DiT's mapped weights during sampling: each block's pages are
        # dropped once it has run and fault back in from the page cache at the next step
        dit.transformer.after_block = _release_block if low_memory else None
        # bf16 CPU GEMMs on prepacked weights: faster, one more copy of the weights, so not in low_memory
        for part in (dit, autoencoder):
            set_weight_packing(part, not low_memory)

    # -- loading --

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, *, attention: str = "auto",
                        padding_mode: str = "exact", text_dtype: str | torch.dtype | None = None,
                        autoencoder_dtype: str | torch.dtype | None = "fp32",
                        cache_dir: str | Path | None = None, download: bool = True,
                        low_memory: bool = False, ops: type | None = None) -> StableAudioModel:
        """Load one of the six official models by name, or an official local folder.

        Args:
            name_or_path: "small-music", "small-sfx", "medium" or their "-base" versions (fetched
                from the Hugging Face hub, gated: accept the license and set HF_TOKEN), or a folder
                in the official layout (model_config.json, model.safetensors, t5gemma-b-b-ul2/).
            device: where the model runs ("cuda", "mps", "cpu", a torch.device); None picks CUDA,
                then MPS, then the CPU.
            dtype: DiT and conditioner precision: "fp32", "fp16", "bf16", a torch dtype, or
                None / "auto" (fp16 on CUDA, fp32 elsewhere, as official). Half precision halves
                their memory and is faster on GPUs; fp32 reproduces the official CPU numbers.
            attention: "auto" (flash-attn on CUDA for fp16/bf16 parts when installed, else PyTorch
                SDPA), "sdpa", "flash" (fp16/bf16 only) or "math" (slow dense reference). The
                choice changes speed and memory, not the result beyond float rounding.
            padding_mode: how padded latent frames are masked in attention: "exact" (flash-attn
                semantics, as trained: valid audio does not depend on a batch's padding) or
                "reference" (the official CPU behaviour, which the golden tests pin bit for bit).
            text_dtype: T5Gemma precision; None keeps the checkpoint's (bf16 for the official files).
            autoencoder_dtype: SAME precision: "fp32" (the default, exact), "bf16-mixed" (opt-in,
                faster: bf16 GEMMs and convolutions with the norms, attention and noise in fp32;
                audio within about 2e-2 relative L2 of fp32 on the test models, see
                bench/RESULTS.md), or a plain dtype for the whole module (half precision hurts SAME
                attention); None follows ``dtype``.
            cache_dir: Hugging Face cache folder for names (None: the default HF cache).
            download: True fetches missing official files from the hub; False only uses local
                folders and the HF cache (an error says what is missing).
            low_memory: after each stage of ``generate``, drop that part's memory-mapped weights
                from RAM (text encoder and conditioner after encoding, SAME after encoding/decoding,
                DiT after sampling), so the peak is the largest part instead of the sum; they are
                re-read from the page cache at the next use. Linux and CPU only, also under
                ``torch.inference_mode()``; weights converted to another dtype, and the pages a
                LoRA wrote, stay resident. Without it, bf16 layers on an x86 CPU keep a copy of
                their weights prepacked for oneDNN (``cpu_gemm.set_weight_packing``: the bf16 DiT
                step about 10 % faster, for about the bf16 DiT's size in RAM); with it they don't.
            ops: the operations namespace the DiT and SAME build their layers with (None:
                ``layers.DefaultOps``); a host passes its own, as ComfyUI's nodes pass cast
                operations so its partial loading works (same parameters and state-dict keys).

        Raises ValueError for bad options and RuntimeError for missing or broken files, before
        any weight is read where it can.
        """
        # checked before any download
        options = LoadOptions.check(device, dtype, attention, padding_mode, text_dtype, autoencoder_dtype)
        model_dir = resolve_model_dir(name_or_path, cache_dir=cache_dir, download=download)
        config, same_cfg = read_config(model_dir / "model_config.json")

        def load_text(text_dtype_: torch.dtype | None) -> TextEncoder:
            text_dir = resolve_text_dir(model_dir, config.text.model_path or config.text.repo_id,
                                        config.text.subfolder, cache_dir=cache_dir, download=download)
            return TextEncoder.from_folder(text_dir, config.text, dtype=text_dtype_)

        return cls._assemble(config, same_cfg, model_dir / WEIGHTS_FILE, load_text, model_dir, options,
                             low_memory=low_memory, ops=ops)

    @classmethod
    def from_single_file(cls, checkpoint: str | Path, text_encoder: str | Path,
                         device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, *,
                         variant: str = "auto", attention: str = "auto",
                         padding_mode: str = "exact", text_dtype: str | torch.dtype | None = None,
                         autoencoder_dtype: str | torch.dtype | None = "fp32",
                         low_memory: bool = False, ops: type | None = None) -> StableAudioModel:
        """Load core ComfyUI's single files: a checkpoint (DiT + conditioner + SAME, the official
        key layout; fp32, fp16 or bf16) and a T5Gemma text-encoder file with its tokenizer.

        variant: "auto" (from the file's shapes and name) or one of the six official names; it
        sets the config (default sampler, maximum duration). A sidecar ``<checkpoint stem>.json``
        (official model_config.json) decides instead; see ``sa3.single_file``. The other
        arguments are those of ``from_pretrained``; the same weights give the same audio.
        """
        options = LoadOptions.check(device, dtype, attention, padding_mode, text_dtype, autoencoder_dtype)
        checkpoint, text_encoder = Path(checkpoint), Path(text_encoder)
        config, source = single_file.checkpoint_config(checkpoint, variant)
        same_cfg = same_config(config, source)  # a sidecar's SAME part, named as the sidecar's problem
        single_file.check_text_encoder_file(text_encoder)  # before any weight is read
        logger.info("Stable Audio 3: %s uses the config of %s", checkpoint, source)

        def load_text(text_dtype_: torch.dtype | None) -> TextEncoder:
            return single_file.load_text_encoder_file(text_encoder, config.text, dtype=text_dtype_)

        return cls._assemble(config, same_cfg, checkpoint, load_text, None, options, low_memory=low_memory, ops=ops)

    @classmethod
    def _assemble(cls, config: ModelConfig, same_cfg: SAMEConfig, weights: Path,
                  load_text: Callable[[torch.dtype | None], TextEncoder], model_dir: Path | None,
                  options: LoadOptions, *, low_memory: bool, ops: type | None = None) -> StableAudioModel:
        """Build the model of ``config`` (its SAME part ``same_cfg``, parsed and checked once by the
        caller) from a checkpoint file and a text-encoder loader (shared by both ways of loading,
        so the same weights give the same modules)."""
        device, model_dtype = options.device, options.dtype
        # weights kept in the file's dtype stay memory-mapped; converted ones are read straight into
        # their new dtype (no transient fp32 copy); the autoencoder is converted below if asked.
        # Core's DiT prefix (model.diffusion_model.) is converted like ours, then renamed.
        dit_prefixes = (CHECKPOINT_PREFIXES["dit"], *single_file.DIT_ALIASES)
        convert = {} if device.type != "cpu" else {
            **dict.fromkeys(dit_prefixes, model_dtype), CHECKPOINT_PREFIXES["conditioner"]: model_dtype}
        state = single_file.canonical_keys(read_checkpoint(weights, dtype_by_prefix=convert))
        parts = split_checkpoint(state, weights)

        with torch.device("meta"):
            dit = DiT(config.dit, ops=ops)
            conditioner = Conditioner(config.text, config.seconds, config.cond_dim)
            autoencoder = SAMEAutoencoder(same_cfg, ops=ops)
        load_strict(dit, parts["dit"], "diffusion transformer", weights)
        load_strict(conditioner, parts["conditioner"], "conditioner", weights)
        load_strict(autoencoder, parts["autoencoder"], "SAME autoencoder", weights)
        dit.to(device, model_dtype).set_attention(options.backend, options.padding_mode)
        conditioner.to(device, model_dtype)
        autoencoder.to_precision(device, options.autoencoder_dtype)
        autoencoder.attention_backend = options.attention

        text_encoder = load_text(options.text_dtype)
        text_encoder.to(device)
        logger.info("Stable Audio 3: loaded %s (%s, %s, attention=%s)", weights, config.family, model_dtype,
                    options.backend)
        return cls(config, dit, conditioner, text_encoder, autoencoder, device, model_dir, low_memory)

    # -- generation --

    def generate(self, prompt: str | Sequence[str] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 duration: float | Sequence[float] = 120, steps: int = 8, cfg_scale: float = 1.0, seed: int = -1,
                 batch_size: int = 1, init_audio: AudioInput | None = None, init_noise_level: float = 1.0,
                 inpaint_audio: AudioInput | None = None, inpaint_mask_start_seconds=None,
                 inpaint_mask_end_seconds=None, apg_scale: float = 1.0, sampler_type: str | None = None,
                 return_latents: bool = False, chunked_decode: bool | None = None,
                 truncate_output_to_duration: bool = True, duration_padding_sec: float = DURATION_PADDING_SEC,
                 dist_shift: dict | None = None, device_parity: bool = False,
                 callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                 on_decode_chunk: Callable[[int, int], None] | None = None, **sampler_kwargs) -> torch.Tensor:
        """Generate audio; returns (B, 2, S) float32 in [-1, 1] at 44.1 kHz, or (B, C, L) latents.

        Mirrors the official ``generate()``. A single value of a per-item argument (prompt,
        negative_prompt, duration) is used for every batch item; a list gives one per item.

        Args:
            prompt: the text to generate from; a string or one string per batch item (required).
            negative_prompt: what to steer away from, same shapes as ``prompt``; only used when
                ``cfg_scale`` != 1 (it replaces the empty unconditional branch of CFG).
            duration: seconds of audio, in (0, the model's maximum] (about 120 s for small, 380 s
                for medium: ``config.max_duration``); one number or one per item. Items share one
                latent length (the longest duration + ``duration_padding_sec``).
            steps: sampler steps, an integer >= 1 (8 is the official default for the post-trained
                models); cost grows linearly with it.
            cfg_scale: classifier-free guidance strength; 1.0 (default) runs one DiT pass per step
                without guidance, values > 1 follow the prompt more closely at twice the cost.
            seed: noise seed in [0, 2**63 - 1], or -1 for a random one; the same seed and inputs
                give the same audio on the same device and dtype.
            batch_size: clips generated together, an integer >= 1.
            init_audio: ``(sample_rate, audio)`` for audio-to-audio; audio is a tensor (channels,
                samples) or a NumPy array (samples, channels), float in [-1, 1] or int16/int32; it is
                resampled to 44.1 kHz, made stereo and cut or zero-padded to the latent length.
            init_noise_level: how much of ``init_audio`` is replaced by noise, in [0, 1]: 1.0
                ignores it (plain text-to-audio), lower keeps more of its structure.
            inpaint_audio: ``(sample_rate, audio)`` to edit (same formats as ``init_audio``); the
                regions below are regenerated and everything else is kept.
            inpaint_mask_start_seconds, inpaint_mask_end_seconds: region starts and ends in
                seconds, two numbers or two equal-length lists, 0 <= start < end (an end past the
                audio continues it); both None to use no regions.
            apg_scale: with ``cfg_scale`` != 1, the share of adaptive projected guidance: 1.0
                (default) keeps only the guidance orthogonal to the prediction, 0.0 is vanilla CFG.
            sampler_type: one of ``SAMPLERS`` ("pingpong", "euler", "dpmpp", "rk4"); None picks
                the model's own (pingpong for post-trained models, euler for -base).
            return_latents: return the sampled latents (B, C, L) instead of decoding them.
            chunked_decode: decode SAME in overlapping chunks (bounds its memory for long audio);
                None follows the checkpoint's setting.
            truncate_output_to_duration: cut each item to its own duration (True), else return the
                whole latent length for every item.
            duration_padding_sec: seconds of headroom added after the longest duration (6 s, as
                official); a non-negative number. Changing it changes the result.
            dist_shift: the sampling schedule's time shift for this call instead of the model's,
                in the official config format: ``{"type": "none"}``, ``{"type": "flux", "min_length",
                "max_length", "alpha_min", "alpha_max"}``, ``{"type": "full", "base_shift",
                "max_shift", "min_length", "max_length"}`` or ``{"type": "logsnr", "anchor_length",
                "anchor_logsnr", "rate", "logsnr_end"}`` (lengths in latent frames; parameters left
                out take the official defaults); None (default) keeps the model's.
            device_parity: reproduce the official run on this model's device rather than the
                official CPU stream: the random stream drawn on the device (``sa3.rng``) and, on
                CUDA, the official numeric settings (TF32 and fp16 reduced-precision reductions
                off) during this call only (``sa3.devices.official_numerics``). False (default):
                the generator lives on the CPU, so a seed gives the same noise on every device.
            callback: ``callback(step, x, denoised)`` after every sampler step (step from 0; x and
                denoised are (B, C, L) latents), e.g. for progress or previews.
            on_decode_chunk: ``on_decode_chunk(i, n)`` after SAME decodes chunk i of n (1-based).
            **sampler_kwargs: as officially, ``cfg_interval`` (a ``(min, max)`` pair of noise
                levels in [0, 1], default (0, 1): with ``cfg_scale`` != 1 guidance runs only in the
                DiT calls whose noise level, batch item 0's, lies inside it, both ends included),
                ``scale_phi`` (0..1, rescales the guided velocity towards the conditional one's
                spread) and ``cfg_norm_threshold`` (> 0 caps the guidance difference's norm);
                anything else is a TypeError.

        Every argument is checked before any model work (ValueError naming it and its range).
        """
        # 0. check everything before any heavy work
        unknown = set(sampler_kwargs) - {"scale_phi", "cfg_norm_threshold", "cfg_interval"}
        if unknown:
            raise TypeError(f"Stable Audio 3: generate() got unexpected argument(s) {sorted(unknown)}.")
        if not isinstance(device_parity, bool):
            raise TypeError(f"Stable Audio 3: device_parity must be True or False (got {device_parity!r}).")
        request = check_request(
            self.config, prompt=prompt, negative_prompt=negative_prompt, duration=duration, steps=steps,
            cfg_scale=cfg_scale, seed=seed, batch_size=batch_size, init_audio=init_audio,
            init_noise_level=init_noise_level, inpaint_audio=inpaint_audio,
            inpaint_mask_start_seconds=inpaint_mask_start_seconds, inpaint_mask_end_seconds=inpaint_mask_end_seconds,
            apg_scale=apg_scale, sampler_type=sampler_type, duration_padding_sec=duration_padding_sec,
            dist_shift=dist_shift, **sampler_kwargs)
        seed = random_seed() if seed == -1 else seed
        with official_numerics(self.device) if device_parity else contextlib.nullcontext():
            return self._generate(request, seed=seed, stream=stream_device(self.device, device_parity), steps=steps,
                                  cfg_scale=cfg_scale, batch_size=batch_size, init_noise_level=init_noise_level,
                                  apg_scale=apg_scale, sampler_type=sampler_type, return_latents=return_latents,
                                  chunked_decode=chunked_decode, truncate=truncate_output_to_duration,
                                  dist_shift=dist_shift, callback=callback, on_decode_chunk=on_decode_chunk,
                                  **sampler_kwargs)

    def _generate(self, request: Request, *, seed: int, stream: torch.device, steps, cfg_scale, batch_size,
                  init_noise_level, apg_scale, sampler_type, return_latents, chunked_decode, truncate, dist_shift,
                  callback, on_decode_chunk, **sampler_kwargs) -> torch.Tensor:
        """Steps 1-4 of ``generate()`` for a checked request, the generator on ``stream``."""
        prompts, negatives, durations, regions = request.prompts, request.negatives, request.durations, request.regions
        plan, init_wav, inpaint_wav = request.plan, request.init_wav, request.inpaint_wav
        sr = self.config.sample_rate
        generator = make_generator(seed, stream)

        # 1. text and duration conditioning (no random draw)
        text = stages.encode_text(self.text_encoder, self.conditioner, prompts, durations, negatives)
        self._release(self.text_encoder)
        self._release(self.conditioner)
        # 2. initial noise, then the sources' latents (init first, then inpaint: the official draw order)
        start = stages.prepare_sampling(self.autoencoder, self.config, plan, generator, batch_size=batch_size,
                                        init_audio=None if init_wav is None else [init_wav],
                                        inpaint_audio=None if inpaint_wav is None else [inpaint_wav],
                                        inpaint_regions=regions, device=self.device)
        if init_wav is not None or inpaint_wav is not None:
            self._release(self.autoencoder)
        # 3. sample
        latents = stages.sample(self.dit, start.noise, text, plan, cfg=self.config, steps=steps, cfg_scale=cfg_scale,
                                apg_scale=apg_scale, sampler_type=sampler_type, init_latents=start.init_latents,
                                init_noise_level=init_noise_level, local_cond=start.local_cond, generator=generator,
                                callback=callback, step_hooks=self.step_hooks(), dist_shift=dist_shift,
                                **sampler_kwargs)
        self._release(self.dit)
        if return_latents:
            return latents
        # 4. decode
        chunked = self.autoencoder.config.chunked if chunked_decode is None else bool(chunked_decode)
        audio = stages.decode(self.autoencoder, latents, plan, chunked=chunked, generator=generator,
                              on_chunk=on_decode_chunk)
        self._release(self.autoencoder)
        return stages.trim_to_duration(audio, durations, sr) if truncate else audio

    def _release(self, part: torch.nn.Module) -> None:
        if self.low_memory and self.device.type == "cpu":
            release_mapped_weights(part)

    def step_hooks(self) -> list[Callable[[torch.Tensor], None]]:
        return [self.lora.on_step] if self.lora is not None else []

    # -- LoRA (implemented in sa3.lora) --

    def load_lora(self, paths: str | Path | Sequence[str | Path], svd_bases_path: str | Path | None = None) -> None:
        """Stack LoRA files (official .safetensors or Lightning .ckpt) in order, after any loaded
        before. A failed call leaves the model exactly as it was."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        self._lora_stack().load(list(paths), svd_bases_path=svd_bases_path or self.config.svd_bases_path)

    def prepare_lora(self, path: str | Path, svd_bases_path: str | Path | None = None):
        """Read one LoRA file and check it against this model without applying it: the returned
        ``sa3.lora.PreparedLoRA`` holds its tensors in memory for ``apply_loras`` (no file read there)."""
        return self._lora_stack().prepare([path], svd_bases_path=svd_bases_path or self.config.svd_bases_path)[0]

    def apply_loras(self, links) -> None:
        """Make the model carry exactly the chain ``links`` (``sa3.lora.LoRALink``: a prepared LoRA
        with its strengths and options), replacing any LoRA loaded before; weights no longer
        adapted return to their base values bit for bit. A no-op when the model already carries it."""
        self._lora_stack().set_chain(links)

    def _lora_stack(self):
        from .lora import LoRAStack

        if self.lora is None:
            self.lora = LoRAStack(self.dit, self.conditioner)
        return self.lora

    def set_lora_strength(self, strength: float, lora_index: int | None = None, target: str | None = None) -> None:
        """Set the strength of one LoRA (``lora_index``) or all, for the DiT, the conditioner
        (``target="dit"`` / ``"conditioner"``) or both. Applies from the next generation."""
        self._require_lora().set_strength(strength, lora_index=lora_index, target=target)

    def set_lora_options(self, lora_index: int, interval: tuple[float, float] | None = None,
                         layer_filter: str | None = None) -> None:
        """Per-LoRA extras of the official UI: active only while ``interval[0] <= t <= interval[1]``;
        layers whose name contains any comma-separated ``layer_filter`` entry are disabled."""
        self._require_lora().set_options(lora_index, interval=interval, layer_filter=layer_filter)

    def unload_lora(self) -> None:
        """Remove every LoRA and restore the base weights."""
        if self.lora is not None:
            self.lora.unload()
        self.lora = None

    def _require_lora(self):
        if self.lora is None or len(self.lora) == 0:
            raise ValueError("Stable Audio 3: no LoRA is loaded; call load_lora() first.")
        return self.lora
