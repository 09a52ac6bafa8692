"""Words that find the pack's nodes in ComfyUI's node search.

Newer ComfyUI (the V3 ``io.Schema.search_aliases`` field, served in ``/object_info``) searches
these too; ComfyUI 0.3.64 has no such field and its frontend searches node ids and display names
only, where every display name starts with "SA3 ". ``schema_aliases`` gives the field only to a
ComfyUI that has it, so one schema works on both.
"""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

PACK = ["stable audio", "stable audio 3", "sa3"]  # every node answers to these
ALIASES = {
    "SA3ModelLoader": ["load stable audio model", "audio model loader", "model loader"],
    "SA3CheckpointLoader": ["checkpoint loader", "load checkpoint", "ckpt", "audio model loader"],
    "SA3LoraLoader": ["lora", "load lora", "audio lora"],
    "SA3LoraStrength": ["lora strength", "lora weight"],
    "SA3TextEncode": ["prompt", "text encode", "audio prompt", "conditioning"],
    "SA3EmptyLatent": ["empty latent audio", "empty latent", "audio length"],
    "SA3EncodeAudio": ["encode audio", "vae encode audio", "audio to latent", "audio to audio"],
    "SA3InpaintMask": ["inpaint audio", "audio inpainting", "audio mask", "continue audio"],
    "SA3Sampler": ["audio sampler", "sampler", "ksampler", "generate audio", "text to audio", "inpaint audio"],
    "SA3SamplingOptions": ["cfg interval", "cfg rescale", "schedule shift", "sampler options", "advanced sampling"],
    "SA3Decode": ["decode audio", "vae decode audio", "latent to audio"],
    "SA3Spectrogram": ["spectrogram", "audio to image", "show audio"],
    "SA3TrainingDataset": ["lora dataset", "training data", "audio dataset"],
    "SA3TrainLoRA": ["train lora", "lora training", "fine tune", "finetune"],
    "SA3PromptAssistant": ["prompt assistant", "prompt generator", "enhance prompt", "rewrite prompt", "llm", "qwen"],
}


def aliases(node_id: str) -> list[str]:
    """The search words of a node: its own, then the pack's."""
    return ALIASES.get(node_id, []) + PACK


def schema_aliases(node_id: str, schema: type = io.Schema) -> dict[str, list[str]]:
    """``{"search_aliases": ...}`` for ``io.Schema(**...)`` where ComfyUI has the field, else ``{}``."""
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else set()
    return {"search_aliases": aliases(node_id)} if "search_aliases" in fields else {}
