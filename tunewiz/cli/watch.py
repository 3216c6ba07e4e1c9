"""`tunewiz watch RUN_DIR`: attach the dashboard to a running or finished run."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    run_dir: Path = typer.Argument(..., help="Run directory, e.g. runs/tiny-lora."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Plain log lines instead of the live dashboard."),
    every: int = typer.Option(10, "--every", min=1, help="In plain mode, print a step line every N steps."),
) -> None:
    """Show the live dashboard of a run started elsewhere; Ctrl-C detaches and leaves it running.

    Example: `tunewiz watch runs/tiny-lora`
    """
    from tunewiz.errors import TunewizError
    from tunewiz.run.directory import RunDir
    from tunewiz.run.events import read_events
    from tunewiz.ui import (
        choose_mode,
        fold_events,
        make_console,
        print_summary,
        render,
        run_dashboard,
        status_line,
    )

    run = RunDir(run_dir)
    if not run.events.is_file():
        raise TunewizError(
            f"`{run_dir}` is not a run directory: `{run.events}` does not exist",
            hint="pass the directory `tunewiz train` created, e.g. `tunewiz watch runs/<name>`",
        )
    mode = choose_mode(no_tui)
    console = make_console(mode)
    state = fold_events(read_events(run.events))
    if state.finished:
        # A finished run: draw its final state once, no following.
        console.print(render(state) if mode == "tui" else status_line(state), highlight=False)
    else:
        state = run_dashboard(run, None, mode=mode, plain_every=every, console=console)
    print_summary(state, run, console)
