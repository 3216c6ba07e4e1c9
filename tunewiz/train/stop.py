"""Why a rank stops before its step budget: a signal, or its launcher going away.

Every rank watches two processes from a daemon thread, every WATCH_S seconds:

- its ``tunewiz`` launcher (``TUNEWIZ_LAUNCHER_PID``, set by tunewiz.train.launcher): the launcher
  runs torchrun in a session of its own, so a SIGKILLed launcher (a dropped SSH session, the OOM
  killer) would otherwise leave torchrun and the ranks training unseen;
- its torchrun agent (the parent process): a killed agent leaves its ranks behind as orphans.

When either is gone the rank stops as it does for the first Ctrl-C: the ranks finish the optimizer
step, save a checkpoint, write a ``stop`` event (reason ``orphaned``) and exit. Meanwhile the ranks'
shared lock (tunewiz.run.lock) keeps any new trainer out of the run directory.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

LAUNCHER_PID_ENV = "TUNEWIZ_LAUNCHER_PID"
WATCH_S = 0.5


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/PID/stat`` field 22), to tell a reused pid apart;
    None without ``/proc``, or when the process is gone or a zombie (dead, not yet reaped: a killed
    detached launcher may stay one for long where nothing reaps orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, start: str | None) -> bool:
    if start is not None or Path("/proc/self/stat").exists():
        return start is not None and process_start_time(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StopFlag:
    """Set by SIGINT/SIGTERM or by the launcher watch: finish the optimizer step, checkpoint, exit.

    A second signal exits at once (``os._exit``), like a second Ctrl-C.

    Args:
        launcher_pid: the ``tunewiz`` process to follow (None: follow only the torchrun agent).
        watch_agent: also stop when this process's parent (the torchrun agent) exits.
    """

    def __init__(self, *, launcher_pid: int | None = None, watch_agent: bool = True) -> None:
        self._event = threading.Event()
        self.reason = "signal"  # the stop event's reason: "signal" or "orphaned"
        self.detail: str | None = None
        self._signals = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        if launcher_pid or watch_agent:
            launcher = (launcher_pid, process_start_time(launcher_pid)) if launcher_pid else None
            agent = os.getppid() if watch_agent else None
            threading.Thread(
                target=self._watch, args=(launcher, agent), name="tunewiz-launcher-watch", daemon=True
            ).start()

    @classmethod
    def from_env(cls) -> StopFlag:
        """A flag that follows the launcher named in ``TUNEWIZ_LAUNCHER_PID`` and the torchrun agent."""
        pid = os.environ.get(LAUNCHER_PID_ENV, "")
        return cls(launcher_pid=int(pid) if pid.isdigit() else None)

    def _handle(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            os._exit(128 + signum)
        if not self._event.is_set():
            self.reason, self.detail = "signal", None
            self._event.set()

    def _watch(self, launcher: tuple[int, str | None] | None, agent: int | None) -> None:
        while not self._event.wait(WATCH_S):
            if agent is not None and os.getppid() != agent:
                self._orphaned(f"its torchrun agent (pid {agent}) exited")
            elif launcher is not None and not _alive(*launcher):
                self._orphaned(f"its launcher, the `tunewiz` process (pid {launcher[0]}), exited")

    def _orphaned(self, detail: str) -> None:
        self.reason, self.detail = "orphaned", detail
        self._event.set()

    def is_set(self) -> bool:
        """A stop was asked for (by a signal or because the launcher or agent is gone)."""
        return self._event.is_set()
