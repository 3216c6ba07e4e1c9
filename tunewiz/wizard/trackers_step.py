"""The wizard's experiment-tracker question (``--report-to``): which trackers get the run's metrics.

Whether a tracker's library is installed is looked up without importing it, so the question costs
nothing; a tracker that is not installed can still be chosen (training then warns once and goes on).
"""

from __future__ import annotations

import importlib.util

from tunewiz.errors import TunewizError
from tunewiz.preset.schema import TRACKERS
from tunewiz.wizard.asker import Asker, Choice

_WHAT = {
    "tensorboard": "event files in the run directory; compare runs with `tensorboard --logdir runs`",
    "mlflow": "MLflow runs (MLFLOW_TRACKING_URI, default ./mlflow.db); compare them in `mlflow ui`",
    "wandb": "Weights & Biases (`wandb login`, or WANDB_MODE=offline and `wandb sync` later)",
}
QUESTION = "Also report metrics to (space selects, enter confirms; none is fine):"


def parse_trackers(text: str) -> list[str]:
    """``tensorboard,wandb`` → ``["tensorboard", "wandb"]``; ``none`` or empty → [].

    Raises:
        TunewizError: a name that is not a tracker tunewiz reports to.
    """
    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise TunewizError(
            f"--report-to `{text}`: unknown tracker(s) {', '.join(f'`{n}`' for n in unknown)}",
            hint=f"choose from {', '.join(TRACKERS)} (comma-separated), or `none`",
        )
    return list(dict.fromkeys(names))


def choose_trackers(flag: str | None, asker: Asker | None) -> list[str]:
    """The trackers for ``output.report_to``: the flag, else the user's pick, else none.

    Args:
        flag: ``--report-to`` as given (comma-separated), or None.
        asker: asks when the flag is missing; None takes the default (no tracker).
    """
    if flag is not None:
        return parse_trackers(flag)
    if asker is None:
        return []
    choices = [Choice(name, _title(name), _WHAT[name]) for name in TRACKERS]
    return [name for name in asker.checkbox(QUESTION, choices, []) if name in TRACKERS]


def _title(name: str) -> str:
    if importlib.util.find_spec(name) is None:
        return f"{name} (not installed: pip install 'tunewiz[tracking]')"
    return name
