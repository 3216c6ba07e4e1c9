"""The `tunewiz` command line: a thin Typer layer, one module per command.

Command modules import only typer/rich at module level; torch, datasets and lm_eval are imported
inside the library functions they call, so `tunewiz --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from tunewiz import __version__
from tunewiz.errors import TunewizError

app = typer.Typer(
    name="tunewiz",
    help="Fine-tune open LLMs with LoRA or full fine-tuning, planned to fit in your GPU's memory.\n\n"
    "Start with `tunewiz init`, or run the demo: `tunewiz train presets/tiny-lora.yaml`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunewiz {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Fine-tune open LLMs with LoRA or full fine-tuning."""


def _register() -> None:
    # One line per command module; each module exposes `register(app)`.
    from tunewiz.cli import (  # hardware probe and memory planner
        chat,  # KV-cache generation, streaming chat
        doctor,
        download,  # Hub download
        eval,  # lm-eval harness
        export,  # GGUF for llama.cpp / Ollama
        init,  # the wizard
        plan,
        presets,
        push,  # Hub push + model card
        resume,
        stop,  # stop a running run gracefully; unlock a dead one
        train,
        watch,
    )

    modules = (train, resume, watch, stop, presets, doctor, plan, chat, download, push, eval, export, init)
    for module in modules:
        module.register(app)


_register()


def print_error(message: str, hint: str | None = None) -> None:
    """Print ``error: ...`` and ``hint: ...`` to stderr (readable without colour)."""
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def main() -> None:
    """Console entry point: known failures become `error:`/`hint:` lines, never a traceback."""
    try:
        app()
    except TunewizError as exc:
        print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except Exception as exc:  # unknown failure: short by default, full with TUNEWIZ_DEBUG=1
        if os.environ.get("TUNEWIZ_DEBUG"):
            raise
        print_error(
            f"unexpected {type(exc).__name__}: {exc}",
            "run again with `TUNEWIZ_DEBUG=1` for the traceback, and report it",
        )
        sys.exit(1)
