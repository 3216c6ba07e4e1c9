"""The event sink on rank 0 that feeds the trackers; failures become warnings, never tracebacks."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunewiz.run.directory import RunDir
from tunewiz.run.events import read_events
from tunewiz.tracking.base import Artifacts, Outcome, StartContext, Tracker, TrackerUnavailable, redact
from tunewiz.tracking.metrics import metrics_of


def read_record(run: RunDir) -> dict[str, dict[str, Any]]:
    """``trackers.json``: tracker name → what it recorded ({} when missing or unreadable)."""
    try:
        record = json.loads(run.trackers.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(run: RunDir, record: dict[str, dict[str, Any]]) -> None:
    """Write ``trackers.json`` atomically."""
    from tunewiz.atomic import atomic_write_json

    atomic_write_json(run.trackers, record)


class TrackingSink:
    """Receives rank 0's events (see :class:`tunewiz.run.events.EventSink`) and logs them to trackers.

    The trackers open on the ``start`` event (it carries the step a resumed launch starts from), log
    every metric-bearing event at its own step (:func:`tunewiz.tracking.metrics.metrics_of`), make
    their data durable at each checkpoint, and close with the launch's outcome when the event log
    closes. A tracker that raises is reported once through ``warn`` and not called again.

    Args:
        run: the run directory.
        name: the run name.
        params: flat hyperparameters (:func:`tunewiz.tracking.metrics.flat_params`).
        trackers: the trackers to feed, in ``output.report_to`` order.
        warn: writes one warning line (a ``warning`` event on rank 0).
    """

    def __init__(
        self,
        run: RunDir,
        name: str,
        params: dict[str, str | int | float | bool],
        trackers: list[Tracker],
        warn: Callable[[str], None],
    ) -> None:
        self.run, self.name, self.params, self.warn = run, name, params, warn
        self._waiting = list(trackers)  # opened on the start event
        self._open: list[Tracker] = []
        self._outcome: Outcome | None = None
        self._last_step = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self._start(event)
            return
        found = metrics_of(event)
        if found is not None:
            step, values = found
            self._last_step = max(self._last_step, step)
            self._each(lambda t: t.log(step, values), f"stopped logging at step {step}")
        if kind == "checkpoint":
            self._each(lambda t: t.flush(), "could not save its data at the checkpoint")
        elif kind == "end":
            self._outcome = "finished"
        elif kind == "stop" and self._outcome is None:
            self._outcome = "stopped" if event.get("reason") == "signal" else "failed"

    def _start(self, event: dict[str, Any]) -> None:
        record = read_record(self.run)
        resume_step = int(event.get("step") or 0)
        last_logged = _last_logged_step(self.run)
        for tracker in self._waiting:
            ctx = StartContext(
                run=self.run,
                name=self.name,
                params=self.params,
                resume_step=resume_step,
                last_logged_step=last_logged,
                record=record.get(tracker.name, {}),
            )
            try:
                record[tracker.name] = tracker.start(ctx)
            except TrackerUnavailable as exc:
                self.warn(f"tracking: {redact(str(exc))} (training goes on without {tracker.name})")
                continue
            except Exception as exc:  # a library's own failure: one line, no traceback
                self.warn(
                    f"tracking: {tracker.name} could not start: {type(exc).__name__}: {redact(str(exc))} "
                    f"(training goes on without {tracker.name})"
                )
                continue
            self._open.append(tracker)
        self._waiting = []
        if self._open:
            try:
                write_record(self.run, record)
            except OSError as exc:
                self.warn(f"tracking: could not write {self.run.trackers}: {exc.strerror or exc}")

    def _each(self, call: Callable[[Tracker], None], what: str) -> None:
        for tracker in list(self._open):
            try:
                call(tracker)
            except Exception as exc:
                self._open.remove(tracker)
                self.warn(
                    f"tracking: {tracker.name} {what}: {type(exc).__name__}: {redact(str(exc))} "
                    f"(training goes on; events.jsonl has every value)"
                )

    def close(self) -> None:
        """Attach the artifacts and close every open tracker with the launch's outcome."""
        if not self._open:
            return
        outcome: Outcome = self._outcome or "failed"
        with tempfile.TemporaryDirectory(prefix="tunewiz-tracking-") as tmp:
            plot = self._render_loss_plot(Path(tmp)) if any(t.wants_artifacts for t in self._open) else None
            files = tuple(p for p in (self.run.config, self.run.plan) if p.is_file())
            artifacts = Artifacts(run_dir=self.run.path.resolve(), loss_plot=plot, files=files)
            self._each(lambda t: t.finish(outcome, artifacts), "could not finish")
        self._open = []

    def _render_loss_plot(self, folder: Path) -> Path | None:
        from tunewiz.ui.lossplot import write_loss_plot

        try:
            return write_loss_plot(read_events(self.run.events), folder / "loss.png")
        except Exception as exc:  # a missing font or a full disk must not fail the run's end
            self.warn(f"tracking: could not render loss.png for the trackers: {redact(str(exc))}")
            return None


def _last_logged_step(run: RunDir) -> int:
    """The largest step logged before the newest ``start`` event (the one this launch just wrote)."""
    events = read_events(run.events)
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    before = events[: starts[-1]] if starts else events
    return max((int(e["step"]) for e in before if metrics_of(e) is not None), default=0)
