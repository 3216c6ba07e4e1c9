"""``loss.png``: training loss (raw and smoothed) and validation loss against the optimizer step."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.atomic import atomic_write_bytes
from tunewiz.ui.state import ema, fold_events

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_loss_plot(events: list[dict[str, Any]], path: Path) -> Path | None:
    """Draw the run's loss curves into a PNG; None (and no file) when no step has a finite loss.

    Steps a resumed run trained again are drawn once, with the resumed values (see
    :func:`tunewiz.ui.state.fold_events`).

    Args:
        events: the run's events, oldest first (``tunewiz.run.events.read_events``).
        path: the PNG to write (atomically), usually ``RunDir.loss_plot``.
    """
    fig = loss_figure(events, path.parent.name)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def loss_figure(events: list[dict[str, Any]], run_name: str) -> Figure | None:
    """The loss chart as a matplotlib Figure (800×450 px); None when no step has a finite loss.

    Titled with the run, model and method; training loss raw and smoothed, validation loss as
    marked points with the best one labelled, non-finite steps as red dotted lines. The y axis is
    scaled to the curve after the first steps (:func:`y_limits`), so the high loss of the first
    steps does not flatten the rest; they run off the top of the chart.
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
    smoothed = ema(values)
    ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="training loss")
    ax.plot(steps, smoothed, color="tab:blue", linewidth=2, label="training loss (smoothed)")
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
        best_step, best = min(val, key=lambda sv: sv[1])
        ax.annotate(
            f"best {best:.3f}",
            (best_step, best),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            color="tab:orange",
        )
    bad = [s for s, v in state.losses if not math.isfinite(v)]
    for step in bad:
        ax.axvline(step, color="tab:red", linestyle=":", linewidth=1)
    ax.set_ylim(*y_limits(values, [v for _, v in val]))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    about = ", ".join(x for x in (state.model, state.method) if x)
    ax.set_title(f"Loss of run {state.run or run_name}" + (f" ({about})" if about else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def y_limits(train: list[float], val: list[float], skip: float = 0.1) -> tuple[float, float]:
    """The y range of the loss chart: the losses after the first ``skip`` fraction of steps (the
    warm-up, where the loss falls fast from its initial value), and every validation loss, with 5%
    margin. The first steps run off the top instead of squeezing the rest into a flat line.

    Args:
        train: finite training losses, in step order (at least one).
        val: finite validation losses (may be empty).
        skip: fraction of the training steps left out of the range.
    """
    settled = train[int(len(train) * skip) :] or train
    low, high = min([*settled, *val]), max([*settled, *val])
    margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
    return low - margin, high + margin
