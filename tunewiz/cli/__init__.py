"""The `tunewiz` command line: a thin Typer layer, one module per command.

Command modules import only typer/rich at module level; torch, datasets and lm_eval are imported
inside the library functions they call, so `tunewiz --help` stays fast.
"""

from __future__ import annotations

import inspect
import os
import re
import sys

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from tunewiz import __version__
from tunewiz.errors import TunewizError

app = typer.Typer(
    name="tunewiz",
    help="Fine-tune open LLMs with LoRA or full fine-tuning, planned to fit in your GPU's memory.\n\n"
    "Start with `tunewiz init`, or run the demo: `tunewiz train presets/tiny-lora.yaml`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunewiz {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Fine-tune open LLMs with LoRA or full fine-tuning."""


def _register() -> None:
    # One line per command module; each module exposes `register(app)`.
    from tunewiz.cli import (  # hardware probe and memory planner
        cache,  # prepare data ahead; list/clear the prepared-data cache
        chat,  # KV-cache generation, streaming chat
        doctor,
        download,  # Hub download
        eval,  # lm-eval harness
        export,  # GGUF for llama.cpp / Ollama
        init,  # the wizard
        plan,
        presets,
        push,  # Hub push + model card
        resume,
        stop,  # stop a running run gracefully; unlock a dead one
        train,
        watch,
    )

    modules = (
        train,
        resume,
        watch,
        stop,
        cache,
        presets,
        doctor,
        plan,
        chat,
        download,
        push,
        eval,
        export,
        init,
    )
    for module in modules:
        module.register(app)
    app.info.cls = TunewizRoot
    _use_command_class(app)


def _show_how_to_type(params: list[typer.core.TyperOption | TyperArgument]) -> None:
    """Set the help metavars of ``params`` so help shows how to type each one.

    Typer writes every parameter's Python type (`--overwrite <bool>`, `--set <list[str]>`, `{preset}`);
    here a boolean flag shows no value (it takes none), `--set` shows `KEY=VALUE`, an integer shows
    `N`, and an argument shows its name in capitals (`PRESET`, `RUN_DIR`) in the usage line and the
    table alike.
    """
    for param in params:
        if param.metavar is not None:
            continue
        if isinstance(param, TyperArgument):
            param.metavar = (param.name or "").upper()
        elif getattr(param, "is_bool_flag", False):
            param.metavar = ""
        elif "--set" in param.opts:
            param.metavar = "KEY=VALUE"
        elif "int" in param.display_type(None):  # `<int range>` → `N`; the range still follows
            param.metavar = "N"


class _HelpAsWritten:
    """What Typer's help gets wrong, for commands and groups alike: how to type each parameter
    (:func:`_show_how_to_type`), `--help` shown without a value, a command's first paragraph on one line
    in its group's listing and each paragraph of its help wrapped to the terminal (Typer keeps the
    docstring's line breaks), and help texts shown as written (Typer reads them as Rich markup, so
    `pip install 'tunewiz[web]'` lost its `[web]`)."""

    params: list[typer.core.TyperOption | TyperArgument]
    help: str | None
    short_help: str | None
    epilog: str | None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        _show_how_to_type(self.params)
        if self.help and not self.short_help:
            self.short_help = " ".join(inspect.cleandoc(self.help).split("\n\n")[0].split())

    def get_help_option(self, ctx: typer.Context) -> typer.core.TyperOption | None:
        """The `--help` flag, shown without a value like every other flag."""
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option

    def format_help(self, ctx: typer.Context, formatter: object) -> None:
        """Typer's help, with every help text's paragraphs re-wrapped and square brackets shown as
        written (not read as Rich markup)."""
        from rich.markup import escape

        def as_written(text: str) -> str:
            paragraphs = inspect.cleandoc(text).split("\n\n")
            return escape("\n\n".join(" ".join(p.split()) for p in paragraphs))

        owners = [self, *self.params]
        written = [(o, o.help, getattr(o, "epilog", None)) for o in owners]
        for owner, text, epilog in written:
            owner.help = as_written(text) if text else text
            if epilog:
                owner.epilog = as_written(epilog)  # type: ignore[union-attr]
        try:
            super().format_help(ctx, formatter)  # type: ignore[misc]
        finally:
            for owner, text, epilog in written:
                owner.help = text
                if epilog:
                    owner.epilog = epilog  # type: ignore[union-attr]


class TunewizCommand(_HelpAsWritten, TyperCommand):
    """A Typer command whose help is as written (see :class:`_HelpAsWritten`)."""


class TunewizGroup(_HelpAsWritten, TyperGroup):
    """A Typer group (the root, `presets`) whose help is as written (see :class:`_HelpAsWritten`)."""


class TunewizRoot(TunewizGroup):
    """The `tunewiz` group. Its :meth:`main` is what the console script and ``CliRunner`` both run, so
    tests see what users see."""

    def invoke(self, ctx: typer.Context) -> object:
        """Run the command; Ctrl-C in it prints ``error: interrupted`` and exits 130 (Typer would turn
        it into a silent exit 130 before :meth:`main` sees it). A Ctrl-C during an import takes effect
        when the import is done (:func:`tunewiz.interrupts.interrupt_outside_imports`)."""
        from tunewiz.interrupts import ctrl_c_outside_imports

        try:
            with ctrl_c_outside_imports():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(130) from None

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: object,
    ) -> None:
        """Run the command line; exit with its code. Known failures become `error:`/`hint:` lines on
        stderr, never a traceback or Typer's boxed panel: usage mistakes (exit 2, Typer's did-you-mean
        kept in the hint), :class:`~tunewiz.errors.TunewizError` (its exit code), Ctrl-D at a prompt (1),
        Ctrl-C (130); anything else is one line (1), with the traceback under ``TUNEWIZ_DEBUG=1``.

        Args:
            args: the arguments (default: ``sys.argv[1:]``).
            prog_name: the name in usage lines (default ``tunewiz``).
            complete_var: Click's shell-completion variable.
            standalone_mode: ignored: the command line always exits like the console script.
            extra: passed to Click's context.
        """
        try:
            code = super().main(args, prog_name or "tunewiz", complete_var, standalone_mode=False, **extra)
        except typer.Abort:  # Ctrl-D at a prompt
            print_error("aborted")
            sys.exit(1)
        except typer.TyperException as exc:  # a usage mistake: Typer's UsageError and friends
            if type(exc).__name__ == "NoArgsIsHelpError":  # `tunewiz` alone: help already printed
                sys.exit(exc.exit_code)
            print_error(*usage_error_lines(exc, sys.argv[1:] if args is None else list(args)))
            sys.exit(exc.exit_code)
        except TunewizError as exc:
            print_error(exc.message, exc.hint)
            sys.exit(exc.exit_code)
        except Exception as exc:  # unknown failure: short by default, full with TUNEWIZ_DEBUG=1
            if os.environ.get("TUNEWIZ_DEBUG"):
                raise
            print_error(
                f"unexpected {type(exc).__name__}: {exc}",
                "run again with `TUNEWIZ_DEBUG=1` for the traceback, and report it",
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _use_command_class(typer_app: typer.Typer) -> None:
    """Make every command and sub-command of ``typer_app`` a :class:`TunewizCommand`."""
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = TunewizCommand
    for group in typer_app.registered_groups:
        if group.cls in (None, TyperGroup):
            group.cls = TunewizGroup
        if group.typer_instance is not None:
            group.typer_instance.info.cls = TunewizGroup
            _use_command_class(group.typer_instance)


_register()


def print_error(message: str, hint: str | None = None) -> None:
    """Print ``error: ...`` and ``hint: ...`` to stderr (readable without colour)."""
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def main() -> None:
    """Console entry point (see :meth:`TunewizRoot.main`)."""
    app(prog_name="tunewiz")


_BOOLEAN_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}
# Option names other tools use for what tunewiz calls otherwise: a did-you-mean by meaning, where spelling
# alone would suggest something unrelated (`--output` is closer to `--no-tui` than to `--run-dir`).
_OPTION_SYNONYMS = {
    "--output": "--run-dir",
    "--output-dir": "--run-dir",
    "--output_dir": "--run-dir",
    "--out": "--run-dir",
    "--outdir": "--run-dir",
    "--resume": "--from",
    "--checkpoint": "--from",
    "--repo": "--repo-id",
    "--hub-model-id": "--repo-id",
    "--override": "--set",
    "--config": "--set",
}


def usage_error_lines(exc: typer.TyperException, argv: list[str]) -> tuple[str, str]:
    """The ``error:`` and ``hint:`` lines for a usage mistake Typer reports (bad option, missing argument,
    unknown command, a value after a flag), keeping Typer's did-you-mean suggestion in the hint.

    Args:
        exc: Typer's exception.
        argv: the command line's arguments (after ``tunewiz``), to name the flag that was given a value.
    """
    message = exc.format_message().strip()
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "tunewiz"
    hint = f"see `{command} --help`"
    extra = re.match(r"Got unexpected extra argument(?:s|\(s\))? \((.+)\)", message)
    if extra:
        words = extra.group(1).split()
        flag = argv[argv.index(words[0], 1) - 1] if words[0] in argv[1:] else ""
        if words[0].lower() in _BOOLEAN_WORDS and flag.startswith("--"):  # `--overwrite true`
            return (
                f"`{flag}` is a flag and takes no value (got `{words[0]}`)",
                f"write `{flag}` alone to turn it on, and leave it out to keep it off",
            )
        return "unexpected extra argument " + " ".join(f"`{w}`" for w in words), hint
    unknown = re.match(r"No such option: (\S+)", message)
    options = {name for p in ctx.command.params for name in p.opts} if ctx is not None else set()
    if unknown and _OPTION_SYNONYMS.get(unknown.group(1).split("=")[0]) in options:
        meant = _OPTION_SYNONYMS[unknown.group(1).split("=")[0]]
        return f"no such option: {unknown.group(1)}", f"did you mean `{meant}`? See `{command} --help`"
    head, sep, tail = message.partition(" Did you mean ")
    if not sep:
        head, sep, tail = message.partition(" (Possible options: ")
    if sep:
        suggestions = tail.rstrip("?.)").replace("'", "")
        names = [s.strip() for s in suggestions.split(",") if s.strip()]
        if names and not names[0].startswith("-"):  # a sub-command: show the whole command
            names = [f"{command} {n}" for n in names]
        hint = "did you mean " + " or ".join(f"`{n}`" for n in names) + f"? See `{command} --help`"
        message = head.rstrip()
    upper = message.startswith("Missing argument")  # Typer names arguments by their lower-case id
    message = re.sub(r"'([^']+)'", lambda m: f"`{m.group(1).upper() if upper else m.group(1)}`", message)
    message = message.rstrip(".")
    return message[:1].lower() + message[1:], hint
