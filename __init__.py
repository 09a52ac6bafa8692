"""ComfyUI entry point of the Stable Audio 3 pack.

The node layer is imported only inside ComfyUI (when ``comfy`` is importable), so the ``sa3``
library, its CLI and the tests work without ComfyUI installed.
"""

import importlib.util

WEB_DIRECTORY = "./web"

if importlib.util.find_spec("comfy") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
else:
    __all__ = ["WEB_DIRECTORY"]
