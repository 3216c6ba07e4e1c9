"""Experiment tracking: TensorBoard, MLflow and Weights & Biases fed from the run's own events.

Rank 0 writes ``events.jsonl`` (see :mod:`tunewiz.run.events`); when the preset asks for trackers
(``output.report_to``), a :class:`~tunewiz.tracking.sink.TrackingSink` receives each event right after it
is written and hands the same values to every tracker, named by one table
(:mod:`tunewiz.tracking.metrics`). So the dashboard, ``events.jsonl`` and the trackers never disagree.

Each tracker's library is imported only when that tracker is asked for (``pip install
'tunewiz[tracking]'``). A tracker that is not installed, not logged in or unreachable becomes one
``warning`` event with the fix, and training goes on. Which tracker run belongs to the run directory is
recorded in ``RUN_DIR/trackers.json``, so ``tunewiz resume`` continues the same tracker run and
``tunewiz eval`` adds its results to it.
"""

from __future__ import annotations

from tunewiz.tracking.report import open_tracking, report_eval

__all__ = ["open_tracking", "report_eval"]
