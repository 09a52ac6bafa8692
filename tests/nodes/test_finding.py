"""Finding the nodes and starting from a template: search words, LoRA lists without the -XS
bases file, a LoRA template's placeholder names answered with what to pick."""

from __future__ import annotations

import dataclasses
import importlib

import folder_paths
import pytest
from comfy_api.latest import io

from tests.nodes.conftest import PACK, load_handle, nodes

search = importlib.import_module(f"{PACK}.nodes.search")
loaders = importlib.import_module(f"{PACK}.nodes.loaders")

NODE_IDS = [cls.define_schema().node_id for cls in nodes.NODES]


@pytest.mark.parametrize("phrase, expected", [
    ("stable audio", set(NODE_IDS)), ("sa3", set(NODE_IDS)),
    ("audio sampler", {"SA3Sampler"}), ("inpaint audio", {"SA3InpaintMask", "SA3Sampler"}),
])
def test_search_phrases_find_the_nodes(phrase, expected):
    found = {node_id for node_id in NODE_IDS if phrase in search.aliases(node_id)}
    assert expected <= found


def test_every_node_has_its_own_search_words():
    for node_id in NODE_IDS:
        assert len(search.aliases(node_id)) > len(search.PACK), node_id


def test_aliases_reach_the_schema_only_where_comfyui_has_the_field():
    """ComfyUI 0.3.64's io.Schema has no search_aliases (its frontend searches names only): the
    schemas build there; a Schema with the field (newer ComfyUI) receives the words."""
    has_field = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}
    expected = {"search_aliases": search.aliases("SA3Sampler")} if has_field else {}
    assert search.schema_aliases("SA3Sampler") == expected

    @dataclasses.dataclass
    class NewerSchema:
        node_id: str
        search_aliases: list[str] = dataclasses.field(default_factory=list)

    assert search.schema_aliases("SA3Sampler", NewerSchema) == {"search_aliases": search.aliases("SA3Sampler")}
    for cls in nodes.NODES:
        cls.GET_SCHEMA()  # builds with this ComfyUI's Schema


def test_lora_list_hides_the_xs_bases_file():
    choices = loaders.lora_choices()
    assert any(name.endswith("lora.safetensors") for name in choices)
    assert not any(name.endswith("svd_bases.safetensors") for name in choices)
    options = next(i for i in nodes.SA3LoraLoader.define_schema().inputs if i.id == "lora_name").options
    assert options == choices


def test_placeholder_lora_name_says_what_to_pick():
    small = load_handle("tiny-small")
    with pytest.raises(ValueError) as caught:
        nodes.SA3LoraLoader.execute(model=small, lora_name="sa3-style-lora.safetensors", strength_dit=1.0,
                                    strength_conditioner=1.0)
    message = str(caught.value)
    assert message.startswith("Stable Audio 3 LoRA Loader: lora_name 'sa3-style-lora.safetensors' is not a LoRA in "
                              "models/loras (got 'sa3-style-lora.safetensors', expected one of the listed files). "
                              "Pick one of your LoRA files in lora_name (")
    assert repr(loaders.lora_choices()[0]) in message and "placeholders" in message
    bases = next(n for n in folder_paths.get_filename_list("loras") if n.endswith("svd_bases.safetensors"))
    with pytest.raises(ValueError, match="the -XS bases file that -XS LoRAs read beside them"):
        nodes.SA3LoraLoader.execute(model=small, lora_name=bases, strength_dit=1.0, strength_conditioner=1.0)


def test_no_lora_at_all_says_where_to_put_one(monkeypatch):
    monkeypatch.setattr(loaders, "lora_choices", list)
    message = loaders._check_lora_name("sa3-style-lora.safetensors")
    assert "models/loras has no LoRA file yet: put a Stable Audio 3 LoRA there" in message
    assert "bypass this node (Ctrl+B)" in message
