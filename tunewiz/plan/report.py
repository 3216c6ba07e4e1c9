"""A recommendation as a Rich renderable: the breakdown table, the verdict, the reasons, and what
would fit. Pure: it draws; the caller prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewiz.models.catalog import format_params
from tunewiz.units import GiB

if TYPE_CHECKING:
    from rich.console import Group

    from tunewiz.plan.recommend import Recommendation

_ROWS = (
    ("weights", "weights"),
    ("trainable_state", "grads + optimizer states"),
    ("activations", "activations"),
    ("logits_loss", "logits / loss"),
    ("fsdp_buffers", "FSDP gather buffers"),
    ("overhead", "CUDA context + allocator"),
)


def render_recommendation(rec: Recommendation) -> Group:
    """The breakdown table, verdict, reasons and alternatives of a recommendation.

    Args:
        rec: from :func:`tunewiz.plan.recommend.recommend`.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    i = rec.plan.inputs
    title = (
        f"{rec.model.name} ({format_params(rec.model.params)}) · {i.method} · {i.dtype} · micro_batch "
        f"{i.micro_batch} × seq {i.seq_len} · on {rec.machine.name}"
    )
    table = Table()
    table.add_column("per device")
    table.add_column("GiB", justify="right")
    breakdown = rec.plan.breakdown.as_dict()
    for key, label in _ROWS:
        if key == "overhead" and i.device == "cpu":
            label = "process + allocator"
        table.add_row(label, f"{breakdown[key] / GiB:.2f}")
    table.add_row(
        Text("predicted peak", style="bold"),
        Text(f"{rec.plan.peak / GiB:.2f} ± {rec.plan.error_band:.0%}", style="bold"),
    )
    table.add_row("memory per device", f"{rec.verdict.memory / GiB:.2f}")
    kind = rec.verdict.kind
    style = "bold green" if kind == "fits" else "bold yellow" if rec.fits else "bold red"
    parts: list[object] = [
        Text(title, style="bold"),
        table,
        Text(f"verdict: {rec.verdict.label}", style=style),
        _Hanging((rec.verdict.explain(),), first="  ", rest="  "),
    ]
    if rec.fits:
        parts.append(Text(f"grad_accum {rec.grad_accum} → global batch {rec.global_batch} sequences"))
    parts += [Text("why:"), _Hanging((*rec.reasons, *rec.plan.reasons))]
    if rec.alternatives:
        parts += [Text("what would fit:"), _Hanging(rec.alternatives)]
    return Group(*parts)


class _Hanging:
    """Paragraphs wrapped to the console with a hanging indent: the first line of each starts with
    ``first`` (a bullet), the wrapped ones with ``rest``, and no line ends in spaces (a table grid would
    pad every line to the widest)."""

    def __init__(self, items: tuple[str, ...], first: str = "  • ", rest: str = "    ") -> None:
        self.items, self.first, self.rest = items, first, rest

    def __rich_console__(self, console, options):  # noqa: ANN001, ANN204 (Rich's protocol)
        from rich.text import Text

        width = max(20, options.max_width - len(self.rest))
        for item in self.items:
            for k, line in enumerate(Text(item).wrap(console, width)):
                line.rstrip()
                yield Text(self.first if k == 0 else self.rest) + line
