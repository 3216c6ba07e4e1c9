"""`tunewiz plan PRESET | --model M`: the memory breakdown, the verdict and the reasons."""

from __future__ import annotations

import json

import typer

_HW = "Hardware (default: this machine)"
_RUN = "Run (default: a preset's values, else chosen to fit)"


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    preset: str | None = typer.Argument(None, help="Preset file or shipped preset name."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Catalog name, Hub id or local model directory."
    ),
    method: str | None = typer.Option(None, "--method", help="lora, qlora or full.", rich_help_panel=_RUN),
    micro_batch: int | None = typer.Option(None, "--micro-batch", min=1, rich_help_panel=_RUN),
    seq_len: int | None = typer.Option(None, "--seq-len", min=16, help="max_seq_len.", rich_help_panel=_RUN),
    rank: int | None = typer.Option(None, "--rank", min=1, help="LoRA rank.", rich_help_panel=_RUN),
    checkpointing: bool | None = typer.Option(
        None, "--activation-checkpointing/--no-activation-checkpointing", rich_help_panel=_RUN
    ),
    global_batch: int | None = typer.Option(
        None, "--global-batch", min=1, help="Sequences per optimizer step.", rich_help_panel=_RUN
    ),
    gpus: int | None = typer.Option(
        None, "--gpus", min=0, help="Plan for N GPUs (0: CPU).", rich_help_panel=_HW
    ),
    gpu_memory: str | None = typer.Option(
        None, "--gpu-memory", help="Per-GPU memory: 24GB, 24GiB or 24.", rich_help_panel=_HW
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (for scripts)."),
    list_models: bool = typer.Option(False, "--list-models", help="List the model catalog and exit."),
) -> None:
    """Predict peak memory per device, say whether it fits, and what would.

    Example: `tunewiz plan --model llama-3.1-8b --gpus 1 --gpu-memory 24GB`
    """
    from tunewiz.plan.recommend import recommend
    from tunewiz.plan.request import build_request

    if list_models:
        _print_catalog(as_json)
        return
    request, catalog_model, machine = build_request(
        preset,
        model=model,
        method=method,
        micro_batch=micro_batch,
        seq_len=seq_len,
        rank=rank,
        checkpointing=checkpointing,
        global_batch=global_batch,
        gpus=gpus,
        gpu_memory=gpu_memory,
    )
    rec = recommend(machine, catalog_model, request=request)
    if as_json:
        typer.echo(json.dumps(rec.as_dict(), indent=2))
        return
    from rich.console import Console

    from tunewiz.plan.report import render_recommendation

    Console(highlight=False).print(render_recommendation(rec))


def _print_catalog(as_json: bool) -> None:
    from tunewiz.models.catalog import catalog_models, format_params

    models = catalog_models()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": m.name,
                        "repo_id": m.repo_id,
                        "params": m.params,
                        "license": m.license,
                        "gated": m.gated,
                        "chat_template": m.chat_template,
                        "max_context": m.max_context,
                    }
                    for m in models
                ],
                indent=2,
            )
        )
        return
    for m in models:
        gated = " (gated)" if m.gated else ""
        typer.echo(f"{m.name:26s} {format_params(m.params):>7s}  {m.repo_id}{gated}")
