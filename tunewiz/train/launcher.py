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

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.run.lock import RunLock, acquire_or_join
from tunewiz.train.stop import LAUNCHER_PID_ENV

RECIPE_MODULE = "tunewiz.train.recipe"


@dataclass(frozen=True)
class Topology:
    """torchrun's placement flags."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

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
            rendezvous_id(run),
        ]
    argv += ["-m", RECIPE_MODULE, "--run-dir", str(run.path)]
    if resume_from is not None:
        argv += ["--resume-from", str(resume_from)]
    return argv


def rendezvous_id(run: RunDir) -> str:
    """The id that the launchers of one multi-node run share (torchrun's ``--rdzv-id``); also recorded
    in the run's lock, so that a launcher of another node joins only its own run."""
    return run.path.name


def torchrun_env() -> dict[str, str]:
    """This process's environment, plus what the ranks need to follow this launcher."""
    env = dict(os.environ)
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
        rdzv_id=rendezvous_id(run),
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


def preflight(preset: Preset) -> None:
    """Fail fast, before torchrun starts, on a model or a local data file that is not there."""
    from tunewiz.models.loading import check_model_dir, resolve_model_dir

    model_dir = check_model_dir(resolve_model_dir(preset.model.path, preset.model.revision))
    check_mergeable(preset, model_dir)
    data_paths = [("data.path", e.path) for e in preset.data.datasets()]
    for key, value in (*data_paths, ("data.val_path", preset.data.val_path)):
        if (
            value
            and Path(value).suffix in (".json", ".jsonl", ".csv", ".parquet")
            and not Path(value).is_file()
        ):
            raise TunewizError(
                f"`{key}`: dataset file `{value}` does not exist",
                hint="check the path (relative paths are from the current directory)",
            )


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
    from tunewiz.run.events import read_events

    run = RunDir(run_dir or Path("runs") / preset.name)
    started = (
        run.checkpoints.exists()
        or run.final.exists()
        or any(e.get("event") == "start" for e in read_events(run.events))
    )
    if started:
        if not overwrite:
            raise TunewizError(
                f"run directory `{run.path}` already exists",
                hint=f"continue it with `tunewiz resume {run.path}`, choose another with `--run-dir`, "
                "or start over with `--overwrite`",
            )
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


def start_run(run: RunDir, argv: list[str], lock: RunLock | None, *, no_tui: bool, detach: bool) -> int:
    """Run torchrun ``argv`` in this terminal (the dashboard), or hand it and ``lock`` to a background
    launcher (``detach``) and print how to follow and stop it. Returns the exit code (run status table).

    Args:
        run: the prepared run directory.
        argv: the torchrun command.
        lock: the run's lock held by this process (None for a joining node); the caller releases it
            (a no-op after a hand-over).
        no_tui: plain lines instead of the live dashboard.
        detach: run in the background.
    """
    from tunewiz.ui.live import choose_mode

    if not detach:
        return launch(run, argv, tui=choose_mode(no_tui) == "tui")
    from tunewiz.train.detach import launcher_log, start_detached

    pid = start_detached(run, argv, lock)
    print(
        f"run {run.path} is running in the background (launcher pid {pid})\n"
        f"  log:    {launcher_log(run)}\n"
        f"  watch:  tunewiz watch {run.path}\n"
        f"  stop:   tunewiz stop {run.path}   (graceful: finishes the step and saves a checkpoint)"
    )
    return 0


def launch(run: RunDir, argv: list[str], *, tui: bool) -> int:
    """Start torchrun, draw the dashboard until every rank has exited, print the summary.

    Call it holding the run's lock. Returns the exit code of the run's life
    (tunewiz.run.status): 0 finished, 130 stopped on request, 1 failed or interrupted.

    Raises:
        TunewizError: (exit 1) torchrun failed without an error event from the ranks.
    """
    from tunewiz.run.events import read_events
    from tunewiz.run.lock import ranks_running
    from tunewiz.run.status import EXIT_FAILED, EXIT_FINISHED, EXIT_STOPPED
    from tunewiz.ui.live import make_console, run_dashboard
    from tunewiz.ui.lossplot import write_loss_plot
    from tunewiz.ui.summary import print_summary

    log_path = run.path / "logs" / "torchrun.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            env=torchrun_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        mode = "tui" if tui else "plain"
        # Ranks left behind by a killed torchrun agent still finish their step and checkpoint: the
        # dashboard follows them until they let go of the ranks' lock.
        state = run_dashboard(run, process, mode=mode, alive=lambda: ranks_running(run))
    code = process.wait()
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
