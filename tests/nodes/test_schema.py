"""The node schemas are valid for ComfyUI and follow the pack's rules; the extension registers them."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from tests.nodes.conftest import nodes, pack

EXPECTED = {"SA3ModelLoader", "SA3CheckpointLoader", "SA3LoraLoader", "SA3LoraStrength", "SA3TextEncode",
            "SA3EmptyLatent",
            "SA3EncodeAudio", "SA3InpaintMask", "SA3Sampler", "SA3Decode"}


def _node_list():
    extension = asyncio.run(pack.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


def test_extension_registers_every_node_once():
    ids = [cls.GET_SCHEMA().node_id for cls in _node_list()]
    assert len(ids) == len(set(ids))
    assert EXPECTED <= set(ids)  # (plus nodes other modules add, e.g. SA3Spectrogram)


@pytest.mark.parametrize("cls", nodes.NODES, ids=lambda c: c.__name__)
def test_schema(cls):
    schema = cls.GET_SCHEMA()  # runs ComfyUI's own validate() + finalize()
    assert schema.node_id == cls.__name__ and schema.node_id.startswith("SA3")
    assert schema.display_name and schema.display_name.startswith("SA3 ")
    assert schema.category == "audio/stable audio 3"
    assert len(schema.description) > 40
    for item in schema.inputs + schema.outputs:
        assert item.tooltip and len(item.tooltip) > 10, f"{schema.node_id}.{item.id} has no tooltip"
    for inp in schema.inputs:
        default = getattr(inp, "default", None)
        if getattr(inp, "min", None) is not None and default is not None:
            assert inp.min <= default <= inp.max, f"{schema.node_id}.{inp.id} default {default} outside range"
        if hasattr(inp, "options") and inp.options and inp.default is not None:
            assert inp.default in inp.options, f"{schema.node_id}.{inp.id} default not among options"
    # execute() takes exactly the input ids (ComfyUI passes them as keywords)
    params = list(inspect.signature(cls.execute).parameters)
    assert sorted(params) == sorted(i.id for i in schema.inputs)
    # validate_inputs only names inputs that exist, and tolerates linked (None) values
    if "validate_inputs" in cls.__dict__:
        v_params = inspect.signature(cls.validate_inputs).parameters
        assert set(v_params) <= {i.id for i in schema.inputs}
        assert all(p.default is None for p in v_params.values())
        assert cls.validate_inputs() is True


def test_seed_and_sampler_widgets():
    schema = nodes.SA3Sampler.GET_SCHEMA()
    seed = next(i for i in schema.inputs if i.id == "seed")
    assert seed.control_after_generate and seed.min == 0 and seed.max == 2**63 - 1
    sampler = next(i for i in schema.inputs if i.id == "sampler")
    assert sampler.options[0] == "default for the model" and {"pingpong", "euler"} <= set(sampler.options)


def test_model_loader_lists_fixture_folders_and_official_names():
    options = next(i for i in nodes.SA3ModelLoader.GET_SCHEMA().inputs if i.id == "model_name").options
    assert "tiny-small" in options
    assert {"small-music", "small-sfx", "medium", "small-music-base", "small-sfx-base", "medium-base"} <= set(options)
