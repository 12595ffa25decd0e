"""The documentation: the README is a short front door, every reference page is one link away from it,
every link resolves, and config/README.md is the reference generated from config/schema.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolshift.common.config import load_schema
from toolshift.common.config_doc import COMMAND, README_PATH, key_paths, render

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, README_PATH]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(path: Path) -> str:
    """The Markdown of `path` without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, spaces to hyphens)."""
    anchors = set()
    for line in _prose(path).splitlines():
        m = re.match(r"^#{1,6} (.*)$", line)
        if m:
            title = m.group(1).strip().lower()
            anchors.add("".join(c for c in title if c.isalnum() or c in " -_").replace(" ", "-"))
    return anchors


def _local_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path)) if not re.match(r"^[a-z]+:", t)]


def test_config_readme_is_generated_from_the_schema():
    assert README_PATH.read_text(encoding="utf-8") == render(), f"config/README.md is stale: run `{COMMAND}`"


def test_every_schema_key_is_documented():
    """The generator leaves no property of the schema out (nested objects and $defs included)."""
    schema = load_schema()
    documented = key_paths(schema)
    names = {p.rsplit(".", 1)[-1] for p in documented}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                assert key in names, key
                walk(value)
            for value in node.values():
                if isinstance(value, dict | list):
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    text = README_PATH.read_text(encoding="utf-8")
    for path in documented:
        assert f"`{path}`" in text, path
    for top in schema["properties"]:
        assert f"| `{top}` |" in text, top


def test_readme_is_a_front_door_of_at_most_8_kb():
    assert len(README.read_bytes()) <= 8192


def test_quickstart_is_the_two_commands():
    section = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make report", "make test"]


def test_every_reference_page_is_one_link_from_the_readme():
    linked = {(README.parent / t.split("#", 1)[0]).resolve() for t in _local_links(README)}
    for page in [*DOCS, README_PATH, REPO / "book" / "reproduce.md"]:
        assert page.resolve() in linked, page.relative_to(REPO)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_local_link_resolves(page):
    for target in _local_links(page):
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        assert resolved.exists(), f"{page.relative_to(REPO)}: {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.relative_to(REPO)}: {target}"


def test_the_headline_picture_is_a_small_png():
    picture = REPO / "docs" / "headline.png"
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000
    assert "](docs/headline.png)" in README.read_text(encoding="utf-8")
