"""Widget checks against a node's own schema, built on ``sa3.checks`` (one rule, one message).

Two facts of ComfyUI 0.3.64 shape this:
- it never compares a V3 ``io.Combo`` value with its options, skips its own min/max check for every
  input that ``validate_inputs`` names, and lets NaN through its min/max check (NaN comparisons are
  false), so ``execute`` checks every number and combo it gets (``require_widgets``), and that
  text inputs and file-list combos got text (an API-sent 0 would otherwise fail deep inside as a
  bare ``TypeError``);
- a message returned by ``validate_inputs`` is reported once *per parameter of validate_inputs*, each
  copy labelled with that parameter's input name (``execution.validate_inputs``). So each node's
  ``validate_inputs`` takes exactly one input, the one its queue-time message is about; everything
  else is checked first thing in ``execute``, before any model work, with a message naming it.

``None`` is a linked input (its value is not known before the run) and passes.
"""

from __future__ import annotations

import functools

from comfy_api.latest import io

from ._sa3 import checks

MAX_LISTED = 20  # longer option lists (file names) are counted, not printed, as ComfyUI does


WIDGETS = (io.Combo.Input, io.Int.Input, io.Float.Input, io.String.Input)  # the inputs checked here


def _check(inp, node: str, value) -> None:
    """Raise ``ValueError`` when ``value`` does not fit the schema input ``inp``."""
    if isinstance(inp, io.String.Input):
        if not isinstance(value, str):
            raise checks.fail(inp.id, "text", value, node, "Enter text.")
    elif isinstance(inp, io.Combo.Input):
        options = list(inp.options or [])
        if value not in options:
            shown = ", ".join(map(repr, options)) if len(options) <= MAX_LISTED else f"the {len(options)} listed files"
            raise checks.fail(inp.id, f"one of {shown}", value, node, "Pick a value from the list.")
    elif isinstance(inp, (io.Int.Input, io.Float.Input)):
        checks.check_number(inp.id, value, inp.min, inp.max, integer=isinstance(inp, io.Int.Input), where=node,
                            fix="Enter a value in that range.")


def widget_error(node_cls, node: str, linked_none: bool = True, **values) -> str | None:
    """The first problem among ``values`` (input id -> widget value) for ``node_cls``'s schema, as
    the pack's sentence naming the input, the allowed values and the value; None if all fit.
    ``linked_none``: None is a linked value not known yet (validate_inputs), so it passes."""
    inputs = {inp.id: inp for inp in node_cls.define_schema().inputs}
    for name, value in values.items():
        if value is None and linked_none:
            continue
        try:
            _check(inputs[name], node, value)
        except ValueError as e:
            return str(e)
    return None


def require_widgets(node_cls, node: str, **values) -> None:
    """``widget_error`` as a ValueError, for ``execute`` (NaN, API-sent combos, linked values)."""
    message = widget_error(node_cls, node, linked_none=False, **values)
    if message is not None:
        raise ValueError(message)


def _require_file_name(name: str, node: str, value) -> None:
    """A file-list combo the node answers itself still gets text (an API-sent 0 would reach
    ``os.path.join`` and fail there as a bare TypeError)."""
    if not isinstance(value, str):
        raise checks.fail(name, "a file name from the list", value, node, "Pick a file from the list.")


def checked(node: str, skip: tuple[str, ...] = ()):
    """Decorator for ``execute``: every number, combo and text argument is checked against the
    schema before the body runs (NaN, infinity, API-sent values of the wrong type), naming the
    input. ``skip`` lists inputs the node answers itself (file lists with their own messages):
    they are only required to be text."""

    def wrap(execute):
        @functools.wraps(execute)
        def run(cls, *args, **kwargs):
            inputs = {inp.id: inp for inp in cls.define_schema().inputs}
            for name in skip:
                if name in kwargs:
                    _require_file_name(name, node, kwargs[name])
            require_widgets(cls, node, **{name: value for name, value in kwargs.items() if name not in skip
                                          and isinstance(inputs.get(name), WIDGETS)})
            return execute(cls, *args, **kwargs)

        return run

    return wrap
