"""`tunewiz eval TARGET`: lm-eval on a run (base + adapter, unmerged), a model or a cached Hub model."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from tunewiz.inference.evaluate import EvalResult


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise typer.BadParameter(f"`{value}` is neither `auto` nor a positive integer", param_hint="--batch-size")


def results_table(result: EvalResult) -> Table:
    """One row per task and metric; with a base-model run, its value and the change too.

    Args:
        result: what :func:`tunewiz.inference.evaluate.run_eval` returned.
    """
    from rich.table import Table

    table = Table(title=f"{result.model}" + (f" + {result.adapter}" if result.adapter else ""))
    for name in ("task", "metric", "value", "± stderr"):
        table.add_column(name, justify="left" if name in ("task", "metric") else "right")
    if result.base is not None:
        table.add_column("base", justify="right")
        table.add_column("Δ", justify="right")
    for task, metrics in sorted(result.tasks.items()):
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            stderr = metrics.get(f"{metric}_stderr")
            row = [task, metric, _fmt(value), _fmt(stderr)]
            if result.base is not None:
                base = result.base.get(task, {}).get(metric)
                delta = value - base if value is not None and base is not None else None
                row += [_fmt(base), "" if delta is None else f"{delta:+.4f}"]
            table.add_row(*row)
    return table


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def eval_command(
    target: str = typer.Argument(
        ..., help="Run directory, model directory, `tunewiz:NAME`, or a Hub id in the local cache."
    ),
    tasks: str | None = typer.Option(
        None,
        "--tasks",
        help="Comma-separated task names (default: the shipped task of the run's sample dataset).",
    ),
    include_path: Path | None = typer.Option(
        None, "--include-path", help="Directory of local lm-eval task YAMLs.", rich_help_panel="Tasks"
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        min=1,
        help="Evaluate only the first N documents of each task.",
        rich_help_panel="Tasks",
    ),
    num_fewshot: int | None = typer.Option(
        None,
        "--num-fewshot",
        min=0,
        help="Few-shot examples (default: each task's own).",
        rich_help_panel="Tasks",
    ),
    batch_size: str = typer.Option(
        "auto", "--batch-size", help="`auto` or rows per forward.", rich_help_panel="Model"
    ),
    compare_base: bool = typer.Option(
        False, "--compare-base", help="Also evaluate the base model (adapter off) and show the change."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda.", rich_help_panel="Model"),
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout instead of the table."),
) -> None:
    """Evaluate with EleutherAI's lm-evaluation-harness; a run directory gets `eval/results.json`.

    Example: `tunewiz eval runs/tiny-lora --compare-base`
    """
    from rich.console import Console

    from tunewiz.inference.evaluate import run_eval

    if not os.environ.get("TUNEWIZ_DEBUG"):
        # lm-eval's progress bars and per-task notices would bury the table.
        os.environ.setdefault("TQDM_DISABLE", "1")
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    result = run_eval(
        target,
        tasks=names,
        include_path=include_path,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=_batch_size(batch_size),
        compare_base=compare_base,
        device=device,
    )
    where = "with lm-eval's built-in tasks" if result.index_included_builtins else "local tasks only"
    print(f"indexed tasks in {result.index_seconds:.2f} s ({where})", file=sys.stderr)
    if Path(target, "trackers.json").is_file():  # a run trained with output.report_to
        from tunewiz.run.directory import RunDir
        from tunewiz.tracking import report_eval

        for line in report_eval(RunDir(Path(target)), result.tasks):
            print(f"warning: {line}", file=sys.stderr)
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
        return
    Console(highlight=False).print(results_table(result))
    if Path(target, "config.yaml").is_file():
        print(f"wrote {Path(target, 'eval', 'results.json')}", file=sys.stderr)
