"""Check the pack's workflows and regenerate their API-format twins.

Every ``workflows/<name>.json`` is a UI-format workflow (what ComfyUI saves and loads by
drag-and-drop, and offers under Templates); ``workflows/api/<name>.json`` is the same graph
in API format (what ``POST /prompt`` and ``python workflows/run.py`` take; ComfyUI offers only the
top-level files as templates). This module converts UI -> API the way the
ComfyUI frontend does (graphToPrompt), using the node schemas:

* ``widgets_values`` holds one value per widget input, in ``input_order`` (required, then
  optional), sockets taking no slot; an INT with ``control_after_generate`` (or named ``seed`` /
  ``noise_seed`` without an explicit ``False``) is followed by the frontend-only control value
  ("randomize", ...); some core nodes get trailing frontend-only
  widgets (the audio player of LoadAudio / SaveAudio / PreviewAudio, see ``tests/data/core_nodes.json``).
* Notes (``Note``, ``MarkdownNote``) exist only in the editor and are dropped.

It also validates both formats against the schemas (types, ranges, combo values, links), as
ComfyUI's ``validate_prompt`` would, plus the nodes' own ``validate_inputs``.

    python tools/check_workflows.py --comfyui /path/to/ComfyUI   # check every pair; exit 1 on a problem
    python tools/check_workflows.py --write       # regenerate workflows/api/*.json (COMFYUI_PATH set)
    python tools/check_workflows.py --server 127.0.0.1:8188      # schemas from a running ComfyUI

Schemas: the pack's own nodes from ``define_schema()``, imported inside a real ComfyUI
(``--comfyui`` or ``COMFYUI_PATH``, its requirements installed in this interpreter; forced onto the
CPU), core nodes from ``tests/data/core_nodes.json``; or all of them from a server's
``/object_info``. Files saved by newer frontends (1.58: top-level ``id``/``revision``,
``extra.frontendVersion``, ``widgets_values_named``, no ``widgets_values`` on a node without
widgets, ``_meta.cnr_id``/``_meta.ver`` in API exports) are accepted.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
API_DIR = WORKFLOWS / "api"
PACK = "sa3_pack"  # module name the pack is imported under (ComfyUI uses the folder path)
CORE_NODES = REPO / "tests" / "data" / "core_nodes.json"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # editor-only nodes: never sent to the server
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
CONTROL = "<control_after_generate>"  # placeholder name of the frontend's seed control slot
EXTRA = "<frontend widget>"  # placeholder name of a trailing frontend-only widget
MODE_ACTIVE, MODE_MUTED, MODE_BYPASS = 0, 2, 4
UI_VERSION = 0.4
# combos listing the user's files (models/loras, models/checkpoints, models/text_encoders)
PACK_FILE_LISTS = {"SA3LoraLoader": ["lora_name"], "SA3TrainLoRA": ["resume_from", "svd_bases"],
                   "SA3CheckpointLoader": ["ckpt_name", "text_encoder_name"]}


# --- schemas ----------------------------------------------------------------------------------


def schema_info(node_cls) -> dict:
    """A V3 node class as ComfyUI's ``/object_info`` serves it (``GET_NODE_INFO_V1``, through JSON)."""
    return {**json.loads(json.dumps(node_cls.GET_NODE_INFO_V1())), "frontend_widgets": 0}


class NoComfyUI(RuntimeError):
    """The real ComfyUI modules cannot be imported here."""


def _comfyui_importable() -> bool:
    """Whether ``import comfy`` reaches ComfyUI's package. A folder that is merely named ``comfy`` does
    not count: pytest puts the checkout's parent on ``sys.path``, where a ComfyUI clone named ``comfy``
    (its root, not its package) may sit beside the checkout."""
    spec = importlib.util.find_spec("comfy")
    return spec is not None and any(Path(p, "model_management.py").is_file()
                                    for p in spec.submodule_search_locations or ())


def import_comfyui(path: str | os.PathLike | None = None, base_directory: str | None = None) -> Path | None:
    """Make the real ComfyUI importable, on the CPU, from ``path`` or ``COMFYUI_PATH``.

    Returns the ComfyUI folder in use (None when ``comfy`` was importable already); raises
    NoComfyUI with the reason otherwise. ``args.cpu`` is set before ``comfy.model_management`` is
    first imported, because that import decides the devices; ``base_directory`` (ComfyUI's
    ``--base-directory``: its models, input, output, temp and user folders) likewise before
    ``folder_paths`` is, so that nothing installed in that ComfyUI is seen.
    """
    path = path or os.environ.get("COMFYUI_PATH")
    added = None
    if not _comfyui_importable():
        if not path or not Path(path, "comfy", "model_management.py").is_file():
            raise NoComfyUI("no ComfyUI: set COMFYUI_PATH (or --comfyui) to a ComfyUI checkout")
        added = str(Path(path).resolve())
        sys.path.insert(0, added)  # ahead of any folder named comfy elsewhere on the path
    try:
        from comfy.cli_args import args

        if "comfy.model_management" not in sys.modules:
            args.cpu = True
        if base_directory is not None:
            if "folder_paths" in sys.modules and args.base_directory != base_directory:
                raise RuntimeError("folder_paths was imported before its base directory was set")
            args.base_directory = base_directory
        import comfy.model_management  # noqa: F401
        import comfy_api.latest  # noqa: F401
        import folder_paths  # noqa: F401
    except ImportError as e:  # ComfyUI's own requirements are missing in this interpreter
        if added:
            sys.path.remove(added)
        raise NoComfyUI(f"ComfyUI at {path} is not importable here ({e}); install its requirements "
                        "(../shared/comfyui/setup.sh DEST --into PYTHON)") from e
    return Path(added) if added else None


def load_pack():
    """The pack imported as ComfyUI imports a custom node folder (once; ComfyUI importable)."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK]
        raise
    return module


def load_pack_nodes(comfyui: str | os.PathLike | None = None) -> dict[str, type]:
    """The pack's node classes by id, from the real ComfyUI modules (see import_comfyui)."""
    import_comfyui(comfyui)
    load_pack()
    nodes = importlib.import_module(f"{PACK}.nodes")
    return {cls.GET_SCHEMA().node_id: cls for cls in nodes.NODES}


def core_schemas() -> dict[str, dict]:
    data = json.loads(CORE_NODES.read_text())
    return dict(data["nodes"].items())


def local_schemas(pack_nodes: dict[str, type] | None = None) -> dict[str, dict]:
    """Core nodes from the checked-in list plus the pack's nodes from their schemas."""
    pack_nodes = load_pack_nodes() if pack_nodes is None else pack_nodes
    schemas = core_schemas()
    schemas.update({name: schema_info(cls) for name, cls in pack_nodes.items()})
    for name, inputs in PACK_FILE_LISTS.items():
        if name in schemas:
            schemas[name]["file_list"] = inputs
    return schemas


def server_schemas(server: str) -> dict[str, dict]:
    """Every node of a running ComfyUI, from ``GET /object_info`` (frontend extras from the core list)."""
    base = server if "://" in server else f"http://{server}"
    with urllib.request.urlopen(f"{base}/object_info", timeout=60) as resp:
        schemas = json.loads(resp.read())
    for name, entry in core_schemas().items():
        if name in schemas:
            schemas[name]["frontend_widgets"] = entry.get("frontend_widgets", 0)
            schemas[name]["file_list"] = entry.get("file_list", [])
    for name, inputs in PACK_FILE_LISTS.items():
        if name in schemas:
            schemas[name]["file_list"] = inputs
    return schemas


def _spec(info: dict, name: str) -> tuple[str, dict] | None:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None:
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if isinstance(kind, list):  # V1 combo: the options list is the type
                kind, opts = "COMBO", {**opts, "options": kind}
            return kind, opts
    return None


def _ordered_inputs(info: dict) -> list[tuple[str, bool]]:
    """(name, optional) for every input in input_order (required, then optional)."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [(n, False) for n in order.get("required", [])] + [(n, True) for n in order.get("optional", [])]


def is_widget(kind: str, opts: dict) -> bool:
    return kind in WIDGET_TYPES and not opts.get("forceInput")


def has_control_widget(kind: str, name: str, opts: dict) -> bool:
    """Whether the frontend adds a control_after_generate widget after this input, as frontend
    1.27 decides it: an INT takes ``control_after_generate ?? name in ("seed", "noise_seed")`` (an
    explicit ``False`` on a seed means no control), a COMBO only an explicit true value."""
    control = opts.get("control_after_generate")
    if kind == "INT":
        return bool(name in ("seed", "noise_seed") if control is None else control)
    return kind == "COMBO" and bool(control)


def widget_layout(info: dict) -> list[str]:
    """The meaning of each ``widgets_values`` slot: input names, CONTROL or EXTRA."""
    layout = []
    for name, _ in _ordered_inputs(info):
        kind, opts = _spec(info, name)
        if not is_widget(kind, opts):
            continue
        layout.append(name)
        if has_control_widget(kind, name, opts):
            layout.append(CONTROL)
    return layout + [EXTRA] * info.get("frontend_widgets", 0)


def socket_inputs(info: dict) -> list[tuple[str, str, bool]]:
    """(name, type, optional) of the inputs drawn as sockets."""
    out = []
    for name, optional in _ordered_inputs(info):
        kind, opts = _spec(info, name)
        if not is_widget(kind, opts):
            out.append((name, kind, optional))
    return out


def types_match(output_type: str, input_type: str) -> bool:
    """ComfyUI's link type rule: equal, "*" on either side, or one comma-union inside the other."""
    if output_type == "*" or input_type == "*":
        return True
    a, b = set(output_type.split(",")), set(input_type.split(","))
    return a <= b or b <= a


# --- UI -> API --------------------------------------------------------------------------------


class WorkflowError(ValueError):
    """A workflow that cannot be converted or does not validate."""


def ui_to_api(ui: dict, schemas: dict[str, dict]) -> dict:
    """The API-format prompt the frontend would queue for this UI workflow."""
    links = {link[0]: link for link in ui.get("links", [])}
    nodes = {node["id"]: node for node in ui["nodes"]}
    prompt: dict[str, dict] = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        kind = node["type"]
        if kind in FRONTEND_ONLY or node.get("mode", MODE_ACTIVE) == MODE_MUTED:
            continue
        if node.get("mode", MODE_ACTIVE) != MODE_ACTIVE:
            raise WorkflowError(f"node {node['id']} ({kind}): mode {node['mode']} (bypass) is not supported here")
        info = schemas.get(kind)
        if info is None:
            raise WorkflowError(f"node {node['id']}: unknown node type {kind!r}")
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            raise WorkflowError(f"node {node['id']} ({kind}): widgets_values must be a list")
        inputs: dict = {}
        for name, value in zip(widget_layout(info), values, strict=False):
            if name not in (CONTROL, EXTRA):
                inputs[name] = value
        for slot in node.get("inputs", []):
            link_id = slot.get("link")
            if link_id is None:
                continue
            link = links.get(link_id)
            if link is None:
                raise WorkflowError(f"node {node['id']} ({kind}): input {slot['name']!r} uses missing link {link_id}")
            source = nodes.get(link[1])
            if source is None or source.get("mode", MODE_ACTIVE) == MODE_MUTED:
                continue
            inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": kind,
            "_meta": {"title": node.get("title") or info.get("display_name") or kind},
        }
    return prompt


# --- validation -------------------------------------------------------------------------------


_TYPE_CHECKS = {  # widget kind -> (article, test of a value)
    "INT": ("an", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "FLOAT": ("a", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "STRING": ("a", lambda v: isinstance(v, str)),
    "BOOLEAN": ("a", lambda v: isinstance(v, bool)),
}


def check_value(kind: str, opts: dict, value, where: str, file_list: bool = False) -> list[str]:
    """Problems of one widget value, the way ComfyUI's validate_inputs sees them."""
    problems = []
    if kind in _TYPE_CHECKS:
        article, is_kind = _TYPE_CHECKS[kind]
        if not is_kind(value):
            return [f"{where}: {value!r} is not {article} {kind}"]
    elif kind == "COMBO":
        if file_list:  # the user's files: only the shape can be checked (or a fixed choice such as "none")
            if value in opts.get("options", []):
                return problems
            if not isinstance(value, str) or "." not in value.rsplit("/", 1)[-1]:
                problems.append(f"{where}: {value!r} is not a file name")
        elif value not in opts.get("options", []):
            problems.append(f"{where}: {value!r} not in {opts.get('options')}")
        return problems
    if kind in ("INT", "FLOAT"):
        if opts.get("min") is not None and value < opts["min"]:
            problems.append(f"{where}: {value!r} is smaller than the minimum {opts['min']}")
        if opts.get("max") is not None and value > opts["max"]:
            problems.append(f"{where}: {value!r} is bigger than the maximum {opts['max']}")
    return problems


def validate_api(prompt: dict, schemas: dict[str, dict], pack_nodes: dict[str, type] | None = None) -> list[str]:
    """Everything ComfyUI's validate_prompt would reject, plus unknown inputs and the pack's validate_inputs."""
    problems = []
    if not isinstance(prompt, dict) or not prompt:
        return ["not an API-format prompt (an object of node id -> {class_type, inputs})"]
    has_output = False
    for node_id, node in prompt.items():
        where = f"node {node_id}"
        kind = node.get("class_type") if isinstance(node, dict) else None
        if kind not in schemas:
            problems.append(f"{where}: unknown node type {kind!r}")
            continue
        info = schemas[kind]
        where = f"node {node_id} ({kind})"
        has_output |= bool(info.get("output_node"))
        inputs = node.get("inputs", {})
        known = {name for name, _ in _ordered_inputs(info)}
        for name in inputs:
            if name not in known:
                problems.append(f"{where}: unknown input {name!r}")
        linked = {}
        for name, optional in _ordered_inputs(info):
            spec_kind, opts = _spec(info, name)
            if name not in inputs:
                if not optional:
                    problems.append(f"{where}: required input {name!r} is missing")
                continue
            value = inputs[name]
            if isinstance(value, list):
                reaches, found = _check_api_link(prompt, schemas, f"{where}: input {name!r}", value, spec_kind)
                problems += found
                if reaches:
                    linked[name] = value
                continue
            if not is_widget(spec_kind, opts):
                problems.append(f"{where}: socket input {name!r} has a value {value!r} instead of a link")
                continue
            problems += check_value(spec_kind, opts, value, f"{where} input {name!r}",
                                    file_list=name in info.get("file_list", []))
        if pack_nodes and kind in pack_nodes:
            problems += _own_validation(pack_nodes[kind], inputs, linked, info.get("file_list", []), where)
    if not has_output:
        problems.append("the prompt has no output node (SaveAudio, PreviewAudio, ...)")
    return problems


def _check_api_link(prompt: dict, schemas: dict[str, dict], where: str, value: list, spec_kind: str
                    ) -> tuple[bool, list[str]]:
    """(whether the link reaches an existing output, its problems)."""
    if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
        return False, [f"{where} is a bad link {value!r}"]
    source = prompt.get(value[0])
    if source is None or source.get("class_type") not in schemas:
        return False, [f"{where} links to missing node {value[0]!r}"]
    outputs = schemas[source["class_type"]]["output"]
    if not 0 <= value[1] < len(outputs):
        return False, [f"{where} links to output {value[1]} of node {value[0]} "
                       f"({source['class_type']}), which has {len(outputs)}"]
    if not types_match(outputs[value[1]], spec_kind):
        return True, [f"{where} ({spec_kind}) is linked to a {outputs[value[1]]} output"]
    return True, []


def _own_validation(node_cls, inputs: dict, linked: dict, file_lists: list[str], where: str) -> list[str]:
    """The node's ``validate_inputs`` as ComfyUI calls it: widget values, None for linked inputs
    and for combos of the user's files (a shipped workflow names files the user supplies)."""
    fn = getattr(node_cls, "validate_inputs", None)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    if not params:
        return []
    kwargs = {name: (None if name in linked or name in file_lists else inputs.get(name))
              for name in params if name != "kwargs"}
    try:
        result = fn(**kwargs)
    except NotImplementedError:
        return []
    return [] if result is True else [f"{where}: validate_inputs says {result!r}"]


def validate_ui(ui: dict, schemas: dict[str, dict]) -> list[str]:
    """Structure of a UI workflow: nodes, sockets, widgets_values and links agree with the schemas."""
    problems = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "version"):
        if key not in ui:
            problems.append(f"missing top-level key {key!r}")
    if problems:
        return problems
    if ui["version"] != UI_VERSION:
        problems.append(f"version is {ui['version']!r}, expected {UI_VERSION}")
    ids = [n["id"] for n in ui["nodes"]]
    if len(set(ids)) != len(ids):
        problems.append(f"duplicate node ids {sorted(ids)}")
    if ids and ui["last_node_id"] < max(ids):
        problems.append(f"last_node_id {ui['last_node_id']} < the largest node id {max(ids)}")
    link_ids = [link[0] for link in ui["links"]]
    if len(set(link_ids)) != len(link_ids):
        problems.append("duplicate link ids")
    if link_ids and ui["last_link_id"] < max(link_ids):
        problems.append(f"last_link_id {ui['last_link_id']} < the largest link id {max(link_ids)}")
    nodes = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        problems += _check_ui_node(node, schemas)
    for link in ui["links"]:
        problems += _check_ui_link(link, nodes, schemas)
    return problems


def _check_ui_node(node: dict, schemas: dict[str, dict]) -> list[str]:
    kind = node.get("type")
    where = f"node {node.get('id')} ({kind})"
    problems = [f"{where}: missing {key!r}" for key in ("id", "type", "pos", "size", "inputs", "outputs",
                                                          "properties") if key not in node]
    if problems:
        return problems
    if kind in FRONTEND_ONLY:
        if "widgets_values" not in node:
            return [f"{where}: missing 'widgets_values'"]
        if node["inputs"] or node["outputs"] or len(node["widgets_values"]) != 1 \
                or not isinstance(node["widgets_values"][0], str):
            problems.append(f"{where}: a note has no sockets and one text value")
        return problems
    info = schemas.get(kind)
    if info is None:
        return [f"{where}: unknown node type"]
    if node["properties"].get("Node name for S&R") != kind:
        problems.append(f"{where}: properties['Node name for S&R'] should be {kind!r}")
    sockets = socket_inputs(info)
    slots = {s["name"]: s for s in node["inputs"]}
    widget_slots = {s["name"] for s in node["inputs"] if "widget" in s}
    for name, socket_type, _ in sockets:
        if name not in slots:
            problems.append(f"{where}: socket {name!r} is not listed in inputs")
        elif slots[name]["type"] != socket_type:
            problems.append(f"{where}: socket {name!r} has type {slots[name]['type']!r}, expected {socket_type!r}")
    extra = set(slots) - {name for name, _, _ in sockets} - widget_slots
    if extra:
        problems.append(f"{where}: inputs {sorted(extra)} are not sockets of {kind}")
    outputs = node["outputs"]
    if [o["type"] for o in outputs] != info["output"]:
        problems.append(f"{where}: output types {[o['type'] for o in outputs]} != {info['output']}")
    return (problems + _check_ui_widgets(node.get("widgets_values", []), info, slots, where)
            + _check_named_widgets(node, info, where))


def _check_named_widgets(node: dict, info: dict, where: str) -> list[str]:
    """``widgets_values_named`` (frontend 1.58+: widget name -> value, beside the positional list)
    agrees with ``widgets_values`` for every widget input of the schema."""
    named = node.get("widgets_values_named")
    if named is None:
        return []
    if not isinstance(named, dict):
        return [f"{where}: widgets_values_named must be an object, not {type(named).__name__}"]
    positional = dict(zip(widget_layout(info), node.get("widgets_values", []), strict=False))
    return [f"{where}: widgets_values_named[{name!r}] is {named[name]!r} but widgets_values has {value!r}"
            for name, value in positional.items() if name in named and named[name] != value]


def _check_ui_widgets(values, info: dict, slots: dict[str, dict], where: str) -> list[str]:
    """A UI node's widgets_values against the schema's widget layout (newer frontends omit the list
    on nodes without widgets: ``[]``); linked widgets are not checked."""
    if not isinstance(values, list):
        return [f"{where}: widgets_values must be a list, not {type(values).__name__}"]
    layout = widget_layout(info)
    needed = len([n for n in layout if n != EXTRA])
    if not needed <= len(values) <= len(layout):
        return [f"{where}: {len(values)} widgets_values, expected {needed}"
                + (f" to {len(layout)}" if len(layout) != needed else "") + f" for {layout}"]
    problems = []
    for name, value in zip(layout, values, strict=False):
        if name == CONTROL:
            if value not in CONTROL_VALUES:
                problems.append(f"{where}: control_after_generate value {value!r} not in {sorted(CONTROL_VALUES)}")
        elif name != EXTRA and not (name in slots and slots[name].get("link") is not None):
            spec_kind, opts = _spec(info, name)
            problems += check_value(spec_kind, opts, value, f"{where} widget {name!r}",
                                    file_list=name in info.get("file_list", []))
    return problems


def _check_ui_link(link: list, nodes: dict, schemas: dict[str, dict]) -> list[str]:
    if not (isinstance(link, list) and len(link) == 6):
        return [f"link {link!r}: expected [id, from_node, from_slot, to_node, to_slot, type]"]
    link_id, src_id, src_slot, dst_id, dst_slot, link_type = link
    where = f"link {link_id}"
    src, dst = nodes.get(src_id), nodes.get(dst_id)
    if src is None or dst is None:
        return [f"{where}: connects missing node {src_id if src is None else dst_id}"]
    problems = []
    if not 0 <= src_slot < len(src["outputs"]) or link_id not in (src["outputs"][src_slot].get("links") or []):
        problems.append(f"{where}: not listed in output {src_slot} of node {src_id}")
    elif src["outputs"][src_slot]["type"] != link_type:
        problems.append(f"{where}: type {link_type!r} != output type {src['outputs'][src_slot]['type']!r}")
    if not 0 <= dst_slot < len(dst["inputs"]) or dst["inputs"][dst_slot].get("link") != link_id:
        problems.append(f"{where}: not the link of input {dst_slot} of node {dst_id}")
    elif not types_match(link_type, dst["inputs"][dst_slot]["type"]):
        problems.append(f"{where}: a {link_type} link into {dst['inputs'][dst_slot]['type']} input "
                        f"{dst['inputs'][dst_slot]['name']!r} of node {dst_id}")
    for node in (src, dst):
        if node["type"] not in schemas:
            problems.append(f"{where}: node {node['id']} has an unknown type")
    return problems


def same_prompt(a: dict, b: dict) -> bool:
    """Two API prompts queue the same graph: node ids, class types, inputs and titles agree
    (other ``_meta`` keys, such as the ``cnr_id``/``ver`` a frontend export adds, do not matter)."""
    def key(prompt: dict) -> dict:
        return {node_id: (node.get("class_type"), node.get("inputs"), (node.get("_meta") or {}).get("title"))
                for node_id, node in prompt.items()}
    return key(a) == key(b)


def validate_ui_outputs(ui: dict) -> list[str]:
    """Each output's ``links`` list names only links that start at that output."""
    links = {link[0]: link for link in ui["links"]}
    problems = []
    for node in ui["nodes"]:
        for slot, out in enumerate(node.get("outputs", [])):
            for link_id in out.get("links") or []:
                link = links.get(link_id)
                if link is None or link[1] != node["id"] or link[2] != slot:
                    problems.append(f"node {node['id']} output {slot}: link {link_id} does not start here")
    return problems


# --- the workflow files -----------------------------------------------------------------------


def workflow_names() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_all(schemas: dict[str, dict], pack_nodes: dict[str, type] | None,
              write: bool = False) -> dict[str, list[str]]:
    """Problems per workflow name (empty lists when all is well); ``write`` regenerates the API files first."""
    report: dict[str, list[str]] = {}
    api_names = {p.stem for p in API_DIR.glob("*.json")}
    for name in workflow_names():
        ui = read_json(WORKFLOWS / f"{name}.json")
        problems = validate_ui(ui, schemas) + validate_ui_outputs(ui)
        try:
            converted = ui_to_api(ui, schemas)
        except WorkflowError as e:
            report[name] = [*problems, str(e)]
            continue
        api_path = API_DIR / f"{name}.json"
        if write:
            API_DIR.mkdir(exist_ok=True)
            write_json(api_path, converted)
        if not api_path.is_file():
            problems.append(f"no API twin {api_path.relative_to(REPO)} (run with --write)")
        else:
            api = read_json(api_path)
            problems += validate_api(api, schemas, pack_nodes)
            if not same_prompt(api, converted):
                problems.append(f"{api_path.relative_to(REPO)} differs from the UI workflow (run with --write)")
        report[name] = problems
    for orphan in sorted(api_names - set(workflow_names())):
        report[f"api/{orphan}"] = ["API workflow without a UI twin"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="regenerate workflows/api/*.json from the UI files")
    parser.add_argument("--server", help="take node schemas from a running ComfyUI (HOST:PORT)")
    parser.add_argument("--comfyui", help="ComfyUI checkout to import the pack's schemas in (default: COMFYUI_PATH)")
    args = parser.parse_args(argv)
    try:
        pack_nodes = None if args.server else load_pack_nodes(args.comfyui)
    except NoComfyUI as e:
        print(f"check_workflows: {e}; or use --server HOST:PORT", file=sys.stderr)
        return 2
    schemas = server_schemas(args.server) if args.server else local_schemas(pack_nodes)
    report = check_all(schemas, pack_nodes, write=args.write)
    failed = False
    for name, problems in report.items():
        print(f"{'FAIL' if problems else 'ok  '} {name}")
        for p in problems:
            print(f"       {p}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
