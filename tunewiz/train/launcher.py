"""Preset + run directory → the exact torchrun command and environment; spawn it; hand the run to the
dashboard.

The launcher holds the run directory's lock (tunewiz.run.lock) for the life of the training, from
before the directory is prepared until every rank has exited. torchrun runs in its own session
(process group), so a terminal Ctrl-C, SIGHUP or SIGTERM reaches only this process; the dashboard
then asks the ranks to stop gracefully through the run directory's STOP file. The ranks follow this
process (``TUNEWIZ_LAUNCHER_PID``, see tunewiz.train.stop): if it dies, they finish the step, save a
checkpoint and exit. torchrun's own output goes to ``RUN_DIR/logs/torchrun.log``; the ranks report
failures as events.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.run.lock import RunLock, acquire_or_join
from tunewiz.train.rendezvous import DEFAULT_TIMEOUT_S, check_rdzv_id, split_endpoint
from tunewiz.train.stop import LAUNCHER_PID_ENV

if TYPE_CHECKING:
    from tunewiz.data.prepared import Prepared
    from tunewiz.text.prompt import PromptFormat
    from tunewiz.ui.live import Screen

RECIPE_MODULE = "tunewiz.train.recipe"


@dataclass(frozen=True)
class Topology:
    """torchrun's placement flags."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = (
        ""  # the same on every node: `--rdzv-id`, else the preset's name (tunewiz.train.rendezvous)
    )
    rdzv_timeout: int = DEFAULT_TIMEOUT_S  # seconds a node waits for the others to join

    def check(self, device: str) -> None:
        """Reject impossible placements before anything is launched."""
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise TunewizError(
                "`--nproc-per-node` and `--nnodes` must be at least 1",
                hint="for one GPU: `--nproc-per-node 1`",
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise TunewizError(
                f"`--nnodes {self.nnodes}` needs `--rdzv-endpoint HOST:PORT` (the first node's address)",
                hint="run the same command on every node with `--node-rank 0..N-1 --rdzv-endpoint "
                "node0:29500`",
            )
        if self.nnodes > 1:
            split_endpoint(str(self.rdzv_endpoint))
            check_rdzv_id(self.rdzv_id)
            if self.rdzv_timeout < 1:
                raise TunewizError(
                    f"`--rdzv-timeout {self.rdzv_timeout}` must be at least 1 (seconds)",
                    hint=f"the default is `--rdzv-timeout {DEFAULT_TIMEOUT_S}`",
                )
        if not 0 <= self.node_rank < self.nnodes:
            raise TunewizError(
                f"`--node-rank {self.node_rank}` is outside 0..{self.nnodes - 1}",
                hint="number the nodes from 0",
            )
        if device == "cuda":
            gpus = _cuda_device_count()
            if self.nproc_per_node > gpus:
                raise TunewizError(
                    f"`--nproc-per-node {self.nproc_per_node}` asks for more processes than this "
                    f"machine's {gpus} GPU(s)",
                    hint=f"use `--nproc-per-node {max(gpus, 1)}`" + ("" if gpus else ", or `--device cpu`"),
                )


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torchrun_command(run: RunDir, topology: Topology, *, resume_from: Path | None = None) -> list[str]:
    """The torchrun argv that starts the recipe for this run directory."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(topology.nproc_per_node)]
    if topology.nnodes == 1:
        argv.append("--standalone")
    else:
        argv += [
            "--nnodes",
            str(topology.nnodes),
            "--node-rank",
            str(topology.node_rank),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            str(topology.rdzv_endpoint),
            "--rdzv-id",
            rendezvous_id(run, topology),
            "--rdzv-conf",
            f"join_timeout={topology.rdzv_timeout}",
        ]
    argv += ["-m", RECIPE_MODULE, "--run-dir", str(run.path)]
    if resume_from is not None:
        argv += ["--resume-from", str(resume_from)]
    return argv


def rendezvous_id(run: RunDir, topology: Topology) -> str:
    """The id that the launchers of one multi-node run share (torchrun's ``--rdzv-id``); also recorded
    in the run's lock, so that a launcher of another node joins only its own run. One node: the run
    directory's name (no other node needs to agree)."""
    return topology.rdzv_id or run.path.name


def recorded_name(run: RunDir) -> str:
    """The preset ``name`` recorded in the run's ``config.yaml`` (the directory's name when unreadable):
    a resume's default rendezvous id, the same as its training's."""
    import yaml

    try:
        name = yaml.safe_load(run.config.read_text(encoding="utf-8")).get("name")
    except (OSError, AttributeError, yaml.YAMLError):
        name = None
    return str(name) if name else run.path.name


def torchrun_env(argv: list[str]) -> dict[str, str]:
    """This process's environment, plus what the ranks need: the launcher to follow, and this node's
    ``--node-rank`` in ``argv`` (the ranks number themselves by it, see tunewiz.train.distributed)."""
    from tunewiz.train.rendezvous import NODE_RANK_ENV

    env = dict(os.environ)
    env.pop(NODE_RANK_ENV, None)
    if "--node-rank" in argv:
        env[NODE_RANK_ENV] = argv[argv.index("--node-rank") + 1]
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    return env


def lock_run(run: RunDir, topology: Topology, *, command: str, doing: str) -> RunLock | None:
    """Take the run's lock for this launch (or join the node holding it: None).

    Args:
        run: the run directory (created when missing).
        topology: this launcher's place in a multi-node run.
        command: the command line, recorded for other commands' messages.
        doing: for the refusal, e.g. ``"resume it"``.

    Raises:
        TunewizError: (exit 2) a live trainer holds the run; see tunewiz.run.lock.
    """
    lock = acquire_or_join(
        run,
        command=command,
        rdzv_id=rendezvous_id(run, topology),
        node_rank=topology.node_rank,
        nnodes=topology.nnodes,
        doing=doing,
    )
    if lock is not None and lock.taken_over is not None:
        print(
            f"note: the previous trainer of {run.path} ({lock.taken_over.describe()}) ended without "
            "releasing its lock (killed or crashed); this launch takes the run over",
            file=sys.stderr,
        )
    return lock


def announce_nodes(topology: Topology, argv: list[str]) -> None:
    """Print (stderr) this node's place in a multi-node run and the exact command for each other node.

    Args:
        topology: this launcher's placement (a no-op for one node).
        argv: this launcher's arguments after ``tunewiz`` (``sys.argv[1:]``).
    """
    from tunewiz.train.rendezvous import other_node_commands

    if topology.nnodes == 1:
        return
    others = other_node_commands(
        argv, nnodes=topology.nnodes, node_rank=topology.node_rank, rdzv_id=topology.rdzv_id
    )
    lines = [
        f"node {topology.node_rank} of {topology.nnodes}: rendezvous `{topology.rdzv_id}` at "
        f"{topology.rdzv_endpoint}; on the other nodes run (from the same directory, or with the same "
        "preset):",
        *(f"  {command}" for command in others),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def write_node_marker(run: RunDir, topology: Topology) -> float:
    """Record this node in ``RUN_DIR/nodes/node-R.json`` (host, pid, rendezvous id, start time) and
    return the start time: once the nodes have met, the markers a node sees tell whether the run
    directory is shared (:func:`run_dir_sharing`)."""
    import socket
    import time

    from tunewiz.atomic import atomic_write_json

    started = time.time()
    marker = run.path / "nodes" / f"node-{topology.node_rank}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        marker,
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "rdzv_id": topology.rdzv_id,
            "node_rank": topology.node_rank,
            "nnodes": topology.nnodes,
            "started": started,
        },
    )
    return started


def run_dir_sharing(run: RunDir, topology: Topology, started: float) -> str:
    """Say whether this node's run directory is shared with the other nodes, and what it keeps.

    A node sees a marker of each other node of this launch (same rendezvous id, written at most one
    rendezvous timeout before this node's) only when the run directory is on shared storage.
    """
    import json

    seen = set()
    for path in (run.path / "nodes").glob("node-*.json"):
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if marker.get("rdzv_id") == topology.rdzv_id and marker.get("started", 0) >= (
            started - topology.rdzv_timeout - 60
        ):
            seen.add(marker.get("node_rank"))
    if len(seen) >= topology.nnodes:
        return (
            f"run directory {run.path} is shared by all {topology.nnodes} nodes: node 0 writes events, "
            "the plan and final/; every rank writes its checkpoint shard"
        )
    if topology.node_rank == 0:
        return (
            f"run directory {run.path} is this node's own (no other node's marker in {run.path / 'nodes'}):"
            " events, the plan, final/ and the checkpoints' metadata are written here, each other node "
            "keeps its ranks' checkpoint shards on its own disk; `tunewiz resume` needs them all in one "
            "directory every node reads (a shared filesystem)"
        )
    return (
        f"run directory {run.path} is this node's own: it keeps only this node's checkpoint shards; "
        "events, the plan and final/ are on node 0"
    )


def preflight(preset: Preset) -> None:
    """Fail fast, before torchrun starts, on a model or a local data file that is not there (the same
    errors as ``tunewiz prepare``: :func:`tunewiz.data.sources.check_data_paths`)."""
    from tunewiz.data.sources import check_data_paths
    from tunewiz.models.loading import check_model_dir, resolve_model_dir

    model_dir = check_model_dir(resolve_model_dir(preset.model.path, preset.model.revision))
    check_mergeable(preset, model_dir)
    check_data_paths(preset.data)


def with_absolute_data_paths(preset: Preset) -> Preset:
    """``preset`` with its local data files (``data.path`` entries, ``data.val_path``) as absolute paths,
    for the run's config.yaml: `tunewiz resume` finds them from any directory (a relative path is
    relative to where `train` ran). Shipped samples, Hub ids and paths that are not files stay as written;
    the prepared-data key is unchanged (it names a file by its name and content).
    """
    import os

    def absolute(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path)) if Path(path).expanduser().is_file() else path

    data = preset.data
    entries = data.path if isinstance(data.path, list) else None
    if entries is None:
        paths: str | list = absolute(data.path)
    else:
        paths = [
            absolute(e) if isinstance(e, str) else e.model_copy(update={"path": absolute(e.path)})
            for e in entries
        ]
    val_path = absolute(data.val_path) if data.val_path is not None else None
    return preset.model_copy(update={"data": data.model_copy(update={"path": paths, "val_path": val_path})})


def data_contents(prepared: Prepared) -> list[str]:
    """What a prepared entry was made from, as ``name (content hash)`` per dataset and validation file: the
    start event records it, and a resume compares (:func:`check_same_data`)."""
    inputs = prepared.meta["inputs"]
    found = [f"{d['name']} ({d['content']})" for d in inputs["datasets"]]
    if inputs.get("val_path"):
        found.append(f"{inputs['val_path']['name']} ({inputs['val_path']['content']})")
    return found


def recorded_data_contents(run: RunDir) -> list[str] | None:
    """The data ``run`` started with (its first start event's ``data_contents``), or None for a run made
    before the start event recorded it."""
    from tunewiz.run.events import read_events

    start = next((e for e in read_events(run.events) if e.get("event") == "start"), {})
    return start.get("data_contents") or None


def check_same_data(run: RunDir, prepared: Prepared) -> None:
    """Refuse to resume ``run`` on data other than it started with: a data file whose content changed
    (rows edited, added or removed) would silently give another data order and validation set. The
    same content under another path or name is the same data (a moved file; `resume --set data.path=`).

    Runs whose start event does not record the data (made before this check) are not checked.

    Raises:
        TunewizError: a dataset's content differs from the run's first start event.
    """
    recorded = recorded_data_contents(run)
    now = data_contents(prepared)

    def content(entry: str) -> str:  # "qa.jsonl (3f2a…)" -> "3f2a…": a moved or renamed file is the same data
        return entry.rsplit(" (", 1)[-1]

    if not recorded or [content(e) for e in recorded] == [content(e) for e in now]:
        return
    was = {content(e) for e in recorded}
    changed = [e.rsplit(" (", 1)[0] for e in now if content(e) not in was] or ["a dataset"]
    rows = prepared.meta.get("made_from", {}).get("rows")
    raise TunewizError(
        f"the data of run `{run.path}` changed since it started: {', '.join(f'`{c}`' for c in changed)} "
        f"{'has' if len(changed) == 1 else 'have'} other content now"
        + (f" ({rows:,} rows in all)" if rows else "")
        + "; resuming would not continue its data order or its validation set",
        hint=f"put back the data it trained on and resume again; or train a new run on the new data: "
        f"`tunewiz train {run.config} --run-dir {run.path}-2`",
    )


def run_prompt(run: RunDir) -> tuple[PromptFormat | None, bool]:
    """The prompt format a run's data is tokenized with: ``(recorded, legacy)`` for build_datasets and
    tunewiz.data.prepared.

    A run with a complete checkpoint reads its ``prompt.json`` back (``legacy`` when it has none: made
    before the record existed). A fresh start decides anew, ``(None, False)``: a record left by a launch
    that failed before its first checkpoint may predate a changed preset.
    """
    from tunewiz.text.prompt import read_prompt_record

    if not run.complete_checkpoints():
        return None, False
    recorded = read_prompt_record(run.path)
    return recorded, recorded is None


def check_mergeable(preset: Preset, model_dir: Path) -> None:
    """Refuse a LoRA target whose merged export would not be the trained model.

    A LoRA update on ``lm_head`` of a model with tied embeddings (``tie_word_embeddings``) cannot be
    merged into the one matrix that ``lm_head`` and ``embed_tokens`` share: merged, it would change the
    input embeddings too (or, saved tied, be lost), while peft applies it to the output only. The
    adapter alone (``output.merged: false``) stays exact. Every other accepted target merges exactly
    (tests/test_merge.py).

    Args:
        preset: the resolved preset.
        model_dir: the base model's directory (its config.json says whether embeddings are tied).

    Raises:
        TunewizError: ``lm_head`` is a target, the embeddings are tied and a merged export is asked for.
    """
    import json

    if preset.method == "full" or "lm_head" not in preset.lora.targets or not preset.output.merged:
        return
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("tie_word_embeddings", False):
        raise TunewizError(
            f"`lora.targets` has `lm_head`, and `{preset.model.path}` ties lm_head to embed_tokens "
            "(tie_word_embeddings: true): a merged final/ cannot hold the trained model (the update "
            "would change the shared input embeddings too)",
            hint="drop `lm_head` from `lora.targets`, or export the adapter only with "
            "`--set output.merged=false` (peft applies it exactly)",
        )


LOCK_FILES = ("lock", "lock.json", "ranks.lock")  # kept by `--overwrite`: the caller holds the lock


def prepare_run_dir(preset: Preset, run_dir: Path | None, *, overwrite: bool) -> RunDir:
    """Create the run directory and write the resolved preset into it. Call it holding the run's lock.

    An existing run is never touched unless `overwrite` is given: its checkpoints are for `resume`.
    A directory whose run never started training (no start event, no checkpoint) is reused. An
    overwrite empties the directory but keeps the lock files (deleting a held lock file would let
    a second trainer lock a new one).
    """
    import shutil

    from tunewiz.atomic import atomic_write_text
    from tunewiz.preset.files import dump_preset

    run = RunDir(run_dir or Path("runs") / preset.name)
    if _refuse_started_run(run, overwrite=overwrite):
        for child in run.path.iterdir():
            if child.name in LOCK_FILES:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, dump_preset(preset))
    except OSError as exc:
        raise TunewizError(
            f"cannot write the run directory `{run.path}`: {exc.strerror or exc}",
            hint="choose a writable place with `--run-dir`",
        ) from exc
    return run


def _refuse_started_run(run: RunDir, *, overwrite: bool) -> bool:
    """Whether ``run`` holds a run that started training (a start event, a checkpoint or ``final/``).

    Raises:
        TunewizError: it does and ``overwrite`` is not given (the hint: resume it, use it, or another
            directory).
    """
    from tunewiz.run.events import read_events

    started = (
        run.checkpoints.exists()
        or run.final.exists()
        or any(e.get("event") == "start" for e in read_events(run.events))
    )
    if started and not overwrite:
        raise TunewizError(f"run directory `{run.path}` already exists", hint=_existing_run_hint(run))
    return started


def check_run_dir(run: RunDir, *, overwrite: bool) -> None:
    """Refuse, before the data phase, a run directory that ``train`` would refuse after it (so a refused
    launch costs no data preparation): a live trainer in it, or a started run without ``overwrite``.
    ``prepare_run_dir`` asks again under the run's lock.

    Raises:
        TunewizError: a trainer is alive in it (tunewiz.run.lock.probe: held, on another host, orphaned
            ranks, a stale lock), or :func:`_refuse_started_run`'s.
    """
    from tunewiz.run.lock import probe, refusal

    status = probe(run)
    if status.state not in ("free", "dead"):  # a dead holder's lock is taken over by lock_run
        raise refusal(run, status, doing="train into it")
    _refuse_started_run(run, overwrite=overwrite)


def _existing_run_hint(run: RunDir) -> str:
    """What to do about a run directory that already holds a run: resume it when it can be resumed;
    a finished one has nothing to resume, so use it or train it longer."""
    from tunewiz.run.status import run_status

    path = run.path
    others = "choose another directory with `--run-dir`, or start over with `--overwrite`"
    if run_status(run).phase == "finished":
        return (
            f"it is finished: use it (`tunewiz chat {path}`), train it longer "
            f"(`tunewiz resume {path} --set train.max_steps=N`), or {others}"
        )
    return f"continue it with `tunewiz resume {path}`, or {others}"


def launch(
    run: RunDir, argv: list[str], *, tui: bool, topology: Topology | None = None, screen: Screen | None = None
) -> int:
    """Start torchrun, draw the dashboard until every rank has exited, print the summary.

    Call it holding the run's lock (or joining the node that holds it). With several nodes, first
    show the nodes joining (tunewiz.train.rendezvous) until the rendezvous completes. Returns the exit
    code of the run's life (tunewiz.run.status): 0 finished, 130 stopped on request, 1 failed or
    interrupted. ``screen``: the dashboard already on screen (the data phase), continued by this run's.

    Raises:
        TunewizError: (exit 1) the nodes never met (timeout, endpoint unreachable), or torchrun failed
            without an error event from the ranks.
    """
    from tunewiz.run.events import read_events
    from tunewiz.run.lock import ranks_running
    from tunewiz.run.status import EXIT_FAILED, EXIT_FINISHED, EXIT_STOPPED
    from tunewiz.ui.live import make_console, run_dashboard
    from tunewiz.ui.lossplot import write_loss_plot
    from tunewiz.ui.summary import print_summary

    node_rank = topology.node_rank if topology is not None else 0
    # Node 0's torchrun log is torchrun.log; the other nodes' (a shared run directory) their own.
    log_path = run.path / "logs" / ("torchrun.log" if node_rank == 0 else f"torchrun-node{node_rank}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if topology is not None and topology.nnodes > 1:
        started = write_node_marker(run, topology)
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            env=torchrun_env(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        mode = "tui" if tui else "plain"
        if topology is not None and topology.nnodes > 1:
            waited = wait_for_nodes(run, process, topology, log_path, log_start)
            if waited is not None:
                return waited
            print(run_dir_sharing(run, topology, started), file=sys.stderr, flush=True)
        # Ranks left behind by a killed torchrun agent still finish their step and checkpoint: the
        # dashboard follows them until they let go of the ranks' lock.
        state = run_dashboard(run, process, mode=mode, alive=lambda: ranks_running(run), screen=screen)
    code = process.wait()
    if topology is not None and topology.node_rank > 0 and not read_events(run.events):
        # A node-local run directory of node 1..N-1: node 0's rank 0 writes the events and final/.
        if code == 0:
            print(
                f"node {topology.node_rank}: its ranks finished; events, the summary and final/ are in "
                "node 0's run directory",
                file=sys.stderr,
            )
            return EXIT_FINISHED
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise TunewizError(
            f"torchrun on node {topology.node_rank} exited with code {code}",
            hint=f"the full log is `{log_path}`; node 0's run directory has the run's events",
            exit_code=EXIT_FAILED,
        )
    try:
        write_loss_plot(read_events(run.events), run.loss_plot)
    except OSError as exc:  # a full disk must not hide the run's own outcome
        print(f"warning: could not write {run.loss_plot}: {exc.strerror or exc}", file=sys.stderr)
    print_summary(state, run, make_console(mode))
    if state.end is not None:
        return EXIT_FINISHED
    reason = (state.stop or {}).get("reason")
    if reason == "signal" or (state.killing and not state.errors):
        return EXIT_STOPPED  # Ctrl-C, SIGHUP, SIGTERM or `tunewiz stop` (torchrun may exit non-zero)
    if state.stop is not None or state.errors:
        return EXIT_FAILED
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise TunewizError(
            f"torchrun exited with code {code}", hint=f"the full log is `{log_path}`", exit_code=EXIT_FAILED
        )
    return EXIT_FAILED  # torchrun exited cleanly, yet the ranks wrote neither an end nor a stop


def wait_for_nodes(
    run: RunDir, process: subprocess.Popen[bytes], topology: Topology, log: Path, log_start: int
) -> int | None:
    """Show the nodes joining (``n of N``, on stderr) until the rendezvous completes or the ranks start.

    ``log_start`` is where this launch's output begins in torchrun's ``log`` (it is appended to).

    Returns None to go on to the dashboard, or an exit code when interrupted (Ctrl-C) while waiting.

    Raises:
        TunewizError: (exit 1) torchrun gave up on the rendezvous (timeout, no store at the endpoint,
            closed); the log tail is printed first with ``TUNEWIZ_DEBUG=1``.
    """
    import signal
    import time

    from tunewiz.run.lock import ranks_running
    from tunewiz.run.status import EXIT_STOPPED
    from tunewiz.train.rendezvous import RendezvousWatch, rendezvous_error, rendezvous_failure

    endpoint, rdzv_id, nnodes = str(topology.rdzv_endpoint), rendezvous_id(run, topology), topology.nnodes
    watch = RendezvousWatch(endpoint, rdzv_id, nnodes)
    print(
        f"waiting for {nnodes} nodes at {endpoint} (rendezvous id `{rdzv_id}`, this is node "
        f"{topology.node_rank}, timeout {topology.rdzv_timeout} s)",
        file=sys.stderr,
        flush=True,
    )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    last = None
    try:
        while process.poll() is None:
            joined = watch.poll()
            if joined and joined != last:  # 0: the rendezvous is closing (a timeout); the error follows
                last = joined
                print(
                    f"  {joined} of {nnodes} nodes joined: {watch.seen_text()}", file=sys.stderr, flush=True
                )
            if watch.complete or ranks_running(run):
                print(f"all {nnodes} nodes joined; training starts", file=sys.stderr, flush=True)
                return None
            time.sleep(0.5)
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        print("interrupted while waiting for the other nodes; nothing was trained", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = process.wait()
    with open(log, "rb") as file:
        file.seek(log_start)
        text = file.read().decode(errors="replace")
    kind = rendezvous_failure(text)
    if code == 0 or kind is None:
        return None  # not a rendezvous failure: the dashboard and summary report it
    if os.environ.get("TUNEWIZ_DEBUG"):
        print("\n".join(text.splitlines()[-40:]), file=sys.stderr)
    raise rendezvous_error(
        kind,
        endpoint=endpoint,
        rdzv_id=rdzv_id,
        nnodes=nnodes,
        timeout_s=topology.rdzv_timeout,
        watch=watch,
        log=log,
    )
