"""The one place that talks to ComfyUI's model management.

The library's three parts are wrapped in separate ``ModelPatcher`` objects so ComfyUI loads,
offloads and accounts for them like its own models: the text part (T5Gemma + conditioner), the
DiT, and the SAME autoencoder. Devices and dtypes are ComfyUI's choices (``--cpu``,
``--gpu-only``, ``--cpu-vae``, ``--fp16-unet``...) unless the loader node overrides the dtype.
Progress bars and interrupts also go through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.utils
import torch
from comfy.cli_args import args
from torch import nn

from ._handle import LORA_PARTS, LORAS, SA3Handle
from ._sa3 import StableAudioModel, layers, loading, prompt_assistant, resolve_backend
from ._sa3 import precision as precision_dtypes

logger = logging.getLogger(__name__)

def _comfy_weights_for(module: nn.Module, x: torch.Tensor):
    """ComfyUI's cast for a layer its partial loading left off the load device (it sets
    ``comfy_cast_weights``) or that carries weight functions: ``comfy.ops.cast_bias_weight`` to
    the input's device, in the layer's own dtype (mixed precision keeps its compute dtype). Else
    the library's rule (a no-op when the weights are on the input's device already), so a CPU
    layer keeps its oneDNN route and packed weights."""
    if module.comfy_cast_weights or module.weight_function or module.bias_function:
        return comfy.ops.cast_bias_weight(module, dtype=module.weight.dtype, device=x.device,
                                          bias_dtype=None if module.bias is None else module.bias.dtype)
    return layers.CastWeights.weights_for(module, x)


def _comfy_layer(base: type) -> type:
    """``base`` (a library layer) with ComfyUI's cast-weight attributes: ``ModelPatcher.load``
    treats it as one of its own cast layers (may leave it on the CPU, sets ``comfy_cast_weights``,
    attaches LowVram weight functions), and ``weights_for`` honours them."""
    return type(base.__name__, (comfy.ops.CastWeightBiasOp, base), {
        "__module__": __name__, "weights_for": _comfy_weights_for,
        "__doc__": f"``sa3.layers.{base.__name__}`` built for ComfyUI (``ComfyOperations``)."})


class ComfyOperations(layers.DefaultOps):
    """The operations the nodes build the DiT and SAME with (``ops=`` of the library), as core's
    ``comfy/ldm`` models take ``operations=comfy.ops...``: the library's layers (same parameters
    and keys, our CPU GEMM routes) plus ComfyUI's cast machinery, so ``load_models_gpu`` may load
    them partially (low-VRAM cards, ``--lowvram``, ``--novram``). The norms keep the library's
    rule: ComfyUI moves them when they fit, and they cast to the input's device when they don't."""

    Linear = _comfy_layer(layers.Linear)
    Conv1d = _comfy_layer(layers.Conv1d)


class _Part(nn.Module):
    """A plain container, so ModelPatcher can set ``.device`` and its bookkeeping attributes
    without touching the library modules (some expose a read-only ``device`` property)."""

    def __init__(self, device: torch.device, **modules: nn.Module):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.device = device


class SA3TextParts(_Part):
    """T5Gemma + conditioner (named so ComfyUI's "Requested to load ..." log says what moves)."""


class SA3DiffusionTransformer(_Part):
    """The DiT."""


class SA3Autoencoder(_Part):
    """SAME."""


class SA3PromptLanguageModel(_Part):
    """The Prompt Assistant's language model (Qwen3.5)."""


def _dit_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision != "auto":
        return precision_dtypes.DTYPES[precision]
    # ComfyUI's pick for diffusion models (fp32 on CPU, fp16/bf16 on GPUs, --*-unet flags win)
    return mm.unet_dtype(device, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])


def _text_dtype() -> torch.dtype | None:
    # Only ComfyUI's explicit flags; otherwise the checkpoint's own dtype (ComfyUI's default of
    # fp16 assumes its cast-on-the-fly layers, which T5Gemma here does not use).
    for flag, dtype in (("fp16_text_enc", torch.float16), ("bf16_text_enc", torch.bfloat16),
                        ("fp32_text_enc", torch.float32)):
        if getattr(args, flag, False):
            return dtype
    return None


def _autoencoder_dtype(precision: str, device: torch.device) -> torch.dtype | str:
    if precision != "auto":  # "fp32" or "bf16-mixed" (bf16 GEMMs, the rest fp32)
        return precision
    # fp32 unless --fp16-vae / --bf16-vae: half precision hurts SAME attention
    return mm.vae_dtype(device, allowed_dtypes=[])


def load_model(folder: str | Path, name: str, precision: str, attention: str, padding_mode: str,
               low_memory: bool = False, autoencoder_precision: str = "auto") -> SA3Handle:
    """Load an official folder on ComfyUI's offload device and wrap its parts in patchers."""
    return _load(lambda **kwargs: StableAudioModel.from_pretrained(folder, **kwargs), name, precision, attention,
                 padding_mode, low_memory, autoencoder_precision)


def load_single_file(checkpoint: str | Path, text_encoder: str | Path, variant: str, name: str, precision: str,
                     attention: str, padding_mode: str, low_memory: bool = False,
                     autoencoder_precision: str = "auto") -> SA3Handle:
    """Load core's single files (checkpoint + text encoder) like ``load_model`` loads a folder."""
    return _load(lambda **kwargs: StableAudioModel.from_single_file(checkpoint, text_encoder, variant=variant,
                                                                    **kwargs),
                 name, precision, attention, padding_mode, low_memory, autoencoder_precision)


def _load(load: Callable[..., StableAudioModel], name: str, precision: str, attention: str, padding_mode: str,
          low_memory: bool, autoencoder_precision: str) -> SA3Handle:
    """Call a library loader with ComfyUI's devices and dtypes, then wrap the three parts."""
    dit_device, dit_offload = mm.get_torch_device(), mm.unet_offload_device()
    text_device, text_offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    vae_device, vae_offload = mm.vae_device(), mm.vae_offload_device()
    model = load(device=dit_offload, dtype=_dit_dtype(precision, dit_device), attention=attention,
                 ops=ComfyOperations,
                 padding_mode=padding_mode, text_dtype=_text_dtype(),
                 autoencoder_dtype=_autoencoder_dtype(autoencoder_precision, vae_device), low_memory=low_memory)
    # the backend was resolved for the offload device; resolve it again for where the parts run
    model.dit.set_attention(resolve_backend(attention, dit_device, model.dit.dtype), padding_mode)
    model.autoencoder.attention_backend = resolve_backend(attention, vae_device, model.autoencoder.dtype)
    patchers = {
        "text": comfy.model_patcher.ModelPatcher(
            SA3TextParts(dit_offload, text_encoder=model.text_encoder, conditioner=model.conditioner),
            load_device=text_device, offload_device=text_offload),
        "dit": comfy.model_patcher.ModelPatcher(SA3DiffusionTransformer(dit_offload, dit=model.dit),
                                                load_device=dit_device, offload_device=dit_offload),
        "autoencoder": comfy.model_patcher.ModelPatcher(SA3Autoencoder(dit_offload, autoencoder=model.autoencoder),
                                                        load_device=vae_device, offload_device=vae_offload),
    }
    return SA3Handle(model=model, name=name, patchers=patchers)


def load_parts(handle: SA3Handle, *parts: str, memory_required: int = 0) -> torch.device:
    """Move the named parts to their load devices (offloading others as ComfyUI sees fit), put
    the handle's LoRA chain onto the shared modules when a part it adapts is among them, and
    return the load device of the first one.

    ``memory_required``: the run's activation bytes (``sa3.estimates``), which ComfyUI keeps free
    beside the weights, evicting other models or loading these partially (the DiT and SAME are
    built from ``ComfyOperations``, so any layer may stay on the CPU). The text part (T5Gemma from
    transformers, no cast layers) is always loaded whole (``force_full_load``)."""
    patchers = [handle.patchers[p] for p in parts]
    rest = [handle.patchers[p] for p in parts if p != "text"]
    if "text" in parts:
        mm.load_models_gpu([handle.patchers["text"]], memory_required=memory_required, force_full_load=True)
    if rest:
        mm.load_models_gpu(rest, memory_required=memory_required)
    if any(p in LORA_PARTS for p in parts):
        handle.model.apply_loras(handle.loras)
    return patchers[0].load_device


def with_loras(handle: SA3Handle, loras) -> SA3Handle:
    """A handle for a new branch carrying ``loras`` (a sequence of ``LoRALink``): clones of the DiT
    and text patchers (ComfyUI's own way to keep patches of one model apart) with the chain as
    their attachment; the autoencoder patcher is shared. ``handle`` is left as it was."""
    patchers = dict(handle.patchers)
    for part in LORA_PARTS:
        patchers[part] = handle.patchers[part].clone()
        patchers[part].set_attachments(LORAS, tuple(loras))
    return SA3Handle(model=handle.model, name=handle.name, patchers=patchers)


def release_parts(handle: SA3Handle, *parts: str) -> None:
    """With the loader's ``low_memory`` on, drop the named parts' memory-mapped CPU weights from
    RAM once a node is done with them (``sa3.loading.release_mapped_weights``); the next node
    that loads the part reads them back from the page cache."""
    if handle.model.low_memory:
        for part in parts:
            loading.release_mapped_weights(handle.patchers[part].model)


def _prompt_model_dtype(device: torch.device) -> torch.dtype:
    """ComfyUI's text-encoder flags, else bf16 (the official choice; on CPUs too, where fp32 would
    double the 4.2 GB), else fp32 on GPUs without bf16 (fp16 overflows in Qwen)."""
    if _text_dtype() is not None:
        return _text_dtype()
    return torch.bfloat16 if mm.is_device_cpu(device) or mm.should_use_bf16(device) else torch.float32


def load_prompt_model(folder: str | Path) -> tuple[comfy.model_patcher.ModelPatcher, prompt_assistant.PromptModel]:
    """The Prompt Assistant's language model, loaded on the text encoder's offload device, and a
    patcher that moves it to the text encoder's device for a run."""
    device, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    model = prompt_assistant.load_prompt_model(folder, device=offload, dtype=_prompt_model_dtype(device),
                                               download=False)
    patcher = comfy.model_patcher.ModelPatcher(SA3PromptLanguageModel(offload, language_model=model.model),
                                               load_device=device, offload_device=offload)
    return patcher, model


def run_offloaded(patcher: comfy.model_patcher.ModelPatcher, work: Callable[[], object]):
    """Load ``patcher`` fully (transformers layers cannot run half on the GPU), run ``work``, then
    offload it at once: the assistant runs once per prompt, and the audio models need the memory next."""
    mm.load_models_gpu([patcher], force_full_load=True)
    try:
        return work()
    finally:
        unload(patcher)


def unload(patcher: comfy.model_patcher.ModelPatcher) -> None:
    """Move a loaded patcher's model to its offload device and drop it from ComfyUI's loaded models."""
    for i, loaded in enumerate(mm.current_loaded_models):
        if loaded.model is patcher:
            if loaded.model_unload():
                mm.current_loaded_models.pop(i)
            break
    mm.soft_empty_cache()


def intermediate_device() -> torch.device:
    """Where node outputs (LATENT, AUDIO, conditioning) live between nodes."""
    return mm.intermediate_device()


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if Cancel / POST /interrupt was requested."""
    mm.throw_exception_if_processing_interrupted()


def interrupted() -> bool:
    """True once Cancel / POST /interrupt was requested (for work that stops cleanly on its own)."""
    return mm.processing_interrupted()


class HeldCancel:
    """Cancel / POST /interrupt for work that must wrap up before the run ends (a trainer saving
    its steps), with a progress bar of ``total`` steps.

    ComfyUI's progress hook raises its interrupt from inside a progress update, clearing the
    request as it does: ``update`` catches it there (an ``Exception`` in ComfyUI 0.3.64, a
    ``BaseException`` in newer releases) and keeps it, ``requested`` tells the work to stop, and
    ``release`` raises it once the work has saved, so the run still ends as interrupted."""

    def __init__(self, total: int):
        self.bar = progress_bar(total)
        self.caught: BaseException | None = None

    def update(self, value: int, total: int) -> None:
        try:
            self.bar.update_absolute(value, total)
        except mm.InterruptProcessingException as e:
            self.caught = e

    def requested(self) -> bool:
        return self.caught is not None or interrupted()

    def release(self) -> None:
        if self.caught is not None:
            raise self.caught
        check_interrupt()


def progress_text(node_id: str | None, text: str) -> None:
    """A line of text under the running node in the UI (no-op without a server or node id)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    if node_id is not None and getattr(PromptServer, "instance", None) is not None:
        PromptServer.instance.send_progress_text(text, node_id)


def progress_bar(total: int):
    """A ComfyUI progress bar (``update_absolute(value, total)``) for the running node."""
    return comfy.utils.ProgressBar(total)


def run_guarded(part: str, needed: int, run: Callable[[], object], retry: Callable[[], object] | None = None,
                retry_what: str = ""):
    """``run()``; on an out-of-memory error, free what the run allocated (``soft_empty_cache``)
    and call ``retry`` once when given (the chunked decode, as core falls back to tiled
    decoding); when that fails too or there is none, raise a RuntimeError naming the part and the
    estimate ``needed`` (bytes). The error is raised outside the ``except`` block, so its
    traceback does not keep the failed run's tensors alive; the next request starts clean."""
    for attempt in (run, retry):
        if attempt is None:
            break
        try:
            return attempt()
        except mm.OOM_EXCEPTION:
            pass  # handled below, outside the except block (see the docstring)
        mm.soft_empty_cache()
        if attempt is run and retry is not None:
            logger.warning("Stable Audio 3: out of memory in the %s; retrying %s", part, retry_what)
    raise RuntimeError(f"Stable Audio 3: out of memory in the {part}: it needed about {needed / 1e9:.2f} GB for "
                       f"its activations beside its weights{' (also ' + retry_what + ')' if retry else ''}. "
                       "Free memory (unload other models), make the audio shorter or the batch smaller, or run "
                       "ComfyUI with --lowvram.")
