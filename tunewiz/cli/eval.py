"""`tunewiz eval TARGET`: lm-eval on a run (base + adapter, unmerged), a model or a cached Hub model."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunewiz.cli.options import DeviceOpt, FromOpt, typed_command

if TYPE_CHECKING:
    from rich.table import Table

    from tunewiz.inference.evaluate import EvalResult
    from tunewiz.inference.load import StepCheckpoint


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
    ctx: typer.Context,
    target: str = typer.Argument(
        ..., help="Run directory, model directory, `tunewiz:NAME`, or a Hub id in the local cache."
    ),
    tasks: str | None = typer.Option(
        None,
        "--tasks",
        help="Comma-separated lm-eval task names (default: a run on a shipped sample gets its shipped task; "
        "any other run is scored on its own validation data, base vs fine-tuned).",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Score the run on this data file instead of its validation split (no --tasks).",
        rich_help_panel="Own data",
    ),
    from_: FromOpt = None,
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
    device: DeviceOpt = "auto",
    as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout instead of the table."),
) -> None:
    """Evaluate with EleutherAI's lm-evaluation-harness; a run directory gets `eval/results.json`.

    Example: `tunewiz eval runs/tiny-lora --compare-base`
    """
    from rich.console import Console

    from tunewiz.inference.evaluate import run_eval
    from tunewiz.inference.load import resolve_from

    if not os.environ.get("TUNEWIZ_DEBUG"):
        # lm-eval's progress bars and per-task notices would bury the table.
        os.environ.setdefault("TQDM_DISABLE", "1")
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    if not Path(target, "config.yaml").is_file():  # not a run: a target that is not there says so first
        from tunewiz.models.loading import resolve_model_dir

        resolve_model_dir(target)
    checkpoint = resolve_from(target, from_, command=typed_command(ctx))
    if (
        names is None
        and Path(target, "config.yaml").is_file()
        and (data is not None or not _has_shipped_task(target))
    ):
        _own_data(target, data=data, limit=limit, device=device, checkpoint=checkpoint, as_json=as_json)
        return
    if data is not None:
        from tunewiz.errors import TunewizError

        raise TunewizError(
            f"--data scores a run directory on its own data; `{target}` "
            + ("is evaluated on lm-eval tasks" if names else "is not a run directory"),
            hint=f"drop `--tasks` to score the run's data: `tunewiz eval RUN --data {data}`",
        )
    result = run_eval(
        target,
        tasks=names,
        include_path=include_path,
        limit=limit,
        num_fewshot=num_fewshot,
        batch_size=_batch_size(batch_size),
        compare_base=compare_base,
        device=device,
        checkpoint=checkpoint,
    )
    where = "with lm-eval's built-in tasks" if result.index_included_builtins else "local tasks only"
    print(f"indexed tasks in {result.index_seconds:.2f} s ({where})", file=sys.stderr)
    # A run trained with output.report_to; a step checkpoint's scores are not the run's result.
    if checkpoint is None and Path(target, "trackers.json").is_file():
        from tunewiz.run.directory import RunDir
        from tunewiz.tracking import report_eval

        for line in report_eval(RunDir(Path(target)), result.tasks):
            print(f"warning: {line}", file=sys.stderr)
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
        return
    Console(highlight=False).print(results_table(result))
    if result.path is not None:
        print(f"wrote {result.path}", file=sys.stderr)


def _own_data(
    target: str,
    *,
    data: str | None,
    limit: int | None,
    device: str,
    checkpoint: StepCheckpoint | None,
    as_json: bool,
) -> None:
    """Score base vs fine-tuned on the run's data; merge into eval/results.json (or results-limit-N.json)."""
    from rich.console import Console

    from tunewiz.inference.own_data import evaluate_own_data, own_data_table, write_own_data

    err = Console(stderr=True, highlight=False)
    last = [0.0]

    def progress(phase: str, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if done == total or now - last[0] >= 2.0:
            last[0] = now
            print(f"eval: {phase} model {done}/{total} (loss, then generations)", file=sys.stderr, flush=True)

    result = evaluate_own_data(
        target, data=data, limit=limit, device=device, progress=progress, checkpoint=checkpoint
    )
    path = write_own_data(Path(target), result, limit=limit, checkpoint=checkpoint)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(own_data_table(result))
    err.print(f"wrote {path}", markup=False)


def _has_shipped_task(target: str) -> bool:
    """A run trained on a shipped sample whose lm-eval task tunewiz ships (``tunewiz:story-qa``): no
    ``--tasks`` keeps evaluating it on that task, as before; other runs are scored on their own data."""
    from tunewiz.errors import TunewizError
    from tunewiz.inference.evaluate import default_tasks

    try:
        default_tasks(target)
    except TunewizError:
        return False
    return True
