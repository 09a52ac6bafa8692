"""Stable Audio 3 inference in plain PyTorch: the official checkpoints, the official numbers."""

from ._version import __version__
from .autoencoder import AutoencoderModel
from .model import StableAudioModel

__all__ = ["AutoencoderModel", "StableAudioModel", "__version__"]
