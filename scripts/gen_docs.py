"""Regenerate every generated documentation file, or check that they are up to date.

    python scripts/gen_docs.py           # write them all
    python scripts/gen_docs.py --check   # exit 1 and name the stale files

The SVG screenshots are made by `scripts/render_screenshots.py` (kept apart: it loads the planner).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import gen_api_reference
import gen_catalog_table
import gen_cli_reference
import gen_error_reference
import gen_hardware_table
import gen_preset_reference

GENERATED: tuple[tuple[Path, Callable[[], str]], ...] = (
    (gen_cli_reference.TARGET, gen_cli_reference.render),
    (gen_preset_reference.TARGET, gen_preset_reference.render),
    (gen_error_reference.TARGET, gen_error_reference.render),
    (gen_error_reference.REFERENCE, gen_error_reference.render_reference),
    (gen_api_reference.TARGET, gen_api_reference.render),
    (gen_catalog_table.TARGET, gen_catalog_table.render),
    (gen_catalog_table.PAGE, gen_catalog_table.render_page),
    (gen_hardware_table.TARGET, gen_hardware_table.render),
)


def stale() -> list[Path]:
    """Generated files whose content differs from what their generator writes now."""
    return [
        path
        for path, render in GENERATED
        if not path.is_file() or path.read_text(encoding="utf-8") != render()
    ]


def main(argv: list[str]) -> int:
    """Write every generated file, or with `--check` report the stale ones.

    Args:
        argv: command-line arguments after the script name.
    """
    if "--check" in argv:
        found = stale()
        for path in found:
            print(f"stale: {path}; run `python scripts/gen_docs.py`", file=sys.stderr)
        return 1 if found else 0
    for path, render in GENERATED:
        path.write_text(render(), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
