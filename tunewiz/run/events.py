"""The event log: rank 0 appends one JSON object per line to ``events.jsonl``; the parent reads it.

Every event has ``event`` (its kind) and ``time`` (Unix seconds). The kinds and their fields:

========== ==================================================================================
start      events_version (:data:`EVENTS_VERSION`; absent before 2), run (the run directory's name),
           preset (the preset's name), model, method, device,
           dtype, world_size, micro_batch_size, grad_accum, global_batch_size, total_steps,
           steps_per_epoch, epochs (:func:`total_epochs`; version 1 wrote ``train.epochs``), step (0,
           or the step resumed from), resumed_from (checkpoint path or null), planned_peak_bytes (or
           null), hardware (str), num_train_samples, num_val_samples (kept samples),
           truncated_samples, dropped_samples (train + validation, longer than max_seq_len:
           shortened / left out), truncation ({mode, max_seq_len, train: {truncated,
           dropped_long, dropped_empty}, validation: {...}}), token_lengths ({p50, p95, max}
           of the train samples before truncation), trainable_params, total_params, datasets
           (one per dataset of data.path: {name, format, rows, weight, train, validation}: samples
           kept from it), data_contents (``name (sha256)`` per dataset and validation file; a
           resume refuses other content: tunewiz.train.launcher.check_same_data)
step       step, epoch (1-based epoch of this step; version 1 wrote the 0-based data position, so
           readers of those logs use :func:`epoch_of_step`), loss (mean over trained tokens of this
           optimizer step), lr, grad_norm, tokens (trained tokens this step, all ranks),
           tokens_total, tokens_per_s (input tokens/s, all ranks, this step), peak_memory_bytes
           (list, one per rank: CUDA max allocated on GPU, process RSS on CPU), elapsed (s since
           this launch)
eval       step, val_loss
samples    step, samples (list of {prompt, reference, output}: greedy replies to the first
           train.sample_generations validation prompts; prompt is the text of the prompt's last
           message, reference the validation reply), max_new_tokens, seconds (spent generating)
checkpoint step, path
oom_fallback step, micro_batch_size, grad_accum (the new values), reason
warning    message, step (or null)
error      rank, message, traceback (str or null), step (or null)
stop       step, reason ("signal": Ctrl-C, SIGHUP, SIGTERM or `tunewiz stop`; "nan"; "orphaned":
           the launcher or torchrun agent died), detail (str or null), checkpoint (path or null),
           resume_command
end        step, elapsed (seconds inside optimizer steps, summed over the launches that led to
           the final weights; not the training time surfaces show), final_dir, tokens_total
========== ==================================================================================

Readers must ignore unknown keys and unknown kinds so the schema can grow. Sinks (rank 0's experiment
trackers, see ``tunewiz.tracking``) receive each event right after it is written to the file.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

EVENT_KINDS = (
    "start",
    "step",
    "eval",
    "samples",
    "checkpoint",
    "oom_fallback",
    "warning",
    "error",
    "stop",
    "end",
)


# 2: ``epoch`` of step events is 1-based (the epoch of that step) and ``epochs`` of start events is
# :func:`total_epochs`. 1 (no ``events_version`` field): ``epoch`` was the recipe's 0-based data position,
# already the next epoch after an epoch's last step, and ``epochs`` was ``train.epochs``.
EVENTS_VERSION = 2


def epoch_of_step(step: int, steps_per_epoch: int) -> int:
    """The 1-based epoch that optimizer step ``step`` (1-based) trained in; 0 before the first step.

    Every epoch has exactly ``steps_per_epoch`` steps (the incomplete last global batch is dropped,
    see :func:`tunewiz.train.batch_shape.steps_per_epoch`), so steps 1..N are epoch 1, N+1..2N epoch 2.
    The recipe writes the same number from its data position
    (:attr:`tunewiz.train.batch_shape.Progress.trained_epoch`); readers of version-1 logs compute it here.

    Args:
        step: optimizer steps done.
        steps_per_epoch: optimizer steps in one epoch (> 0).
    """
    return math.ceil(step / steps_per_epoch)


def total_epochs(total_steps: int, steps_per_epoch: int) -> int:
    """Epochs a run of ``total_steps`` steps touches: ``train.epochs`` for a run bounded by epochs,
    ``ceil(max_steps / steps_per_epoch)`` for one bounded by ``train.max_steps`` (the last may be partial).

    Args:
        total_steps: the run's step budget.
        steps_per_epoch: optimizer steps in one epoch (> 0).
    """
    return math.ceil(total_steps / steps_per_epoch)


class EventSink(Protocol):
    """Receives every event after it is in the file (an experiment tracker, for example).

    A sink must not raise: the event log is the run's record and training does not stop for a sink.
    It may write events itself (a warning): those are written at once and handed to the sinks after the
    current event.
    """

    def __call__(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class EventWriter:
    """Appends events to ``events.jsonl``; each line is flushed and fsynced as it is written.

    Args:
        path: the run's ``events.jsonl``; appended to, so a resumed run continues the same log.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._sinks: list[EventSink] = []
        self._pending: deque[dict[str, Any]] = deque()
        self._dispatching = False

    def add_sink(self, sink: EventSink) -> None:
        """Hand every later event to ``sink`` too (closed by :meth:`close`)."""
        self._sinks.append(sink)

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event (with ``time``) and return it.

        Args:
            kind: one of ``EVENT_KINDS``.
            fields: the kind's fields (see the module docstring).
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of {EVENT_KINDS}")
        event = {"event": kind, "time": time.time(), **fields}
        self._file.write(json.dumps(event, default=_jsonable) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._sinks:
            self._dispatch(event)
        return event

    def _dispatch(self, event: dict[str, Any]) -> None:
        # A sink that writes an event (a warning) re-enters write(): queue it behind the current one,
        # so every sink sees the events in file order.
        self._pending.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                queued = self._pending.popleft()
                for sink in self._sinks:
                    sink(queued)
        finally:
            self._dispatching = False

    def close(self) -> None:
        """Close the sinks (a sink's last words, if any, still reach the file), then the log file."""
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            sink.close()
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # 0-d tensors and numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"event field of type {type(value).__name__} is not JSON serialisable")


def parse_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Parse complete event lines; a torn last line (a writer mid-append) is skipped."""
    events = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events of a run so far (empty when the log does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return parse_lines(path.read_text(encoding="utf-8").splitlines())


def follow(path: str | os.PathLike[str], poll_s: float = 0.2) -> Iterator[list[dict[str, Any]]]:
    """Yield batches of new events as they are appended (an empty batch on each idle poll).

    The caller decides when to stop (for example on an ``end`` event or when the process exits).
    """
    path = Path(path)
    offset = 0
    pending = ""
    while True:
        batch: list[dict[str, Any]] = []
        if path.exists():
            with open(path, encoding="utf-8") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            pending += chunk
            *complete, pending = pending.split("\n")
            batch = parse_lines(complete)
        yield batch
        if not batch:
            time.sleep(poll_s)
