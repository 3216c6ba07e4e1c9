"""One trainer per run directory: the run lock, and the ranks' lock that outlives a killed launcher.

Three files in the run directory::

    lock         the launcher holds an exclusive ``flock`` on it for the life of the training; the
                 kernel releases it when the launcher dies, however it dies. Never deleted.
    lock.json    who holds it: pid, host, start time, a heartbeat refreshed every HEARTBEAT_S, the
                 command, the rendezvous id and node rank. Removed on a clean release, so one left
                 behind with a free ``lock`` means its holder died (killed, crashed, power cut).
    ranks.lock   every rank holds a shared ``flock`` on it while it runs. A rank outlives a
                 SIGKILLed launcher by up to one step and one checkpoint (see tunewiz.train.stop):
                 while any rank holds it, no new trainer may start.

``flock`` is the truth on one host. On a shared filesystem that does not carry locks between
hosts, the heartbeat is: a holder on another host whose heartbeat is younger than
HEARTBEAT_TIMEOUT_S is live; an older one is *stale* — probably dead, but that cannot be checked
from here, so it is explained and never taken over without ``tunewiz unlock``.

Several nodes, one run: the first launcher of a multi-node run to arrive takes the lock and records
the rendezvous id; launchers of the other nodes *join* (they take no lock) when their rendezvous id
matches, and are refused otherwise.

Run directories made before the lock existed have none of these files and count as not running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from tunewiz.atomic import atomic_write_json
from tunewiz.errors import TunewizError
from tunewiz.run.directory import RunDir

HEARTBEAT_S = 30.0  # how often the holder rewrites lock.json's heartbeat
HEARTBEAT_TIMEOUT_S = 120.0  # a holder on another host silent for longer than this is stale
ACQUIRE_RETRY_S = 0.5  # a probe holds a lock for microseconds: retry this long before refusing

LockState = Literal["free", "held", "remote", "orphaned", "dead", "stale"]


@dataclass(frozen=True)
class Holder:
    """What ``lock.json`` says about the launcher holding a run.

    Times are Unix seconds; ``node_rank``/``nnodes``/``rdzv_id`` describe a multi-node run (1 node:
    0/1/the id torchrun would use).
    """

    pid: int
    host: str
    started: float
    heartbeat: float
    command: str = ""
    rdzv_id: str = ""
    node_rank: int = 0
    nnodes: int = 1
    detached: bool = False
    log: str | None = None

    @property
    def here(self) -> bool:
        """The holder runs on this host."""
        return self.host == socket.gethostname()

    def heartbeat_age(self, now: float | None = None) -> float:
        """Seconds since the holder last wrote its heartbeat."""
        return max(0.0, (now or time.time()) - self.heartbeat)

    def describe(self) -> str:
        """``pid 123 on host gpu1, started 12:03:04`` (plus the heartbeat's age when remote)."""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        text = f"pid {self.pid} on host {self.host}, started {started}"
        if not self.here:
            text += f", heartbeat {_ago(self.heartbeat_age())}"
        return text


@dataclass(frozen=True)
class LockStatus:
    """Whether a trainer is alive in a run directory.

    ``state``:
        free      nobody holds it, and nobody left a ``lock.json`` behind;
        held      a launcher holds the ``flock`` (on this host, or across a shared filesystem);
        remote    the ``flock`` is free here, but a holder on another host has a fresh heartbeat;
        orphaned  the launcher is gone but ranks still hold ``ranks.lock`` (finishing a step);
        dead      the holder named in ``lock.json`` died without releasing (kernel-verified);
        stale     a holder on another host stopped heartbeating: probably dead, not verifiable.
    """

    state: LockState
    holder: Holder | None

    @property
    def running(self) -> bool:
        """A trainer (launcher or ranks) may be writing the run directory now."""
        return self.state in ("held", "remote", "orphaned")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _lock_path(run: RunDir) -> Path:
    return run.path / "lock"


def _holder_path(run: RunDir) -> Path:
    return run.path / "lock.json"


def _ranks_path(run: RunDir) -> Path:
    return run.path / "ranks.lock"


def read_holder(run: RunDir) -> Holder | None:
    """The holder recorded in ``lock.json``, or None (no file, or a torn/foreign one)."""
    try:
        data = json.loads(_holder_path(run).read_text(encoding="utf-8"))
        known = {k: data[k] for k in Holder.__dataclass_fields__ if k in data}
        return Holder(**known)
    except (OSError, ValueError, TypeError):
        return None


def _try_flock(path: Path, mode: int, *, create: bool) -> int | None | Literal[False]:
    """Open ``path`` and take ``mode`` without blocking: the fd, None when another process holds a
    conflicting lock, or False when the file does not exist (and ``create`` is off)."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _flock_retrying(
    path: Path, mode: int, *, create: bool, retry: bool = True
) -> int | None | Literal[False]:
    deadline = time.monotonic() + (ACQUIRE_RETRY_S if retry else 0.0)
    while True:
        fd = _try_flock(path, mode, create=create)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(0.05)


def ranks_running(run: RunDir, *, retry: bool = False) -> bool:
    """Whether any rank of the run still holds ``ranks.lock``.

    Args:
        run: the run directory.
        retry: keep trying for ACQUIRE_RETRY_S (a probe may hold it for an instant): for acquirers.
    """
    fd = _flock_retrying(_ranks_path(run), fcntl.LOCK_EX, create=False, retry=retry)
    if fd is None:
        return True
    if fd is not False:
        os.close(fd)
    return False


def probe(run: RunDir) -> LockStatus:
    """Is a trainer alive in ``run``? Tries each lock once, for an instant, and lets it go.

    Args:
        run: the run directory (one without lock files is ``free``).
    """
    fd = _flock_retrying(_lock_path(run), fcntl.LOCK_EX, create=False, retry=False)
    if fd is None:
        return LockStatus("held", read_holder(run))
    # Read after the flock check: a clean release removes lock.json before it unlocks.
    holder = read_holder(run)
    if fd is not False:
        os.close(fd)
    if ranks_running(run):
        return LockStatus("orphaned", holder)
    return _unlocked_status(holder)


def _unlocked_status(holder: Holder | None) -> LockStatus:
    """The state when the ``flock`` is free here, from what ``lock.json`` says."""
    if holder is None:
        return LockStatus("free", None)
    if holder.here:
        return LockStatus("dead", holder)
    if holder.heartbeat_age() < HEARTBEAT_TIMEOUT_S:
        return LockStatus("remote", holder)
    return LockStatus("stale", holder)


def refusal(run: RunDir, status: LockStatus, *, doing: str) -> TunewizError:
    """The ``error:``/``hint:`` for an action refused because ``status`` is not free.

    Args:
        run: the run directory.
        status: a ``held``/``remote``/``orphaned``/``stale`` status from :func:`probe`.
        doing: what was refused, e.g. ``"resume it"``; ends the first sentence.
    """
    path, who = run.path, status.holder.describe() if status.holder else "holder unknown"
    follow = f"follow it with `tunewiz watch {path}`, or stop it with `tunewiz stop {path}`"
    if status.state == "orphaned":
        return TunewizError(
            f"cannot {doing}: run `{path}` is still being written: its launcher ({who}) is gone and its "
            "ranks are finishing their step and saving a checkpoint",
            hint=f"wait for them with `tunewiz watch {path}`, then run this again",
        )
    if status.state == "stale":
        return TunewizError(
            f"cannot {doing}: run `{path}` is locked by a trainer on another host ({who}) whose heartbeat "
            f"stopped more than {HEARTBEAT_TIMEOUT_S:.0f} s ago: it probably died, but that cannot be "
            "checked from this host",
            hint=f"check on host `{status.holder.host if status.holder else '?'}` (`tunewiz watch {path}` "
            f"there); if nothing trains there, clear the lock with `tunewiz unlock {path}`",
        )
    return TunewizError(
        f"cannot {doing}: run `{path}` is in use: a trainer is running there ({who})", hint=follow
    )


class RunLock:
    """The exclusive lock of one run directory, held by the launcher for the life of the training.

    Use :meth:`acquire` (or :func:`acquire_or_join`); :meth:`release` (or leaving the ``with``
    block) removes ``lock.json`` and unlocks. A daemon thread refreshes the heartbeat.

    Args:
        run: the run directory.
        fd: an open descriptor of ``RUN/lock`` that holds the exclusive ``flock``.
        holder: what was written to ``lock.json``.
    """

    def __init__(self, run: RunDir, fd: int, holder: Holder) -> None:
        self.run, self.fd, self.holder = run, fd, holder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.taken_over: Holder | None = None  # a dead holder whose lock.json this lock replaced

    @classmethod
    def acquire(
        cls,
        run: RunDir,
        *,
        command: str,
        rdzv_id: str = "",
        node_rank: int = 0,
        nnodes: int = 1,
        doing: str = "train",
    ) -> RunLock:
        """Take the run's lock, or refuse.

        Creates the run directory if needed. A holder that died on this host (its ``flock`` is free)
        is taken over, and :attr:`taken_over` says whose lock it was.

        Args:
            run: the run directory.
            command: what holds it, for the messages of others (``tunewiz train presets/x.yaml``).
            rdzv_id: the rendezvous id of the multi-node run this launcher belongs to.
            node_rank: this launcher's node rank.
            nnodes: the number of nodes of the run.
            doing: for the refusal: ``cannot {doing}: run … is in use``.

        Raises:
            TunewizError: (exit 2) a live trainer holds the run, its ranks are still finishing, or a
                stale remote holder must be cleared first; or the directory is not writable.
        """
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            fd = _flock_retrying(_lock_path(run), fcntl.LOCK_EX, create=True)
        except OSError as exc:
            raise TunewizError(
                f"cannot lock the run directory `{run.path}`: {exc.strerror or exc}",
                hint="choose a writable place with `--run-dir`",
            ) from exc
        if fd is None or fd is False:
            raise refusal(run, LockStatus("held", read_holder(run)), doing=doing)
        try:
            if ranks_running(run, retry=True):
                raise refusal(run, LockStatus("orphaned", read_holder(run)), doing=doing)
            before = _unlocked_status(read_holder(run))
            if before.state in ("remote", "stale"):
                raise refusal(run, before, doing=doing)
            now = time.time()
            holder = Holder(
                pid=os.getpid(),
                host=socket.gethostname(),
                started=now,
                heartbeat=now,
                command=command,
                rdzv_id=rdzv_id,
                node_rank=node_rank,
                nnodes=nnodes,
            )
            # A stop request left by an earlier launch must not stop this one; a new one after this
            # line is meant for it.
            run.stop_request.unlink(missing_ok=True)
            atomic_write_json(_holder_path(run), asdict(holder))
        except BaseException:
            os.close(fd)
            raise
        lock = cls(run, fd, holder)
        lock.taken_over = before.holder if before.state == "dead" else None
        lock._start_heartbeat()
        return lock

    @classmethod
    def adopt(cls, run: RunDir, fd: int, **changes: object) -> RunLock:
        """Take over a lock whose descriptor was inherited from the launcher that acquired it
        (``train --detach``): the ``flock`` stays held throughout; ``lock.json`` names this process.

        Args:
            run: the run directory.
            fd: the inherited descriptor of ``RUN/lock``.
            changes: Holder fields to change besides the pid (``detached=True``, ``log=...``).
        """
        old = read_holder(run)
        if old is None:
            raise TunewizError(f"`{_holder_path(run)}` vanished while the run was handed over")
        holder = replace(old, pid=os.getpid(), heartbeat=time.time(), **changes)  # type: ignore[arg-type]
        atomic_write_json(_holder_path(run), asdict(holder))
        lock = cls(run, fd, holder)
        lock._start_heartbeat()
        return lock

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="tunewiz-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.holder = replace(self.holder, heartbeat=time.time())
            with contextlib.suppress(OSError):  # a full disk must not kill the launcher
                atomic_write_json(_holder_path(self.run), asdict(self.holder))

    def stop_heartbeat(self) -> None:
        """Stop refreshing ``lock.json`` (before handing the lock to another process)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def hand_over(self) -> None:
        """Forget this lock without releasing it: another process adopted the descriptor."""
        self.stop_heartbeat()
        os.close(self.fd)
        self.fd = -1

    def release(self) -> None:
        """Remove ``lock.json`` and unlock. Safe to call twice."""
        self.stop_heartbeat()
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if (read_holder(self.run) or self.holder).pid == self.holder.pid:
                _holder_path(self.run).unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_or_join(
    run: RunDir, *, command: str, rdzv_id: str, node_rank: int, nnodes: int, doing: str
) -> RunLock | None:
    """Take the run's lock, or — for a multi-node run — join the node that holds it.

    Returns the lock, or None when this launcher joined a run whose lock another node's launcher
    holds with the same rendezvous id (a shared filesystem). Single-node launches never join.

    Args:
        run: the run directory.
        command: this launcher's command line, recorded if it takes the lock.
        rdzv_id: the rendezvous id of the multi-node run (tunewiz.train.launcher.rendezvous_id).
        node_rank: this launcher's node rank.
        nnodes: the number of nodes of the run.
        doing: for the refusal: ``cannot {doing}: run … is in use``.

    Raises:
        TunewizError: as :meth:`RunLock.acquire`; also when the holder's rendezvous id differs, or it
            is the same node rank (the same node started twice).
    """
    try:
        return RunLock.acquire(
            run, command=command, rdzv_id=rdzv_id, node_rank=node_rank, nnodes=nnodes, doing=doing
        )
    except TunewizError:
        status = probe(run)
        holder = status.holder
        if nnodes == 1 or status.state not in ("held", "remote") or holder is None:
            raise
        if holder.nnodes > 1 and holder.rdzv_id == rdzv_id and holder.node_rank != node_rank:
            return None
        why = (
            f"its rendezvous id is `{holder.rdzv_id}`, this launcher's is `{rdzv_id}`"
            if holder.rdzv_id != rdzv_id
            else f"node rank {node_rank} is already running there"
        )
        raise TunewizError(
            f"cannot join run `{run.path}`: it is held by another launcher ({holder.describe()}) and {why}",
            hint=f"use the same `--rdzv-endpoint` and run directory on every node with distinct "
            f"`--node-rank`s; see the run with `tunewiz watch {run.path}`",
        ) from None


def hold_ranks_lock(run: RunDir) -> int:
    """Take a shared lock on ``ranks.lock`` for the life of this rank (the kernel drops it at exit).

    Blocks for the instant a probe holds it exclusively. Returns the descriptor (keep it open).
    """
    fd = os.open(_ranks_path(run), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def clear_stale(run: RunDir) -> Holder | None:
    """Remove a ``lock.json`` left by a dead or stale holder (``tunewiz unlock``); return that holder.

    Raises:
        TunewizError: the run is live (held, fresh remote heartbeat, or ranks still running).
    """
    status = probe(run)
    if status.running:
        raise refusal(run, status, doing="unlock it")
    if status.holder is not None:
        _holder_path(run).unlink(missing_ok=True)
    return status.holder
