"""ComfyUI nodes for Stable Audio 3 (V3 API): the extension and its entry point."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .checkpoint_loader import SA3CheckpointLoader
from .conditioning import SA3TextEncode
from .decode import SA3Decode
from .latents import SA3EmptyLatent, SA3EncodeAudio, SA3InpaintMask
from .limits import register_route
from .loaders import SA3LoraLoader, SA3LoraStrength, SA3ModelLoader, register_folder
from .prompt_assistant import SA3PromptAssistant
from .prompt_assistant import register_folder as register_language_model_folder
from .sampling import SA3Sampler
from .sampling_options import SA3SamplingOptions
from .templates import register_routes as register_template_routes
from .training import SA3TrainingDataset, SA3TrainLoRA
from .visualize import NODES as VISUALIZE_NODES

NODES: list[type[io.ComfyNode]] = [
    SA3ModelLoader, SA3CheckpointLoader, SA3LoraLoader, SA3LoraStrength, SA3TextEncode, SA3EmptyLatent,
    SA3EncodeAudio, SA3InpaintMask, SA3Sampler, SA3SamplingOptions, SA3Decode, *VISUALIZE_NODES, SA3TrainingDataset,
    SA3TrainLoRA, SA3PromptAssistant,
]


class StableAudio3Extension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:  # (0.3.64 never calls on_load)
        register_folder()
        register_language_model_folder()  # models/LLM, the Prompt Assistant's language models
        register_route()  # the models' duration limits, for web/js/duration_limits.js
        register_template_routes()  # template order, descriptions and thumbnails in the template browser
        return list(NODES)


async def comfy_entrypoint() -> StableAudio3Extension:
    return StableAudio3Extension()
