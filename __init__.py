"""ComfyUI entry point of the Stable Audio 3 pack.

The node layer is imported only inside ComfyUI (when ComfyUI has loaded ``comfy.model_management``,
as it does before any custom node, and this file is loaded as a package), so the ``sa3`` library, its
CLI and the tests work without ComfyUI running, also from a checkout folder whose name is not a Python
identifier (pytest then imports this file as a plain module). Whether ``comfy`` is merely importable
says nothing: pytest puts the checkout's parent folder on ``sys.path``, where a folder named ``comfy``
(a ComfyUI clone beside the checkout) would pass for ComfyUI's package.
"""

import sys

WEB_DIRECTORY = "./web"

if __package__ and "comfy.model_management" in sys.modules:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
else:
    __all__ = ["WEB_DIRECTORY"]
