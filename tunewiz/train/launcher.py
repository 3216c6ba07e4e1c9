"""Preset + run directory → the exact torchrun command and environment; spawn it; hand the run to the
dashboard.

torchrun runs in its own session (process group), so a terminal Ctrl-C reaches only this process;
the dashboard then asks the ranks to stop gracefully through the run directory's STOP file. torchrun's
own output goes to ``RUN_DIR/logs/torchrun.log``; the ranks report failures as events.
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
            run.path.name,
        ]
    argv += ["-m", RECIPE_MODULE, "--run-dir", str(run.path)]
    if resume_from is not None:
        argv += ["--resume-from", str(resume_from)]
    return argv


def torchrun_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def preflight(preset: Preset) -> None:
    """Fail fast, before torchrun starts, on a model or a local data file that is not there."""
    from tunewiz.models.loading import check_model_dir, resolve_model_dir

    model_dir = check_model_dir(resolve_model_dir(preset.model.path, preset.model.revision))
    check_mergeable(preset, model_dir)
    for key, value in (("data.path", preset.data.path), ("data.val_path", preset.data.val_path)):
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


def prepare_run_dir(preset: Preset, run_dir: Path | None, *, overwrite: bool) -> RunDir:
    """Create the run directory and write the resolved preset into it.

    An existing run is never touched unless `overwrite` is given: its checkpoints are for `resume`.
    A directory whose run never started training (no start event, no checkpoint) is reused.
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
        shutil.rmtree(run.path)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, dump_preset(preset))
    except OSError as exc:
        raise TunewizError(
            f"cannot write the run directory `{run.path}`: {exc.strerror or exc}",
            hint="choose a writable place with `--run-dir`",
        ) from exc
    return run


def launch(run: RunDir, argv: list[str], *, tui: bool) -> int:
    """Start torchrun, draw the dashboard until it exits, print the summary; return its exit code."""
    from tunewiz.run.events import read_events
    from tunewiz.ui.live import make_console, run_dashboard
    from tunewiz.ui.lossplot import write_loss_plot
    from tunewiz.ui.summary import print_summary

    log_path = run.path / "logs" / "torchrun.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run.stop_request.unlink(missing_ok=True)
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
        state = run_dashboard(run, process, mode=mode)
    code = process.wait()
    try:
        write_loss_plot(read_events(run.events), run.loss_plot)
    except OSError as exc:  # a full disk must not hide the run's own outcome
        print(f"warning: could not write {run.loss_plot}: {exc.strerror or exc}", file=sys.stderr)
    print_summary(state, run, make_console(mode))
    if code != 0 and state.stop and state.stop.get("reason") == "signal":
        return 0  # torchrun itself was signalled, but the ranks stopped gracefully and saved
    if code != 0 and not state.errors:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise TunewizError(
            f"torchrun exited with code {code}", hint=f"the full log is `{log_path}`", exit_code=1
        )
    return code
