"""`tunewiz init` in a real pseudo-terminal: questionary answered with keystrokes, end to end."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pexpect

from tunewiz.preset.files import load_preset

UP, DOWN, ENTER, BACKSPACE = "\x1b[A", "\x1b[B", "\r", "\x7f"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def answer(child: pexpect.spawn, prompt: str, *keys: str) -> None:
    """Wait for ``prompt``, then type ``keys``.

    Each key is sent once prompt_toolkit has drawn the question.
    """
    child.expect(prompt)
    for key in keys:
        child.expect(r"\x1b\[\?25h|\x1b\[\?12l", timeout=10)  # the cursor is shown: the prompt is drawn
        child.send(key)


def test_wizard_in_a_pseudo_terminal(tmp_path: Path) -> None:
    env = {**os.environ, "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tunewiz", "init"],
        cwd=str(tmp_path),
        env=env,
        dimensions=(60, 200),
        encoding="utf-8",
        timeout=60,
    )
    screen: list[str] = []
    child.logfile_read = _Collect(screen)
    answer(child, r"Model \(fit verdicts for CPU", ENTER)  # the default on CPU: the shipped tiny model
    answer(child, "Dataset:", UP, ENTER)  # story-qa is pre-selected; one up is story-chat
    answer(child, "Method:", ENTER)  # the recommended one
    answer(child, "Train for:", ENTER)  # epochs
    answer(child, "Epochs:", BACKSPACE, "2", ENTER)
    answer(child, "Run name:", ENTER)
    answer(child, "Write the preset to:", ENTER)
    answer(child, "Also report metrics to", " ", ENTER)  # the first tracker, tensorboard
    answer(child, "Start training now?", "n")
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", "".join(screen))
    assert child.exitstatus == 0, text[-2000:]
    assert "no GPU found" in text and "planning for CPU training" in text
    assert "tunewiz:tiny" in text and "✓ fits  lora mb" in text
    assert "predicted peak" in text and "verdict: fits" in text and "why:" in text
    assert "tunewiz train tiny-lora-story-chat.yaml" in text
    preset, _ = load_preset(str(tmp_path / "tiny-lora-story-chat.yaml"))
    assert (preset.name, preset.data.path, preset.method, preset.train.epochs) == (
        "tiny-lora-story-chat",
        "tunewiz:story-chat",
        "lora",
        2,
    )
    assert preset.output.report_to == ["tensorboard"]
    assert not (tmp_path / "runs").exists()  # answered "no": nothing launched


class _Collect:
    """A file-like sink for pexpect's log that keeps what the program drew."""

    def __init__(self, out: list[str]) -> None:
        self.out = out

    def write(self, data: str) -> None:
        self.out.append(data)

    def flush(self) -> None:
        pass


def test_wizard_asks_which_column_is_which(tmp_path: Path) -> None:
    """A file whose columns name no format: the dataset step shows them and asks for prompt and response."""
    data = tmp_path / "faq.csv"
    data.write_text("frage,kontext,antwort\nWhat colour is the sky?,weather,blue\nAnd grass?,plants,green\n")
    env = {**os.environ, "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tunewiz", "init", "--model", "tunewiz:tiny", "--dataset", str(data), "--epochs", "1"],
        cwd=str(tmp_path),
        env={**env, "TMPDIR": str(tmp_path)},
        dimensions=(60, 200),
        encoding="utf-8",
        timeout=60,
    )
    screen: list[str] = []
    child.logfile_read = _Collect(screen)
    answer(child, "Which column is the prompt?", ENTER)  # the first column, frage
    answer(child, "Which column is the response?", ENTER)  # the last one left, antwort
    answer(child, "Method:", ENTER)
    answer(child, "Run name:", ENTER)
    answer(child, "Write the preset to:", ENTER)
    answer(child, "Also report metrics to", ENTER)  # no tracker
    answer(child, "Start training now?", "n")
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", "".join(screen))
    assert child.exitstatus == 0, text[-2000:]
    flat = " ".join(text.split())  # the preview table wraps its title to the table's width
    assert "the format is not clear from the columns ['frage', 'kontext', 'antwort']" in flat
    assert "format `alpaca` (columns mapped)" in flat
    preset, _ = load_preset(str(tmp_path / "tiny-lora-faq.yaml"))
    assert preset.data.columns == {"prompt": "frage", "response": "antwort"}
