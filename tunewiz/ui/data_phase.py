"""The data phase on screen: find or prepare a preset's data (tunewiz.data.prepared), with progress.

Shared by ``tunewiz prepare``, ``tunewiz train`` and ``tunewiz resume`` (the launcher prepares before
torchrun starts, so the ranks only map the entry). A live bar (rows/s, ETA) on a terminal; in plain
mode a line at most every ``PLAIN_EVERY_S``: ``preparing data: 45% · 3,100 rows/s · ETA 1m 10s``.
A cache hit prints one line; waiting for another process that prepares the same data, one more.
Under ``train``/``resume`` in a terminal the same line and the found/made line show inside the training
dashboard's frame (a :class:`tunewiz.ui.live.Screen`).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from tunewiz.ui.live import Mode
from tunewiz.units import fmt_duration

if TYPE_CHECKING:
    from tunewiz.data.prepared import Prepared
    from tunewiz.preset.schema import Preset
    from tunewiz.text.prompt import PromptFormat
    from tunewiz.text.tokenizer import Tokenizer
    from tunewiz.ui.live import Screen

PLAIN_EVERY_S = 2.0


class PlainProgress:
    """Progress lines for plain output (a log, CI): at most one every ``every_s`` seconds, and the last."""

    def __init__(self, every_s: float = PLAIN_EVERY_S) -> None:
        self.every_s = every_s
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` rows."""
        now = time.monotonic()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        print(progress_line(done, total, now - self.started), file=sys.stderr, flush=True)


def progress_line(done: int, total: int, elapsed: float) -> str:
    """``preparing data: 45% · 3,100 rows/s · ETA 1m 10s``: ``done`` of ``total`` rows, ``elapsed`` s."""
    rate = done / elapsed if elapsed > 0 else 0.0
    percent = 100 * done // max(total, 1)
    if done >= total:
        rows = f"{total:,} row{'s' if total != 1 else ''}"
        return f"preparing data: 100% · {rows} in {elapsed:.1f} s · {rate:,.0f} rows/s"
    eta = f" · ETA {fmt_duration((total - done) / rate)}" if rate > 0 else ""
    return f"preparing data: {percent}% · {rate:,.0f} rows/s{eta}"


def prepare_data(
    preset: Preset,
    *,
    mode: Mode,
    prompt: PromptFormat | None = None,
    legacy: bool = False,
    screen: Screen | None = None,
) -> Prepared:
    """Find or prepare ``preset``'s data, showing progress; print one line when it was found.

    Args:
        preset: the resolved preset.
        mode: ``tui`` (a live bar on stderr) or ``plain`` (lines).
        prompt: a resumed run's recorded prompt format (None: a new run's).
        legacy: a resumed run from before prompt.json.
        screen: the training dashboard already on screen (tunewiz.ui.live.Screen): the progress and
            the found/made line show in its frame instead, and nothing is printed.

    Raises:
        TunewizError: the model's tokenizer or the data cannot be read, or makes no sample.
    """
    from tunewiz.data.prepared import prepare
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_dir(preset.model.path, preset.model.revision))
    kwargs = dict(seed=preset.train.seed, prompt=prompt, legacy=legacy)
    if screen is not None:
        return _prepare_on_screen(preset, screen, tokenizer, kwargs)
    if mode == "plain":
        prepared = prepare(preset.data, tokenizer, progress=PlainProgress(), waiting=_print_line, **kwargs)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("preparing data"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("data", total=None, rate="")
            started = time.monotonic()

            def show(done: int, total: int) -> None:
                elapsed = time.monotonic() - started
                rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 and done else ""
                bar.update(task, completed=done, total=total, rate=rate)

            waiting = bar.console.print  # above the bar
            prepared = prepare(preset.data, tokenizer, progress=show, waiting=waiting, **kwargs)
        if not prepared.hit:
            made = prepared.meta.get("made_from", {})
            print(
                progress_line(int(made.get("rows", 0)), int(made.get("rows", 0)), prepared.seconds),
                file=sys.stderr,
            )
    print(summary_line(prepared), file=sys.stderr, flush=True)
    return prepared


def _prepare_on_screen(
    preset: Preset, screen: Screen, tokenizer: Tokenizer, kwargs: dict[str, Any]
) -> Prepared:
    """:func:`prepare_data` inside the dashboard's frame: the progress line, then the summary line."""
    from tunewiz.data.prepared import prepare

    screen.state.data_progress = "data: finding or preparing the samples…"
    screen.draw()
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        screen.state.data_progress = progress_line(done, total, time.monotonic() - started)
        screen.draw()

    def waiting(line: str) -> None:
        screen.state.data_progress = line
        screen.draw()

    prepared = prepare(preset.data, tokenizer, progress=show, waiting=waiting, **kwargs)
    screen.state.data_progress = None
    screen.state.data_summary = summary_line(prepared)
    screen.draw()
    return prepared


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def summary_line(prepared: Prepared) -> str:
    """``data: prepared entry 63fe74df3774 found (1,900 train + 100 validation samples, 0.01 s)``, with
    what was cut or left out: ``; 3 rows dropped: empty response`` (DataStats.dropped_empty),
    ``; 12 truncated (right) / 2 dropped: longer than max_seq_len 512`` (truncated, dropped_long)."""
    stats = prepared.stats
    what = "found" if prepared.hit else "made"
    empty, cut, long = stats.dropped_empty, stats.truncated, stats.dropped_long
    notes = f"; {empty:,} row{'s' if empty != 1 else ''} dropped: empty response" if empty else ""
    if cut or long:
        notes += (
            f"; {cut:,} truncated ({stats.truncation}) / {long:,} dropped: longer than max_seq_len "
            f"{stats.max_seq_len:,}"
        )
    return (
        f"data: prepared entry {prepared.entry.name[:12]} {what} ({stats.num_train:,} train + "
        f"{stats.num_val:,} validation samples{notes}, {prepared.seconds:.2f} s; {prepared.entry})"
    )
