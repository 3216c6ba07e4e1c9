"""`tunewiz train PRESET`: resolve the preset, launch the recipe under torchrun, show the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

_LAUNCH = "Launch"


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        epilog="Example: `tunewiz train presets/tiny-lora.yaml --set train.lr=1e-4 --nproc-per-node 2`",
    )(train)


def topology_options() -> dict[str, Any]:
    """torchrun placement flags, the same for `train` and `resume`."""
    return dict(
        nproc_per_node=typer.Option(
            1, "--nproc-per-node", min=1, help="Processes (GPUs) on this node.", rich_help_panel=_LAUNCH
        ),
        nnodes=typer.Option(1, "--nnodes", min=1, help="Number of nodes.", rich_help_panel=_LAUNCH),
        node_rank=typer.Option(
            0, "--node-rank", min=0, help="This node's rank (0..nnodes-1).", rich_help_panel=_LAUNCH
        ),
        rdzv_endpoint=typer.Option(
            None, "--rdzv-endpoint", help="HOST:PORT of node 0, for several nodes.", rich_help_panel=_LAUNCH
        ),
        rdzv_id=typer.Option(
            None,
            "--rdzv-id",
            help="Rendezvous id, the same on every node (default: the preset's `name`).",
            rich_help_panel=_LAUNCH,
        ),
        rdzv_timeout=typer.Option(
            600,
            "--rdzv-timeout",
            min=1,
            help="Seconds a node waits for all `--nnodes` to join before giving up.",
            rich_help_panel=_LAUNCH,
        ),
        no_tui=typer.Option(
            False, "--no-tui", help="Plain log lines instead of the live dashboard.", rich_help_panel=_LAUNCH
        ),
        detach=typer.Option(
            False,
            "--detach",
            help="Run in the background, outliving this terminal; follow it with `tunewiz watch RUN`, "
            "stop it with `tunewiz stop RUN`.",
            rich_help_panel=_LAUNCH,
        ),
    )


_T = topology_options()


def train(
    preset: str = typer.Argument(
        ..., help="Preset YAML file, or a shipped preset name (`tunewiz presets list`)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a preset value: `--set train.lr=1e-4` (repeatable)."
    ),
    device: str = typer.Option(None, "--device", help="cpu, cuda or auto (overrides the preset's `device`)."),
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
    nproc_per_node: int = _T["nproc_per_node"],
    nnodes: int = _T["nnodes"],
    node_rank: int = _T["node_rank"],
    rdzv_endpoint: str = _T["rdzv_endpoint"],
    rdzv_id: str = _T["rdzv_id"],
    rdzv_timeout: int = _T["rdzv_timeout"],
    no_tui: bool = _T["no_tui"],
    detach: bool = _T["detach"],
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
    from tunewiz.train.distributed import resolve_device
    from tunewiz.train.launcher import (
        Topology,
        announce_nodes,
        lock_run,
        preflight,
        prepare_run_dir,
        start_run,
        torchrun_command,
    )
    from tunewiz.train.rendezvous import default_rdzv_id

    overrides = list(set_) + ([f"device={device}"] if device else [])
    if report_to is not None:
        overrides.append(f"output.report_to={'[]' if report_to.strip() in ('', 'none') else report_to}")
    resolved, _ = load_preset(preset, overrides)
    rdzv = rdzv_id or default_rdzv_id(resolved.name)
    topology = Topology(nproc_per_node, nnodes, node_rank, rdzv_endpoint, rdzv, rdzv_timeout)
    topology.check(resolve_device(resolved.device))
    preflight(resolved)
    if dry_run:
        run = RunDir(run_dir or Path("runs") / resolved.name)
        typer.echo(dump_preset(resolved))
        typer.echo(shlex.join(torchrun_command(run, topology)))
        return
    run = RunDir(run_dir or Path("runs") / resolved.name)
    lock = lock_run(run, topology, command=shlex.join(["tunewiz", *sys.argv[1:]]), doing="train into it")
    try:
        if lock is not None:
            run = prepare_run_dir(resolved, run.path, overwrite=overwrite)
            write_run_plan(resolved, run, world_size=nproc_per_node * nnodes)
        elif not run.config.is_file():  # a joining node leaves the directory to the node holding it
            atomic_write_text(run.config, dump_preset(resolved))
        announce_nodes(topology, sys.argv[1:])
        argv = torchrun_command(run, topology)
        code = start_run(run, argv, lock, no_tui=no_tui, detach=detach, topology=topology)
    finally:
        if lock is not None:
            lock.release()
    raise typer.Exit(code)
