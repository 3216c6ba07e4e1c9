"""``loss.png``: training loss (raw and smoothed) and validation loss against the optimizer step."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from tunewiz.atomic import atomic_write_bytes
from tunewiz.ui.state import ema, fold_events


def write_loss_plot(events: list[dict[str, Any]], path: Path) -> Path | None:
    """Draw the run's loss curves into a PNG; None (and no file) when no step has a finite loss.

    Steps a resumed run trained again are drawn once, with the resumed values (see
    :func:`tunewiz.ui.state.fold_events`).

    Args:
        events: the run's events, oldest first (``tunewiz.run.events.read_events``).
        path: the PNG to write (atomically), usually ``RunDir.loss_plot``.
    """
    state = fold_events(events)
    finite = [(s, v) for s, v in state.losses if math.isfinite(v)]
    if not finite:
        return None
    # matplotlib is imported here, and through its object API with the Agg canvas, so the CLI's
    # import path stays light and no global pyplot backend is switched in the caller's process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [s for s, _ in finite]
    values = [v for _, v in finite]
    ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="training loss")
    ax.plot(steps, ema(values), color="tab:blue", linewidth=2, label="training loss (smoothed)")
    val = [(s, v) for s, v in state.val_losses if math.isfinite(v)]
    if val:
        ax.plot(
            [s for s, _ in val],
            [v for _, v in val],
            color="tab:orange",
            marker="o",
            linewidth=2,
            label="validation loss",
        )
    bad = [s for s, v in state.losses if not math.isfinite(v)]
    for step in bad:
        ax.axvline(step, color="tab:red", linestyle=":", linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"{state.run or path.parent.name}: {state.model or ''} {state.method or ''}".strip())
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
