"""Every node has a help page (``web/docs/<node id>.md``, served from WEB_DIRECTORY) that names
each of its inputs as **id** or `id`, so the page stays true to the schema when inputs change."""

from __future__ import annotations

import importlib
import re

import pytest

from tests.conftest import REPO
from tests.nodes.conftest import PACK, nodes

DOCS = REPO / "web" / "docs"


@pytest.mark.parametrize("cls", nodes.NODES, ids=lambda c: c.__name__)
def test_help_page_names_every_input(cls):
    schema = cls.define_schema()
    page = DOCS / f"{schema.node_id}.md"
    assert page.is_file(), f"no help page {page}"
    text = page.read_text()
    assert text.startswith(f"# {schema.display_name}\n")
    missing = [i.id for i in schema.inputs if not re.search(rf"(\*\*|`){re.escape(i.id)}(\*\*|`)", text)]
    assert not missing, f"{page.name} does not mention {missing}"


def test_no_page_without_a_node():
    ids = {cls.define_schema().node_id for cls in nodes.NODES}
    assert {p.stem for p in DOCS.glob("*.md")} <= ids


def test_sampler_page_states_the_preview_length():
    seconds = importlib.import_module(f"{PACK}.nodes.visualize").PREVIEW_SECONDS
    assert f"first {seconds:g} s" in (DOCS / "SA3Sampler.md").read_text()


def test_readme_node_table_lists_every_node():
    """The README's node table has one row per node in the search (the deprecated one is named below it)."""
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| \*\*(.+?)\*\* \|", readme, re.MULTILINE)
    schemas = [cls.define_schema() for cls in nodes.NODES]
    assert sorted(rows) == sorted(s.display_name for s in schemas if not s.is_deprecated)
    assert all(f"*{s.display_name.removesuffix(' (deprecated)')}*" in readme for s in schemas if s.is_deprecated)
