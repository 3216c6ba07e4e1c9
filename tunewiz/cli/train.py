"""`tunewiz train PRESET`: resolve the preset, launch the recipe under torchrun, show the run."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(preset: str = typer.Argument(..., help="Preset YAML file.")) -> None:
    """Fine-tune a model as a preset describes."""
    raise NotImplementedError("wired up by the launcher change")
