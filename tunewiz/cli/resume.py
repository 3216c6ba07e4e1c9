"""`tunewiz resume RUN_DIR`: continue a stopped or crashed run exactly where it stopped."""

from __future__ import annotations

from pathlib import Path

import typer

from tunewiz.cli.train import topology_options

_T = topology_options()


def register(app: typer.Typer) -> None:
    app.command(
        "resume",
        epilog="Example: `tunewiz resume runs/tiny-lora --set train.micro_batch_size=2 --set "
        "train.grad_accum=2`",
    )(resume)


def resume(
    run_dir: Path = typer.Argument(..., help="The run directory to continue."),
    from_: str = typer.Option(
        None, "--from", help="Checkpoint to resume from, e.g. `step-40` (default: the newest complete one)."
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Change train.*, checkpoint.*, output.* or device: `--set train.micro_batch_size=2`.",
    ),
    nproc_per_node: int = _T["nproc_per_node"],
    nnodes: int = _T["nnodes"],
    node_rank: int = _T["node_rank"],
    rdzv_endpoint: str = _T["rdzv_endpoint"],
    no_tui: bool = _T["no_tui"],
) -> None:
    """Continue a run from its last complete checkpoint: same data position, optimizer, schedule and RNG."""
    from tunewiz.atomic import atomic_write_text
    from tunewiz.errors import TunewizError
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.preset.files import dump_preset
    from tunewiz.run.directory import RunDir
    from tunewiz.train.distributed import resolve_device
    from tunewiz.train.launcher import Topology, check_mergeable, launch, torchrun_command
    from tunewiz.train.resume import plan_resume
    from tunewiz.ui.live import choose_mode

    run = RunDir(run_dir)
    try:
        plan = plan_resume(run, from_step=from_, overrides=list(set_))
    except TunewizError as exc:
        if exc.exit_code == 0:  # a finished run: say so, it is not a failure
            typer.echo(f"{exc.message}\nhint: {exc.hint}")
            raise typer.Exit(0) from None
        raise
    topology = Topology(nproc_per_node, nnodes, node_rank, rdzv_endpoint)
    topology.check(resolve_device(plan.preset.device))
    model = plan.preset.model
    check_mergeable(plan.preset, resolve_model_dir(model.path, model.revision))
    typer.echo(f"resuming {run.path} from {plan.checkpoint.name}: {plan.total_hint}")
    for change in plan.changes:
        typer.echo(f"  changed {change}")
    if plan.changes:
        atomic_write_text(run.config, dump_preset(plan.preset))
    code = launch(
        run, torchrun_command(run, topology, resume_from=plan.checkpoint), tui=choose_mode(no_tui) == "tui"
    )
    raise typer.Exit(code)
