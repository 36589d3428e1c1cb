"""What the command line shows a person: display widths, progress lines, one-line messages.

Example:
    >>> pad("日報", 6) + "|"
    '日報  |'
"""

from __future__ import annotations

import sys
import unicodedata
from typing import TextIO


def display_width(text: str) -> int:
    """Return how many terminal columns ``text`` takes (wide CJK characters take two).

    Example:
        >>> display_width("日報"), display_width("abc"), display_width("e\\u0301")
        (4, 3, 1)
    """
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """Left-align ``text`` in ``width`` columns, counting display width, not characters.

    Example:
        >>> pad("translate", 10) + "|", pad("日報", 10) + "|"
        ('translate |', '日報      |')
    """
    return text + " " * max(0, width - display_width(text))


def table(rows: list[list[str]], gap: str = "  ") -> list[str]:
    """Lay rows out in columns, each as wide as its widest cell (by display width).

    Example:
        >>> table([["r-1", "日報", "active"], ["r-22", "summarize", "errored"]])
        ['r-1   日報       active', 'r-22  summarize  errored']
    """
    widths = (
        [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    )
    return [
        gap.join(pad(cell, widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row))
        for row in rows
    ]


def one_line(text: str) -> str:
    """Fold a message onto one line (a log excerpt inside an error, for instance).

    Example:
        >>> one_line("did not start.\\nIts log ends with:\\n  bad config")
        'did not start. Its log ends with: bad config'
    """
    return " ".join(text.split())


class Progress:
    """A progress line on stderr that rewrites itself, shown only on a terminal.

    When stderr is a pipe or a file nothing is written, so logs and scripts see only
    what the command prints on purpose.

    Example:
        ```python
        progress = Progress()
        for n in range(1, 4):
            progress(f"batch {n} of 3")
        progress.done()
        ```
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._shown = False

    def __call__(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\x1b[2K{one_line(text)}")
            self.stream.flush()
            self._shown = True

    def done(self) -> None:
        """Clear the line, so what is printed next starts at the left edge.

        Example:
            ```python
            progress.done()
            ```
        """
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
