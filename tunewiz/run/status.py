"""Where a run stands — running, finished, stopped, crashed… — and the exit code of each state.

One table, used by ``train``, ``resume``, ``stop`` and ``watch`` (docs/guides/run-lifecycle.md):

=========== ==== =====================================================================================
finished    0    the step budget is done, ``final/`` is written
running     0    ``train --detach`` started it, or ``watch`` detached (Ctrl-C) from a live run
stopped     130  stopped on request (Ctrl-C, SIGHUP, SIGTERM, ``tunewiz stop``): resumable
interrupted 1    its launcher or torchrun agent died; the ranks saved a checkpoint: resumable
failed      1    an error (a rank's exception, NaN loss, out of memory at micro-batch 1)
crashed     1    nothing holds the lock and the launch wrote no end: killed, or the machine went down
refused     2    the command was refused: the run is locked by a live trainer, or bad input
=========== ==== =====================================================================================

The state is read from the lock (tunewiz.run.lock) and the last launch's events; the disk decides
which checkpoint a resume would start from (only complete ones count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunewiz.run.directory import RunDir
from tunewiz.run.events import read_events
from tunewiz.run.lock import LockStatus, probe

EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_STOPPED = 130

Phase = Literal[
    "running", "stopping", "finished", "stopped", "interrupted", "failed", "crashed", "not_started", "stale"
]

_EXIT: dict[str, int] = {
    "running": EXIT_FINISHED,
    "stopping": EXIT_FINISHED,
    "finished": EXIT_FINISHED,
    "stopped": EXIT_STOPPED,
    "interrupted": EXIT_FAILED,
    "failed": EXIT_FAILED,
    "crashed": EXIT_FAILED,
    "not_started": EXIT_FAILED,
    "stale": EXIT_FAILED,
}


def exit_code_for(phase: Phase) -> int:
    """The exit code of a command that ends with the run in ``phase`` (see the module's table)."""
    return _EXIT[phase]


def last_launch(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events since the last ``start`` (all events when there is none)."""
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    return events[starts[-1] :] if starts else events


def phase_of_launch(launch: list[dict[str, Any]]) -> Phase:
    """How the launch whose events are ``launch`` ended, assuming nothing runs any more."""
    kinds = {e.get("event"): e for e in launch}
    if not any(e.get("event") == "start" for e in launch):
        return "not_started" if "error" not in kinds else "failed"
    if "end" in kinds:
        return "finished"
    if "stop" in kinds:
        reason = kinds["stop"].get("reason")
        return "stopped" if reason == "signal" else "interrupted" if reason == "orphaned" else "failed"
    return "failed" if "error" in kinds else "crashed"


@dataclass(frozen=True)
class RunStatus:
    """A run's state now, as ``tunewiz watch`` and ``tunewiz stop`` report it."""

    run: RunDir
    phase: Phase
    lock: LockStatus
    step: int  # the last step logged (0 before the first)
    total_steps: int | None
    last_event_time: float | None
    checkpoint: Path | None  # the newest complete checkpoint (what `resume` would load)
    stop: dict[str, Any] | None  # the last launch's stop event

    @property
    def exit_code(self) -> int:
        """The exit code for this state (see the module's table)."""
        return exit_code_for(self.phase)

    def headline(self, now: float | None = None) -> str:
        """One line: ``run runs/x is running (pid 12 on host h, …): step 14/40, last event 3 s ago``."""
        path, holder = self.run.path, self.lock.holder
        at = f"step {self.step}" + (f"/{self.total_steps}" if self.total_steps else "")
        if self.phase in ("running", "stopping"):
            age = (
                f", last event {max(0.0, (now or time.time()) - self.last_event_time):.0f} s ago"
                if self.last_event_time
                else ", no event yet"
            )
            who = f" ({holder.describe()})" if holder else ""
            if self.phase == "stopping":
                return (
                    f"run {path} is stopping{who}: its launcher is gone and its ranks are finishing "
                    f"{at} and saving a checkpoint{age}"
                )
            return f"run {path} is running{who}: {at}{age}"
        if self.phase == "stale":
            return (
                f"run {path} is locked by a trainer on another host that stopped heartbeating "
                f"({holder.describe() if holder else '?'}): it probably died at {at}"
            )
        resumable = f"; resumable from {self.checkpoint.name}" if self.checkpoint else ""
        detail = (self.stop or {}).get("detail")
        words = {
            "finished": f"is finished ({at})",
            "stopped": f"stopped on request at {at}{resumable}",
            "interrupted": f"stopped at {at} because {detail or 'its launcher went away'}{resumable}",
            "failed": f"failed at {at}{resumable}",
            "crashed": f"crashed at {at}: nothing holds its lock and the launch wrote no end{resumable}",
            "not_started": "never started training" + resumable,
        }
        return f"run {path} {words[self.phase]}"

    def next_commands(self) -> list[str]:
        """What to run next, most useful first."""
        path = self.run.path
        if self.phase in ("running", "stopping"):
            return [f"tunewiz watch {path}", f"tunewiz stop {path}"]
        if self.phase == "stale":
            return [f"tunewiz unlock {path}"]
        if self.phase == "finished":
            return [f"tunewiz chat {path}", f"tunewiz eval {path}"]
        if self.checkpoint is not None:
            return [str((self.stop or {}).get("resume_command") or f"tunewiz resume {path}")]
        return [f"tunewiz train {self.run.config} --run-dir {path} --overwrite"]


def run_status(run: RunDir) -> RunStatus:
    """Read the lock and the event log of ``run`` and say where it stands.

    Args:
        run: a run directory (one made before the lock existed counts as not running).
    """
    lock = probe(run)
    launch = last_launch(read_events(run.events))
    if lock.state == "held" or lock.state == "remote":
        phase: Phase = "running"
    elif lock.state == "orphaned":
        phase = "stopping"
    elif lock.state == "stale":
        phase = "stale"
    else:
        phase = phase_of_launch(launch)
    steps = [e for e in launch if e.get("event") in ("start", "step", "end", "stop")]
    start = next((e for e in launch if e.get("event") == "start"), {})
    stop = next((e for e in reversed(launch) if e.get("event") == "stop"), None)
    return RunStatus(
        run=run,
        phase=phase,
        lock=lock,
        step=int(steps[-1].get("step") or 0) if steps else 0,
        total_steps=start.get("total_steps"),
        last_event_time=launch[-1].get("time") if launch else None,
        checkpoint=run.latest_checkpoint(),
        stop=stop,
    )
