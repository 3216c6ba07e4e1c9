"""`tunewiz stop RUN_DIR`: stop a running run gracefully, from any terminal; `tunewiz unlock RUN_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer

from tunewiz.run.directory import existing_run


def register(app: typer.Typer) -> None:
    app.command("stop", epilog="Example: `tunewiz stop runs/tiny-lora`")(stop)
    app.command("unlock", epilog="Example: `tunewiz unlock runs/tiny-lora`")(unlock)


def stop(
    run_dir: Path = typer.Argument(..., help="Run directory, e.g. runs/tiny-lora."),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until the run has stopped (default), or only ask it to stop."
    ),
) -> None:
    """Stop a running run gracefully: its ranks finish the step, save a checkpoint and exit.

    Works for a run in another terminal, a `--detach`ed run, or one on another node of a shared
    filesystem. Exit codes are the run's state once it ends: 130 stopped, 0 it finished first, 1 it
    failed; 2 when RUN_DIR is not a run directory.
    """
    import os
    import socket
    import time

    from tunewiz.atomic import atomic_write_text
    from tunewiz.run.status import run_status

    run = existing_run(run_dir, "stop")
    status = run_status(run)
    if status.phase == "stopping":
        typer.echo(status.headline())
    elif status.phase in ("running", "stale"):
        atomic_write_text(
            run.stop_request,
            f"stop requested by `tunewiz stop` (pid {os.getpid()} on host {socket.gethostname()}, "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n",
        )
        typer.echo(
            f"asked run {run.path} to stop: its ranks finish the current step, save a checkpoint and exit"
        )
    else:
        typer.echo(f"nothing to stop: {status.headline()}")
        _next(status.next_commands())
        raise typer.Exit(status.exit_code)
    if status.phase == "stale" or not wait:
        _next([f"tunewiz watch {run.path}"] if status.phase != "stale" else status.next_commands())
        raise typer.Exit(0 if status.phase != "stale" else status.exit_code)
    while status.lock.running:
        time.sleep(0.5)
        status = run_status(run)
    typer.echo(status.headline())
    _next(status.next_commands())
    raise typer.Exit(status.exit_code)


def unlock(run_dir: Path = typer.Argument(..., help="Run directory, e.g. runs/tiny-lora.")) -> None:
    """Clear the lock of a trainer that died without releasing it (e.g. on another node that went down).

    Refused while the trainer is alive (its lock is held, or its heartbeat is fresh): stop it with
    `tunewiz stop RUN_DIR` instead.
    """
    from tunewiz.run.lock import clear_stale

    run = existing_run(run_dir, "unlock")
    holder = clear_stale(run)
    if holder is None:
        typer.echo(f"run {run.path} is not locked; nothing to clear")
    else:
        typer.echo(
            f"cleared the lock of {holder.describe()}; `tunewiz resume {run.path}` may now take the run"
        )


def _next(commands: list[str]) -> None:
    if commands:
        typer.echo("next:\n" + "".join(f"  {c}\n" for c in commands), nl=False)
