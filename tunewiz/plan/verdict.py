"""The one rule that decides whether a plan fits a device: every surface that shows a verdict (`tunewiz
plan`, `plan --list-models`, the wizard's model list, the hardware guide's table) calls :func:`judge`.

The rule: a plan fits when its predicted peak plus the error band fits the device's whole memory,

    peak × (1 + error band) ≤ memory per device.

The peak already counts the CUDA context, NCCL's buffers and the caching allocator's slack
(``tunewiz/plan/memory.py``), so there is no second margin: the error band (±10%, the planner's accuracy
against traced steps and published peaks: ``bench/RESULTS.md``) is the only headroom, and the verdict
names it. "Memory per device" is what ``nvidia-smi`` reports as total for a detected GPU, the
``--gpu-memory`` of a described one, or the RAM available to each process on CPU. A desktop that
draws on the same GPU takes some of it: plan with ``--gpu-memory`` set to what is free then.

A plan that fits only because it uses memory savers (activation checkpointing or offloading, 8-bit
AdamW, the optimizer step in backward) "fits with savers" and lists them: each costs speed or
constrains training, and the verdict says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tunewiz.plan.memory import MemoryPlan
from tunewiz.units import GiB

FitKind = Literal["fits", "fits with savers", "does not fit"]


@dataclass(frozen=True)
class Verdict:
    """Whether a plan fits a device, by the one rule above.

    Args:
        kind: ``fits``, ``fits with savers`` or ``does not fit``.
        savers: the memory savers the plan uses (empty for a plain ``fits``).
        peak: predicted peak per device, bytes.
        band: the error band used as the only margin (0.1 = +10%).
        memory: the device's memory, bytes.
    """

    kind: FitKind
    savers: tuple[str, ...]
    peak: int
    band: float
    memory: int

    @property
    def fits(self) -> bool:
        return self.kind != "does not fit"

    @property
    def needed(self) -> int:
        """Bytes the plan must find free: the peak plus its error band."""
        return int(self.peak * (1 + self.band))

    @property
    def label(self) -> str:
        """``fits``, ``fits with savers (activation checkpointing)`` or ``does not fit``."""
        return f"{self.kind} ({', '.join(self.savers)})" if self.kind == "fits with savers" else self.kind

    def explain(self) -> str:
        """The arithmetic behind the verdict, naming the margin it used."""
        sign = "≤" if self.fits else ">"
        return (
            f"{self.peak / GiB:.2f} GiB predicted + {self.band:.0%} error band = {self.needed / GiB:.2f} GiB "
            f"{sign} {self.memory / GiB:.2f} GiB per device (the band is the only margin)"
        )


def judge(plan: MemoryPlan, memory_per_device: int) -> Verdict:
    """The verdict of one plan on one device.

    Args:
        plan: from :func:`tunewiz.plan.memory.estimate`.
        memory_per_device: the device's memory in bytes (``Machine.memory_per_device``).

    Returns:
        ``does not fit`` when peak × (1 + band) exceeds the memory; else ``fits with savers`` when the
        plan uses any, else ``fits``.
    """
    savers = plan.inputs.savers
    if plan.peak_high > memory_per_device:
        kind: FitKind = "does not fit"
    else:
        kind = "fits with savers" if savers else "fits"
    shown = savers if kind == "fits with savers" else ()
    return Verdict(kind, shown, plan.peak, plan.error_band, memory_per_device)
