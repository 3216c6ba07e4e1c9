"""One error style on the terminal: usage mistakes print `error:`/`hint:` lines like every other failure,
and every hint that names a `tunewiz` command names one that exists."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from tunewiz.cli import app

REPO = Path(__file__).resolve().parents[1]
BOX = ("╭", "╰", "│")


def tunewiz(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (("chat",), "error: missing argument `TARGET`", "hint: see `tunewiz chat --help`"),
        (("pla",), "error: no such command `pla`", "hint: did you mean `tunewiz plan`?"),
        (("presets", "lis"), "error: no such command `lis`", "`tunewiz presets list`"),
        (("plan", "--micro-batc", "2"), "error: no such option: --micro-batc", "`--micro-batch`"),
        (("plan", "--gpus", "two"), "error: invalid value for `--gpus`", "`tunewiz plan --help`"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_usage_mistakes_print_error_and_hint(args: tuple[str, ...], error: str, hint: str, tmp_path) -> None:
    result = tunewiz(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert not any(ch in result.stderr for ch in BOX), result.stderr
    assert lines[0].startswith(error), result.stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], result.stderr
    assert result.stdout == ""


def test_missing_run_directory_says_it_does_not_exist(tmp_path) -> None:
    (tmp_path / "runs").mkdir()
    resume = tunewiz("resume", "runs/nope", cwd=tmp_path)
    assert resume.returncode == 2
    assert "`runs/nope` does not exist" in resume.stderr, resume.stderr
    assert "config.yaml" not in resume.stderr
    chat = tunewiz("chat", "runs/nope", "--prompt", "hi", cwd=tmp_path)
    assert chat.returncode == 2
    assert "`runs/nope` does not exist" in chat.stderr, chat.stderr
    assert "download" not in chat.stderr


def _hint_strings() -> list[tuple[str, str]]:
    """(where, text) for every string literal passed as ``hint=`` anywhere in tunewiz/."""
    found = []
    for path in sorted((REPO / "tunewiz").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg != "hint":
                    continue
                text = "".join(
                    part.value
                    for part in ast.walk(kw.value)
                    if isinstance(part, ast.Constant) and isinstance(part.value, str)
                )
                found.append((f"{path.relative_to(REPO)}:{kw.value.lineno}", text))
    return found


def test_every_hinted_command_exists() -> None:
    root = typer.main.get_command(app)
    hints = _hint_strings()
    named = [
        (where, m) for where, text in hints for m in re.finditer(r"`tunewiz ([a-z][a-z-]*)( [a-z-]+)?", text)
    ]
    # Every hint was found (the AST walk works) and many name a command: the check covers them.
    assert len(hints) >= 100 and len(named) >= 30, (len(hints), len(named))
    for where, match in named:
        command = root.commands.get(match.group(1))
        assert command is not None, f"{where}: hint names `tunewiz {match.group(1)}`, which does not exist"
        sub = (match.group(2) or "").strip()
        if getattr(command, "commands", None):
            assert sub in command.commands, f"{where}: `tunewiz {match.group(1)} {sub}` does not exist"
