"""Stable Audio 3 inference in plain PyTorch: the official checkpoints, the official numbers."""

from .pipeline import StableAudioModel

__all__ = ["StableAudioModel"]
__version__ = "0.1.0"
