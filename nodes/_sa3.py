"""The ``sa3`` library as seen from the node layer.

ComfyUI imports the pack as a package (``custom_nodes/<pack>``; the tests load it the same way),
so the library is always the sibling subpackage ``<pack>.sa3``. Every node module imports the
library through here, so there is exactly one copy of it per process.
"""

from __future__ import annotations

from ..sa3 import (
    attention,
    audio,
    checks,
    estimates,
    layers,
    loading,
    precision,
    prompt_assistant,
    rng,
    single_file,
    stages,
)
from ..sa3.attention import resolve_backend
from ..sa3.config import (
    DURATION_PADDING_SEC,
    MODEL_REPOS,
    MODEL_SAMPLE_SIZES,
    SAMPLE_RATE,
    SAMPLES_PER_LATENT,
    ModelConfig,
    parse_shift_text,
)
from ..sa3.loading import CONFIG_FILE, TEXT_FOLDER, WEIGHTS_FILE, read_config
from ..sa3.lora import LoRALink
from ..sa3.lora_files import check_rule, expand_brackets
from ..sa3.model import StableAudioModel
from ..sa3.sampling import SAMPLERS, check_controls

__all__ = ["CONFIG_FILE", "DURATION_PADDING_SEC", "MODEL_REPOS", "MODEL_SAMPLE_SIZES", "SAMPLERS", "SAMPLES_PER_LATENT",
           "SAMPLE_RATE", "TEXT_FOLDER", "WEIGHTS_FILE", "LoRALink", "ModelConfig", "StableAudioModel", "attention",
           "audio", "check_controls", "check_rule", "checks", "estimates", "expand_brackets", "layers", "loading",
           "parse_shift_text", "precision", "prompt_assistant", "read_config", "resolve_backend", "rng",
           "single_file", "stages"]
