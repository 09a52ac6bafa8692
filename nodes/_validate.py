"""Widget checks against a node's own schema, for ``validate_inputs`` and ``execute``.

ComfyUI 0.3.64 checks V3 ``io.Combo`` values nowhere (only V1 list inputs are compared with their
options), and it skips its own min/max check for every input that ``validate_inputs`` names. So
a node checks here, from the same schema the UI shows, each combo value it names and each number
it names. ``None`` is a linked input (its value is not known before the run) and passes.
"""

from __future__ import annotations

from comfy_api.latest import io

from ._adapters import error

MAX_LISTED = 20  # longer option lists (file names) are counted, not printed, as ComfyUI does


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def widget_error(node_cls, node: str, **values) -> str | None:
    """The first problem among ``values`` (input id -> widget value) for ``node_cls``'s schema,
    as the pack's error sentence naming the input, the value and what is allowed; None if all fit."""
    inputs = {inp.id: inp for inp in node_cls.define_schema().inputs}
    for name, value in values.items():
        if value is None:
            continue
        inp = inputs[name]
        if isinstance(inp, io.Combo.Input):
            options = list(inp.options or [])
            if value not in options:
                allowed = options if len(options) <= MAX_LISTED else f"the {len(options)} listed choices"
                return error(node, f"{name} {value!r} is not one of its choices (got {value!r}, expected one of "
                                   f"{allowed}). Pick a value from the list.")
        elif isinstance(inp, (io.Int.Input, io.Float.Input)):
            lo, hi = inp.min, inp.max
            try:
                number = float(value)
            except (TypeError, ValueError):
                return error(node, f"{name} {value!r} is not a number (got {value!r}, expected a number from "
                                   f"{_fmt(lo)} to {_fmt(hi)}). Enter a number.")
            if (lo is not None and not number >= lo) or (hi is not None and not number <= hi):
                return error(node, f"{name} {_fmt(value)} is out of range (got {_fmt(value)}, expected "
                                   f"{_fmt(lo) if lo is not None else '-inf'} to "
                                   f"{_fmt(hi) if hi is not None else 'inf'}). Enter a value in that range.")
    return None


def require_widgets(node_cls, node: str, **values) -> None:
    """``widget_error`` as a ValueError, for ``execute`` (a combo or number can arrive by link)."""
    message = widget_error(node_cls, node, **values)
    if message is not None:
        raise ValueError(message)
