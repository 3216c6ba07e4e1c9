"""`tunewiz plan PRESET | --model M`: the memory breakdown, the verdict and the reasons."""

from __future__ import annotations

import json

import typer

from tunewiz.cli.options import GpuMemoryOpt, GpusOpt

_RUN = "Run (default: a preset's values, else chosen to fit)"


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    preset: str | None = typer.Argument(None, help="Preset file or shipped preset name."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Catalog name, Hub id or local model directory."
    ),
    method: str | None = typer.Option(None, "--method", help="lora, qlora or full.", rich_help_panel=_RUN),
    micro_batch: int | None = typer.Option(
        None, "--micro-batch", min=1, help="Sequences per device per forward pass.", rich_help_panel=_RUN
    ),
    seq_len: int | None = typer.Option(None, "--seq-len", min=16, help="max_seq_len.", rich_help_panel=_RUN),
    rank: int | None = typer.Option(None, "--rank", min=1, help="LoRA rank.", rich_help_panel=_RUN),
    checkpointing: bool | None = typer.Option(
        None,
        "--checkpointing/--no-checkpointing",
        help="Activation checkpointing: recompute activations in backward to save memory "
        "(default: if needed).",
        rich_help_panel=_RUN,
    ),
    global_batch: int | None = typer.Option(
        None, "--global-batch", min=1, help="Sequences per optimizer step.", rich_help_panel=_RUN
    ),
    gpus: GpusOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (for scripts)."),
    list_models: bool = typer.Option(
        False,
        "--list-models",
        help="List the catalog with each model's fit verdict on the machine; exit.",
    ),
) -> None:
    """Predict peak memory per device, say whether it fits, and what would.

    Example: `tunewiz plan --model llama-3.1-8b --gpus 1 --gpu-memory 24GB`
    """
    from tunewiz.plan.recommend import recommend
    from tunewiz.plan.request import build_request

    if list_models:
        _print_catalog(as_json, method, seq_len, micro_batch, gpus, gpu_memory)
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


def _print_catalog(
    as_json: bool,
    method: str | None,
    seq_len: int | None,
    micro_batch: int | None,
    gpus: int | None,
    gpu_memory: str | None,
) -> None:
    from tunewiz.models.catalog import catalog_models
    from tunewiz.plan.fit_table import MEMORY_COLUMN, fit_line, model_fits
    from tunewiz.plan.recommend import PlanRequest
    from tunewiz.plan.request import machine_for

    machine = machine_for(gpus, gpu_memory)
    request = PlanRequest(method=method, seq_len=seq_len, micro_batch=micro_batch)
    listed = model_fits(machine, catalog_models(), request)
    if as_json:
        rows = [
            {
                "name": m.name,
                "repo_id": m.repo_id,
                "params": m.params,
                "license": m.license,
                "gated": m.gated,
                "chat_template": m.chat_template,
                "max_context": m.max_context,
                "verdict": rec.verdict.kind,
                "savers": list(rec.plan.inputs.savers) if rec.fits else [],
                "method": rec.plan.inputs.method,
                "micro_batch": rec.plan.inputs.micro_batch,
                "peak_bytes": rec.plan.peak,
            }
            for m, rec in listed
        ]
        typer.echo(json.dumps({"machine": machine.name, "models": rows}, indent=2))
        return
    typer.echo(f"fit verdicts for {machine.name} ({MEMORY_COLUMN}):")
    for m, rec in listed:
        typer.echo(f"{fit_line(m, rec)}  {m.repo_id}")
