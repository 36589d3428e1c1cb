"""Every Mermaid block of the docs is well formed for the diagram kinds the docs use.

Mermaid itself runs in the reader's browser (no Node here), so this checks the grammar of
the three kinds in use, line by line: ``stateDiagram-v2`` arrows, ``flowchart`` nodes and
edges, ``sequenceDiagram`` participants and messages; brackets and quotes balanced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"
BLOCK = re.compile(r"^```mermaid\n(.*?)^```", re.S | re.M)
NODE = r"\w+(?:\[\"[^\"]*\"\]|\{\"[^\"]*\"\})?"
GRAMMAR = {
    "stateDiagram-v2": [re.compile(r"(\[\*\]|\w+) --> (\[\*\]|\w+)( : [^:]+)?")],
    "flowchart": [
        re.compile(rf"{NODE}"),
        re.compile(rf"{NODE} --> {NODE}"),
        re.compile(rf"{NODE} -->\|[^|]+\| {NODE}"),
        re.compile(rf"{NODE} -- \"[^\"]+\" --> {NODE}"),
    ],
    "sequenceDiagram": [
        re.compile(r"participant \w+( as .+)?"),
        re.compile(r"\w+-?->>\w+: .+"),
    ],
}


def blocks() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        found += [(page.name, block) for block in BLOCK.findall(page.read_text())]
    return found


def test_the_docs_have_diagrams() -> None:
    assert len(blocks()) >= 5


@pytest.mark.parametrize(("page", "block"), blocks(), ids=lambda v: v if v.endswith(".md") else "")
def test_each_mermaid_block_is_well_formed(page: str, block: str) -> None:
    header, *lines = block.strip().splitlines()
    kind = header.split()[0]
    assert kind in GRAMMAR, f"{page}: unknown diagram kind {header!r}"
    if kind == "flowchart":
        assert header.split()[1:] in (["LR"], ["TB"], ["TD"]), f"{page}: {header!r}"
    assert lines, f"{page}: an empty {kind}"
    for line in lines:
        text = line.strip()
        assert any(rule.fullmatch(text) for rule in GRAMMAR[kind]), f"{page}: {text!r}"
        for opening, closing in ("[]", "{}", "()"):
            assert text.count(opening) == text.count(closing), f"{page}: {text!r}"
        assert text.count('"') % 2 == 0, f"{page}: {text!r}"
