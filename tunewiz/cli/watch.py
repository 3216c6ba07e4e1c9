"""`tunewiz watch RUN_DIR`: say where a run stands, and follow it live while it runs."""

from __future__ import annotations

from pathlib import Path

import typer

LAUNCHER_EXIT_WAIT_S = 60.0  # after a run's last event, how long to wait for its launcher to exit


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)


def watch(
    run_dir: Path = typer.Argument(..., help="Run directory, e.g. runs/tiny-lora."),
    no_tui: bool = typer.Option(False, "--no-tui", help="Plain log lines instead of the live dashboard."),
    every: int = typer.Option(10, "--every", min=1, help="In plain mode, print a step line every N steps."),
) -> None:
    """Show a run's state — running, finished, stopped, crashed — and follow it live while it runs;
    Ctrl-C detaches and leaves it running.

    Exit codes are the run's state when watching ends: 0 finished (or still running after Ctrl-C),
    130 stopped on request, 1 failed, interrupted or crashed, 2 not a run directory.

    Example: `tunewiz watch runs/tiny-lora`
    """
    import time

    from tunewiz.run.directory import existing_run
    from tunewiz.run.events import read_events
    from tunewiz.run.lock import probe
    from tunewiz.run.status import run_status
    from tunewiz.ui import (
        choose_mode,
        fold_events,
        make_console,
        print_summary,
        render,
        run_dashboard,
        samples_lines,
        status_line,
    )

    run = existing_run(run_dir, "watch")
    mode = choose_mode(no_tui)
    console = make_console(mode)
    status = run_status(run)
    if status.lock.running:
        console.out(status.headline(), highlight=False)
        state = run_dashboard(
            run, None, mode=mode, plain_every=every, console=console, alive=lambda: probe(run).running
        )
        # After the last event the launcher still draws the loss plot and its summary: let it finish.
        deadline = time.monotonic() + LAUNCHER_EXIT_WAIT_S
        while state.finished and probe(run).running and time.monotonic() < deadline:
            time.sleep(0.2)
        status = run_status(run)
    else:
        state = fold_events(read_events(run.events))
        if state.end is not None:  # a finished run: draw its final state once
            if mode == "tui":
                console.print(render(state), highlight=False)
            else:
                console.print(status_line(state), highlight=False)
                for line in samples_lines(state.samples) if state.samples else []:
                    console.out(line, highlight=False)
        else:
            console.out(status.headline(), highlight=False)
    if status.phase == "stale" or (status.phase == "not_started" and not state.launches):
        console.out("next:\n" + "".join(f"  {c}\n" for c in status.next_commands()), highlight=False)
    else:
        print_summary(state, run, console, running=status.lock.running)
    raise typer.Exit(status.exit_code)
