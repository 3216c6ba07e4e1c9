"""What every tracker implements, and what it is told when a launch starts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tunewiz.run.directory import RunDir

Outcome = Literal["finished", "stopped", "failed"]
FIX_INSTALL = "`pip install 'tunewiz[tracking]'`"
# Environment variables whose values are secrets; a message that contains one is redacted.
SECRET_ENV = (
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "DATABRICKS_TOKEN",
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` on one line, at most 300 characters, without credentials.

    Removes ``user:password@`` from URLs and the value of every variable in :data:`SECRET_ENV` that is
    set (W&B keys, MLflow tokens, Hugging Face tokens).

    Args:
        text: an exception message or anything else about to be shown.
    """
    text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
    for name in SECRET_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 8:
            text = text.replace(secret, "***")
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."


class TrackerUnavailable(Exception):
    """A known reason a tracker cannot start (not installed, not logged in, unreachable).

    Its message is one line that says what is wrong and how to fix it, with no secret in it.
    """


@dataclass(frozen=True)
class StartContext:
    """What a tracker needs to open (or continue) its run for one launch of the recipe.

    Args:
        run: the run directory.
        name: the run name (the preset's ``name``).
        params: the resolved preset and the plan as flat ``key: value`` pairs (``train.lr``,
            ``plan.peak_bytes``); see :func:`tunewiz.tracking.metrics.flat_params`.
        resume_step: the step this launch starts after (0 for a new run; the checkpoint's step on resume).
        last_logged_step: the largest step an earlier launch logged (0 if none). Steps above
            ``resume_step`` up to this one are replayed by this launch.
        record: what this tracker recorded in ``trackers.json`` at an earlier launch ({} if none).
    """

    run: RunDir
    name: str
    params: dict[str, str | int | float | bool]
    resume_step: int = 0
    last_logged_step: int = 0
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def resuming(self) -> bool:
        """True when an earlier launch of this run opened this tracker."""
        return bool(self.record)


@dataclass(frozen=True)
class Artifacts:
    """Files a tracker may attach at the end of a launch (where it has a place for files).

    Args:
        run_dir: the run directory's absolute path.
        loss_plot: a rendering of ``loss.png`` from the events so far, or None.
        files: the resolved preset (``config.yaml``) and the plan (``plan.json``) when they exist.
    """

    run_dir: Path
    loss_plot: Path | None
    files: tuple[Path, ...] = ()


class Tracker(Protocol):
    """One experiment tracker. Calls come from one thread, in event order; any of them may raise
    (the sink turns that into one warning and stops using the tracker)."""

    name: str
    wants_artifacts: bool  # True when finish() uploads files (the sink renders loss.png only then)

    def start(self, ctx: StartContext) -> dict[str, Any]:
        """Open a new tracker run or continue the recorded one; return what to record in trackers.json.

        Raises:
            TrackerUnavailable: the library is missing, there is no login, or the server is unreachable.
        """
        ...

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Log ``metrics`` at ``step`` (the ``events.jsonl`` step)."""
        ...

    def flush(self) -> None:
        """Make everything logged so far durable (called at each checkpoint)."""
        ...

    def finish(self, outcome: Outcome, artifacts: Artifacts) -> None:
        """Attach the artifacts, mark the run's outcome and close it."""
        ...
