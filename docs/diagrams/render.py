"""Render the docs' diagrams: each ``docs/diagrams/NAME.mmd`` (Mermaid source) to
``docs/assets/diagrams/NAME.svg``, a static SVG the pages show as an image, so the
diagrams need no script and no network to display.

It needs Mermaid's command line (``npm install @mermaid-js/mermaid-cli``, named by
``$MMDC``, default ``mmdc`` on PATH) and a Chromium for it (``$CHROMIUM``, default
``/usr/bin/chromium``). Each SVG records the SHA-256 of its source; a test checks that
every SVG was rendered from the source beside it, so an edited diagram is re-rendered
in the same commit:

    MMDC=/path/to/node_modules/.bin/mmdc python docs/diagrams/render.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE.parent / "assets" / "diagrams"
CONFIG = {
    "theme": "neutral",
    "htmlLabels": False,  # SVG text, not HTML in a foreignObject
    "flowchart": {"htmlLabels": False},
    "fontFamily": "DejaVu Sans",
}


def source_hash(source: Path) -> str:
    """The SHA-256 of a diagram's source, as its SVG records it."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def stamp(source: Path) -> str:
    """The first line of a rendered SVG: which source, and its hash."""
    return f"<!-- rendered from docs/diagrams/{source.name}, sha256 {source_hash(source)} -->"


def natural_size(svg: str) -> str:
    """Give the SVG its own width and height (Mermaid writes width="100%", which makes
    an image of a small diagram fill the page)."""
    box = re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) ([\d.]+)"', svg)
    if box is None:
        return svg
    width, height = box.groups()
    svg = re.sub(r'<svg([^>]*?) width="100%"', rf'<svg\1 width="{width}"', svg, count=1)
    return svg.replace("<svg ", f'<svg height="{height}" ', 1)


def main() -> int:
    mmdc = os.environ.get("MMDC", "mmdc")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        config, browser = Path(scratch, "config.json"), Path(scratch, "browser.json")
        config.write_text(json.dumps(CONFIG))
        browser.write_text(json.dumps({"executablePath": chromium, "args": ["--no-sandbox"]}))
        for source in sorted(HERE.glob("*.mmd")):
            target = OUT / f"{source.stem}.svg"
            command = [mmdc, "-q", "-c", str(config), "-p", str(browser), "-b", "white"]
            subprocess.run([*command, "-i", str(source), "-o", str(target)], check=True)
            target.write_text(stamp(source) + "\n" + natural_size(target.read_text()) + "\n")
            print(f"{source.name} -> {target.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
