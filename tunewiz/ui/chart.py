"""The loss chart: a block chart drawn with Rich, as wide as the space it is given."""

from __future__ import annotations

import math

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

CHART_HEIGHT = 6  # rows of the loss chart; each row has 8 levels (▁..█), so 48 levels in all
_BLOCKS = " ▁▂▃▄▅▆▇█"


class LossChart:
    """A block chart of the training loss, as wide as the space Rich gives it.

    Each column is the mean of the finite losses in its slice of the run; a slice that holds only
    NaN/inf losses is drawn as a red ``×`` on the bottom row.

    Args:
        losses: (step, loss) pairs, oldest first.
        height: rows; each row has 8 levels.
    """

    def __init__(self, losses: list[tuple[int, float]], height: int = CHART_HEIGHT) -> None:
        self.losses = losses
        self.height = height

    def _columns(self, width: int) -> list[float | None]:
        # Column i covers losses [i·n/width, (i+1)·n/width): several steps per column on a long
        # run, one step stretched over several columns on a short one.
        n = len(self.losses)
        out: list[float | None] = []
        for i in range(width):
            lo = i * n // width
            chunk = [v for _, v in self.losses[lo : max((i + 1) * n // width, lo + 1)] if math.isfinite(v)]
            out.append(sum(chunk) / len(chunk) if chunk else None)
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.losses:
            yield Text("waiting for the first step…", style="dim")
            return
        finite = [v for _, v in self.losses if math.isfinite(v)]
        hi, lo = (max(finite), min(finite)) if finite else (1.0, 0.0)
        labels = [f"{hi:.3g}", f"{lo:.3g}"]
        label_w = max(len(s) for s in labels)
        columns = self._columns(max(options.max_width - label_w - 1, 1))
        levels = self.height * 8
        span = hi - lo if hi > lo else 1.0
        # Height in eighths of a row: at least 1, so the lowest loss still shows as a sliver.
        heights = [None if v is None else 1 + round((v - lo) / span * (levels - 1)) for v in columns]
        for row in range(self.height):
            label = labels[0] if row == 0 else labels[1] if row == self.height - 1 else ""
            line = Text(label.rjust(label_w) + " ", style="dim")
            base = (self.height - 1 - row) * 8
            for h in heights:
                if h is None:
                    line.append("×" if row == self.height - 1 else " ", style="bold red")
                else:
                    line.append(_BLOCKS[min(max(h - base, 0), 8)], style="cyan")
            yield line
        first, last = self.losses[0][0], self.losses[-1][0]
        axis_w = len(columns)
        left, right = f"step {first}", f"{last}"
        yield Text(
            " " * (label_w + 1) + left + right.rjust(max(axis_w - len(left), len(right) + 1)), style="dim"
        )
