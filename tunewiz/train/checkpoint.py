"""Step checkpoints for exact resume.

``checkpoints/step-N/`` holds, written with PyTorch distributed checkpointing (each rank writes its
own shard):

- the trainable weights (the adapter for LoRA, the whole model for full fine-tuning) and the
  optimizer state (DCP files, ``.metadata``);
- ``rng-<rank>.json``: every rank's RNG states (torch, CUDA, python, numpy);
- ``progress.json``: step, epoch, the data position *by sample*, counters, the LR scheduler state;
- ``COMPLETE``: written last, by rank 0, after every rank finished. A directory without it is a
  half-written checkpoint: it is never loaded, and the next save of that step replaces it.

Only complete checkpoints are pruned, oldest first, keeping the last ``keep_last``; the newest complete
one is never deleted before a newer one is complete.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from tunewiz.atomic import atomic_write_json
from tunewiz.errors import TunewizError
from tunewiz.run.directory import CHECKPOINT_COMPLETE_MARKER, RunDir
from tunewiz.train import faults
from tunewiz.train.batch_shape import BatchShape, Progress
from tunewiz.train.distributed import DistEnv, barrier

# Trainable parameters only: a LoRA checkpoint holds the adapter, not the frozen base.
_STATE_OPTIONS = StateDictOptions(ignore_frozen_params=True)
# Loading sets only those keys; non-strict because the frozen base is (rightly) not in them. Every
# trainable key is still required: `dcp.load` fails when the checkpoint lacks one.
_LOAD_OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "python": _to_json(random.getstate()),
        "numpy": _to_json(np.random.get_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()
        ]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    random.setstate(_from_json_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        )


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray | torch.Tensor):  # torchao's optimizers keep the LR as a tensor
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json_tuple(value: Any) -> Any:
    return tuple(_from_json_tuple(v) for v in value) if isinstance(value, list) else value


def save_checkpoint(
    run: RunDir,
    progress: Progress,
    shape: BatchShape,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    env: DistEnv,
    *,
    keep_last: int,
) -> Path:
    """Save ``checkpoints/step-<progress.step>/`` collectively (every rank must call it).

    Args:
        run: the run directory.
        progress: the position to save.
        shape: the batch split in use (saved with the position, so a resume keeps an OOM fallback).
        model: the (sharded) model; only trainable parameters are saved.
        optimizer: its state is saved.
        scheduler: its state is saved.
        env: this rank.
        keep_last: complete checkpoints to keep.

    Raises:
        TunewizError: the directory is not writable or the disk is full; earlier complete checkpoints
            are untouched.
    """
    path = run.checkpoint(progress.step)
    try:
        if env.is_main and path.exists():  # a half-written leftover of this step (a crash mid-save)
            shutil.rmtree(path)
        barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_STATE_OPTIONS)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
        atomic_write_json(path / f"rng-{env.rank}.json", _rng_state())
        if env.is_main:
            atomic_write_json(
                path / "progress.json",
                {
                    "progress": progress.as_json(shape),
                    "scheduler": _to_json(scheduler.state_dict()),
                    "world_size": env.world_size,
                },
            )
        faults.maybe_kill("checkpoint", progress.step)
        barrier()
        if env.is_main:
            atomic_write_json(path / CHECKPOINT_COMPLETE_MARKER, {"step": progress.step})
            _prune(run, keep_last)
    except (OSError, CheckpointException) as exc:
        reason = _io_reason(exc)
        if reason is None:
            raise
        raise TunewizError(
            f"could not save checkpoint `{path}`: {reason}",
            hint="free disk space or make the run directory writable, then `tunewiz resume "
            f"{run.path}` continues from the last complete checkpoint",
            exit_code=1,
        ) from exc
    return path


def _io_reason(exc: BaseException) -> str | None:
    """The I/O error behind a failed save (DCP wraps each rank's exception), or None if it was not I/O."""
    if isinstance(exc, CheckpointException):
        for failure, _trace in exc.failures.values():
            if isinstance(failure, OSError):
                return failure.strerror or str(failure)
        return None
    return exc.strerror or str(exc) if isinstance(exc, OSError) else None


def _prune(run: RunDir, keep_last: int) -> None:
    complete = run.complete_checkpoints()
    for _, old in complete[: max(0, len(complete) - max(1, keep_last))]:
        shutil.rmtree(old, ignore_errors=True)


def read_progress(path: Path) -> Progress:
    """The progress recorded in a complete checkpoint (no torch state is loaded)."""
    if not (path / CHECKPOINT_COMPLETE_MARKER).is_file():
        raise TunewizError(
            f"checkpoint `{path}` is incomplete (no {CHECKPOINT_COMPLETE_MARKER} marker): it was "
            "being written when the run stopped",
            hint="resume from an earlier complete checkpoint: `tunewiz resume RUN_DIR --from step-N`",
        )
    return Progress.from_json(json.loads((path / "progress.json").read_text())["progress"])


def missing_files(path: Path) -> list[str]:
    """The files a complete checkpoint's DCP ``.metadata`` names that are not in ``path``, sorted.

    A checkpoint saved by several nodes into node-local run directories has ``.metadata`` and the
    ``COMPLETE`` marker on node 0 and each rank's shard (``__R_0.distcp``) on that rank's node: this
    lists the shards node 0 cannot see. Empty for a whole checkpoint.
    """
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(path)).read_metadata()
    named = {getattr(info, "relative_path", None) for info in (metadata.storage_data or {}).values()}
    return sorted(name for name in named if name and not (path / name).is_file())


def check_whole(path: Path, *, nnodes: int) -> None:
    """Refuse to resume from a checkpoint that lacks shards written by other ranks.

    Args:
        path: a complete checkpoint directory.
        nnodes: the nodes of this resume (named in the hint).

    Raises:
        TunewizError: some DCP shard files are not there (node-local run directories on a run saved
            by several nodes).
    """
    missing = missing_files(path)
    if missing:
        shown = ", ".join(f"`{name}`" for name in missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise TunewizError(
            f"checkpoint `{path}` lacks {len(missing)} shard file(s) that other ranks wrote ({shown}): "
            "it was saved by several nodes, each into a run directory of its own that the other nodes "
            "cannot see",
            hint="put the run directory on storage every node mounts (NFS, a cluster filesystem) and "
            "resume from there, or first copy every node's `checkpoints/"
            f"{path.name}/` files into this one" + (f" (on all {nnodes} nodes)" if nnodes > 1 else ""),
        )


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    env: DistEnv,
) -> Progress:
    """Restore trainable weights, optimizer, scheduler and this rank's RNG states; return progress.

    The model must already be built, LoRA-applied and parallelised exactly as when it was saved
    (DCP reshards across world sizes; RNG states of ranks that did not exist are seeded fresh).
    """
    progress = read_progress(path)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_STATE_OPTIONS)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=_LOAD_OPTIONS,
    )
    saved = json.loads((path / "progress.json").read_text())
    scheduler.load_state_dict(saved["scheduler"])
    rng_file = path / f"rng-{env.rank}.json"
    if rng_file.is_file():
        _set_rng_state(json.loads(rng_file.read_text()))
    return progress


def load_trained_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a step checkpoint's trainable weights into a plain (unsharded) model on one process.

    For inference from ``checkpoints/step-N/`` (``chat``/``eval``/``push --from step-N``): the model must
    have the run's trainable parameters (LoRA applied with the run's targets, rank and alpha; or all
    parameters trainable for a full fine-tune). The optimizer state is not read. DCP reshards the
    saved shards of any world size into the whole tensors here, the way resume loads them.

    Raises:
        TunewizError: the checkpoint is incomplete (no completion marker).
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    if not (path / CHECKPOINT_COMPLETE_MARKER).is_file():
        raise TunewizError(
            f"checkpoint `{path}` is incomplete (no {CHECKPOINT_COMPLETE_MARKER}): it was never finished",
            hint=f"use another step: `ls {path.parent}`",
        )
    import warnings

    state = {"model": get_model_state_dict(model, options=_STATE_OPTIONS)}
    with warnings.catch_warnings():  # "torch.distributed is disabled ...": one process is the intent here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.load(state, checkpoint_id=path, no_dist=True)
    set_model_state_dict(model, state["model"], options=_LOAD_OPTIONS)
