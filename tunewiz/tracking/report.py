"""Entry points: the recipe opens tracking on rank 0; ``tunewiz eval`` adds its results afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunewiz.run.directory import RunDir
from tunewiz.run.events import read_events
from tunewiz.tracking.base import Tracker, TrackerUnavailable, redact
from tunewiz.tracking.metrics import eval_metrics, flat_params, metrics_of
from tunewiz.tracking.sink import TrackingSink, read_record

if TYPE_CHECKING:
    from tunewiz.preset.schema import Preset


def make_tracker(name: str) -> Tracker:
    """The tracker called ``name`` (one of ``tunewiz.preset.schema.TRACKERS``); imports nothing heavy."""
    if name == "tensorboard":
        from tunewiz.tracking.tensorboard_tracker import TensorBoardTracker

        return TensorBoardTracker()
    if name == "mlflow":
        from tunewiz.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker()
    if name == "wandb":
        from tunewiz.tracking.wandb_tracker import WandbTracker

        return WandbTracker()
    raise ValueError(f"unknown tracker {name!r}")


def open_tracking(run: RunDir, preset: Preset, warn: Callable[[str], None]) -> TrackingSink | None:
    """The event sink for ``preset.output.report_to``, or None when no tracker is asked for.

    Nothing is imported or opened here: the trackers start on the run's ``start`` event.

    Args:
        run: the run directory (its ``plan.json`` becomes ``plan.*`` parameters).
        preset: the resolved preset (its fields become parameters).
        warn: writes one warning line (the recipe writes a ``warning`` event).
    """
    names = preset.output.report_to
    if not names:
        return None
    try:
        plan = json.loads(run.plan.read_text(encoding="utf-8")) if run.plan.is_file() else {}
    except (OSError, ValueError):
        plan = {}
    params = flat_params(preset.model_dump(mode="json"), plan)
    return TrackingSink(run, preset.name, params, [make_tracker(n) for n in names], warn)


def report_eval(run: RunDir, tasks: dict[str, dict[str, float | None]]) -> list[str]:
    """Add ``tunewiz eval`` results to the tracker runs recorded in ``trackers.json``.

    The results are logged at the run's last step as ``eval/TASK/METRIC`` (W&B: in the summary).

    Args:
        run: a run directory that was trained with ``output.report_to``.
        tasks: task → metric → value.

    Returns:
        One warning line per tracker that could not take the results (empty when all did, or when the
        run has no tracker).
    """
    from tunewiz.tracking import mlflow_tracker, tensorboard_tracker, wandb_tracker

    record = read_record(run)
    metrics = eval_metrics(tasks)
    if not record or not metrics:
        return []
    step = max((found[0] for e in read_events(run.events) if (found := metrics_of(e))), default=0)
    loggers = {
        "tensorboard": tensorboard_tracker.log_eval,
        "mlflow": mlflow_tracker.log_eval,
        "wandb": wandb_tracker.log_eval,
    }
    warnings = []
    for name, entry in record.items():
        if name not in loggers:
            continue
        try:
            loggers[name](entry, step, metrics)
        except TrackerUnavailable as exc:
            warnings.append(f"tracking: {redact(str(exc))} (eval results not sent to {name})")
        except Exception as exc:
            warnings.append(
                f"tracking: {name} did not take the eval results: {type(exc).__name__}: {redact(str(exc))}"
            )
    return warnings
