"""`tunewiz presets list|show|copy`: browse the shipped presets and start your own from one.

Only typer is imported at module level; the preset library (pydantic, yaml) and rich load inside
the commands, so `tunewiz --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

presets_app = typer.Typer(
    name="presets",
    help="List, show and copy presets (the YAML files `tunewiz train` runs).",
    epilog="Example: `tunewiz presets copy tiny-lora my-run.yaml`, edit it, then "
    "`tunewiz train my-run.yaml`.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(presets_app, name="presets", rich_help_panel="Presets")


@presets_app.command(
    "list",
    epilog="Example: `tunewiz presets list`, then `tunewiz presets show tiny-lora`.",
)
def list_presets() -> None:
    """List the shipped presets: name, model, method and what each is for."""
    from rich.console import Console
    from rich.table import Table

    from tunewiz.errors import TunewizError
    from tunewiz.preset.files import header_comment, load_preset, preset_name, shipped_presets

    rows = []
    for path in shipped_presets():
        try:
            preset, _ = load_preset(str(path))
            model, method = preset.model.path, preset.method
        except TunewizError as exc:
            model, method = "-", f"invalid: {exc.message.splitlines()[0]}"
        rows.append((preset_name(path), model, method, header_comment(path)))
    if not rows:
        typer.echo("no shipped presets found", err=True)
        return
    console = Console()
    if not console.is_terminal:
        # Piped: one tab-separated row per preset, never wrapped, for scripts.
        for row in rows:
            typer.echo("\t".join(row))
        return
    table = Table("name", "model", "method", "about", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@presets_app.command(
    "show",
    epilog="Examples: `tunewiz presets show tiny-lora`; every key with its default and what it does: "
    "`tunewiz presets show tiny-lora --resolved --set train.lr=1e-4`.",
)
def show(
    name_or_path: str = typer.Argument(
        ..., metavar="NAME_OR_PATH", help="A shipped preset name or a YAML file."
    ),
    resolved: bool = typer.Option(
        False, "--resolved", help="Print the validated preset with every default filled in and documented."
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="Override a key before resolving (implies --resolved); repeatable.",
    ),
) -> None:
    """Print a preset's YAML, as written or resolved."""
    from tunewiz.preset.files import dump_preset, load_preset, resolve_preset_path

    if resolved or overrides:
        preset, _ = load_preset(name_or_path, overrides)
        typer.echo(dump_preset(preset), nl=False)
    else:
        typer.echo(resolve_preset_path(name_or_path).read_text(encoding="utf-8"), nl=False)


@presets_app.command(
    "copy",
    epilog="Example: `tunewiz presets copy tiny-lora my-run.yaml`, then `tunewiz train my-run.yaml`.",
)
def copy(
    name: str = typer.Argument(..., help="A shipped preset name (or a YAML file) to copy."),
    dest: Path = typer.Argument(..., help="File to write, or a directory to write NAME.yaml into."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite DEST if it exists."),
) -> None:
    """Copy a preset to a file you can edit."""
    from tunewiz.preset.files import copy_preset

    written = copy_preset(name, dest, force=force)
    typer.echo(f"wrote {written}; train it with: tunewiz train {written}", err=True)
