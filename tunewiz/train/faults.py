"""Fault injection, for tests of what a GPU machine or a crash would do to a run.

Set in the environment of `tunewiz train`/`resume` (torchrun passes it to every rank):

``TUNEWIZ_FAULT_OOM_ABOVE_MICRO_BATCH=N``
    every micro-batch larger than N raises ``torch.OutOfMemoryError`` before its forward pass, as a
    GPU would, so the OOM fallback runs on CPU.
``TUNEWIZ_FAULT_KILL=POINT@STEP``
    the process SIGKILLs itself (no cleanup, like a power cut) at POINT of optimizer step STEP:
    ``step`` after the optimizer step, ``checkpoint`` in the middle of writing that step's checkpoint
    (after the tensors, before the completion marker).
``TUNEWIZ_FAULT_NAN=STEP``
    the loss of optimizer step STEP becomes NaN, as a diverging run's would.
``TUNEWIZ_FAULT_STEP_DELAY=SECONDS``
    every optimizer step sleeps this long after its update, as a big model's step would take: a
    test can then signal a process between two steps without racing the run's end.
"""

from __future__ import annotations

import os
import signal
import time

import torch

OOM_ENV = "TUNEWIZ_FAULT_OOM_ABOVE_MICRO_BATCH"
KILL_ENV = "TUNEWIZ_FAULT_KILL"
NAN_ENV = "TUNEWIZ_FAULT_NAN"
DELAY_ENV = "TUNEWIZ_FAULT_STEP_DELAY"


def check_oom(micro_batch_size: int) -> None:
    """Raise an injected out-of-memory error for a micro-batch above the configured size."""
    limit = int(os.environ.get(OOM_ENV, "0"))
    if limit and micro_batch_size > limit:
        raise torch.OutOfMemoryError(f"injected by {OOM_ENV}={limit} (micro-batch {micro_batch_size})")


def maybe_kill(point: str, step: int) -> None:
    """SIGKILL this process when `TUNEWIZ_FAULT_KILL` names this point and step."""
    if os.environ.get(KILL_ENV) == f"{point}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def poison_loss(loss: torch.Tensor, step: int) -> torch.Tensor:
    """The loss, or NaN when `TUNEWIZ_FAULT_NAN` names this optimizer step."""
    return loss * float("nan") if os.environ.get(NAN_ENV) == str(step) else loss


def maybe_delay() -> None:
    """Sleep `TUNEWIZ_FAULT_STEP_DELAY` seconds (no-op when unset)."""
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)
