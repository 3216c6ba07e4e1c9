"""The parent process's view of a run: follow ``events.jsonl`` and draw it, live or as plain lines.

The ranks never draw; they append events and poll ``run_dir.stop_request``. This loop owns the
terminal and Ctrl-C: the first press creates the STOP file (the ranks finish the current optimizer
step, save a checkpoint and write a ``stop`` event), the second terminates torchrun's process group,
and SIGKILL follows if it has not exited after ``KILL_GRACE_S``. SIGHUP (the terminal closed) and
SIGTERM (``kill``, a job scheduler) count as presses too: the first stops the run gracefully.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from rich.console import Console
from rich.live import Live

from tunewiz.run.directory import RunDir
from tunewiz.run.events import follow, read_events
from tunewiz.ui.render import plain_lines, render
from tunewiz.ui.state import DashboardState, apply_event

POLL_S = 0.2  # how often the log is read; also the dashboard's redraw interval
STOP_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)  # each one is a Ctrl-C press
KILL_GRACE_S = 5.0  # after SIGTERM to the process group, wait this long before SIGKILL

Mode = Literal["tui", "plain"]


def choose_mode(no_tui: bool) -> Mode:
    """``plain`` when asked (``--no-tui``), under CI, on a dumb terminal or when stdout is not a TTY.

    Args:
        no_tui: the user's ``--no-tui`` flag.
    """
    if no_tui or os.environ.get("CI") or os.environ.get("TERM") == "dumb" or not sys.stdout.isatty():
        return "plain"
    return "tui"


def make_console(mode: Mode) -> Console:
    """The console for ``mode``: plain mode gets no colour system, so Rich writes no escape codes.

    Args:
        mode: ``tui`` or ``plain``.
    """
    if mode == "plain":
        return Console(color_system=None, highlight=False, soft_wrap=True, emoji=False)
    return Console(highlight=False)


class Screen:
    """The live dashboard opened before the run exists: the launcher's data phase
    (tunewiz.ui.data_phase) draws into its state, then :func:`run_dashboard` draws the run in the same
    Live, so a terminal sees one frame from ``tunewiz train`` on.

    Use it as a context manager. Leaving it on an exception (a data error, a refused run directory,
    Ctrl-C) erases the frame, so the ``error:``/``hint:`` lines follow alone.

    Args:
        run: the run's name (its directory's), the frame's title until the ranks' ``start`` event.
        console: where to draw; by default one made for ``tui``.
    """

    def __init__(self, run: str, console: Console | None = None) -> None:
        self.state = DashboardState(run=run)
        # stderr goes above the frame too: a note between the data phase and the run (a lock taken over).
        self.live = Live(
            render(self.state),
            console=console or make_console("tui"),
            auto_refresh=False,
            redirect_stderr=True,
        )

    def draw(self) -> None:
        """Redraw the frame from the state now."""
        self.live.update(render(self.state), refresh=True)

    def __enter__(self) -> Screen:
        self.live.start(refresh=True)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.live.transient = True
        self.live.stop()  # a no-op after run_dashboard has stopped it


@contextmanager
def open_screen(run: str, *, live: bool) -> Iterator[Screen | None]:
    """A :class:`Screen` for run ``run`` when ``live`` (a terminal, one node, not detached), else None."""
    if not live:
        yield None
        return
    with Screen(run) as screen:
        yield screen


class StopControl:
    """What Ctrl-C does while the dashboard runs.

    With a training process: press 1 writes the STOP file, press 2 sends SIGTERM to the torchrun
    process group, later presses send SIGKILL to it and to the ranks it started (each rank runs in a
    session of its own, and outlives a killed torchrun). Without one (``tunewiz watch``): detach,
    leaving the run alone.

    Args:
        run_dir: the run whose ``stop_request`` file press 1 creates.
        process: torchrun, started with ``start_new_session=True`` so its pid is its group id.
        state: the dashboard state whose ``stop_requested``/``killing`` flags are set.
    """

    def __init__(self, run_dir: RunDir, process: subprocess.Popen[Any] | None, state: DashboardState) -> None:
        self.run_dir = run_dir
        self.process = process
        self.state = state
        self.presses = 0
        self.detached = False
        self.created_stop_file = False
        self.kill_at: float | None = None  # monotonic time when SIGKILL follows SIGTERM
        self.notes: list[str] = []  # for plain mode: what each press did, printed by the loop
        self.ranks: dict[int, Any] = {}  # torchrun's children seen so far (psutil.Process), for SIGKILL
        self._ranks_seen_at = 0.0

    def interrupt(self) -> None:
        """Handle one Ctrl-C (called from the SIGINT handler, or directly in tests)."""
        self.presses += 1
        if self.process is None:
            self.detached = True
            return
        if self.presses == 1:
            self.run_dir.stop_request.write_text(
                "stop requested by Ctrl-C in the dashboard\n", encoding="utf-8"
            )
            self.created_stop_file = True
            self.state.stop_requested = True
            self.notes.append("stopping after this step… (Ctrl-C again to stop at once)")
            return
        self.state.killing = True
        if self.presses == 2:
            self.notes.append("stopping now: terminating the training processes")
            self._signal(signal.SIGTERM)
            self.kill_at = time.monotonic() + KILL_GRACE_S
        else:
            self._signal(signal.SIGKILL)

    def poll(self) -> None:
        """Note torchrun's ranks now and then; escalate to SIGKILL once the grace after SIGTERM is over."""
        if self.process is not None and time.monotonic() - self._ranks_seen_at > 2.0:
            self._ranks_seen_at = time.monotonic()
            self.ranks.update(_children(self.process.pid))
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            self.kill_at = None
            if self.process is not None and self.process.poll() is None:
                self._signal(signal.SIGKILL)

    def cleanup(self) -> None:
        """Remove the STOP file this control created once the ranks are gone, so a later resume runs."""
        if self.created_stop_file and (self.process is None or self.process.poll() is not None):
            self.run_dir.stop_request.unlink(missing_ok=True)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        import psutil

        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:  # already gone
            pass
        if sig == signal.SIGKILL:
            self.ranks.update(_children(self.process.pid))
            for rank in self.ranks.values():
                try:
                    rank.kill()  # psutil checks the pid still names the same process
                except psutil.Error:
                    pass


def _children(pid: int) -> dict[int, Any]:
    """``pid``'s children as psutil processes (empty once it has exited)."""
    import psutil

    try:
        return {child.pid: child for child in psutil.Process(pid).children()}
    except psutil.Error:
        return {}


def _batches(
    run_dir: RunDir,
    process: subprocess.Popen[Any] | None,
    control: StopControl,
    state: DashboardState,
    alive: Callable[[], bool] | None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield batches of new events until the process exits and ``alive()`` is false (then drain) or,
    without a process, the run ends, the watcher detaches, or ``alive()`` turns false."""
    events = follow(run_dir.events, poll_s=POLL_S)
    noted = False
    for batch in events:
        yield batch
        control.poll()
        if process is not None:
            if process.poll() is None:
                continue
            state.returncode = process.returncode
            if alive is not None and alive():
                if not noted:
                    control.notes.append("torchrun exited; waiting for its ranks to finish and exit…")
                    noted = True
                continue
        elif not (control.detached or state.finished or (alive is not None and not alive())):
            continue
        if control.detached:
            return
        # The last events may have landed between this read and the exit: read to the end.
        for rest in events:
            if not rest:
                return
            yield rest


def run_dashboard(
    run_dir: RunDir,
    process: subprocess.Popen[Any] | None,
    *,
    mode: Mode,
    plain_every: int = 10,
    console: Console | None = None,
    alive: Callable[[], bool] | None = None,
    screen: Screen | None = None,
) -> DashboardState:
    """Follow the run's events and draw them until the run is over; return the final state.

    Args:
        run_dir: the run directory whose ``events.jsonl`` is followed.
        process: the torchrun process (its own process group), or None to attach to a run
            (``tunewiz watch``): then the loop ends on an ``end``/``stop``/``error`` event or Ctrl-C.
        mode: ``tui`` draws a Rich Live dashboard; ``plain`` prints log lines to stdout.
        plain_every: in plain mode, print a step line every this many steps.
        console: where to draw; by default one made for ``mode``.
        alive: whether the run still has live processes (the ranks' lock): with a process, the loop
            also waits for ranks that outlive it; without one, it ends when this turns false.
        screen: in ``tui`` mode, the dashboard already on screen (the launcher's data phase): its state
            and Live carry on, and the Live stops here.
    """
    console = console or make_console(mode)
    state = screen.state if screen is not None else DashboardState()
    control = StopControl(run_dir, process, state)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, lambda signum, frame: control.interrupt()) for sig in STOP_SIGNALS}
        if in_main_thread
        else {}
    )
    try:
        if mode == "tui":
            # Live restores the cursor and leaves the last frame on screen when the block exits.
            live = (
                screen.live
                if screen is not None
                else Live(render(state), console=console, auto_refresh=False, redirect_stderr=False)
            )
            with live:  # an already started Live (a screen's) carries on; either stops at the end
                for batch in _batches(run_dir, process, control, state, alive):
                    for event in batch:
                        apply_event(state, event)
                    state.now = time.time()
                    live.update(render(state), refresh=True)
            state.now = None
        else:
            # A resumed launch appends to the log: fold the earlier launches' events silently.
            replay = len(read_events(run_dir.events)) if process is not None else 0
            for batch in _batches(run_dir, process, control, state, alive):
                for event in batch:
                    seen = state.warnings_total
                    apply_event(state, event)
                    new = state.warnings[len(state.warnings) - (state.warnings_total - seen) :]
                    if replay:
                        replay -= 1
                        continue
                    for line in plain_lines(event, state, new, plain_every):
                        console.out(line, highlight=False)
                while control.notes:
                    console.out(control.notes.pop(0), highlight=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        control.cleanup()
    return state
