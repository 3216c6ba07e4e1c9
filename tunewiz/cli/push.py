"""`tunewiz push RUN_DIR --repo-id USER/NAME`: publish a run's adapter or merged model with a model card."""

from __future__ import annotations

from pathlib import Path

import typer

from tunewiz.cli.options import FromOpt, typed_command


def register(app: typer.Typer) -> None:
    app.command(
        "push",
        epilog="Example: `tunewiz push runs/tiny-lora --repo-id you/tiny-lora --dry-run` "
        "(look at runs/tiny-lora/push-dry-run/README.md), then drop `--dry-run`.",
    )(push)


def push(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A finished run directory, e.g. runs/tiny-lora."),
    repo_id: str = typer.Option(..., "--repo-id", help="The Hub repository: `USER/NAME` or `ORG/NAME`."),
    adapter: bool = typer.Option(
        False, "--adapter", help="Push the PEFT adapter (default when the run has one)."
    ),
    merged: bool = typer.Option(
        False, "--merged", help="Push the merged model (safetensors + config + tokenizer)."
    ),
    gguf: bool = typer.Option(
        False,
        "--gguf",
        help="Also upload RUN/export/'s GGUF files and Modelfile (exports a q8_0 one first if none).",
    ),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    license: str = typer.Option(
        None, "--license", help="License id for the card (default: the base model's)."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Write the folder that would be uploaded, model card included, to RUN/push-dry-run/ "
        "(RUN/push-dry-run-step-N/ with `--from step-N`; each dry run replaces its own); upload nothing.",
    ),
    dry_run_dir: Path = typer.Option(
        None,
        "--dry-run-dir",
        metavar="DIR",
        help="Write the dry run's folder to DIR (new or empty) instead; implies `--dry-run`.",
    ),
    from_: FromOpt = None,
) -> None:
    """Upload a run's LoRA adapter or merged model to the Hugging Face Hub, with a model card.

    The card carries the base model, data, hyperparameters, hardware, peak memory, throughput,
    eval results and the loss curve. The token comes from `HF_TOKEN` or `hf auth login`; it is
    never printed and never needed on the command line. With `--from step-N`, the step checkpoint's
    weights are published and the card says which step they are.
    """
    import sys

    from tunewiz.errors import TunewizError
    from tunewiz.hub import StagedFolder, push_run, stage_push
    from tunewiz.inference.load import resolve_from

    if adapter and merged:
        raise TunewizError(
            "`--adapter` and `--merged` exclude each other", hint="pick one (or neither for the default)"
        )
    kind = "adapter" if adapter else "merged" if merged else None
    checkpoint = resolve_from(run_dir, from_, command=typed_command(ctx))

    def report(staged: StagedFolder) -> None:
        for warning in staged.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{staged.kind}: {', '.join(staged.files)}", file=sys.stderr)

    if dry_run or dry_run_dir is not None:
        from tunewiz.run.directory import RunDir

        default = RunDir(run_dir).push_dry_run(step=checkpoint.step if checkpoint else None)
        staged = stage_push(
            run_dir,
            dry_run_dir if dry_run_dir is not None else default,
            repo_id=repo_id,
            kind=kind,
            license=license,
            gguf=gguf,
            checkpoint=checkpoint,
            replace=dry_run_dir is None,
        )
        report(staged)
        print(f"dry run: nothing uploaded; `{staged.path / 'README.md'}` is the model card", file=sys.stderr)
        typer.echo(str(staged.path))
        return
    url = push_run(
        run_dir,
        repo_id=repo_id,
        kind=kind,
        private=private,
        license=license,
        gguf=gguf,
        checkpoint=checkpoint,
        on_staged=report,
    )
    typer.echo(url)
