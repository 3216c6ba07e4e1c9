"""Weights & Biases: one W&B run per tunewiz run, its files under ``RUN_DIR/wandb/``.

The project is ``WANDB_PROJECT`` or ``tunewiz`` (entity: ``WANDB_ENTITY`` or the account's default).
``WANDB_MODE=offline`` needs no account: each launch writes ``RUN_DIR/wandb/offline-run-*-ID/`` and
``wandb sync`` uploads it later. A resumed launch keeps the mode the run started in.

Resume. The run id is recorded in ``trackers.json`` and the next launch calls ``wandb.init(id=...,
resume="allow")``. When the launch replays steps (a crash after the last checkpoint) and the run is
online, it first asks W&B to rewind the run to the first replayed step (``resume_from="ID?_step=N"``,
a feature W&B enables per account); where that is refused, W&B keeps the points it already has and
the replayed steps below its current step are not sent again (W&B's steps only go forward; for an exact
resume they are the same values). Offline, W&B cannot look at the earlier launch: the new
``offline-run-*`` directory has the same run id and ``resume`` set, and holds the steps from the
checkpoint on, replayed ones included.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from tunewiz.tracking.base import FIX_INSTALL, Artifacts, Outcome, StartContext, TrackerUnavailable, redact

DEFAULT_PROJECT = "tunewiz"
DEFAULT_INIT_TIMEOUT_S = 30.0  # wandb's own default is 90 s of a stalled start when the server is down
_OFFLINE_FIX = "or set `WANDB_MODE=offline` to keep the run on disk and `wandb sync` it later"


def _import_wandb() -> Any:
    if importlib.util.find_spec("wandb") is None:
        raise TrackerUnavailable(f"wandb is not installed; {FIX_INSTALL}")
    import wandb

    return wandb


def init_kwargs(ctx: StartContext, mode: str | None) -> list[dict[str, Any]]:
    """The ``wandb.init`` arguments to try, in order, for this launch (pure: no wandb call).

    A new run gets no id (W&B picks one). A recorded run resumes with ``resume="allow"``; when an online
    launch replays steps, a rewind to the first replayed step (``resume_from``) is tried first.

    Args:
        ctx: the launch (its ``record`` holds the earlier launch's run id, project, entity and mode).
        mode: ``online``, ``offline``, ``disabled`` or None (W&B's default), after the record's mode.
    """
    base: dict[str, Any] = {
        "project": os.environ.get("WANDB_PROJECT") or ctx.record.get("project") or DEFAULT_PROJECT,
        "entity": os.environ.get("WANDB_ENTITY") or ctx.record.get("entity") or None,
        "name": ctx.name,
        "dir": str(ctx.run.path.resolve()),
        "mode": mode,
    }
    run_id = ctx.record.get("id")
    if not run_id:
        return [base]
    attempts = []
    if mode != "offline" and ctx.last_logged_step > ctx.resume_step:
        attempts.append({**base, "resume_from": f"{run_id}?_step={ctx.resume_step + 1}"})
    attempts.append({**base, "id": run_id, "resume": "allow"})
    return attempts


class WandbTracker:
    """Logs the run's metrics, preset and plan to Weights & Biases (see the module docstring)."""

    name = "wandb"
    wants_artifacts = True

    def __init__(self) -> None:
        self._wandb: Any = None
        self._run: Any = None
        self._floor = 0  # steps below this are already in a resumed online run

    def start(self, ctx: StartContext) -> dict[str, Any]:
        """``wandb.init`` a new run or continue the recorded one; put the parameters in its config."""
        wandb = self._wandb = _import_wandb()
        mode = os.environ.get("WANDB_MODE") or ctx.record.get("mode")
        timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or DEFAULT_INIT_TIMEOUT_S)
        settings = wandb.Settings(silent=True, console="off", init_timeout=timeout)
        attempts = init_kwargs(ctx, mode)
        for i, kwargs in enumerate(attempts):
            try:
                self._run = wandb.init(**kwargs, settings=settings)
                break
            except Exception as exc:
                if i + 1 < len(attempts):  # a refused rewind: resume instead
                    continue
                raise _explain(exc) from exc
        run = self._run
        run.config.update(ctx.params, allow_val_change=True)
        self._floor = run.starting_step if run.resumed else 0
        return {
            "id": run.id,
            "project": run.project,
            "entity": run.entity or None,
            "mode": "offline" if run.offline else mode or "online",
            "dir": str(ctx.run.path.resolve()),
        }

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Log the values at ``step``; steps a resumed online run already holds are skipped."""
        if step >= self._floor:
            self._run.log(metrics, step=step)

    def flush(self) -> None:
        """Nothing to do: W&B's service process writes every logged value as it arrives."""

    def finish(self, outcome: Outcome, artifacts: Artifacts) -> None:
        """Put the run dir path and the loss curve in the summary, save the preset files, finish."""
        run = self._run
        run.summary["run_dir"] = str(artifacts.run_dir)
        run.summary["outcome"] = outcome
        if artifacts.loss_plot is not None:
            run.summary["loss_curve"] = self._wandb.Image(str(artifacts.loss_plot))
        for path in artifacts.files:
            run.save(str(path), base_path=str(path.parent), policy="now")
        run.finish(exit_code=0 if outcome != "failed" else 1)


def _explain(exc: Exception) -> TrackerUnavailable:
    text = redact(str(exc))
    name = type(exc).__name__
    if name == "UsageError" and "api key" in text.lower():
        return TrackerUnavailable(f"wandb is not logged in; run `wandb login`, {_OFFLINE_FIX}")
    if name in ("CommError", "TimeoutError") or "timed out" in text.lower():
        return TrackerUnavailable(f"wandb could not reach its server ({text[:160]}); {_OFFLINE_FIX}")
    return TrackerUnavailable(f"wandb could not start ({name}: {text[:200]}); {_OFFLINE_FIX}")


def log_eval(record: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
    """Add ``tunewiz eval`` results to the recorded W&B run's summary.

    W&B's history only moves forward, so the results go into the summary (where the runs table
    compares them), not at ``step``.

    Args:
        record: this tracker's ``trackers.json`` entry.
        step: the run's last step (kept in the summary as ``eval/step``).
        metrics: ``eval/TASK/METRIC`` values.
    """
    wandb = _import_wandb()
    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or DEFAULT_INIT_TIMEOUT_S)
    try:
        run = wandb.init(
            id=record["id"],
            resume="allow",
            project=os.environ.get("WANDB_PROJECT") or record.get("project") or DEFAULT_PROJECT,
            entity=os.environ.get("WANDB_ENTITY") or record.get("entity") or None,
            dir=record.get("dir"),
            mode=os.environ.get("WANDB_MODE") or record.get("mode"),
            settings=wandb.Settings(silent=True, console="off", init_timeout=timeout),
        )
    except Exception as exc:
        raise _explain(exc) from exc
    run.summary.update({**metrics, "eval/step": step})
    run.finish()
