"""Several nodes, one run: the rendezvous id, the command the other nodes run, watching the nodes join,
and a clear error when they never meet.

torchrun's c10d rendezvous (``--rdzv-backend c10d``) keeps its state in a TCP store that node 0's torchrun
hosts at ``--rdzv-endpoint``. Every node's torchrun joins the rendezvous named by ``--rdzv-id``; when all
``--nnodes`` have joined, the ranks start. A node that waits longer than the join timeout
(``--rdzv-timeout``) gives up with ``RendezvousTimeoutError``; one that cannot reach the store gives up with
``RendezvousConnectionError``. Both arrive as a traceback in torchrun's log: this module turns them into one
``error:`` that names the endpoint, the id and the nodes seen.

The id defaults to the preset's ``name``, which is the same on every node however their disks are laid out
(the run directory's name is not).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import re
import shlex
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunewiz.errors import TunewizError

NODE_RANK_ENV = "TUNEWIZ_NODE_RANK"  # set by the launcher of a multi-node run: this node's `--node-rank`
DEFAULT_TIMEOUT_S = 600  # torchrun's own default join timeout
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_rdzv_id(preset_name: str) -> str:
    """The rendezvous id every node derives from the preset's ``name`` (unsafe characters → ``-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", preset_name).strip("-._") or "tunewiz"
    return cleaned[:128]


def check_rdzv_id(rdzv_id: str) -> str:
    """Return ``rdzv_id`` if torchrun and a shell take it as it is.

    Raises:
        TunewizError: empty, over 128 characters, or characters other than letters, digits, ``._-``.
    """
    if not _ID_RE.match(rdzv_id):
        raise TunewizError(
            f"`--rdzv-id {rdzv_id}`: a rendezvous id is 1-128 letters, digits, `.`, `_` or `-`",
            hint=f"e.g. `--rdzv-id {default_rdzv_id(rdzv_id)}` (the same on every node)",
        )
    return rdzv_id


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) → (host, port).

    Raises:
        TunewizError: no port, or a port outside 1..65535.
    """
    host, sep, port = endpoint.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TunewizError(
            f"`--rdzv-endpoint {endpoint}` is not HOST:PORT",
            hint="give node 0's address as the other nodes reach it and a free port, e.g. "
            "`--rdzv-endpoint 10.0.0.1:29500`",
        )
    return host, int(port)


def other_node_commands(argv: list[str], *, nnodes: int, node_rank: int, rdzv_id: str) -> list[str]:
    """The commands to run on the other nodes: this node's ``tunewiz`` argv with each other node's rank
    and the rendezvous id spelled out (so that a differently named run directory still meets).

    Args:
        argv: this launcher's arguments after ``tunewiz`` (``sys.argv[1:]``).
        nnodes: number of nodes.
        node_rank: this node's rank (left out of the list).
        rdzv_id: the rendezvous id in use.
    """
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--node-rank", "--rdzv-id"):
            skip = True
            continue
        if arg.startswith(("--node-rank=", "--rdzv-id=")):
            continue
        kept.append(arg)
    return [
        shlex.join(["tunewiz", *kept, "--node-rank", str(rank), "--rdzv-id", rdzv_id])
        for rank in range(nnodes)
        if rank != node_rank
    ]


@dataclass
class RendezvousWatch:
    """Polls the c10d store at ``endpoint`` for who has joined rendezvous ``rdzv_id``.

    It reads torchrun's private state (``torch.rendezvous.<id>``, a pickled ``_RendezvousState``): when
    that fails (another torch version, the store not up yet) it reports nothing rather than guessing.
    """

    endpoint: str
    rdzv_id: str
    nnodes: int
    seen: dict[str, str] = field(default_factory=dict)  # node descriptor → "host (pid N)"
    complete: bool = False
    _store: object | None = None

    def poll(self) -> int | None:
        """Nodes joined so far (participants + waiting), or None when the store cannot be read now."""
        try:
            state = self._read()
        except Exception:  # noqa: BLE001 - any failure means "nothing known yet"
            self._store = None
            return None
        if state is None:
            return None
        nodes = list(getattr(state, "participants", {})) + list(getattr(state, "wait_list", ()))
        for node in nodes:
            self.seen.setdefault(
                repr(node), f"{getattr(node, 'addr', '?')} (pid {getattr(node, 'pid', '?')})"
            )
        self.complete = bool(getattr(state, "complete", False)) and len(state.participants) >= self.nnodes
        return len(nodes)

    def _read(self) -> object | None:
        with _quiet_stderr():  # TCPStore's C++ side prints warnings and stack frames on a closed store
            return self._read_store()

    def _read_store(self) -> object | None:
        from datetime import timedelta

        from torch.distributed import TCPStore

        if self._store is None:
            host, port = split_endpoint(self.endpoint)
            # A plain connect first: TCPStore prints C++ errors to stderr while no one listens.
            socket.create_connection((host, port), timeout=1).close()
            self._store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=2))
        key = "torch.rendezvous." + self.rdzv_id
        if not self._store.check([key]):  # type: ignore[attr-defined]
            return None
        raw = self._store.get(key)  # type: ignore[attr-defined]
        if not raw or raw == b"\0":  # torchrun's "no state yet" sentinel
            return None
        return pickle.loads(base64.b64decode(raw))  # noqa: S301 - our own rendezvous' state

    def seen_text(self) -> str:
        """``host-a (pid 1), host-b (pid 2)`` or ``none``."""
        return ", ".join(self.seen.values()) or "none"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (C++ code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def rendezvous_failure(log_text: str) -> str | None:
    """Which rendezvous failure torchrun's log ends with: ``timeout``, ``connection``, ``closed`` or None."""
    tail = log_text[-20000:]
    for kind, marker in (
        ("timeout", "RendezvousTimeoutError"),
        ("connection", "RendezvousConnectionError"),
        ("closed", "RendezvousClosedError"),
    ):
        if marker in tail:
            return kind
    return None


def rendezvous_error(
    kind: str, *, endpoint: str, rdzv_id: str, nnodes: int, timeout_s: int, watch: RendezvousWatch, log: Path
) -> TunewizError:
    """The one ``error:`` for nodes that never met (exit 1), with the usual causes as hints."""
    port = endpoint.rpartition(":")[2]
    hint = (
        f"start the same command on every node, each with its own `--node-rank`, within "
        f"`--rdzv-timeout {timeout_s}` s of each other; the usual causes: a firewall closes port {port} on "
        f"node 0; a node uses a different `--rdzv-id` (it defaults to the preset's name; pass `--rdzv-id "
        f"{rdzv_id}` everywhere); `--rdzv-endpoint` is not node 0's address as the others reach it "
        f"(127.0.0.1 only works on one machine). torchrun's log: `{log}` (`TUNEWIZ_DEBUG=1` prints it)"
    )
    here, seen = socket.gethostname(), watch.seen_text()
    if kind == "connection":
        return TunewizError(
            f"no rendezvous answered at {endpoint} (rendezvous `{rdzv_id}`, {nnodes} nodes; this node: "
            f"{here}): node 0 is not running there, or it cannot be reached",
            hint=hint,
            exit_code=1,
        )
    if kind == "closed":
        return TunewizError(
            f"rendezvous `{rdzv_id}` at {endpoint} was closed by another node before this one joined "
            f"(seen: {seen})",
            hint=hint,
            exit_code=1,
        )
    return TunewizError(
        f"only {len(watch.seen)} of {nnodes} nodes joined rendezvous `{rdzv_id}` at {endpoint} within "
        f"{timeout_s} s (seen: {seen}; this node: {here})",
        hint=hint,
        exit_code=1,
    )
