"""`tunewiz chat TARGET`: talk to a fine-tuned model in the terminal, or answer one prompt for a script."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunewiz.cli.options import DeviceOpt, FromOpt, typed_command
from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console, RenderableType

    from tunewiz.inference.load import ChatSession

_SAMPLING = "Sampling"
_MODEL = "Model"
_WEB = "Web page (--web)"
COMMANDS = "/help  /reset  /system TEXT  /save FILE  /quit"
HELP = """\
/help         this list
/reset        clear the conversation (keeps the system prompt)
/system TEXT  set the system prompt (no TEXT: remove it) and clear the conversation
/save FILE    write the conversation as JSON
/quit         leave (also /exit, Ctrl-D)
Several lines as one turn: end a line with `\\` to continue it, or put the text between two
lines of `\"\"\"` (paste a story, then ask about it). Ctrl-C stops a reply."""
BLOCK = '"""'


def read_turn(read_line: Callable[[str], str]) -> str:
    """Read one user turn, which may span several lines.

    A line ending in ``\\`` continues on the next line; a line that is just ``\"\"\"`` opens a block
    that runs to the next such line (text after the opening marker is kept). Lines are joined with
    newlines and the turn is stripped.

    Args:
        read_line: ``input``-like: takes the prompt to show, returns a line; raises EOFError at the end.

    Raises:
        EOFError: input ended before the first line (an unfinished block or continuation is returned).
    """
    line = read_line("you> ")
    if line.strip().startswith(BLOCK):
        first = line.strip()[len(BLOCK) :]
        if first.endswith(BLOCK):  # opened and closed on one line
            return first[: -len(BLOCK)].strip()
        lines = [first]
        while True:
            try:
                line = read_line("... ")
            except EOFError:
                break
            if line.strip().endswith(BLOCK):
                lines.append(line.rstrip()[: -len(BLOCK)])
                break
            lines.append(line)
        return "\n".join(lines).strip()
    lines = []
    while line.rstrip().endswith("\\"):
        lines.append(line.rstrip()[:-1])
        try:
            line = read_line("... ")
        except EOFError:
            line = ""
            break
    lines.append(line)
    return "\n".join(lines).strip()


def register(app: typer.Typer) -> None:
    app.command(
        "chat",
        epilog="Examples: `tunewiz chat runs/tiny-lora` · `tunewiz chat runs/tiny-lora --prompt "
        '"Who found the key?"` '
        '· `echo "Hi" | tunewiz chat tunewiz:tiny` · `tunewiz chat runs/tiny-lora --compare-base`',
    )(chat)


def chat(
    ctx: typer.Context,
    target: str = typer.Argument(
        ..., help="A run directory, a model directory, `tunewiz:NAME`, or a Hub id in the local cache."
    ),
    adapter: Path = typer.Option(
        None, "--adapter", help="A PEFT LoRA adapter directory to apply.", rich_help_panel=_MODEL
    ),
    device: DeviceOpt = "auto",
    from_: FromOpt = None,
    prompt: str = typer.Option(
        None,
        "--prompt",
        help="Answer this one prompt on stdout and exit (stdin that is not a terminal does the same).",
    ),
    system: str = typer.Option(None, "--system", help="System prompt."),
    compare_base: bool = typer.Option(
        False, "--compare-base", help="Also answer with the adapter switched off, side by side."
    ),
    temperature: float = typer.Option(
        0.0, "--temperature", help="0 = greedy (reproducible); e.g. 0.7 to sample.", rich_help_panel=_SAMPLING
    ),
    top_p: float = typer.Option(
        1.0, "--top-p", help="Nucleus sampling mass in (0, 1]; 1 = off.", rich_help_panel=_SAMPLING
    ),
    top_k: int = typer.Option(
        0, "--top-k", help="Sample among the k most likely tokens; 0 = off.", rich_help_panel=_SAMPLING
    ),
    max_new_tokens: int = typer.Option(
        256, "--max-new-tokens", help="Longest reply, in tokens.", rich_help_panel=_SAMPLING
    ),
    repetition_penalty: float = typer.Option(
        1.0, "--repetition-penalty", help="> 1 discourages repeats; 1 = off.", rich_help_panel=_SAMPLING
    ),
    seed: int = typer.Option(
        None, "--seed", help="Seed for sampling, for reproducible replies.", rich_help_panel=_SAMPLING
    ),
    web: bool = typer.Option(
        False,
        "--web",
        help="Serve a chat page in the browser (Gradio; `pip install 'tunewiz[web]'`) instead of the "
        "terminal chat.",
        rich_help_panel=_WEB,
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address the page listens on; 0.0.0.0 lets other machines in (anyone with the address).",
        rich_help_panel=_WEB,
    ),
    port: int = typer.Option(7860, "--port", help="TCP port of the page.", rich_help_panel=_WEB),
    share: bool = typer.Option(
        False,
        "--share",
        help="Also open a public Gradio share link (anyone with it can chat).",
        rich_help_panel=_WEB,
    ),
) -> None:
    """Chat with a model: streaming replies, its chat template, multi-turn.

    In a chat, `/help` lists the commands; end a line with a backslash to go on, or paste several lines
    between two lines of three double quotes. With `--web`, the same model in a browser page.
    """
    from rich.console import Console

    from tunewiz.inference.load import resolve_from

    checkpoint = resolve_from(target, from_, command=typed_command(ctx))
    if web:
        _web(
            target,
            adapter=adapter,
            checkpoint=checkpoint,
            device=device,
            system=system,
            host=host,
            port=port,
            share=share,
        )
        return

    from tunewiz.inference.generate import SamplingParams
    from tunewiz.inference.load import ChatSession, load_for_inference, prompt_builder_for

    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )
    one_shot = prompt is not None or not sys.stdin.isatty()
    if one_shot:
        prompt = prompt if prompt is not None else sys.stdin.read()
        if not prompt.strip():
            raise TunewizError(
                "the prompt is empty" + ("" if "--prompt" in sys.argv else " (nothing on stdin)"),
                hint='pass `--prompt TEXT`, pipe text in (`echo "Hi" | tunewiz chat ...`), or run '
                "in a terminal",
            )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with err.status(f"loading {target}"):
        loaded = load_for_inference(target, adapter=adapter, device=device, checkpoint=checkpoint)
    if compare_base and not loaded.has_adapter:
        raise TunewizError(
            f"--compare-base needs a LoRA adapter, and {loaded.description} has none",
            hint="point at a LoRA run directory, or add `--adapter DIR`",
        )
    prompts, warning = prompt_builder_for(target, loaded.tokenizer)
    if warning:
        err.print(f"warning: {warning}", markup=False)
    err.print(f"{loaded.description} on {loaded.device.type} ({str(loaded.dtype).removeprefix('torch.')})")
    session = ChatSession(loaded, prompts, params, system=system)
    if one_shot:
        _answer_once(session, prompt.strip(), compare_base, Console(highlight=False))
    else:
        _interactive(session, compare_base, Console(highlight=False))


def _answer_once(session: ChatSession, text: str, compare_base: bool, console: Console) -> None:
    if not compare_base:
        _stream(session, text)
        return
    base, tuned = _both_answers(session, text)
    if console.is_terminal:
        console.print(render_comparison(base, tuned))
    else:
        print(f"--- base model (adapter off) ---\n{base}\n\n--- fine-tuned ---\n{tuned}")


def _stream(session: ChatSession, text: str) -> None:
    for piece in session.reply(text):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def _both_answers(session: ChatSession, text: str) -> tuple[str, str]:
    from tunewiz.inference.load import base_model_only

    with base_model_only(session.loaded):
        base = "".join(session.reply(text, record=False))
    return base, "".join(session.reply(text))


def render_comparison(base: str, tuned: str) -> RenderableType:
    """Two panels side by side: the base model's answer and the fine-tuned one's.

    Args:
        base: the answer with the adapter switched off.
        tuned: the answer with the adapter.
    """
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.text import Text

    return Columns(
        [
            Panel(Text(base), title="base model (adapter off)", border_style="dim"),
            Panel(Text(tuned), title="fine-tuned", border_style="green"),
        ],
        equal=True,
        expand=True,
    )


def _interactive(session: ChatSession, compare_base: bool, console: Console) -> None:
    import readline  # noqa: F401  (line editing and history for input())

    console.print(
        f"Chatting with {session.loaded.description}. Commands: {COMMANDS}", style="dim", markup=False
    )
    while True:
        try:
            line = read_turn(input)
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line:
            continue
        if line.startswith("/"):
            if not _command(session, line, console):
                return
            continue
        try:
            if compare_base:
                console.print(render_comparison(*_both_answers(session, line)))
            else:
                sys.stdout.write("model> ")
                _stream(session, line)
        except KeyboardInterrupt:
            console.print("\n[stopped; this turn is not kept]", style="dim")
        except TunewizError as exc:
            console.print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), markup=False)


def _command(session: ChatSession, line: str, console: Console) -> bool:
    """Run one slash command; False means quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        console.print(HELP, markup=False, highlight=False)
    elif name == "/reset":
        session.reset()
        console.print("(conversation cleared)", style="dim")
    elif name == "/system":
        session.system = arg or None
        session.reset()
        console.print(f"(system prompt {'set' if arg else 'removed'}; conversation cleared)", style="dim")
    elif name == "/save" and arg:
        session.save(Path(arg).expanduser())
        console.print(f"(saved to {arg})", style="dim", markup=False)
    else:
        console.print(f"unknown command `{line}`; commands: {COMMANDS}", style="dim", markup=False)
    return True


def _web(target: str, **options: object) -> None:
    try:
        from tunewiz.inference.web import launch_web_chat
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("gradio"):
            raise
        raise TunewizError(
            "`--web` needs gradio, which is not installed", hint="install it: `pip install 'tunewiz[web]'`"
        ) from None
    launch_web_chat(target, say=lambda line: print(line, file=sys.stderr, flush=True), **options)  # type: ignore[arg-type]
