"""TensorBoard: event files in ``RUN_DIR/tensorboard``; ``tensorboard --logdir runs`` compares runs.

Scalars are TensorBoard's standard scalar summaries, which hold a 32-bit float: TensorBoard shows each
``events.jsonl`` value rounded to float32 (about 7 significant digits). (Double-precision tensor
scalars would be exact, but TensorBoard's default fast loader, the Rust data server, does not show them.)
Every launch opens its writer with
``purge_step = resume_step + 1``: TensorBoard then hides the points an earlier launch wrote after the
checkpoint this launch resumed from, and shows the run as it finally happened. (TensorBoard ignores the
first session start of a log directory, which is why a new run writes one too.)
"""

from __future__ import annotations

import importlib.util
from typing import Any

from tunewiz.tracking.base import FIX_INSTALL, Artifacts, Outcome, StartContext, TrackerUnavailable

# The plan's text fields do not belong in TensorBoard's HPARAMS table; its numbers do.
_HPARAM_METRICS = ("train/loss", "val/loss", "train/tokens_per_s")


class TensorBoardTracker:
    """Writes the run's metrics as TensorBoard scalars (see the module docstring)."""

    name = "tensorboard"
    wants_artifacts = False  # TensorBoard has no file store; the run dir path goes in as text

    def __init__(self) -> None:
        self._writer: Any = None

    def start(self, ctx: StartContext) -> dict[str, Any]:
        """Open ``SummaryWriter`` on the recorded log directory (``RUN_DIR/tensorboard`` for a new run)."""
        if importlib.util.find_spec("tensorboard") is None:
            raise TrackerUnavailable(f"tensorboard is not installed; {FIX_INSTALL}")
        from torch.utils.tensorboard import SummaryWriter

        log_dir = ctx.record.get("log_dir") or str(ctx.run.tensorboard.resolve())
        self._writer = SummaryWriter(log_dir, purge_step=ctx.resume_step + 1, flush_secs=30)
        if not ctx.resuming:
            self._write_hparams(ctx.params)
            self._writer.add_text("run_dir", f"`{ctx.run.path.resolve()}`", 0)
            table = "\n".join(f"| {k} | {v} |" for k, v in ctx.params.items())
            self._writer.add_text("config", "| key | value |\n|---|---|\n" + table, 0)
        return {"log_dir": log_dir}

    def _write_hparams(self, params: dict[str, str | int | float | bool]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Into this run's own event file (SummaryWriter.add_hparams would start a sub-run), so the
        # HPARAMS tab lines this run's scalars up against its preset.
        experiment, start, end = hparams(params, {name: 0.0 for name in _HPARAM_METRICS})
        file_writer = self._writer._get_file_writer()
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Add each value as a scalar at ``step``."""
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def flush(self) -> None:
        """Write the queued events to disk."""
        self._writer.flush()

    def finish(self, outcome: Outcome, artifacts: Artifacts) -> None:
        """Close the event file (flushing it)."""
        self._writer.close()


def log_eval(record: dict[str, Any], step: int, metrics: dict[str, float]) -> None:
    """Add ``tunewiz eval`` results to the recorded log directory at ``step``.

    Args:
        record: this tracker's ``trackers.json`` entry.
        step: the run's last step.
        metrics: ``eval/TASK/METRIC`` values.
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise TrackerUnavailable(f"tensorboard is not installed; {FIX_INSTALL}")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(record["log_dir"]) as writer:
        for name, value in metrics.items():
            writer.add_scalar(name, value, step)
