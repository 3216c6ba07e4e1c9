"""One table from events to tracker values: every tracker logs exactly these names and numbers.

=============  =====================================================================================
event          logged at the event's ``step``
=============  =====================================================================================
step           ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``,
               ``train/tokens`` (trained tokens this step), ``train/tokens_total``, ``train/epoch``,
               ``memory/peak_bytes/rank_N`` (one per rank: CUDA max allocated, or RSS on CPU)
eval           ``val/loss``
oom_fallback   ``oom/micro_batch_size``, ``oom/grad_accum`` (the new values)
checkpoint     ``checkpoint/saved`` (1.0: a complete checkpoint of this step exists)
=============  =====================================================================================

``tunewiz eval`` adds ``eval/TASK/METRIC`` at the run's last step. The values are the events' own
numbers (Python floats; TensorBoard keeps them as 32-bit floats, MLflow and W&B as 64-bit).
"""

from __future__ import annotations

import json
import re
from typing import Any

_STEP_FIELDS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "train/tokens_per_s",
    "tokens": "train/tokens",
    "tokens_total": "train/tokens_total",
    "epoch": "train/epoch",
}
_OTHER_FIELDS = {
    "eval": {"val_loss": "val/loss"},
    "oom_fallback": {"micro_batch_size": "oom/micro_batch_size", "grad_accum": "oom/grad_accum"},
}
_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /]")  # what MLflow accepts in a metric name


def metrics_of(event: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
    """The tracker values of one event, and its step; None for events that carry no metric.

    Args:
        event: one parsed line of ``events.jsonl``.
    """
    kind, step = event.get("event"), event.get("step")
    if step is None:
        return None
    if kind == "step":
        values = _numbers(event, _STEP_FIELDS)
        for rank, peak in enumerate(event.get("peak_memory_bytes") or []):
            if peak is not None:
                values[f"memory/peak_bytes/rank_{rank}"] = float(peak)
    elif kind in _OTHER_FIELDS:
        values = _numbers(event, _OTHER_FIELDS[kind])
    elif kind == "checkpoint":
        values = {"checkpoint/saved": 1.0}
    else:
        return None
    return (int(step), values) if values else None


def _numbers(event: dict[str, Any], names: dict[str, str]) -> dict[str, float]:
    return {
        name: float(event[key])
        for key, name in names.items()
        if isinstance(event.get(key), (int, float)) and not isinstance(event.get(key), bool)
    }


def eval_metrics(tasks: dict[str, dict[str, float | None]]) -> dict[str, float]:
    """``tunewiz eval`` results as ``eval/TASK/METRIC`` values (standard errors left out).

    Args:
        tasks: task → metric → value, as :class:`tunewiz.inference.evaluate.EvalResult` holds them.
            lm-eval's ``exact_match,strict-match`` style names become ``exact_match_strict-match``.
    """
    out = {}
    for task, metrics in sorted(tasks.items()):
        for metric, value in metrics.items():
            if metric.endswith("_stderr") or "_stderr," in metric or not isinstance(value, (int, float)):
                continue
            out[_UNSAFE.sub("_", f"eval/{task}/{metric}")] = float(value)
    return out


def flat_params(preset: dict[str, Any], plan: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """The resolved preset and the plan as flat hyperparameters: ``train.lr``, ``plan.peak_bytes``.

    Lists become comma-separated strings (``lora.targets: q_proj,v_proj``), None becomes ``"null"``,
    nested values of the plan become JSON; every tracker can store and compare these.

    Args:
        preset: ``Preset.model_dump(mode="json")``.
        plan: the run's ``plan.json`` ({} when there is none).
    """
    flat: dict[str, str | int | float | bool] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (list, tuple)):
            simple = all(isinstance(v, (str, int, float, bool)) for v in value)
            flat[prefix] = ",".join(str(v) for v in value) if simple else json.dumps(value)
        elif value is None:
            flat[prefix] = "null"
        else:
            flat[prefix] = value

    add("", preset)
    add("plan", plan)
    return flat
