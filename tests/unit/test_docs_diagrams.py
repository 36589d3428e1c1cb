"""The docs' diagrams render with no script and no network: each Mermaid source in
``docs/diagrams/`` is shown as the static SVG rendered from it (``docs/diagrams/render.py``),
and each source is well formed for the kinds the docs use, line by line: ``flowchart``
nodes and edges, ``sequenceDiagram`` participants and messages; brackets and quotes
balanced."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"
SOURCES = sorted((DOCS / "diagrams").glob("*.mmd"))
RENDERED = DOCS / "assets" / "diagrams"
NODE = r"\w+(?:\[\"[^\"]*\"\]|\{\"[^\"]*\"\}|\(\( \)\)|\(\[\w+\]\))?"
LABEL = r"\|(?:[^|\"]+|\"[^\"]+\")\|"
GRAMMAR = {
    "flowchart": [
        re.compile(rf"{NODE}"),
        re.compile(rf"{NODE} --> {NODE}"),
        re.compile(rf"{NODE} -->{LABEL} {NODE}"),
        re.compile(rf"{NODE} -- \"[^\"]+\" --> {NODE}"),
    ],
    "sequenceDiagram": [
        re.compile(r"participant \w+( as .+)?"),
        re.compile(r"\w+-?->>\w+: .+"),
    ],
}


def pages() -> dict[Path, str]:
    return {page: page.read_text() for page in sorted(DOCS.rglob("*.md"))}


def test_the_docs_have_diagrams_and_no_diagram_left_to_a_script() -> None:
    assert len(SOURCES) >= 5
    for page, text in pages().items():
        assert "```mermaid" not in text, f"{page.name}: a diagram that needs Mermaid's script"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_each_diagram_is_shown_as_the_svg_rendered_from_its_source(source: Path) -> None:
    svg = RENDERED / f"{source.stem}.svg"
    assert svg.is_file(), f"render it: python docs/diagrams/render.py ({svg.name} is missing)"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    first = svg.read_text().splitlines()[0]
    assert first == f"<!-- rendered from docs/diagrams/{source.name}, sha256 {digest} -->", (
        f"{svg.name} was rendered from another version of {source.name}: run "
        "python docs/diagrams/render.py"
    )
    shown = [p.name for p, text in pages().items() if f"assets/diagrams/{svg.name})" in text]
    assert shown, f"no page shows {svg.name}"


@pytest.mark.parametrize("svg", sorted(RENDERED.glob("*.svg")), ids=lambda p: p.name)
def test_each_svg_has_a_source_and_loads_nothing(svg: Path) -> None:
    assert (DOCS / "diagrams" / f"{svg.stem}.mmd").is_file(), f"{svg.name} has no source"
    text = svg.read_text()
    for outside in ('href="http', "url(http", "@import", "<script", "<foreignObject"):
        assert outside not in text, f"{svg.name} holds {outside!r}"
    assert re.search(r'<svg[^>]* width="[\d.]+"', text), f"{svg.name}: no width of its own"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_each_diagram_source_is_well_formed(source: Path) -> None:
    header, *lines = source.read_text().strip().splitlines()
    kind = header.split()[0]
    assert kind in GRAMMAR, f"{source.name}: unknown diagram kind {header!r}"
    if kind == "flowchart":
        assert header.split()[1:] in (["LR"], ["TB"], ["TD"]), f"{source.name}: {header!r}"
    assert lines, f"{source.name}: an empty {kind}"
    for line in lines:
        text = line.strip()
        assert any(rule.fullmatch(text) for rule in GRAMMAR[kind]), f"{source.name}: {text!r}"
        for opening, closing in ("[]", "{}", "()"):
            assert text.count(opening) == text.count(closing), f"{source.name}: {text!r}"
        assert text.count('"') % 2 == 0, f"{source.name}: {text!r}"
