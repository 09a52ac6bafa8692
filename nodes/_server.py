"""ComfyUI's web server as the pack's routes see it."""

from __future__ import annotations

from collections.abc import Callable

_installed: set[str] = set()


def prompt_server():
    """ComfyUI's ``PromptServer.instance``, or None where no server runs (the pack imported by
    tests or scripts, or a ComfyUI without its server module)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def install_once(name: str, install: Callable[[object], None]) -> None:
    """``install(server)`` (add routes or middlewares to ComfyUI's server) the first time ``name``
    is installed; nothing when no server runs. ComfyUI loads the pack before its server starts,
    while its routes and middlewares are still open to additions."""
    server = prompt_server()
    if name in _installed or server is None:
        return
    install(server)
    _installed.add(name)
