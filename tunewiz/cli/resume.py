"""`tunewiz resume RUN_DIR`: continue a stopped or crashed run exactly where it stopped."""

from __future__ import annotations

from pathlib import Path

import typer

from tunewiz.cli.options import (
    DetachOpt,
    NnodesOpt,
    NodeRankOpt,
    NoTuiOpt,
    NprocPerNodeOpt,
    RdzvEndpointOpt,
    RdzvIdOpt,
    RdzvTimeoutOpt,
)


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
    nproc_per_node: NprocPerNodeOpt = 1,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    rdzv_endpoint: RdzvEndpointOpt = None,
    rdzv_id: RdzvIdOpt = None,
    rdzv_timeout: RdzvTimeoutOpt = 600,
    no_tui: NoTuiOpt = False,
    detach: DetachOpt = False,
) -> None:
    """Continue a run from its last complete checkpoint: same data position, optimizer, schedule and RNG.

    Exit codes: 0 finished (or started with `--detach`), 130 stopped on request, 1 failed, 2 refused.
    """
    import shlex
    import sys

    from tunewiz.atomic import atomic_write_text
    from tunewiz.errors import TunewizError
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.preset.files import dump_preset
    from tunewiz.run.directory import existing_run
    from tunewiz.train.checkpoint import check_whole
    from tunewiz.train.detach import start_run
    from tunewiz.train.distributed import resolve_device
    from tunewiz.train.launcher import (
        Topology,
        announce_nodes,
        check_mergeable,
        check_same_data,
        lock_run,
        recorded_name,
        run_prompt,
        torchrun_command,
    )
    from tunewiz.train.rendezvous import default_rdzv_id
    from tunewiz.train.resume import plan_resume
    from tunewiz.ui.data_phase import prepare_data
    from tunewiz.ui.live import choose_mode, open_screen

    run = existing_run(run_dir, "resume")
    rdzv = rdzv_id or default_rdzv_id(recorded_name(run))
    topology = Topology(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv, rdzv_timeout)
    # The lock first: a live run's checkpoints and final/ are still being written.
    lock = lock_run(run, topology, command=shlex.join(["tunewiz", *sys.argv[1:]]), doing="resume it")
    try:
        try:
            plan = plan_resume(run, from_step=from_, overrides=list(set_))
        except TunewizError as exc:
            if exc.exit_code == 0:  # a finished run: say so, it is not a failure
                typer.echo(f"{exc.message}\nhint: {exc.hint}")
                raise typer.Exit(0) from None
            raise
        topology.check(resolve_device(plan.preset.device))
        check_whole(plan.checkpoint, nnodes=topology.nnodes)  # no shards left on another node's disk
        model = plan.preset.model
        check_mergeable(plan.preset, resolve_model_dir(model.path, model.revision))
        typer.echo(f"resuming {run.path} from {plan.checkpoint.name}: {plan.total_hint}")
        for change in plan.changes:
            typer.echo(f"  changed {change}")
        if plan.changes and lock is not None:
            atomic_write_text(run.config, dump_preset(plan.preset))
        recorded, legacy = run_prompt(run)  # the ranks map what this finds or prepares
        mode = choose_mode(no_tui)
        # In a terminal the dashboard opens now and shows the data phase, then the run (one node, attached).
        with open_screen(run.path.name, live=mode == "tui" and not detach and nnodes == 1) as screen:
            prepared = prepare_data(plan.preset, mode=mode, prompt=recorded, legacy=legacy, screen=screen)
            check_same_data(run, prepared)
            argv = torchrun_command(run, topology, resume_from=plan.checkpoint)
            announce_nodes(topology, sys.argv[1:])
            code = start_run(run, argv, lock, no_tui=no_tui, detach=detach, topology=topology, screen=screen)
    finally:
        if lock is not None:
            lock.release()
    raise typer.Exit(code)
