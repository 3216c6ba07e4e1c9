"""Draw a :class:`~tunewiz.ui.state.DashboardState`: the Rich dashboard and the plain log lines.

Both are pure functions of the state (and, for plain lines, the event just folded in), so tests
render them to a capture console and the Live loop only decides when to draw.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tunewiz.ui.chart import LossChart
from tunewiz.ui.state import DashboardState, RunWarning, datasets_line, truncation_note
from tunewiz.units import fmt_bytes, fmt_count, fmt_duration

SHOWN_WARNINGS = 4
SHOWN_TRACEBACK_LINES = 8
MAX_RANK_ROWS = 8  # more ranks than this are summarised as max/min
SAMPLE_PROMPT_CHARS = 60  # a sample's prompt shows its end (the question), cut to this many characters
SAMPLE_REPLY_CHARS = 80  # a sample's reply and reference show their start, cut to this many characters


# ---- formatting ---------------------------------------------------------------------------------


def fmt_loss(value: float | None) -> str:
    """``1.2345``; ``nan``/``inf`` as they are; ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def fmt_num(value: float | None, spec: str) -> str:
    """``value`` in format ``spec``; ``-`` for None."""
    return "-" if value is None else format(value, spec)


def _steps_text(state: DashboardState) -> str:
    total = f"/{state.total_steps}" if state.total_steps else ""
    pct = f" ({100 * state.step / state.total_steps:.0f}%)" if state.total_steps else ""
    return f"step {state.step}{total}{pct}"


def _epoch_text(state: DashboardState) -> str:
    if state.epoch is None:
        return ""
    return f"epoch {state.epoch}/{state.epochs}" if state.epochs else f"epoch {state.epoch}"


def one_line(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` on one line of at most ``limit`` characters: whitespace runs become one space, other
    control characters ``·``; a longer text loses its end (``keep_end``: its start) to ``…``."""
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else "·" for c in flat)
    if len(flat) <= limit:
        return flat
    return "…" + flat[-(limit - 1) :] if keep_end else flat[: limit - 1] + "…"


def _sample_texts(sample: dict[str, Any]) -> tuple[str, str, str]:
    """(prompt, reply, reference) of one ``samples`` entry, each on one line."""
    return (
        one_line(str(sample.get("prompt", "")), SAMPLE_PROMPT_CHARS, keep_end=True),
        one_line(str(sample.get("output", "")), SAMPLE_REPLY_CHARS),
        one_line(str(sample.get("reference", "")), SAMPLE_REPLY_CHARS),
    )


def samples_lines(event: dict[str, Any]) -> list[str]:
    """Plain lines for a ``samples`` event: a heading, then ``prompt → reply (reference: …)`` each."""
    samples = event.get("samples") or []
    seconds = event.get("seconds")
    took = f" in {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
    prompts = f"{len(samples)} validation prompt{'s' if len(samples) != 1 else ''}"
    lines = [f"samples: step {event.get('step')}: greedy replies to {prompts}{took}"]
    for sample in samples:
        prompt, reply, reference = _sample_texts(sample)
        lines.append(f"  {prompt} → {reply or '(empty)'}  (reference: {reference})")
    return lines


def _warning_text(w: RunWarning) -> str:
    return f"step {w.step}: {w.message}" if w.step is not None else w.message


# ---- the dashboard ------------------------------------------------------------------------------


def _header(state: DashboardState) -> Text:
    parts = [
        state.model,
        state.method,
        " ".join(p for p in (state.device, state.dtype) if p) or None,
        f"{state.world_size} rank{'s' if state.world_size != 1 else ''}" if state.world_size else None,
        state.hardware,
    ]
    text = Text(" · ".join(p for p in parts if p), style="bold")
    if state.trainable_params is not None and state.total_params:
        text.append(
            f"\ntrainable {fmt_count(state.trainable_params)} of {fmt_count(state.total_params)} params"
            f" · batch {state.micro_batch_size} × accum {state.grad_accum} × {state.world_size} "
            f"rank{'s' if state.world_size != 1 else ''}"
            f" = {state.global_batch_size}",
            style="dim",
        )
    if state.resumed_from:
        text.append(f"\nresumed from {state.resumed_from}", style="dim")
    if mix := datasets_line(state):
        text.append(f"\n{mix}", style="dim")
    if note := truncation_note(state):
        text.append(f"\n{note[0]}", style="yellow")
    if state.data_summary:
        text.append(("\n" if text.plain else "") + state.data_summary, style="dim")
    return text


def _progress(state: DashboardState) -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(ratio=1)
    grid.add_column(no_wrap=True)
    bar = ProgressBar(
        total=float(state.total_steps or 1), completed=float(state.step if state.total_steps else 0)
    )
    words = [_steps_text(state), _epoch_text(state), f"elapsed {fmt_duration(state.elapsed)}"]
    if state.eta_s is not None:
        words.append(f"ETA {fmt_duration(state.eta_s)}")
    grid.add_row(bar, Text(" · ".join(w for w in words if w)))
    return grid


def _metrics(state: DashboardState) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True)
    loss_style = "bold red" if state.loss is not None and not math.isfinite(state.loss) else "bold"
    grid.add_row("loss", Text(fmt_loss(state.loss), style=loss_style))
    grid.add_row("smoothed", fmt_loss(state.loss_ema))
    grid.add_row("lr", fmt_num(state.lr, ".2e"))
    grid.add_row("grad norm", fmt_num(state.grad_norm, ".3g"))
    grid.add_row("in tok/s", fmt_num(state.run_tokens_per_s, ",.0f"))
    grid.add_row("trained", fmt_num(state.tokens_total, ","))
    best = state.best_val
    latest = state.val_losses[-1] if state.val_losses else None
    grid.add_row("val loss", f"{fmt_loss(latest[1])} @ {latest[0]}" if latest else "-")
    grid.add_row("best val", f"{fmt_loss(best[1])} @ {best[0]}" if best else "-")
    return grid


def _memory(state: DashboardState) -> Table | None:
    mem = state.peak_memory_bytes
    if not mem:
        return None
    label = "memory (RSS)" if (state.device or "").startswith("cpu") else "memory"
    planned = state.planned_peak_bytes
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    if len(mem) > MAX_RANK_ROWS:
        top = max(range(len(mem)), key=mem.__getitem__)
        rows = [(f"max (rank {top})", mem[top]), (f"min of {len(mem)}", min(mem))]
    else:
        rows = [(f"rank {i}", b) for i, b in enumerate(mem)]
    for i, (name, used) in enumerate(rows):
        title = f"{label} {name}" if i == 0 else " " * (len(label) + 1) + name
        if planned:
            ratio = used / planned
            style = "red" if ratio > 1.0 else "yellow" if ratio > 0.9 else "green"
            bar = ProgressBar(
                total=float(planned),
                completed=float(min(used, planned)),
                width=20,
                complete_style=style,
                finished_style=style,
            )
            grid.add_row(
                title,
                bar,
                Text(f"{fmt_bytes(used)} of {fmt_bytes(planned)} planned ({ratio:.0%})", style=style),
            )
        else:
            grid.add_row(title, Text(fmt_bytes(used)), Text("(no plan)", style="dim"))
    return grid


def _status(state: DashboardState) -> RenderableType | None:
    if state.launches == 0:
        if state.data_progress:
            return Text(state.data_progress, style="bold")
        return Text("waiting for the run to start…", style="dim")
    if state.stop is not None:
        ckpt = state.stop.get("checkpoint")
        step = state.stop.get("step", state.step)
        why = stop_reason_text(state.stop)
        text = Text(
            f"■ stopped at step {step}: {why}",
            style="bold red" if state.stop.get("reason") == "nan" else "bold yellow",
        )
        text.append(f"\nlast good checkpoint: {ckpt or 'none'}")
        if state.stop.get("resume_command"):
            text.append(f"\nresume: {state.stop['resume_command']}")
        return text
    if state.end is not None:
        return Text(
            f"✓ finished at step {state.end.get('step', state.step)} in {fmt_duration(state.elapsed)}"
            f" · outputs in {state.end.get('final_dir')}",
            style="bold green",
        )
    if state.killing:
        return Text("stopping now: terminating the training processes…", style="bold red")
    if state.stop_requested:
        return Text("stopping after this step… (Ctrl-C again to stop at once)", style="bold yellow")
    if state.returncode not in (None, 0) and not state.errors:
        return Text(f"✗ the training processes exited with code {state.returncode}", style="bold red")
    if (
        state.now is not None
        and state.last_event_time is not None
        and state.now - state.last_event_time > 120
    ):
        return Text(f"no new events for {fmt_duration(state.now - state.last_event_time)}", style="yellow")
    return None


def _samples(state: DashboardState) -> Panel | None:
    event = state.samples
    if not event or not event.get("samples"):
        return None
    grid = Table.grid()
    grid.add_column(no_wrap=True, overflow="ellipsis")
    for sample in event["samples"]:
        prompt, reply, reference = _sample_texts(sample)
        grid.add_row(Text(prompt, style="dim"))
        line = Text("→ ")
        line.append(reply) if reply else line.append("(empty)", style="dim")
        line.append(f"   reference: {reference}", style="dim")
        grid.add_row(line)
    return Panel(
        grid,
        title=f"replies at step {event.get('step')} (greedy, validation prompts)",
        title_align="left",
        border_style="dim",
    )


def _errors(state: DashboardState) -> Panel | None:
    if not state.errors:
        return None
    body = Text()
    for i, err in enumerate(state.errors):
        where = f"rank {err.rank}" if err.rank is not None else "a rank"
        at = f" at step {err.step}" if err.step is not None else ""
        body.append(("\n" if i else "") + f"{where} failed{at}: {err.message}", style="bold red")
        if err.traceback:
            tail = err.traceback.rstrip().splitlines()[-SHOWN_TRACEBACK_LINES:]
            body.append("\n" + "\n".join(tail), style="dim")
    return Panel(body, title="error", title_align="left", border_style="red")


def _warnings(state: DashboardState) -> Panel | None:
    if not state.warnings:
        return None
    shown = state.warnings[-SHOWN_WARNINGS:]
    body = Text("\n".join(_warning_text(w) for w in shown), style="yellow")
    hidden = state.warnings_total - len(shown)
    title = f"warnings ({hidden} earlier)" if hidden else "warnings"
    return Panel(body, title=title, title_align="left", border_style="yellow")


def render(state: DashboardState) -> RenderableType:
    """The whole dashboard for ``state``: a pure function, redrawn by the Live loop.

    Args:
        state: the folded events of the run.
    """
    middle = Table.grid(padding=(0, 3), expand=True)
    middle.add_column(no_wrap=True)
    middle.add_column(ratio=1)
    middle.add_row(_metrics(state), LossChart(state.losses))
    parts: list[RenderableType | None] = [
        _header(state),
        _progress(state),
        middle,
        _memory(state),
        _samples(state),
    ]
    if state.last_checkpoint:
        ckpt_step, ckpt_path = state.last_checkpoint
        at = f"step {ckpt_step} · " if ckpt_step is not None else ""
        parts.append(Text(f"last checkpoint: {at}{ckpt_path}", style="dim"))
    parts += [_warnings(state), _errors(state), _status(state)]
    failed = bool(state.errors) or (state.stop is not None and state.stop.get("reason") == "nan")
    return Panel(
        Group(*(p for p in parts if p is not None)),
        title=f"tunewiz · {state.run or 'run'}",
        title_align="left",
        border_style="red" if failed else "green" if state.end else "blue",
    )


# ---- plain lines --------------------------------------------------------------------------------


def status_line(state: DashboardState) -> str:
    """One line with the latest step's numbers (what plain mode prints every N steps)."""
    words = [_steps_text(state)]
    if state.epoch is not None:
        words.append(_epoch_text(state))
    words.append(f"loss {fmt_loss(state.loss)} (smoothed {fmt_loss(state.loss_ema)})")
    words.append(f"lr {fmt_num(state.lr, '.2e')}")
    words.append(f"grad norm {fmt_num(state.grad_norm, '.3g')}")
    words.append(f"{fmt_num(state.run_tokens_per_s, ',.0f')} input tok/s")
    if state.peak_memory_max is not None:
        planned = f" of {fmt_bytes(state.planned_peak_bytes)} planned" if state.planned_peak_bytes else ""
        words.append(f"mem {fmt_bytes(state.peak_memory_max)}{planned}")
    words.append(f"elapsed {fmt_duration(state.elapsed)}")
    if state.eta_s is not None:
        words.append(f"ETA {fmt_duration(state.eta_s)}")
    return " | ".join(words)


def stop_reason_text(stop: dict[str, Any]) -> str:
    """Why a ``stop`` event stopped the run, in words."""
    reason = stop.get("reason")
    if reason == "nan":
        return "loss became NaN/inf"
    if reason == "orphaned":
        return f"stopped because {stop.get('detail') or 'its launcher went away'}"
    return "stopped on request"


def plain_lines(
    event: dict[str, Any], state: DashboardState, new_warnings: list[RunWarning], every: int
) -> list[str]:
    """Plain log lines for ``event``, already folded into ``state``: no markup, no control codes.

    Args:
        event: the event just folded in.
        state: the state after folding it.
        new_warnings: warnings that folding it added (NaN or spike on a step).
        every: print a step line every this many steps (and always the first and last step).
    """
    kind = event.get("event")
    lines: list[str] = []
    if kind == "start":
        words = [
            f"start: run {state.run}",
            f"model {state.model}",
            f"method {state.method}",
            " ".join(p for p in (state.device, state.dtype) if p),
            f"{state.world_size} rank(s)",
        ]
        if state.hardware:
            words.append(state.hardware)
        words.append(f"{state.total_steps} steps")
        if state.planned_peak_bytes:
            words.append(f"planned peak {fmt_bytes(state.planned_peak_bytes)}")
        if state.resumed_from:
            words.append(f"resumed from {state.resumed_from} at step {state.step}")
        lines.append(" | ".join(words))
        if mix := datasets_line(state):
            lines.append(mix)
        if note := truncation_note(state):
            lines += [f"warning: {note[0]}", f"hint: {note[1]}"]
    elif kind == "step":
        first = state.first_step == state.step
        if first or state.step % max(every, 1) == 0 or state.step == state.total_steps:
            lines.append(status_line(state))
        lines += [f"warning: {_warning_text(w)}" for w in new_warnings]
    elif kind == "eval":
        best = state.best_val
        best_text = f" (best {fmt_loss(best[1])} at step {best[0]})" if best else ""
        lines.append(
            f"eval: step {event.get('step')} val loss "
            f"{fmt_loss(state.val_losses[-1][1] if state.val_losses else None)}{best_text}"
        )
    elif kind == "samples":
        lines += samples_lines(event)
    elif kind == "checkpoint":
        lines.append(f"checkpoint: step {event.get('step')} saved to {event.get('path')}")
    elif kind in ("oom_fallback", "warning"):
        lines += [f"warning: {_warning_text(w)}" for w in new_warnings]
    elif kind == "error":
        err = state.errors[-1]
        at = f" at step {err.step}" if err.step is not None else ""
        lines.append(f"error: rank {err.rank} failed{at}: {err.message}")
        if err.traceback:
            lines += ["  " + line for line in err.traceback.rstrip().splitlines()]
    elif kind == "stop":
        why = stop_reason_text(event)
        lines.append(
            f"stop: step {event.get('step')}: {why}; last good checkpoint: "
            f"{event.get('checkpoint') or 'none'}"
        )
        if event.get("resume_command"):
            lines.append(f"resume with: {event['resume_command']}")
    elif kind == "end":
        lines.append(
            f"end: step {state.step} in {fmt_duration(state.elapsed)}; "
            f"{fmt_num(state.tokens_total, ',')} trained tokens;"
            f" outputs in {event.get('final_dir')}"
        )
    return lines
