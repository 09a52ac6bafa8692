"""The ``sa3`` library as seen from the node layer.

Inside ComfyUI the pack is imported as a package (``custom_nodes/<pack>``), so the library is
its sibling subpackage ``<pack>.sa3``; in the tests and for a plain checkout ``nodes`` may be a
top-level package and the library is the top-level ``sa3``. Every node module imports the library
through here, so there is exactly one copy of it per process layout.
"""

from __future__ import annotations

if __package__ and "." in __package__:  # <pack>.nodes: the library is <pack>.sa3
    from ..sa3 import audio, loading, pictures, pipeline
    from ..sa3.config import MODEL_REPOS, SAMPLES_PER_LATENT, ModelConfig
    from ..sa3.loading import CONFIG_FILE, TEXT_FOLDER, WEIGHTS_FILE
    from ..sa3.lora_files import expand_brackets
    from ..sa3.sampling import SAMPLERS
else:  # top-level ``nodes``: the library is installed or on sys.path
    from sa3 import audio, loading, pictures, pipeline
    from sa3.config import MODEL_REPOS, SAMPLES_PER_LATENT, ModelConfig
    from sa3.loading import CONFIG_FILE, TEXT_FOLDER, WEIGHTS_FILE
    from sa3.lora_files import expand_brackets
    from sa3.sampling import SAMPLERS

StableAudioModel = pipeline.StableAudioModel

__all__ = ["CONFIG_FILE", "MODEL_REPOS", "SAMPLERS", "SAMPLES_PER_LATENT", "TEXT_FOLDER", "WEIGHTS_FILE", "ModelConfig",
           "StableAudioModel", "audio", "expand_brackets", "loading", "pictures", "pipeline"]
