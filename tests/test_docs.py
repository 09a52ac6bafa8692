"""The README and docs/*.md stay true: relative links reach a file or heading, the README stays a
short entry page, its test command is the one CI runs, the commands and imports they show exist,
and no page names a path or module that the restructuring removed."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from sa3 import cli
from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 210  # an entry page; the manual lives in docs/
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
GONE = ["example_workflows/api", "example_workflows/0", "sa3.comfy_run", "sa3/comfy_run", "sa3.pipeline",
        "sa3/pipeline", "sa3.pictures", "sa3/pictures", "/tmp/comfy/"]  # old names of moved code and paths


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def _prose(text: str) -> str:
    """The page without fenced code blocks (their lines are neither headings nor links)."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    ids, counts = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        ids.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
        counts[slug] = counts.get(slug, 0) + 1
    return ids


def test_anchor_rules_match_github():
    page = REPO / "docs" / "library.md"
    assert {"the-sa3-library-and-command-line-without-comfyui", "core-comfyuis-single-files",
            "attention-backends-and-padding"} <= anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_reach_a_file_or_heading(page):
    broken = []
    for target in LINK.findall(INLINE_CODE.sub("", _prose(page.read_text()))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(REPO) if file.is_relative_to(REPO) else file})")
        elif anchor and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(REPO)})")
    assert not broken, f"{_page_id(page)}: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in readme]
    assert not unlinked


def test_readme_is_an_entry_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"
    headings = [line[3:] for line in lines if line.startswith("## ")]
    for needed in ("Install", "Model files", "Nodes", "Templates", "The two commands", "Troubleshooting", "Layout"):
        assert needed in headings, needed


def test_readme_test_command_is_the_one_ci_runs():
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("**Test**"):].split("```")[1]
    readme_command = re.search(r"COMFYUI_PATH=\S+ (python -m pytest[^#\n]*?)\s*(#|$)", block, re.MULTILINE).group(1)
    ci = (REPO / ".ci" / "run").read_text()
    ci_args = re.search(r"# the README's test command\n(?:.*\n)*?\"\$py\" (-m pytest[^|\n]*?) 2>&1", ci).group(1)
    assert readme_command == f"python {ci_args}"


def _sa3_commands() -> list[tuple[str, list[str]]]:
    """Every ``python -m sa3 generate|train`` command with arguments in a code block or inline code."""
    found = []
    for page in PAGES:
        text = page.read_text()
        snippets = [block.replace("\\\n", " ") for block in FENCE.findall(text)]
        snippets += [span.strip("`").replace("\n", " ") for span in re.findall(r"`python -m sa3 [^`]+`", text)]
        for snippet in snippets:
            for line in snippet.splitlines():
                match = re.search(r"python -m sa3 (generate|train)\b(.*)", line)
                args = shlex.split(match.group(1) + match.group(2), comments=True) if match else []
                if len(args) > 1 and "--help" not in args:  # a command, not a mention of the subcommand
                    found.append((_page_id(page), args))
    return found


def test_docs_show_cli_commands():
    assert {args[0] for _, args in _sa3_commands()} == {"generate", "train"}


@pytest.mark.parametrize(("page", "args"), _sa3_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_cli_commands_in_the_docs_parse(page, args):
    cli.build_parser().parse_args(args)  # argparse exits on an unknown flag or a bad choice


def _cli_flags() -> set[str]:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    return {flag for sub in subparsers.values() for action in sub._actions for flag in action.option_strings}


@pytest.mark.parametrize("name", ["library.md", "training.md"])
def test_cli_flags_named_in_the_library_pages_exist(name):
    text = (REPO / "docs" / name).read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z]+(?:-[a-z]+)*(?![-\w*])", text))
    assert named, name
    assert not named - _cli_flags()


def _imports() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in PAGES:
        for module, names in re.findall(r"from (sa3(?:\.\w+)*) import ([\w, ]+)", page.read_text()):
            found.append((_page_id(page), module, [n.strip() for n in names.split(",") if n.strip()]))
    return found


def test_docs_show_imports():
    assert {module for _, module, _ in _imports()} >= {"sa3", "sa3.training", "sa3.lora"}


@pytest.mark.parametrize(("page", "module", "names"), _imports(),
                         ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_imports_in_the_docs_exist(page, module, names):
    imported = importlib.import_module(module)
    assert [n for n in names if not hasattr(imported, n)] == []


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_pages_use_the_final_names(page):
    text = page.read_text()
    assert [old for old in GONE if old in text] == []
