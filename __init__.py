"""ComfyUI entry point of the Stable Audio 3 pack.

The node layer is imported only inside ComfyUI (when ``comfy`` is importable and this file is
loaded as a package, as ComfyUI does), so the ``sa3`` library, its CLI and the tests work without
ComfyUI installed, also from a checkout folder whose name is not a Python identifier (pytest then
imports this file as a plain module).
"""

import importlib.util

WEB_DIRECTORY = "./web"

if __package__ and importlib.util.find_spec("comfy") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
else:
    __all__ = ["WEB_DIRECTORY"]
