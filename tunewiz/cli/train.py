"""`tunewiz train PRESET`: resolve the preset, launch the recipe under torchrun, show the run."""

from __future__ import annotations

from pathlib import Path

import typer

from tunewiz.cli.options import (
    DetachOpt,
    DeviceOverrideOpt,
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
        "train",
        epilog="Example: `tunewiz train presets/tiny-lora.yaml --set train.lr=1e-4 --nproc-per-node 2`",
    )(train)


def train(
    preset: str = typer.Argument(
        ..., help="Preset YAML file, or a shipped preset name (`tunewiz presets list`)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a preset value: `--set train.lr=1e-4` (repeatable)."
    ),
    device: DeviceOverrideOpt = None,
    run_dir: Path = typer.Option(None, "--run-dir", help="Run directory (default: runs/<preset name>)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an existing run directory of the same name first."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the torchrun command and the resolved preset; launch nothing."
    ),
    report_to: str = typer.Option(
        None,
        "--report-to",
        help="Experiment trackers for this run, comma-separated: tensorboard,mlflow,wandb (`none`: none); "
        "sets `output.report_to`. Needs `pip install 'tunewiz[tracking]'`.",
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
    """Fine-tune a model as a preset describes, on this machine's GPUs (or CPU).

    Exit codes: 0 finished (or started with `--detach`), 130 stopped on request, 1 failed, 2 refused.
    """
    import shlex
    import sys

    from tunewiz.atomic import atomic_write_text
    from tunewiz.plan.runplan import write_run_plan
    from tunewiz.preset.files import dump_preset, load_preset
    from tunewiz.run.directory import RunDir
    from tunewiz.train.batch_shape import BatchShape, check_one_global_batch
    from tunewiz.train.detach import start_run
    from tunewiz.train.distributed import resolve_device
    from tunewiz.train.launcher import (
        Topology,
        announce_nodes,
        check_run_dir,
        lock_run,
        preflight,
        prepare_run_dir,
        torchrun_command,
        with_absolute_data_paths,
    )
    from tunewiz.train.rendezvous import default_rdzv_id
    from tunewiz.ui.data_phase import prepare_data
    from tunewiz.ui.live import choose_mode, open_screen

    overrides = list(set_) + ([f"device={device}"] if device else [])
    if report_to is not None:
        overrides.append(f"output.report_to={'[]' if report_to.strip() in ('', 'none') else report_to}")
    resolved, _ = load_preset(preset, overrides)
    rdzv = rdzv_id or default_rdzv_id(resolved.name)
    topology = Topology(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv, rdzv_timeout)
    topology.check(resolve_device(resolved.device))
    preflight(resolved)
    resolved = with_absolute_data_paths(resolved)  # config.yaml: resume finds the data from anywhere
    if dry_run:
        run = RunDir(run_dir or Path("runs") / resolved.name)
        typer.echo(dump_preset(resolved))
        typer.echo(shlex.join(torchrun_command(run, topology)))
        return
    run = RunDir(run_dir or Path("runs") / resolved.name)
    # Before the data phase, so a refused launch costs no data preparation (several nodes: the lock decides).
    if nnodes == 1:
        check_run_dir(run, overwrite=overwrite)
    mode = choose_mode(no_tui)
    # In a terminal the dashboard opens now and shows the data phase, then the run (one node, attached).
    with open_screen(run.path.name, live=mode == "tui" and not detach and nnodes == 1) as screen:
        # The data phase: every data error shows here, before a run directory or a rank exists; the
        # ranks then map the prepared entry (tunewiz.data.prepared).
        prepared = prepare_data(resolved, mode=mode, screen=screen)
        world_size = nproc_per_node * nnodes
        train_cfg = resolved.train
        check_one_global_batch(
            len(prepared.train), BatchShape(train_cfg.micro_batch_size, train_cfg.grad_accum, world_size)
        )
        lock = lock_run(run, topology, command=shlex.join(["tunewiz", *sys.argv[1:]]), doing="train into it")
        try:
            if lock is not None:
                run = prepare_run_dir(resolved, run.path, overwrite=overwrite)
                write_run_plan(resolved, run, world_size=world_size)
            elif not run.config.is_file():  # a joining node leaves the directory to the node holding it
                atomic_write_text(run.config, dump_preset(resolved))
            announce_nodes(topology, sys.argv[1:])
            argv = torchrun_command(run, topology)
            code = start_run(run, argv, lock, no_tui=no_tui, detach=detach, topology=topology, screen=screen)
        finally:
            if lock is not None:
                lock.release()
    raise typer.Exit(code)
