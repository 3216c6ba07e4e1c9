"""A time budget turned into optimizer steps: parse ``90m``/``2h``, estimate training tokens per second
from a matmul timed on this machine, and divide.

The estimate is a model (FLOPs per token over a share of the measured matmul rate), not a measurement;
the schedule's reason says so.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError
from tunewiz.plan.hardware import probe

if TYPE_CHECKING:
    from tunewiz.plan.recommend import Recommendation

MATMUL_UTILISATION = 0.5  # a training step reaches about half of a bare matmul's FLOP/s


def steps_for_budget(budget: str, rec: Recommendation, lengths: list[int] | None) -> tuple[int, str]:
    """Optimizer steps that fit in ``budget``, and the reason (with the numbers it used).

    Args:
        budget: the value of ``--time-budget`` (``90m``, ``2h``, ``1h30m``).
        rec: the plan (its global batch and sequence length size a step).
        lengths: sampled token lengths (the mean sizes a step's tokens when not packed).
    """
    seconds = parse_duration(budget)
    per_second = estimate_tokens_per_second(rec)
    mean = sum(lengths) / len(lengths) if lengths else rec.plan.inputs.seq_len
    tokens_per_step = rec.global_batch * min(mean, rec.plan.inputs.seq_len)
    steps = max(1, int(seconds * per_second / tokens_per_step))
    return steps, (
        f"max_steps {steps}: a {budget} budget at an estimated {per_second:,.0f} tokens/s "
        f"({MATMUL_UTILISATION:.0%} of this machine's measured matmul FLOP/s) and "
        f"{tokens_per_step:,.0f} tokens per step; an estimate, not a measurement"
    )


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``2h``, ``1h30m``, ``45s``, or a bare number of minutes.

    Args:
        text: the value of ``--time-budget``.
    """
    seconds = try_seconds(text)
    if seconds is None:
        raise TunewizError(
            f"--time-budget `{text}` is not a duration", hint="write it like `90m`, `2h` or `1h30m`"
        )
    return seconds


def try_seconds(text: str) -> float | None:
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60 or None
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or parts is None:
        return None
    h, m, s = (float(p) if p else 0.0 for p in parts.groups())
    return h * 3600 + m * 60 + s or None


def estimate_tokens_per_second(rec: Recommendation) -> float:
    """Training tokens per second per machine, from a matmul measured on this machine's device.

    FLOPs per token: 6 × parameters for full fine-tuning (forward 2, backward 4), 4 × for LoRA (the
    frozen weights need no weight gradient), plus attention's 12 × layers × seq_len × hidden (PaLM's
    count). Utilisation ``MATMUL_UTILISATION`` of the measured matmul rate.

    Args:
        rec: the plan (model, method, dtype, sequence length, devices).
    """
    if rec.machine.device == "cuda" and not probe(quick=True).gpus:
        raise TunewizError(
            "--time-budget needs this machine's GPUs to measure their speed",
            hint="give `--epochs N` when planning for another machine",
        )
    i, arch = rec.plan.inputs, rec.model.arch
    per_token = (
        6 if i.method == "full" else 4
    ) * rec.model.params + 12 * arch.num_hidden_layers * i.seq_len * arch.hidden_size
    return (
        measure_matmul_flops(rec.machine.device, i.dtype)
        * MATMUL_UTILISATION
        * rec.machine.num_devices
        / per_token
    )


def measure_matmul_flops(device: str, dtype: str, size: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a square matmul on ``device`` in ``dtype`` (``bf16``/``fp32``), timed for about ``seconds``.

    Args:
        device: ``cuda`` or ``cpu``.
        dtype: ``bf16`` or ``fp32``.
        size: the matrices are size × size.
        seconds: time spent measuring.
    """
    import time

    import torch

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dt)  # [size, size]
    b = torch.randn(size, size, device=device, dtype=dt)
    a @ b  # warm-up: kernel selection and thread pools
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        sync()
    return 2 * size**3 * runs / (time.perf_counter() - start)
