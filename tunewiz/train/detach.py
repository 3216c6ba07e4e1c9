"""``--detach``: the launcher runs on in the background, holding the run's lock, with no terminal.

The foreground ``tunewiz train --detach`` takes the lock and prepares the run directory as usual,
then starts ``python -m tunewiz.train.detach`` in a session of its own (a closed terminal sends it
no SIGHUP) and hands it the lock's descriptor: the ``flock`` is never released in between. The
background launcher names itself in ``lock.json``, runs torchrun with the plain-line dashboard
written to ``RUN/logs/launcher.log``, and releases the lock when every rank has exited. The ranks
follow it as they follow a foreground launcher; ``tunewiz stop RUN`` stops it gracefully.

:func:`start_run` is where `train` and `resume` choose: the dashboard in this terminal, or the
background launcher.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError
from tunewiz.run.directory import RunDir
from tunewiz.run.lock import RunLock, read_holder
from tunewiz.train.launcher import Topology, launch

if TYPE_CHECKING:
    from tunewiz.ui.live import Screen

HANDOVER_TIMEOUT_S = 60.0


def launcher_log(run: RunDir) -> Path:
    """Where the background launcher writes its plain-line dashboard and summary."""
    return run.path / "logs" / "launcher.log"


def start_detached(run: RunDir, argv: list[str], lock: RunLock | None) -> int:
    """Start the background launcher for torchrun ``argv`` and hand it ``lock``; return its pid.

    Args:
        run: the prepared run directory.
        argv: the torchrun command (tunewiz.train.launcher.torchrun_command).
        lock: the run's lock held by this process (None for a node that joined another's lock).

    Raises:
        TunewizError: (exit 1) the background launcher exited or did not take the lock over in time.
    """
    log_path = launcher_log(run)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = lock.fd if lock is not None else -1
    command = [sys.executable, "-m", "tunewiz.train.detach", "--run-dir", str(run.path)]
    command += ["--lock-fd", str(fd), "--", *argv]
    if lock is not None:
        lock.stop_heartbeat()  # the background launcher beats from now on
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(fd,) if fd >= 0 else (),
        )
    deadline = time.monotonic() + HANDOVER_TIMEOUT_S
    while lock is not None and (read_holder(run) or lock.holder).pid != process.pid:
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            raise TunewizError(
                f"the background launcher did not start (exit code {process.poll()}):\n{tail}",
                hint=f"the full log is `{log_path}`; run without `--detach` to see the run in this terminal",
                exit_code=1,
            )
        time.sleep(0.05)
    if lock is not None:
        lock.hand_over()
    return process.pid


def start_run(
    run: RunDir,
    argv: list[str],
    lock: RunLock | None,
    *,
    no_tui: bool,
    detach: bool,
    topology: Topology | None = None,
    screen: Screen | None = None,
) -> int:
    """Run torchrun ``argv`` in this terminal (the dashboard), or hand it and ``lock`` to a background
    launcher (``detach``) and print how to follow and stop it. Returns the exit code (run status table).

    Args:
        run: the prepared run directory.
        argv: the torchrun command.
        lock: the run's lock held by this process (None for a joining node); the caller releases it
            (a no-op after a hand-over).
        no_tui: plain lines instead of the live dashboard.
        detach: run in the background.
        topology: this node's place; with several nodes the launch first waits for them to join.
        screen: the dashboard already on screen (the data phase), which the run's dashboard continues.
    """
    from tunewiz.ui.live import choose_mode

    if not detach:
        return launch(run, argv, tui=choose_mode(no_tui) == "tui", topology=topology, screen=screen)
    pid = start_detached(run, argv, lock)
    print(
        f"run {run.path} is running in the background (launcher pid {pid})\n"
        f"  log:    {launcher_log(run)}\n"
        f"  watch:  tunewiz watch {run.path}\n"
        f"  stop:   tunewiz stop {run.path}   (graceful: finishes the step and saves a checkpoint)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """The background launcher: adopt the lock, run torchrun, release the lock; return the run's
    exit code (tunewiz.run.status)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--lock-fd", required=True, type=int)
    parser.add_argument("torchrun", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    torchrun = args.torchrun[1:] if args.torchrun[:1] == ["--"] else args.torchrun
    lock = (
        RunLock.adopt(run, args.lock_fd, detached=True, log=str(launcher_log(run)))
        if args.lock_fd >= 0
        else None
    )
    try:
        return launch(run, torchrun, tui=False)
    except TunewizError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), flush=True)
        return exc.exit_code
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
