"""The pack's version, in one place: pyproject.toml reads it (setuptools and the Comfy Registry)."""

__version__ = "0.1.0"
