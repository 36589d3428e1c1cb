"""The docs' included snippets render as written: no leading indent carried over from the
function they were cut from, and every include names a section that exists."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import markdown
import pytest
import yaml

ROOT = Path(__file__).parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
FENCE = re.compile(r"^( *)```[a-z]*\n(.*?)^\1```", re.S | re.M)


class ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml as mkdocs reads it, its ``!!python/name:`` tags kept as text."""


ConfigLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/name:", lambda _loader, suffix, _node: suffix
)


def snippet_options() -> dict[str, object]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=ConfigLoader)
    for extension in config["markdown_extensions"]:
        if isinstance(extension, dict) and "pymdownx.snippets" in extension:
            return dict(extension["pymdownx.snippets"])
    raise AssertionError("mkdocs.yml has no pymdownx.snippets")


@pytest.mark.parametrize(
    "page", [p for p in PAGES if "--8<--" in p.read_text()], ids=lambda p: p.name
)
def test_included_snippets_start_at_the_left_margin(page: Path) -> None:
    options = {**snippet_options(), "base_path": [str(ROOT)]}
    processor = markdown.Markdown(
        extensions=["pymdownx.snippets"], extension_configs={"pymdownx.snippets": options}
    )
    fences = FENCE.findall(page.read_text())
    includes = [textwrap.dedent(block) for _indent, block in fences if "--8<--" in block]
    assert includes
    for include in includes:
        block = "\n".join(processor.preprocessors["snippet"].run(include.splitlines()))
        assert block.strip(), f"{page.name}: {include.strip()} includes nothing"
        indents = [len(line) - len(line.lstrip()) for line in block.splitlines() if line.strip()]
        assert min(indents) == 0, f"{page.name}: a snippet keeps an indent:\n{block[:200]}"
