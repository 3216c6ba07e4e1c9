"""Options that several commands share, declared once as typed ``Annotated`` aliases, so that every
command's help says the same thing (huggingface_hub's CLI declares ``TokenOpt`` the same way).

A command takes one as ``device: DeviceOpt = "auto"``; the default stays with the command. Only
typer is imported here: this module is on `tunewiz --help`'s import path.
"""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

HARDWARE_PANEL = "Hardware (default: this machine)"
LAUNCH_PANEL = "Launch"
MODEL_PANEL = "Model"

DEVICE_HELP = "Where to run: auto (CUDA when available), cpu or cuda."

# `chat`, `eval`: where the model runs.
DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP, rich_help_panel=MODEL_PANEL)]
# `chat`, `eval`, `push`, `export`: which of a run's weights to read (resolved by
# tunewiz.inference.load.resolve_from).
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="CHECKPOINT",
        help="Read the run's step checkpoint `step-N` (`latest`: the newest) instead of its final weights "
        "(`final`, the default).",
        rich_help_panel=MODEL_PANEL,
    ),
]

# `train`: the same choice, given on the command line instead of the preset's `device`.
DeviceOverrideOpt = Annotated[
    str | None,
    typer.Option(
        "--device", help=DEVICE_HELP + " Overrides the preset's `device`.", rich_help_panel=LAUNCH_PANEL
    ),
]

# `plan`, `init`: the machine to plan for, when it is not this one.
GpusOpt = Annotated[
    int | None,
    typer.Option("--gpus", min=0, help="Plan for N GPUs (0: CPU).", rich_help_panel=HARDWARE_PANEL),
]
GpuMemoryOpt = Annotated[
    str | None,
    typer.Option("--gpu-memory", help="Per-GPU memory: 24GB, 24GiB or 24.", rich_help_panel=HARDWARE_PANEL),
]

# `train`, `resume`: torchrun's placement, and how the run is shown.
NprocPerNodeOpt = Annotated[
    int,
    typer.Option(
        "--nproc-per-node", min=1, help="Processes (GPUs) on this node.", rich_help_panel=LAUNCH_PANEL
    ),
]
NnodesOpt = Annotated[
    int, typer.Option("--nnodes", min=1, help="Number of nodes.", rich_help_panel=LAUNCH_PANEL)
]
NodeRankOpt = Annotated[
    int,
    typer.Option("--node-rank", min=0, help="This node's rank (0..nnodes-1).", rich_help_panel=LAUNCH_PANEL),
]
RdzvEndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--rdzv-endpoint", help="HOST:PORT of node 0, for several nodes.", rich_help_panel=LAUNCH_PANEL
    ),
]
RdzvIdOpt = Annotated[
    str | None,
    typer.Option(
        "--rdzv-id",
        help="Rendezvous id, the same on every node (default: the preset's `name`).",
        rich_help_panel=LAUNCH_PANEL,
    ),
]
RdzvTimeoutOpt = Annotated[
    int,
    typer.Option(
        "--rdzv-timeout",
        min=1,
        help="Seconds a node waits for all `--nnodes` to join before giving up.",
        rich_help_panel=LAUNCH_PANEL,
    ),
]
NoTuiOpt = Annotated[
    bool,
    typer.Option(
        "--no-tui", help="Plain log lines instead of the live dashboard.", rich_help_panel=LAUNCH_PANEL
    ),
]
DetachOpt = Annotated[
    bool,
    typer.Option(
        "--detach",
        help="Run in the background, outliving this terminal; follow it with `tunewiz watch RUN`, "
        "stop it with `tunewiz stop RUN`.",
        rich_help_panel=LAUNCH_PANEL,
    ),
]


def typed_command(ctx: typer.Context, *, leave_out: str = "from_") -> str:
    """The command as the user typed it, for a hint that repeats it with one option changed.

    ``tunewiz``, the command, its arguments, then every option given on the command line (options left
    at their defaults are not repeated), shell-quoted so that it can be pasted back. Options come in the
    order the command declares them, each under its long name; the one named ``leave_out`` is left out,
    for the hint to add its own value (``resolve_from`` adds ``--from step-N``).

    Args:
        ctx: the running command's context (a ``ctx: typer.Context`` parameter of the command).
        leave_out: the parameter name (the Python one, e.g. ``from_``) to leave out.
    """
    words = ["tunewiz", *ctx.command_path.split()[1:]]
    options: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if param.name == leave_out or source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        values = list(value) if getattr(param, "multiple", False) else [value]
        if param.param_type_name == "argument":
            words += [str(v) for v in values]
        elif getattr(param, "is_flag", False):
            options.append(
                _long(param.opts) if value or not param.secondary_opts else _long(param.secondary_opts)
            )
        else:
            for v in values:
                options += [_long(param.opts), str(v)]
    return shlex.join(words + options)


def _long(names: list[str]) -> str:
    """An option's long spelling (``--limit`` rather than ``-l``)."""
    return next((name for name in names if name.startswith("--")), names[0])
