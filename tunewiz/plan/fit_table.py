"""The verdict of every catalog model on one machine, as the wizard's model list, `tunewiz plan
--list-models` and the hardware guide show it. One list, one rule (:func:`tunewiz.plan.verdict.judge`
through :func:`tunewiz.plan.recommend.recommend`), so the surfaces cannot disagree."""

from __future__ import annotations

from tunewiz.models.catalog import CatalogModel, format_params
from tunewiz.plan.hardware import Machine
from tunewiz.plan.recommend import PlanRequest, Recommendation, recommend
from tunewiz.units import GiB

MEMORY_COLUMN = (
    "memory: the predicted peak per device at the settings the planner picks for that model (method, "
    "micro-batch, savers), so a bigger model can show less when it needs QLoRA or a smaller batch"
)
_MARK = {"fits": "✓ fits", "fits with savers": "✓ fits with savers", "does not fit": "✗ does not fit"}


def model_fits(
    machine: Machine, models: list[CatalogModel], request: PlanRequest | None = None
) -> list[tuple[CatalogModel, Recommendation]]:
    """Each model with its recommendation (and so its verdict) on ``machine``.

    Args:
        machine: the machine planned for.
        models: the models to list (usually ``catalog_models()``).
        request: values the user fixed (method, micro-batch, sequence length, rank).
    """
    return [(m, recommend(machine, m, request=request)) for m in models]


def fit_line(model: CatalogModel, rec: Recommendation) -> str:
    """One model's row: name, size, verdict (with its savers), method, micro-batch and memory, gating.

    Args:
        model: the model.
        rec: its recommendation on the machine.
    """
    v = rec.verdict
    mark = _MARK[v.kind] + (f" ({', '.join(v.savers)})" if v.savers else "")
    i = rec.plan.inputs
    how = f"  {i.method} mb {i.micro_batch}, {rec.plan.peak / GiB:.1f} GiB" if rec.fits else ""
    gated = "  gated" if model.gated else ""
    return f"{model.name:28s} {format_params(model.params):>7s}  {mark}{how}{gated}"
