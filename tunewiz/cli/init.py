"""`tunewiz init`: the guided wizard that plans a run and writes it as a preset.

The questions live in :mod:`tunewiz.wizard.flow`; this module parses the flags, picks who answers (the
terminal through questionary, or nobody: flags and defaults), prints the command, and launches it
through the normal `tunewiz train` path when asked.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunewiz.cli.options import GpuMemoryOpt, GpusOpt

if TYPE_CHECKING:
    from tunewiz.wizard.asker import Choice

_WHAT = "What to train"
_PLAN = "Plan (default: recommended)"
_OUT = "Output"


def register(app: typer.Typer) -> None:
    app.command(
        "init",
        epilog="Example: `tunewiz init --model tunewiz:tiny --dataset tunewiz:story-qa --epochs 1 "
        "--output tiny.yaml --no-launch`",
    )(init)


class QuestionaryAsker:
    """Asks in the terminal with questionary; Ctrl-C raises KeyboardInterrupt (the CLI's `interrupted`)."""

    def select(self, message: str, choices: list[Choice], default: str | None) -> str:
        import questionary

        options = [questionary.Choice(c.title, value=c.value, description=c.description) for c in choices]
        return questionary.select(message, options, default=default).unsafe_ask()

    def text(self, message: str, default: str, validate: Callable[[str], str | None]) -> str:
        import questionary

        return (
            questionary.text(message, default=default, validate=lambda t: validate(t) or True)
            .unsafe_ask()
            .strip()
        )

    def confirm(self, message: str, default: bool) -> bool:
        import questionary

        return questionary.confirm(message, default=default).unsafe_ask()

    def checkbox(self, message: str, choices: list[Choice], default: list[str]) -> list[str]:
        import questionary

        options = [
            questionary.Choice(c.title, value=c.value, description=c.description, checked=c.value in default)
            for c in choices
        ]
        return questionary.checkbox(message, options).unsafe_ask()


def init(
    model: str | None = typer.Option(
        None, "--model", "-m", help="Catalog name, Hub id or local model directory.", rich_help_panel=_WHAT
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help="`tunewiz:story-qa`, a local file or a Hub dataset id.",
        rich_help_panel=_WHAT,
    ),
    columns: str | None = typer.Option(
        None,
        "--columns",
        help="Which column is which: `prompt=question,response=answer` (roles: prompt, response, system, "
        "input, messages, text). Default: detected, or asked.",
        rich_help_panel=_WHAT,
    ),
    method: str | None = typer.Option(None, "--method", help="lora, qlora or full.", rich_help_panel=_PLAN),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Passes over the data (default 1).", rich_help_panel=_PLAN
    ),
    time_budget: str | None = typer.Option(
        None, "--time-budget", help="Train for about this long instead: 90m, 2h.", rich_help_panel=_PLAN
    ),
    micro_batch: int | None = typer.Option(
        None, "--micro-batch", min=1, help="Sequences per device per step.", rich_help_panel=_PLAN
    ),
    lora_rank: int | None = typer.Option(
        None, "--lora-rank", min=1, help="LoRA rank.", rich_help_panel=_PLAN
    ),
    seq_len: int | None = typer.Option(
        None, "--seq-len", min=16, help="max_seq_len (default: from the dataset).", rich_help_panel=_PLAN
    ),
    gpus: GpusOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Preset file to write (default: NAME.yaml).", rich_help_panel=_OUT
    ),
    name: str | None = typer.Option(
        None, "--name", help="Run name (default: model-method-dataset).", rich_help_panel=_OUT
    ),
    yes: bool = typer.Option(
        False,
        "--yes",
        "-y",
        help="Ask nothing: take every recommended or default answer.",
        rich_help_panel=_OUT,
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the output file.", rich_help_panel=_OUT),
    report_to: str | None = typer.Option(
        None,
        "--report-to",
        help="Experiment trackers, comma-separated: tensorboard,mlflow,wandb (default: ask; none).",
        rich_help_panel=_OUT,
    ),
    launch: bool | None = typer.Option(
        None,
        "--launch/--no-launch",
        help="Start `tunewiz train` after writing (default: ask; no without a terminal).",
        rich_help_panel=_OUT,
    ),
) -> None:
    """Plan a fine-tuning run for this machine and write it as a preset; every question has a flag."""
    from rich.console import Console

    from tunewiz.wizard.dataset_step import parse_columns
    from tunewiz.wizard.flow import WizardFlags, run_wizard

    flags = WizardFlags(
        model=model,
        dataset=dataset,
        columns=parse_columns(columns) if columns is not None else None,
        method=method,
        epochs=epochs,
        time_budget=time_budget,
        gpus=gpus,
        gpu_memory=gpu_memory,
        micro_batch=micro_batch,
        lora_rank=lora_rank,
        seq_len=seq_len,
        output=output,
        name=name,
        yes=yes,
        force=force,
        launch=launch,
        report_to=report_to,
    )
    # questionary on a closed or piped stdin raises a bare EOFError (or takes defaults silently).
    asker = QuestionaryAsker() if sys.stdin.isatty() and sys.stdout.isatty() else None
    console = Console(highlight=False)
    result = run_wizard(flags, asker, console)
    console.print(f"\nwrote [bold]{result.path}[/bold]. Train it with:\n\n  {shlex.join(result.command)}\n")
    if result.download:
        console.print(f"downloading first: {shlex.join(result.download)}")
        code = subprocess.call([sys.executable, "-m", "tunewiz", *result.download[1:]])
        if code:
            raise typer.Exit(code)
    if result.launch:
        # The one training path: the same `tunewiz train` the printed command runs.
        code = subprocess.call([sys.executable, "-m", "tunewiz", *result.command[1:]])
        raise typer.Exit(code)
