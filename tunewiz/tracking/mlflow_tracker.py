"""MLflow: one MLflow run per tunewiz run, in the store ``MLFLOW_TRACKING_URI`` names.

Without ``MLFLOW_TRACKING_URI``, MLflow's own default is used (``sqlite:///mlflow.db`` in the directory
``tunewiz train`` ran in; ``mlflow ui`` started there shows it) and recorded as an absolute URI, so
``resume`` and ``eval`` reach the same store from anywhere. The experiment is ``MLFLOW_EXPERIMENT_NAME``
or ``tunewiz``. Metrics are queued with MLflow's asynchronous logging (a background thread writes them)
and flushed at every checkpoint and at the end.

MLflow cannot delete points: after a crash, the steps between the checkpoint and the crash that MLflow
had received are logged a second time by the resumed launch (the same values, for an exact resume).
Parameters are immutable in MLflow; a value changed on resume (``--set train.micro_batch_size=2``) is
kept as a ``tunewiz.changed_on_resume.KEY`` tag instead.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

from tunewiz.tracking.base import FIX_INSTALL, Artifacts, Outcome, StartContext, TrackerUnavailable, redact

DEFAULT_EXPERIMENT = "tunewiz"
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
_BATCH = 100  # MLflow's limit on parameters per log_batch call
_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


def _import_mlflow() -> Any:
    if importlib.util.find_spec("mlflow") is None:
        raise TrackerUnavailable(f"mlflow is not installed; {FIX_INSTALL}")
    # An unreachable server should cost seconds at start, not MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow

    return mlflow


class MlflowTracker:
    """Logs the run's metrics, preset and plan to MLflow (see the module docstring)."""

    name = "mlflow"
    wants_artifacts = True

    def __init__(self) -> None:
        self._mlflow: Any = None
        self._client: Any = None
        self._run_id = ""

    def start(self, ctx: StartContext) -> dict[str, Any]:
        """Continue the recorded MLflow run, or create one in the experiment; log the parameters."""
        mlflow = self._mlflow = _import_mlflow()
        uri = (
            os.environ.get("MLFLOW_TRACKING_URI")
            or ctx.record.get("tracking_uri")
            or mlflow.get_tracking_uri()
        )
        mlflow.set_tracking_uri(uri)  # rank 0's process only; flush_async_logging() acts on this store
        client = self._client = mlflow.MlflowClient(uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        run = self._continue(ctx.record) if ctx.resuming and ctx.record.get("tracking_uri") == uri else None
        if run is None:
            try:
                experiment = client.get_experiment_by_name(experiment_name)
            except Exception as exc:
                raise _unreachable(uri, exc) from exc
            experiment_id = (
                experiment.experiment_id if experiment else client.create_experiment(experiment_name)
            )
            run = client.create_run(
                experiment_id, run_name=ctx.name, tags={"tunewiz.run_dir": str(ctx.run.path.resolve())}
            )
        self._run_id = run.info.run_id
        self._log_params(ctx.params, dict(run.data.params))
        return {
            "tracking_uri": _without_credentials(uri),
            "experiment_id": run.info.experiment_id,
            "run_id": self._run_id,
        }

    def _continue(self, record: dict[str, Any]) -> Any:
        try:
            run = self._client.get_run(record["run_id"])
        except Exception:  # deleted, or another store: start a new MLflow run
            return None
        self._client.update_run(run.info.run_id, status="RUNNING")
        return run

    def _log_params(self, params: dict[str, str | int | float | bool], existing: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        values = {key: str(value)[:_MAX_PARAM_CHARS] for key, value in params.items()}
        new = [Param(k, v) for k, v in values.items() if k not in existing]
        changed = [
            RunTag(f"tunewiz.changed_on_resume.{k}", f"{existing[k]} -> {v}")
            for k, v in values.items()
            if k in existing and existing[k] != v
        ]
        for i in range(0, len(new), _BATCH):
            self._client.log_batch(self._run_id, params=new[i : i + _BATCH])
        for i in range(0, len(changed), _BATCH):
            self._client.log_batch(self._run_id, tags=changed[i : i + _BATCH])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Queue the values at ``step`` (MLflow's background thread writes them)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, value, now, step) for name, value in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch, synchronous=False)

    def flush(self) -> None:
        """Wait until every queued value is in the store."""
        self._mlflow.flush_async_logging()

    def finish(self, outcome: Outcome, artifacts: Artifacts) -> None:
        """Flush, attach loss.png, config.yaml and plan.json, and end the run with its outcome."""
        self.flush()
        for path in (artifacts.loss_plot, *artifacts.files):
            if path is not None:
                self._client.log_artifact(self._run_id, str(path))
        self._client.set_terminated(self._run_id, _STATUS[outcome])


def _unreachable(uri: str, exc: Exception) -> TrackerUnavailable:
    return TrackerUnavailable(
        f"mlflow could not reach `{_without_credentials(uri)}` "
        f"({type(exc).__name__}: {redact(str(exc))[:160]}); "
        "check `MLFLOW_TRACKING_URI`, or unset it to log to ./mlflow.db"
    )


def _without_credentials(uri: str) -> str:
    return redact(uri)


def log_eval(record: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
    """Add ``tunewiz eval`` results to the recorded MLflow run at ``step``.

    Args:
        record: this tracker's ``trackers.json`` entry.
        step: the run's last step.
        metrics: ``eval/TASK/METRIC`` values.
    """
    mlflow = _import_mlflow()
    from mlflow.entities import Metric

    uri = os.environ.get("MLFLOW_TRACKING_URI") or record["tracking_uri"]
    now = int(time.time() * 1000)
    mlflow.MlflowClient(uri).log_batch(
        record["run_id"], metrics=[Metric(k, v, now, step) for k, v in metrics.items()]
    )
