"""`tunewiz eval TARGET`: lm-eval on a run (base + adapter, unmerged), a model or a cached Hub model."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunewiz.cli.options import DeviceOpt, FromOpt, typed_command

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.table import Table

    from tunewiz.inference.evaluate import EvalResult
    from tunewiz.inference.load import StepCheckpoint


PROGRESS_LINES = 10  # a phase's progress: a line at each tenth of its work, and one at its end
PROGRESS_QUIET_S = 30.0  # and one after this long without a line (slow models, long phases)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise typer.BadParameter(f"`{value}` is neither `auto` nor a positive integer", param_hint="--batch-size")


def results_table(result: EvalResult) -> Table:
    """One row per task and metric; with a base-model run, its value and the change too. A row's
    numbers share one format (:func:`tunewiz.units.shared_decimals`).

    Args:
        result: what :func:`tunewiz.inference.evaluate.run_eval` returned.
    """
    from rich.table import Table

    from tunewiz.units import shared_decimals

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
            base = result.base.get(task, {}).get(metric) if result.base is not None else None
            delta = value - base if value is not None and base is not None else None
            d = shared_decimals([value, stderr, base, delta])
            row = [task, metric, _fmt(value, d), _fmt(stderr, d)]
            if result.base is not None:
                row += [_fmt(base, d), "" if delta is None else f"{delta:+.{d}f}"]
            table.add_row(*row)
    return table


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def progress_lines(
    print_line: Callable[[str], None], clock: Callable[[], float] = time.monotonic
) -> Callable[[str, int, int], None]:
    """A ``progress(phase, done, total)`` callback that prints ``eval: PHASE done/total`` when ``done``
    reaches each tenth of ``total`` (every step when ``total`` is 10 or less) and at the end, so phases of
    the same size print the same lines however fast they run; also after ``PROGRESS_QUIET_S`` without a
    line, so a slow phase is never silent for long. ``done`` may advance by a whole batch at once; a call
    with ``done`` 0 (a phase starting) prints too.

    Args:
        print_line: where the lines go.
        clock: seconds, monotonic.
    """
    seen: dict[str, tuple[int, float]] = {}  # phase -> (done at the last call, time of its last line)

    def progress(phase: str, done: int, total: int) -> None:
        now = clock()
        before, printed = seen.get(phase, (0, now))
        if done < before:  # the phase runs again (a second model)
            before, printed = 0, now
        step = max(1, math.ceil(total / PROGRESS_LINES))
        due = (
            done == 0
            or done >= total > before
            or done // step > before // step
            or now - printed >= PROGRESS_QUIET_S
        )
        if due:
            print_line(f"eval: {phase} {done}/{total}")
        seen[phase] = (done, now if due else printed)

    return progress


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
        help="Evaluate only the first N documents of each task (own data: the first N samples); "
        "results go to `eval/results-limit-N.json`.",
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
    """Score a run on its own data (base vs fine-tuned), or on EleutherAI's lm-eval tasks.

    A run directory's results go to `RUN/eval/results.json`; with `--from step-N` to
    `results-step-N.json`, and `--limit M` adds `-limit-M` (`--from step-6 --limit 5`:
    `eval/results-step-6-limit-5.json`), so neither replaces the final weights' full evaluation. The
    file written is printed at the end.

    Example: `tunewiz eval runs/tiny-lora --compare-base`
    """
    from rich.console import Console

    from tunewiz.inference.evaluate import run_eval
    from tunewiz.inference.load import resolve_from

    if os.environ.get("TUNEWIZ_DEBUG"):  # lm-eval's notices and its prints (see evaluate._harness_quiet)
        logging.basicConfig(level=logging.INFO)
    else:  # lm-eval's progress bars and per-task notices would bury the table; ours are progress_lines
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
        progress=progress_lines(_stderr_line),
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
    result = evaluate_own_data(
        target,
        data=data,
        limit=limit,
        device=device,
        progress=progress_lines(_stderr_line),
        checkpoint=checkpoint,
    )
    path = write_own_data(Path(target), result, limit=limit, checkpoint=checkpoint)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(own_data_table(result))
    err.print(f"wrote {path}", markup=False)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
