"""`--help` works on every command, and importing the CLI stays light.

Commands are discovered from the Typer app, so a new command is covered the day it is registered.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from tunewiz.cli import app

# root, train, presets, presets list/show/copy: the surface when this test was written. It only grows.
MIN_COMMANDS = 6
HEAVY_MODULES = {"torch", "datasets", "transformers", "lm_eval"}


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command as the words that invoke it; the root is ``()``."""
    paths = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def test_command_discovery_finds_the_known_surface() -> None:
    paths = command_paths()
    assert len(paths) >= MIN_COMMANDS, paths
    assert {(), ("presets",), ("presets", "list"), ("presets", "show"), ("presets", "copy")} <= set(paths)


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(("tunewiz", *p)))
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"NO_COLOR": "1", "COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert f"Usage: tunewiz {' '.join(path)}".rstrip() in result.output
    if path[:1] == ("presets",):
        assert "Example" in result.output


def test_importing_the_cli_imports_no_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tunewiz.cli"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # Lines look like "import time:  1234 |  5678 |     package.module".
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "tunewiz" in imported, result.stderr[-2000:]
    assert not imported & HEAVY_MODULES, f"`import tunewiz.cli` imports {sorted(imported & HEAVY_MODULES)}"
