"""`tunewiz download REPO_ID`: fetch a base model's safetensors, config and tokenizer from the Hub."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(
        "download",
        epilog="Example: `tunewiz download HuggingFaceTB/SmolLM2-135M-Instruct`, then `model: {path: "
        "HuggingFaceTB/SmolLM2-135M-Instruct}` in a preset.",
    )(download)


def download(
    repo_id: str = typer.Argument(
        ..., help="Hub model id (`org/name`) or a catalog short name (`smollm2-135m`)."
    ),
    revision: str = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
    output_dir: Path = typer.Option(
        None, "--output-dir", help="Put the files in this directory instead of the Hugging Face cache."
    ),
) -> None:
    """Download a model for fine-tuning: safetensors weights, config.json, generation config, tokenizer.

    Pickled .bin/.pth files and `original/` are skipped. The free disk space is checked first. By
    default the files go to the Hugging Face cache, where a preset's `model.path: org/name` finds
    them, offline too. The directory is printed on stdout.
    """
    import sys

    from tunewiz.hub import DownloadPlan, download_model

    def announce(plan: DownloadPlan) -> None:
        size = (
            f"{plan.total_bytes / 1e9:.2f} GB"
            if plan.total_bytes >= 1e8
            else f"{plan.total_bytes / 1e6:.1f} MB"
        )
        print(f"{plan.repo_id} @ {plan.commit[:12]}: {len(plan.files)} files, {size}", file=sys.stderr)

    result = download_model(repo_id, revision=revision, output_dir=output_dir, on_plan=announce)
    if result.offline:
        print(f"offline (`HF_HUB_OFFLINE`): `{result.repo_id}` is already in the cache", file=sys.stderr)
    reference = str(result.path) if output_dir is not None else result.repo_id
    print(f"ready: use it in a preset as `model: {{path: {reference}}}`", file=sys.stderr)
    typer.echo(str(result.path))
