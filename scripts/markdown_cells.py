"""Markdown escaping shared by the generators in `scripts/gen_*.py`."""

from __future__ import annotations

import html


def cell(text: str | None) -> str:
    """One line of Markdown for a table cell: whitespace collapsed, pipes escaped, and `<`, `>`, `&`
    escaped outside code spans so `runs/<name>` is not read as an HTML tag.

    Args:
        text: the help or description text, which may hold `code spans`.
    """
    pieces = " ".join((text or "").split()).split("`")
    # Odd pieces are inside backticks: Markdown shows them literally, so they stay as they are.
    escaped = [piece if i % 2 else html.escape(piece, quote=False) for i, piece in enumerate(pieces)]
    return "`".join(escaped).replace("|", "\\|")
