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
from typer.testing import CliRunner, Result

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


def invoke(*args: str) -> Result:
    """Run the command line in process: ``CliRunner`` runs the root group's ``main``, the code path of the
    console script (``tunewiz.cli.main``), error handling included."""
    return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "100"})


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        # a missing argument
        (("chat",), "error: missing argument `TARGET`", "hint: see `tunewiz chat --help`"),
        # an unknown command or option, with Typer's did-you-mean
        (("pla",), "error: no such command `pla`", "hint: did you mean `tunewiz plan`?"),
        (("presets", "lis"), "error: no such command `lis`", "`tunewiz presets list`"),
        (("plan", "--micro-batc", "2"), "error: no such option: --micro-batc", "`--micro-batch`"),
        # another tool's name for an option: suggested by meaning, not spelling (not `--no-tui`)
        (("train", "x.yaml", "--output", "runs/x"), "error: no such option: --output", "`--run-dir`?"),
        (("chat", "runs/x", "--checkpoint", "step-2"), "error: no such option: --checkpoint", "`--from`?"),
        # a bad option value
        (("plan", "--gpus", "two"), "error: invalid value for `--gpus`", "`tunewiz plan --help`"),
        (("plan", "--micro-batch", "0"), "error: invalid value for `--micro-batch`", "`tunewiz plan --help`"),
        # a value given to a flag, and an extra argument
        (
            ("train", "x.yaml", "--overwrite", "true"),
            "error: `--overwrite` is a flag and takes no value (got `true`)",
            "hint: write `--overwrite` alone to turn it on",
        ),
        (
            ("train", "a.yaml", "b.yaml"),
            "error: unexpected extra argument `b.yaml`",
            "`tunewiz train --help`",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_usage_mistakes_print_error_and_hint(args: tuple[str, ...], error: str, hint: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert not any(ch in result.output for ch in BOX), result.output
    assert lines[0].startswith(error), result.stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], result.stderr
    assert len(lines) == 2 and result.stdout == ""


def test_the_console_script_prints_the_same_lines(tmp_path: Path) -> None:
    result = tunewiz("pla", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr
        == "error: no such command `pla`\nhint: did you mean `tunewiz plan`? See `tunewiz --help`\n"
    )


def test_a_command_error_is_error_and_hint_in_process_too(tmp_path: Path) -> None:
    result = invoke("watch", str(tmp_path / "nope"))
    assert result.exit_code == 2 and result.exception is not None
    assert result.stderr.startswith("error: run directory `") and "\nhint: " in result.stderr, result.output


@pytest.mark.parametrize(
    "args",
    [
        ("resume",),
        ("watch",),
        ("stop",),
        ("unlock",),
        ("push", "--repo-id", "alice/nope"),
        ("chat", "--prompt", "hi"),
        ("eval",),
    ],
    ids=lambda a: a[0],
)
def test_missing_run_directory_says_it_does_not_exist(args: tuple[str, ...], tmp_path: Path) -> None:
    """Every command that takes a run directory says the same when it is not there: not that a file in
    it is missing, and not a hint that cannot help (`tunewiz download`, `--tasks`)."""
    (tmp_path / "runs").mkdir()
    result = tunewiz(args[0], "runs/nope", *args[1:], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    first, hint = result.stderr.splitlines()[:2]
    assert first.startswith("error: ") and first.endswith("`runs/nope` does not exist"), result.stderr
    assert hint.startswith("hint: ") and "download" not in hint and "--tasks" not in hint, result.stderr
    if args[0] not in ("chat", "eval"):  # these also take a model directory
        assert (
            hint
            == f"hint: pass the directory `tunewiz train` created, e.g. `tunewiz {args[0]} runs/tiny-lora`"
        )


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


def test_ctrl_c_during_an_import_takes_effect_once_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a module imports (torch, at `tunewiz train`'s start) is held until the import is done:
    cut short, it left numpy half-initialised (`module 'numpy' has no attribute 'logical_and'`)."""
    import signal
    import time

    from tunewiz.interrupts import interrupt_outside_imports

    (tmp_path / "slow_to_import.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.3)\ndone = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    signal.signal(signal.SIGINT, interrupt_outside_imports)  # put back by conftest's fixture
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        import slow_to_import  # noqa: F401

        time.sleep(5)  # the held Ctrl-C arrives here
    assert sys.modules["slow_to_import"].done
    assert time.monotonic() - started < 2


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path, ctrl_c: None) -> None:
    """Ctrl-C in any command is one `error: interrupted` line and exit code 130 (Typer made it a silent
    exit 130 before the root's handler saw it)."""
    script = (
        "import os, signal, threading, time\n"
        "from tunewiz.cli import app, main\n"
        "@app.command('sleepy')\n"
        "def sleepy() -> None:\n"
        "    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "    time.sleep(30)\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "sleepy"],
        capture_output=True,
        text=True,
        timeout=25,
        cwd=tmp_path,
    )
    assert (out.returncode, out.stderr) == (130, "error: interrupted\n")
