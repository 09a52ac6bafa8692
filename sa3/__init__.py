"""Stable Audio 3 inference in plain PyTorch: the official checkpoints, the official numbers.

The model classes are imported on first use, so ``python -m sa3.comfy_run`` runs from any
Python without torch.
"""

from ._version import __version__

__all__ = ["AutoencoderModel", "StableAudioModel", "__version__"]


def __getattr__(name: str):
    if name == "StableAudioModel":
        from .model import StableAudioModel

        return StableAudioModel
    if name == "AutoencoderModel":
        from .autoencoder import AutoencoderModel

        return AutoencoderModel
    raise AttributeError(f"module 'sa3' has no attribute {name!r}")
