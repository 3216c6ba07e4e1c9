"""`tunewiz doctor [--json]`: what this machine can train with."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (for scripts)."),
    runs_dir: str = typer.Option(
        "runs", "--runs-dir", help="Where run directories go (its free disk is shown)."
    ),
) -> None:
    """Check GPUs, CUDA, host RAM, disk, Hub token and optional extras.

    Example: `tunewiz doctor --json | jq .gpus`
    """
    from rich.console import Console
    from rich.table import Table

    from tunewiz.plan.hardware import probe
    from tunewiz.units import GiB

    hw = probe(runs_dir)
    if as_json:
        typer.echo(json.dumps(hw.as_dict(), indent=2))
        return
    console = Console(highlight=False)
    if hw.gpus:
        table = Table(title="GPUs", title_justify="left")
        for column in ("#", "name", "total", "free", "compute", "bf16"):
            table.add_column(column)
        for g in hw.gpus:
            free = f"{g.free_memory / GiB:.1f} GiB" if g.free_memory is not None else "?"
            table.add_row(
                str(g.index),
                g.name,
                f"{g.total_memory / GiB:.1f} GiB",
                free,
                g.compute_capability,
                "yes" if g.bf16 else "no",
            )
        console.print(table)
    else:
        console.print(
            "[bold]no GPU found — tunewiz will train on CPU[/bold] (torch.cuda.is_available() is False)"
        )
    console.print(
        f"torch {hw.torch_version}, CUDA build {hw.cuda_version or 'none (CPU build)'}, "
        f"driver {hw.driver_version or 'unknown'}"
    )
    console.print(
        f"CPU: {hw.cpu_count} logical cores; RAM {hw.ram_total / GiB:.1f} GiB total, "
        f"{hw.ram_available / GiB:.1f} GiB available"
    )
    for path, free in hw.disks.items():
        console.print(f"disk: {free / GiB:.1f} GiB free at `{path}`")
    console.print(
        "Hugging Face token: "
        + (
            "configured"
            if hw.hub_token
            else "not configured (gated models such as Llama need `hf auth login`)"
        )
    )
    extras = ", ".join(
        f"{name} {version}" if version else f"{name} (not installed)" for name, version in hw.extras.items()
    )
    console.print(f"optional extras: {extras}")
    for note in hw.notes:
        console.print(f"note: {note}")
