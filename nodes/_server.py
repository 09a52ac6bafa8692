"""ComfyUI's web server as the pack's routes see it."""

from __future__ import annotations


def prompt_server():
    """ComfyUI's ``PromptServer.instance``, or None where no server runs (the pack imported by
    tests or scripts, or a ComfyUI without its server module)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)
