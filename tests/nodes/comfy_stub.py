"""A minimal stand-in for the parts of ComfyUI the node pack uses, for CI without ComfyUI.

It mirrors ComfyUI 0.3.64 (``comfy_api/latest/_io.py``, ``comfy/model_management.py``,
``comfy/model_patcher.py``, ``comfy/utils.py``, ``folder_paths.py``): same names, same
constructor keywords, same ``as_dict`` keys for what the schema test reads; behaviour is CPU-only
and records what the nodes ask for (loads, progress, interrupts). Installed only when the real
``comfy`` package cannot be imported (see conftest.py).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

# --- comfy_api.latest.io ---------------------------------------------------------------------------


class _StringIOType(str):
    def __ne__(self, value: object) -> bool:  # ComfyUI's type matching: "*" and comma unions
        if self == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        a, b = frozenset(self.split(",")), frozenset(value.split(","))
        return not (b.issubset(a) or a.issubset(b))

    __hash__ = str.__hash__


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class Input:
    Parent = None

    def __init__(self, id: str, display_name: str | None = None, optional=False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict or {}

    @property
    def io_type(self):
        return self.Parent.io_type

    def as_dict(self):
        return _prune({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy}) | _prune(self.extra_dict)


class WidgetInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, socketless=None,
                 widget_type=None, force_input=None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.socketless = default, socketless
        self.widget_type, self.force_input = widget_type, force_input

    def as_dict(self):
        return super().as_dict() | _prune({"default": self.default, "socketless": self.socketless,
                                           "widgetType": self.widget_type, "forceInput": self.force_input})


class Output:
    Parent = None

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list

    @property
    def io_type(self):
        return self.Parent.io_type


class ComfyTypeIO:
    io_type: str = None

    class Input(Input):
        pass

    class Output(Output):
        pass


def comfytype(io_type: str):
    def decorator(cls):
        inp = type("Input", (cls.Input,), {})
        out = type("Output", (cls.Output,), {})
        new = type(cls.__name__, (cls,), {"Input": inp, "Output": out, "io_type": _StringIOType(io_type)})
        inp.Parent = out.Parent = new
        return new
    return decorator


def Custom(io_type: str):
    @comfytype(io_type)
    class CustomComfyType(ComfyTypeIO):
        pass
    return CustomComfyType


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, label_on=None,
                     label_off=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on, self.label_off = label_on, label_off


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


@comfytype("INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                     force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate, self.display_mode = control_after_generate, display_mode

        def as_dict(self):
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "control_after_generate": self.control_after_generate})


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

        def as_dict(self):
            return super().as_dict() | _prune({"min": self.min, "max": self.max, "step": self.step,
                                               "round": self.round})


@comfytype("STRING")
class String(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                     placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self):
            return super().as_dict() | _prune({"multiline": self.multiline, "placeholder": self.placeholder})


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     control_after_generate=None, upload=None, image_folder=None, remote=None, socketless=None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.options, self.control_after_generate = options, control_after_generate

        def as_dict(self):
            return super().as_dict() | _prune({"multiselect": False, "options": self.options})


@comfytype("LATENT")
class Latent(ComfyTypeIO):
    pass


@comfytype("AUDIO")
class Audio(ComfyTypeIO):
    pass


@comfytype("IMAGE")
class Image(ComfyTypeIO):
    pass


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):  # as ComfyUI: ids unique within and across inputs/outputs
        ins = [i.id for i in self.inputs or []]
        outs = [o.id for o in self.outputs or []]
        if len(set(ins)) != len(ins) or len(set(outs)) != len(outs) or set(ins) & set(outs):
            raise ValueError(f"Schema {self.node_id}: input/output ids must be unique ({ins}, {outs}).")

    def finalize(self):
        for i, o in enumerate(self.outputs or []):
            if o.id is None:
                o.id = f"_{i}_{o.io_type}_"


class ComfyNode:
    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.validate()
        schema.finalize()
        return schema


class NodeOutput:
    def __init__(self, *args: Any, ui=None, expand=None, block_execution=None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if self.args else None


class ComfyExtension(ABC):
    async def on_load(self) -> None:  # noqa: B027 - optional hook, as in ComfyUI
        pass

    @abstractmethod
    async def get_node_list(self) -> list:
        raise NotImplementedError


# --- comfy.* and folder_paths ----------------------------------------------------------------------


class InterruptProcessingException(Exception):
    pass


@dataclass
class Recorder:
    """What the nodes asked of ComfyUI during a test."""

    loads: list = field(default_factory=list)  # lists of ModelPatcher
    progress: list = field(default_factory=list)  # (value, total)
    interrupt: bool = False
    interrupt_after_checks: int | None = None  # raise at the N-th interrupt check
    checks: int = 0


RECORD = Recorder()


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
        if not hasattr(model, "device"):
            model.device = offload_device


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    RECORD.loads.append(list(models))
    for patcher in models:
        patcher.model.to(patcher.load_device)
        patcher.model.device = patcher.load_device


def throw_exception_if_processing_interrupted():
    RECORD.checks += 1
    after = RECORD.interrupt_after_checks
    if RECORD.interrupt or (after is not None and RECORD.checks >= after):
        RECORD.interrupt = False
        RECORD.interrupt_after_checks = None
        raise InterruptProcessingException()


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total, self.current, self.node_id = total, 0, node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        RECORD.progress.append((self.current, self.total))

    def update(self, value):
        self.update_absolute(self.current + value)


def _folder_paths_module(models_dir: str) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = models_dir
    fp.supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
    fp.folder_names_and_paths = {"loras": ([os.path.join(models_dir, "loras")], fp.supported_pt_extensions)}

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        paths, _exts = fp.folder_names_and_paths.setdefault(folder_name, ([], set()))
        if full_folder_path not in paths:
            paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)

    def get_folder_paths(folder_name):
        return fp.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(folder_name):
        paths, exts = fp.folder_names_and_paths[folder_name]
        out = []
        for base in paths:
            for root, _, files in os.walk(base, followlinks=True):
                for f in files:
                    if not exts or os.path.splitext(f)[1].lower() in exts:
                        out.append(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/"))
        return sorted(set(out))

    def get_full_path(folder_name, filename):
        for base in fp.folder_names_and_paths.get(folder_name, ([], None))[0]:
            path = os.path.join(base, filename)
            if os.path.isfile(path):
                return path
        return None

    def get_full_path_or_raise(folder_name, filename):
        path = get_full_path(folder_name, filename)
        if path is None:
            raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
        return path

    for f in (add_model_folder_path, get_folder_paths, get_filename_list, get_full_path, get_full_path_or_raise):
        setattr(fp, f.__name__, f)
    return fp


def install(models_dir: str) -> Recorder:
    """Put the stand-in modules into ``sys.modules``."""
    cpu = torch.device("cpu")
    io = types.ModuleType("comfy_api.latest._io")
    for name in ("Input", "WidgetInput", "Output", "ComfyTypeIO", "comfytype", "Custom", "Boolean", "Int", "Float",
                 "String", "Combo", "Latent", "Audio", "Image", "Hidden", "Schema", "ComfyNode", "NodeOutput",
                 "NumberDisplay"):
        setattr(io, name, globals()[name])
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ui, latest.ComfyExtension = io, types.ModuleType("comfy_api.latest._ui"), ComfyExtension
    comfy_api = types.ModuleType("comfy_api")
    comfy_api.latest = latest

    mm = types.ModuleType("comfy.model_management")
    for fn in ("get_torch_device", "unet_offload_device", "text_encoder_device", "text_encoder_offload_device",
               "vae_device", "vae_offload_device", "intermediate_device"):
        setattr(mm, fn, lambda: cpu)
    mm.unet_dtype = lambda device=None, model_params=0, supported_dtypes=None, weight_dtype=None: torch.float32
    mm.vae_dtype = lambda device=None, allowed_dtypes=(): torch.float32
    mm.load_models_gpu = load_models_gpu
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.InterruptProcessingException = InterruptProcessingException
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.ModelPatcher = ModelPatcher
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(cpu=True, fp16_text_enc=False, bf16_text_enc=False, fp32_text_enc=False)
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []  # a package, so importlib.util.find_spec("comfy") succeeds
    comfy.__spec__ = importlib.machinery.ModuleSpec("comfy", None, is_package=True)
    comfy.model_management, comfy.model_patcher, comfy.utils, comfy.cli_args = mm, patcher, utils, cli_args
    sys.modules.update({
        "comfy_api": comfy_api, "comfy_api.latest": latest, "comfy_api.latest._io": io, "comfy": comfy,
        "comfy.model_management": mm, "comfy.model_patcher": patcher, "comfy.utils": utils,
        "comfy.cli_args": cli_args, "folder_paths": _folder_paths_module(models_dir),
    })
    return RECORD
