"""`tunewiz export RUN --format gguf`: the fine-tuned model as one GGUF file for llama.cpp, Ollama and
LM Studio, with an Ollama Modelfile beside it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from tunewiz.cli.options import FromOpt, typed_command
from tunewiz.errors import TunewizError

FORMATS = ("gguf",)
# Kept literal (not imported from tunewiz.export.gguf_file) so `tunewiz --help` imports nothing more.
QUANT_HELP = "f16, bf16, q8_0 (written directly), q4_k_m, q5_k_m, q6_k (through llama.cpp's quantizer)."


def register(app: typer.Typer) -> None:
    app.command(
        "export",
        epilog="Examples: `tunewiz export runs/tiny-lora` (GGUF, q8_0, into runs/tiny-lora/export/) "
        "· `tunewiz export runs/tiny-lora --quant q4_k_m --output ~/models/`",
    )(export)


def export(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A finished run directory, e.g. runs/tiny-lora."),
    format: str = typer.Option(
        "gguf", "--format", help="Output format: gguf (llama.cpp, Ollama, LM Studio; the default)."
    ),
    quant: str = typer.Option("q8_0", "--quant", help=QUANT_HELP),
    output: Path = typer.Option(
        None,
        "--output",
        metavar="FILE",
        help="The .gguf file to write, or a folder for it. Default: RUN/export/NAME.QUANT.gguf "
        "(RUN/export/step-N/ with `--from step-N`).",
    ),
    from_: FromOpt = None,
) -> None:
    """Write the merged fine-tuned model as GGUF (weights, tokenizer, the trained chat template) and an
    Ollama Modelfile, then print the commands that run it.

    An adapter-only `final/` is merged on the fly; QLoRA runs export the dequantized merged weights.
    """
    from tunewiz.export.gguf import export_gguf
    from tunewiz.inference.load import resolve_from

    if format.lower() not in FORMATS:
        raise TunewizError(
            f"--format `{format}` is not supported; tunewiz exports {', '.join(FORMATS)}",
            hint="use `--format gguf`; `final/` already holds Hugging Face safetensors for everything else",
        )
    checkpoint = resolve_from(run_dir, from_, command=typed_command(ctx))
    what = f"{run_dir} ({checkpoint.name})" if checkpoint else str(run_dir)
    print(f"exporting {what} as GGUF ({quant}) ...", file=sys.stderr)
    result = export_gguf(run_dir, quant=quant, output=output, checkpoint=checkpoint)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    size = result.path.stat().st_size
    print(
        f"wrote `{result.path}` ({size / 2**20:.1f} MiB, {result.quant}; weights: {result.source}; "
        f"chat template: {result.template}"
        + (f"; quantized with {result.quantizer}" if result.quantizer else "")
        + f") and `{result.modelfile}`",
        file=sys.stderr,
    )
    print("run it with:", file=sys.stderr)
    for command in result.commands:
        print(f"  {command}", file=sys.stderr)
    typer.echo(str(result.path))
