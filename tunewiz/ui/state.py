"""Fold the events of ``events.jsonl`` (see :mod:`tunewiz.run.events`) into one dashboard state.

The state is plain data: the Live loop, the plain-line printer, the summary and ``loss.png`` all
read it, and only :func:`apply_event` writes it. A resumed run appends a second ``start`` event to
the same log; the state then keeps the earlier launches' time and drops loss points past the step
it resumed from (those steps are trained again).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from tunewiz.run.events import epoch_of_step, total_epochs

EMA_BETA = 0.9  # smoothing of the loss: ~10 steps of memory, like TensorBoard's default slider
SPIKE_FACTOR = 3.0  # a step's loss above SPIKE_FACTOR × the smoothed loss is reported as a spike
SPIKE_MIN_STEPS = 10  # the EMA is too noisy to judge spikes before this many steps
MAX_WARNINGS = 50  # older warnings are dropped; the dashboard shows the last few
_STEP_DIR = re.compile(r"step-(\d+)/?$")  # a checkpoint path's step, as tunewiz.run.directory names it


@dataclass
class RankError:
    """One rank's failure, from an ``error`` event."""

    rank: int | None
    message: str
    traceback: str | None
    step: int | None


@dataclass
class RunWarning:
    """Something the user should look at; ``step`` is None when it is not tied to a step."""

    step: int | None
    message: str


@dataclass
class DashboardState:
    """Everything the dashboard shows, folded from the events so far."""

    # From the latest `start` event.
    events_version: int = 1
    run: str | None = None
    model: str | None = None
    method: str | None = None
    device: str | None = None
    dtype: str | None = None
    hardware: str | None = None
    world_size: int | None = None
    micro_batch_size: int | None = None
    grad_accum: int | None = None
    global_batch_size: int | None = None
    total_steps: int | None = None
    steps_per_epoch: int | None = None
    epochs: int | None = None  # total epochs (tunewiz.run.events.total_epochs)
    planned_peak_bytes: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    resumed_from: str | None = None
    truncation: dict[str, Any] | None = None  # start event: mode, max_seq_len, per-split counts
    token_lengths: dict[str, int] | None = None  # start event: p50, p95, max before truncation
    num_train_samples: int | None = None
    num_val_samples: int | None = None
    datasets: list[dict[str, Any]] | None = None  # start event: samples per dataset of data.path
    launches: int = 0
    launch_start_time: float | None = None
    launch_start_step: int = 0

    # From `step` events.
    step: int = 0
    epoch: int | None = None  # 1-based epoch of the latest step (tunewiz.run.events.epoch_of_step)
    loss: float | None = None
    loss_ema: float | None = None
    ema_sum: float = field(default=0.0, repr=False)  # running EMA numerator and its bias weight
    ema_weight: float = field(default=0.0, repr=False)
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    tokens_total: int | None = None
    # Per rank: the highest of any logged step, all launches (a launch with another world size starts over).
    peak_memory_bytes: list[int] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss), non-finite ones too
    tokens_per_s_samples: list[float] = field(default_factory=list)  # first step of a launch left out
    first_step_time: float | None = None  # of this launch: steps/s is measured from here (no setup)
    first_step: int | None = None
    last_step_time: float | None = None

    # Time: earlier launches' durations, plus the current launch's so far.
    elapsed_before: float = 0.0
    launch_elapsed: float = 0.0
    now: float | None = None  # set by the Live loop so elapsed ticks between events while running

    # Other events.
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    samples: dict[str, Any] | None = None  # the latest `samples` event: greedy replies at a validation
    last_checkpoint: tuple[int | None, str] | None = None  # (step, path)
    warnings: list[RunWarning] = field(default_factory=list)  # the last MAX_WARNINGS
    warnings_total: int = 0  # all warnings ever added, so a reader can tell which ones are new
    errors: list[RankError] = field(default_factory=list)
    stop: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    last_event_time: float | None = None

    # Set by the parent process, not by events.
    data_progress: str | None = None  # the data phase while it runs: ``preparing data: 45% · …``
    data_summary: str | None = None  # once found or made: ``data: prepared entry … found (…)``
    stop_requested: bool = False
    killing: bool = False
    returncode: int | None = None

    @property
    def finished(self) -> bool:
        """The current launch ended (completed, stopped or failed)."""
        return self.end is not None or self.stop is not None or bool(self.errors)

    @property
    def elapsed(self) -> float:
        """Training time: wall-clock seconds from each launch's ``start`` event to its last event, summed
        over launches (setup before ``start`` left out; validation, checkpoints and the export counted).
        Ticks with ``now`` while the run is live."""
        current = self.launch_elapsed
        if self.now is not None and self.launch_start_time is not None and not self.finished:
            current = max(current, self.now - self.launch_start_time)
        return self.elapsed_before + current

    @property
    def steps_per_s(self) -> float | None:
        """Optimizer steps per second in this launch, from its first step on (setup left out)."""
        if self.first_step is None or self.first_step_time is None or self.last_step_time is None:
            return None
        done = self.step - self.first_step
        spent = self.last_step_time - self.first_step_time
        if done <= 0 or spent <= 0:
            return None
        return done / spent

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from this launch's step rate; None until two steps were seen and after the last."""
        rate = self.steps_per_s
        if rate is None or self.total_steps is None or self.finished or self.step >= self.total_steps:
            return None
        return max(self.total_steps - self.step, 0) / rate

    @property
    def best_val(self) -> tuple[int, float] | None:
        """(step, loss) of the lowest finite validation loss."""
        finite = [(s, v) for s, v in self.val_losses if math.isfinite(v)]
        return min(finite, key=lambda sv: sv[1]) if finite else None

    @property
    def peak_memory_max(self) -> int | None:
        """The run's peak memory: the highest of any rank at any logged step, all launches, in bytes."""
        return max(self.peak_memory_bytes) if self.peak_memory_bytes else None

    @property
    def run_tokens_per_s(self) -> float | None:
        """The run's throughput: the median input tokens/s of the logged steps, all launches, each
        launch's first logged (warm-up) step left out; the latest step's when only first steps were
        logged. A median, so a step slowed by something else on the machine does not move it."""
        if self.tokens_per_s_samples:
            return statistics.median(self.tokens_per_s_samples)
        return self.tokens_per_s


def ema(values: list[float], beta: float = EMA_BETA) -> list[float]:
    """Bias-corrected exponential moving average; non-finite values are skipped (carried over).

    Args:
        values: the raw series, oldest first.
        beta: weight of the past; 0.9 averages over roughly the last 10 values.
    """
    out: list[float] = []
    acc, weight = 0.0, 0.0
    for v in values:
        acc, weight = _ema_update(acc, weight, v, beta)
        out.append(acc / weight if weight > 0 else math.nan)
    return out


def _ema_update(acc: float, weight: float, value: float, beta: float = EMA_BETA) -> tuple[float, float]:
    # Dividing acc by weight (1 - beta**n over n finite values) removes the EMA's bias towards 0.
    if not math.isfinite(value):
        return acc, weight
    return beta * acc + (1 - beta) * value, beta * weight + (1 - beta)


def _float(value: Any) -> float | None:
    # JSON has no NaN literal in the strict sense; json.dumps writes NaN/Infinity and json.loads
    # reads them back, but a writer may also send the strings "nan"/"inf".
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def datasets_line(state: DashboardState) -> str | None:
    """``data: a.jsonl 80 train / 9 val · b.csv (×0.5) 40 train / 4 val`` when there are several datasets."""
    if not state.datasets or len(state.datasets) < 2:
        return None
    parts = []
    for d in state.datasets:
        weight = d.get("weight", 1.0)
        mark = f" (×{weight:g})" if weight != 1.0 else ""
        parts.append(f"{d.get('name')}{mark} {d.get('train', 0)} train / {d.get('validation', 0)} val")
    return "data: " + " · ".join(parts)


def truncation_note(state: DashboardState) -> tuple[str, str] | None:
    """(what happened, hint) when samples were truncated or dropped for ``max_seq_len``, else None.

    Args:
        state: the state after the start event.
    """
    info = state.truncation
    if not isinstance(info, dict):
        return None
    splits = {name: info.get(name) or {} for name in ("train", "validation")}
    cut = sum(int(c.get("truncated", 0)) for c in splits.values())
    dropped = sum(int(c.get("dropped_long", 0)) for c in splits.values())
    if not cut and not dropped:
        return None
    seen = sum(int(c.get(k, 0)) for c in splits.values() for k in ("dropped_long", "dropped_empty"))
    total = (state.num_train_samples or 0) + (state.num_val_samples or 0) + seen
    per_split = ", ".join(
        f"{name} {int(c.get('truncated', 0))} truncated / {int(c.get('dropped_long', 0))} dropped"
        for name, c in splits.items()
        if c.get("truncated") or c.get("dropped_long")
    )
    lengths = state.token_lengths or {}
    length_text = (
        f"; token lengths p50 {lengths['p50']}, p95 {lengths['p95']}, max {lengths['max']}"
        if {"p50", "p95", "max"} <= set(lengths)
        else ""
    )
    message = (
        f"{cut + dropped} of {total} samples are longer than max_seq_len {info.get('max_seq_len')}: "
        f"{cut} truncated ({info.get('mode')}), {dropped} dropped ({per_split}){length_text}"
    )
    hint = (
        "raise `data.max_seq_len` towards the p95 length, or choose `data.truncation` "
        "(right: keep prompts, left: keep replies, drop)"
    )
    return message, hint


def _warn(state: DashboardState, step: int | None, message: str) -> None:
    state.warnings.append(RunWarning(step, message))
    state.warnings_total += 1
    del state.warnings[:-MAX_WARNINGS]


def _apply_start(state: DashboardState, e: dict[str, Any]) -> None:
    if state.launches:
        state.elapsed_before += state.launch_elapsed
    state.launches += 1
    state.events_version = int(e.get("events_version") or 1)
    for key in (
        "run",
        "model",
        "method",
        "device",
        "dtype",
        "hardware",
        "world_size",
        "micro_batch_size",
        "grad_accum",
        "global_batch_size",
        "total_steps",
        "steps_per_epoch",
        "epochs",
        "planned_peak_bytes",
        "trainable_params",
        "total_params",
        "resumed_from",
        "truncation",
        "token_lengths",
        "num_train_samples",
        "num_val_samples",
        "datasets",
    ):
        setattr(state, key, e.get(key))
    if state.events_version < 2 and state.total_steps and state.steps_per_epoch:  # it held train.epochs
        state.epochs = total_epochs(state.total_steps, state.steps_per_epoch)
    resumed_step = int(e.get("step") or 0)
    state.step = resumed_step
    state.launch_start_step = resumed_step
    state.launch_start_time = _float(e.get("time"))
    state.launch_elapsed = 0.0
    state.first_step = state.first_step_time = state.last_step_time = None
    # Steps after the resumed checkpoint are trained again: the new values replace the old ones.
    state.losses = [(s, v) for s, v in state.losses if s <= resumed_step]
    state.val_losses = [(s, v) for s, v in state.val_losses if s <= resumed_step]
    if state.samples is not None and int(state.samples.get("step") or 0) > resumed_step:
        state.samples = None
    state.ema_sum = state.ema_weight = 0.0
    for _, v in state.losses:
        state.ema_sum, state.ema_weight = _ema_update(state.ema_sum, state.ema_weight, v)
    state.loss = state.losses[-1][1] if state.losses else None
    state.loss_ema = state.ema_sum / state.ema_weight if state.ema_weight > 0 else None
    state.stop = state.end = None
    state.errors = []
    # stop_requested/killing are not reset: they record this parent's Ctrl-C, which can come before the
    # launch's start event has been read.
    state.returncode = None


def _apply_step(state: DashboardState, e: dict[str, Any]) -> None:
    step = int(e.get("step", state.step))
    loss = _float(e.get("loss"))
    t = _float(e.get("time"))
    state.step = step
    if state.events_version >= 2:
        state.epoch = e.get("epoch", state.epoch)
    elif state.steps_per_epoch:  # version 1 wrote the 0-based data position
        state.epoch = epoch_of_step(step, state.steps_per_epoch)
    state.lr = _float(e.get("lr"))
    state.grad_norm = _float(e.get("grad_norm"))
    state.tokens_per_s = _float(e.get("tokens_per_s"))
    state.tokens_total = e.get("tokens_total", state.tokens_total)
    peaks = [int(p) if p is not None else 0 for p in e.get("peak_memory_bytes") or []]
    if len(peaks) == len(state.peak_memory_bytes):
        peaks = [max(a, b) for a, b in zip(peaks, state.peak_memory_bytes, strict=True)]
    state.peak_memory_bytes = peaks or state.peak_memory_bytes
    elapsed = _float(e.get("elapsed"))
    if elapsed is not None:
        state.launch_elapsed = max(state.launch_elapsed, elapsed)
    if state.first_step is None:
        state.first_step, state.first_step_time = step, t
    elif state.tokens_per_s is not None:
        state.tokens_per_s_samples.append(state.tokens_per_s)
    state.last_step_time = t
    if loss is None:
        return
    state.loss = loss
    state.losses.append((step, loss))
    if not math.isfinite(loss):
        _warn(state, step, f"loss is {loss} at step {step}")
        return
    if (
        state.loss_ema is not None
        and len(state.losses) > SPIKE_MIN_STEPS
        and loss > SPIKE_FACTOR * state.loss_ema
    ):
        _warn(
            state,
            step,
            f"loss spike at step {step}: {loss:.4g} is {loss / state.loss_ema:.1f}× the smoothed "
            f"{state.loss_ema:.4g}",
        )
    state.ema_sum, state.ema_weight = _ema_update(state.ema_sum, state.ema_weight, loss)
    state.loss_ema = state.ema_sum / state.ema_weight


def apply_event(state: DashboardState, event: dict[str, Any]) -> DashboardState:
    """Fold one event into ``state`` (in place) and return it. Unknown kinds and keys are ignored.

    Args:
        state: the state so far.
        event: one parsed line of ``events.jsonl``.
    """
    kind = event.get("event")
    t = _float(event.get("time"))
    if t is not None:
        state.last_event_time = t
        # Any event (not only steps) shows the launch is still alive at this time.
        if state.launch_start_time is not None and kind != "start":
            state.launch_elapsed = max(state.launch_elapsed, t - state.launch_start_time)
    if kind == "start":
        _apply_start(state, event)
    elif kind == "step":
        _apply_step(state, event)
    elif kind == "eval":
        val = _float(event.get("val_loss"))
        if val is not None:
            state.val_losses.append((int(event.get("step", state.step)), val))
    elif kind == "samples":
        if isinstance(event.get("samples"), list):
            state.samples = event
    elif kind == "checkpoint":
        state.last_checkpoint = (int(event.get("step", state.step)), str(event.get("path")))
    elif kind == "oom_fallback":
        state.micro_batch_size = event.get("micro_batch_size", state.micro_batch_size)
        state.grad_accum = event.get("grad_accum", state.grad_accum)
        reason = event.get("reason")
        _warn(
            state,
            event.get("step"),
            f"out of memory: now micro-batch {state.micro_batch_size} × accumulation {state.grad_accum}"
            + (f" ({reason})" if reason else ""),
        )
    elif kind == "warning":
        _warn(state, event.get("step"), str(event.get("message", "")))
    elif kind == "error":
        state.errors.append(
            RankError(
                event.get("rank"), str(event.get("message", "")), event.get("traceback"), event.get("step")
            )
        )
    elif kind == "stop":
        state.stop = event
        # The stop's checkpoint is the last good one, not necessarily saved at the stop's step.
        path = event.get("checkpoint")
        if path and (state.last_checkpoint is None or state.last_checkpoint[1] != str(path)):
            match = _STEP_DIR.search(str(path))
            state.last_checkpoint = (int(match.group(1)) if match else None, str(path))
    elif kind == "end":
        state.end = event
        state.step = int(event.get("step", state.step))
        # end's `elapsed` is the seconds inside optimizer steps: not the training time (see `elapsed`).
        state.tokens_total = event.get("tokens_total", state.tokens_total)
    return state


def fold_events(events: list[dict[str, Any]], state: DashboardState | None = None) -> DashboardState:
    """Fold ``events`` into ``state`` (a new one when None) and return it.

    Args:
        events: parsed events, oldest first.
        state: an existing state to continue, e.g. while following a live log.
    """
    state = state or DashboardState()
    for event in events:
        apply_event(state, event)
    return state
