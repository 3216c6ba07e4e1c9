"""`--help` works on every command, and importing the CLI stays light.

Commands are discovered from the Typer app, so a new command is covered the day it is registered.
"""

from __future__ import annotations

import os
import re
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


def _help_text(path: tuple[str, ...], columns: int) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tunewiz", *path, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": str(columns), "TERM": "dumb"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("columns", [80, 200])
def test_help_shows_how_to_type_each_parameter(columns: int) -> None:
    """Flags show no value, `--set` shows KEY=VALUE, arguments are in capitals, nothing is cut off."""
    paths = command_paths()
    # One process per command and width keeps it real; all of them in one loop keeps it under ~30 s.
    for path in paths:
        text = _help_text(path, columns)
        where = f"tunewiz {' '.join(path)} --help at {columns} columns"
        assert "<bool>" not in text, f"{where}: a flag shown as taking a value\n{text}"
        assert "list[" not in text, f"{where}: a list option shown by its Python type\n{text}"
        assert "…" not in text, f"{where}: something cut off\n{text}"
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert not re.search(r"[{\[][a-z_]+[}\]]", usage), f"{where}: an argument not in capitals\n{usage}"
        if "--set" in text:
            assert re.search(r"--set\s+KEY=VALUE", text), f"{where}\n{text}"


def test_every_option_and_argument_has_a_description() -> None:
    root = typer.main.get_command(app)
    missing = []
    for path in command_paths():
        command = root
        for word in path:
            command = command.commands[word]
        for param in command.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"tunewiz {' '.join(path)} {param.opts or param.name}")
    assert not missing, missing


def test_set_takes_the_comma_form_for_list_fields() -> None:
    from tunewiz.preset.files import load_preset

    preset, _ = load_preset("tiny-lora", ["lora.targets=q_proj,v_proj,o_proj"])
    assert preset.lora.targets == ["q_proj", "v_proj", "o_proj"]
    preset, _ = load_preset("tiny-lora", ["lora.targets=[k_proj, v_proj]"])
    assert preset.lora.targets == ["k_proj", "v_proj"]


def test_presets_list_descriptions_are_whole_sentences() -> None:
    from tunewiz.preset.files import header_comment, shipped_presets

    presets = shipped_presets()
    assert len(presets) >= 2
    for path in presets:
        about = header_comment(path)
        assert about.endswith((".", "!", "?", ")")), f"{path.name}: `{about}`"
    pretrain = next(p for p in presets if p.stem == "tiny-pretrain")
    assert "synthetic story corpus" in header_comment(pretrain)


def test_help_texts_are_shown_as_written() -> None:
    """Square brackets are not read as markup (`'tunewiz[web]'` kept its `[web]`), and a command's first
    paragraph is one line in its group's listing at a width that holds it (not broken where the
    docstring's line ended)."""
    root = typer.main.get_command(app)
    bracketed = 0
    for path in command_paths():
        command = root
        for word in path:
            command = command.commands[word]
        result = CliRunner().invoke(app, [*path, "--help"], env={"NO_COLOR": "1", "COLUMNS": "200"})
        shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
        for text in [command.help or "", *(p.help or "" for p in command.params)]:
            for word in re.findall(r"\w+\[\w+\]", text):
                bracketed += 1
                assert word in shown, f"tunewiz {' '.join(path)} --help lost the brackets of {word}"
        listed = result.output.splitlines()
        for name, sub in getattr(command, "commands", {}).items():
            first = " ".join((sub.help or "").split("\n\n")[0].split())
            assert any(f"{name} " in line and first in line for line in listed), (name, first)
    assert bracketed >= 2  # tunewiz[web] (chat --web) and tunewiz[tracking] (train --report-to) at least
