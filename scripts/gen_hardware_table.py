"""Generate the hardware guide's "what fits" tables from the planner.

The tables go into `docs/tutorials/choosing-hardware.md` between the `<!-- hardware-table:start -->` and
`<!-- hardware-table:end -->` markers; `tests/test_docs.py` fails when they differ from what this
script writes, and `tests/test_fit_story.py` checks each cell against `tunewiz plan`'s verdict.
Every cell is `tunewiz.plan.recommend.recommend` on a described single GPU, judged by
`tunewiz.plan.verdict.judge`: the same rule as `tunewiz plan` and the wizard.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "tutorials" / "choosing-hardware.md"
START, END = "<!-- hardware-table:start -->", "<!-- hardware-table:end -->"
CARDS = ("8GB", "12GB", "16GB", "24GB", "48GB", "80GB")
MODELS = (
    "qwen2.5-0.5b-instruct",
    "llama-3.2-1b-instruct",
    "qwen2.5-1.5b-instruct",
    "llama-3.2-3b-instruct",
    "mistral-7b-v0.3-instruct",
    "llama-3.1-8b-instruct",
    "llama-2-13b-instruct",
)
# (row label, the request): the defaults (global batch 16, clipping on), and full fine-tuning set up for
# the step in backward (no clipping, global batch 2: no accumulation at micro-batch 2).
METHODS = (
    ("lora", {"method": "lora"}),
    ("qlora", {"method": "qlora"}),
    ("full", {"method": "full"}),
    ("full, no clipping, batch 2", {"method": "full", "grad_clipping": False, "target_global_batch": 2}),
)
_SHORT = {
    "activation checkpointing": "AC",
    "activation offloading": "offload",
    "8-bit AdamW": "8-bit AdamW",
    "optimizer step in backward": "step in bwd",
}


def cell(rec: object) -> str:
    """One table cell: ``✓ 6.3 GiB · mb 8 · AC``, or ``✗ needs 9.1 GiB``.

    Args:
        rec: a :class:`tunewiz.plan.recommend.Recommendation`.
    """
    from tunewiz.units import GiB

    plan = rec.plan  # type: ignore[attr-defined]
    if not rec.fits:  # type: ignore[attr-defined]
        return f"✗ needs {plan.peak_high / GiB:.1f} GiB"
    savers = "".join(f" · {_SHORT[s]}" for s in plan.inputs.savers)
    return f"✓ {plan.peak / GiB:.1f} GiB · mb {plan.inputs.micro_batch}{savers}"


def table() -> str:
    """The Markdown tables, without the markers."""
    from tunewiz.models.catalog import format_params, lookup
    from tunewiz.plan.hardware import describe
    from tunewiz.plan.recommend import PlanRequest, recommend

    lines = [
        "| model | method | " + " | ".join(c.replace("GB", " GB") for c in CARDS) + " |",
        "|---|---|" + "---|" * len(CARDS),
    ]
    for name in MODELS:
        model = lookup(name)
        for label, fixed in METHODS:
            request = PlanRequest(**fixed)  # type: ignore[arg-type]
            cells = [cell(recommend(describe(1, card), model, request=request)) for card in CARDS]
            lines.append(
                f"| `{name}` ({format_params(model.params)}) | {label} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def render(page: str | None = None) -> str:
    """The guide with the tables between the markers replaced by :func:`table`.

    Args:
        page: the current page text (default: read from disk).
    """
    text = TARGET.read_text(encoding="utf-8") if page is None else page
    if START not in text or END not in text:
        raise ValueError(f"{TARGET.name} lacks the {START} / {END} markers")
    return re.sub(
        re.escape(START) + ".*?" + re.escape(END),
        lambda _: f"{START}\n{table()}\n{END}",
        text,
        flags=re.DOTALL,
    )


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote the hardware tables in {TARGET.relative_to(ROOT)}")
