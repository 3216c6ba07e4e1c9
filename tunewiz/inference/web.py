"""`tunewiz chat RUN --web`: the fine-tuned model in a browser, through a Gradio page.

Two layers, so the conversation logic is tested without a browser and the page stays thin:

- :class:`WebChat` holds the loaded model (one copy: compare mode switches the LoRA adapter off and
  on between decoding steps, as ``--compare-base`` does) and turns a conversation into streamed
  replies through :class:`~tunewiz.inference.load.ChatSession`, so the web page builds prompts exactly
  as the terminal chat does.
- :func:`build_app` lays out the page (chat, system prompt, generation settings, stop / retry / undo /
  clear, compare mode, a panel describing the model) and wires the buttons to :class:`WebChat`.

Gradio is imported only here, and this module only for ``--web``; it comes with the ``web`` extra.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from tunewiz.errors import TunewizError
from tunewiz.inference.generate import SamplingParams
from tunewiz.inference.load import ChatSession, LoadedModel, StepCheckpoint, base_model_only

if TYPE_CHECKING:
    from tunewiz.text.prompt import PromptBuilder

TUNED, BASE = "tuned", "base"


@dataclass
class Turn:
    """One exchange: the user's message and each model's reply (``base`` only in compare mode)."""

    user: str
    tuned: str = ""
    base: str | None = None


@dataclass
class WebChat:
    """The models behind the page and how a conversation becomes streamed replies.

    Args:
        loaded: the fine-tuned model (with its adapter unmerged for LoRA runs).
        prompts: the prompt builder with the run's trained template and BOS rule.
        about: Markdown describing the model (base, method, steps, losses, eval results).
        base: for a full fine-tune, the base model loaded as a second model (None for LoRA runs,
            whose base is the same weights with the adapter switched off).
        compare_refusal: why compare mode is unavailable (None when it is available).
    """

    loaded: LoadedModel
    prompts: PromptBuilder
    about: str = ""
    base: LoadedModel | None = None
    compare_refusal: str | None = None
    # The stop flag of the generation running for each page session (Gradio's session hash).
    _stops: dict[str, threading.Event] = field(default_factory=dict, repr=False)

    def begin(self, session: str) -> threading.Event:
        """A fresh stop flag for the generation that starts now on page session ``session``; Stop sets it.

        Args:
            session: the page session's key (``gr.Request.session_hash``).
        """
        flag = threading.Event()
        self._stops[session] = flag
        return flag

    def stop(self, session: str) -> None:
        """Ask the generation running on page session ``session`` to end at its next token.

        The generator then returns by itself with its last update (the partial reply, kept as a turn),
        which frees the page's one-at-a-time queue at once. Cancelling the event from Gradio instead
        dropped updates the page state had not committed: the next reply could be numbered and built
        on a conversation without the stopped turn.

        Args:
            session: the page session's key (``gr.Request.session_hash``).
        """
        flag = self._stops.get(session)
        if flag is not None:
            flag.set()

    def end(self, session: str, flag: threading.Event) -> None:
        """Forget ``flag`` once its generation is over (a newer generation's flag stays)."""
        if self._stops.get(session) is flag:
            del self._stops[session]

    @property
    def can_compare(self) -> bool:
        """True when the base model can answer beside the fine-tuned one."""
        return self.compare_refusal is None

    def session(
        self, turns: list[Turn], side: str, system: str | None, params: SamplingParams
    ) -> ChatSession:
        """A chat session holding the earlier turns as ``side`` saw them.

        Args:
            turns: the conversation so far (the turn being answered not included).
            side: ``tuned`` or ``base``: whose replies make up the assistant turns.
            system: the system prompt, or None/"" for none.
            params: sampling settings for the reply.
        """
        loaded = self.base if side == BASE and self.base is not None else self.loaded
        session = ChatSession(loaded, self.prompts, params, system=system or None)
        for turn in turns:
            reply = turn.tuned if side == TUNED else (turn.base or "")
            session.messages += [
                {"role": "user", "content": turn.user},
                {"role": "assistant", "content": reply},
            ]
        return session

    def prompt_ids(self, turns: list[Turn], system: str | None, user_text: str) -> list[int]:
        """The fine-tuned side's prompt token ids for ``user_text`` after ``turns`` (as the terminal chat)."""
        return self.session(turns, TUNED, system, SamplingParams()).prompt_ids(user_text)

    def replies(
        self, turns: list[Turn], system: str | None, user_text: str, params: SamplingParams, compare: bool
    ) -> Iterator[tuple[str, str | None]]:
        """Stream the answer(s) to ``user_text``: yields ``(tuned_so_far, base_so_far)`` after each piece.

        In compare mode the two models decode in turns, one token step each, so both columns grow
        together; for a LoRA run the adapter is switched off for the base model's steps only.

        Args:
            turns: the conversation so far.
            system: the system prompt.
            user_text: the new message (not empty).
            params: sampling settings (the same for both models; each uses its own generator seed).
            compare: also answer with the base model.

        Raises:
            TunewizError: an empty message, compare mode while it is unavailable, or a conversation
                longer than the model's context.
        """
        if compare and not self.can_compare:
            raise TunewizError(f"compare mode is unavailable: {self.compare_refusal}")
        # One generation at a time runs on the one model in memory: the page's events share a Gradio
        # concurrency group of 1 (see build_app). No lock is held across a yield, so a stopped
        # (abandoned) generator never blocks the next reply.
        tuned_stream = self.session(turns, TUNED, system, params).reply(user_text, record=False)
        if not compare:
            text = ""
            for piece in tuned_stream:
                text += piece
                yield text, None
            return
        base_stream = self.session(turns, BASE, system, params).reply(user_text, record=False)
        tuned, base = "", ""
        tuned_live = base_live = True
        while tuned_live or base_live:
            if base_live:
                piece = self._base_step(base_stream)
                base_live = piece is not None
                base += piece or ""
            if tuned_live:
                piece = next(tuned_stream, None)
                tuned_live = piece is not None
                tuned += piece or ""
            yield tuned, base

    def _base_step(self, base_stream: Iterator[str]) -> str | None:
        if self.base is not None:
            return next(base_stream, None)
        with base_model_only(self.loaded):
            return next(base_stream, None)


def _messages(turns: list[Turn], side: str) -> list[dict[str, str]]:
    out = []
    for turn in turns:
        reply = turn.tuned if side == TUNED else (turn.base or "")
        out += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": reply}]
    return out


def _params(
    temperature: float, top_p: float, top_k: float, max_new: float, penalty: float, seed: Any
) -> SamplingParams:
    seed_value = None if seed in (None, "") else int(seed)
    return SamplingParams(
        max_new_tokens=int(max_new),
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        repetition_penalty=float(penalty),
        seed=seed_value,
    )


def build_app(chat: WebChat, *, title: str, system: str = "") -> gr.Blocks:
    """The Gradio page for ``chat``.

    Elements carry ``elem_id``s (``prompt``, ``send``, ``stop``, ``retry``, ``undo``, ``clear``,
    ``system``, ``compare``, ``temperature``, ``top-p``, ``top-k``, ``max-new-tokens``,
    ``repetition-penalty``, ``seed``, ``tuned-chat``, ``base-chat``, ``prompt-info``, ``about``) so tests and
    users' scripts can find them.

    Args:
        chat: the models and conversation logic.
        title: the page heading (the model's description).
        system: the system prompt the page starts with.
    """
    with gr.Blocks(title=f"tunewiz chat · {title}") as app:
        turns_state = gr.State([])
        count_state = gr.State(0)  # replies so far on this page: the status line numbers them
        gr.Markdown(f"## tunewiz chat\n{html.escape(title)}")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    base_chat = gr.Chatbot(label="base model", elem_id="base-chat", visible=False, height=420)
                    tuned_chat = gr.Chatbot(label="fine-tuned", elem_id="tuned-chat", height=420)
                prompt = gr.Textbox(
                    label="Message",
                    placeholder="Type a message; Enter sends, Shift+Enter starts a new line",
                    lines=2,
                    elem_id="prompt",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    stop = gr.Button("Stop", elem_id="stop")
                    retry = gr.Button("Retry", elem_id="retry")
                    undo = gr.Button("Undo", elem_id="undo")
                    clear = gr.Button("Clear", elem_id="clear")
                info = gr.Markdown("", elem_id="prompt-info")
            with gr.Column(scale=1):
                system = gr.Textbox(value=system, label="System prompt", lines=3, elem_id="system")
                compare = gr.Checkbox(
                    label="Compare with the base model",
                    value=False,
                    interactive=chat.can_compare,
                    info=None if chat.can_compare else f"unavailable: {chat.compare_refusal}",
                    elem_id="compare",
                )
                with gr.Accordion("Generation settings", open=False):
                    temperature = gr.Slider(
                        0.0,
                        2.0,
                        value=0.0,
                        step=0.05,
                        label="Temperature (0 = greedy)",
                        elem_id="temperature",
                    )
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p", elem_id="top-p")
                    top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)", elem_id="top-k")
                    max_new = gr.Slider(
                        1, 2048, value=256, step=1, label="Max new tokens", elem_id="max-new-tokens"
                    )
                    penalty = gr.Slider(
                        0.5,
                        2.0,
                        value=1.0,
                        step=0.05,
                        label="Repetition penalty (1 = off)",
                        elem_id="repetition-penalty",
                    )
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                gr.Markdown(chat.about, elem_id="about")
        settings = [system, compare, temperature, top_p, top_k, max_new, penalty, seed]

        def answer(
            user_text: str,
            turns: list[Turn],
            count: int,
            sys_text: str,
            cmp: bool,
            sampling: tuple[Any, ...],
            session: str,
        ) -> Iterator:
            user_text = (user_text or "").strip()
            if not user_text:
                raise gr.Error("The message is empty: type something first.")
            stop_flag = chat.begin(session)
            replies = None
            try:
                params = _params(*sampling)
                n_prompt = len(chat.prompt_ids(turns, sys_text, user_text))
                turn = Turn(user=user_text, base="" if cmp else None)
                now, count = [*turns, turn], count + 1
                status = f"reply {count}: prompt {n_prompt} tokens"
                replies = chat.replies(turns, sys_text, user_text, params, cmp)
                for tuned, base in replies:
                    if stop_flag.is_set():
                        break
                    turn.tuned, turn.base = tuned, base
                    yield (
                        "",
                        _messages(now, TUNED),
                        _messages(now, BASE),
                        now,
                        count,
                        f"{status} · generating",
                    )
            except TunewizError as exc:
                raise gr.Error(exc.message + (f" (hint: {exc.hint})" if exc.hint else "")) from None
            finally:
                if replies is not None:
                    replies.close()  # ends the decoding loop now, not when the generator is collected
                chat.end(session, stop_flag)
            end = "stopped" if stop_flag.is_set() else "done"
            yield "", _messages(now, TUNED), _messages(now, BASE), now, count, f"{status} · {end}"

        # Gradio passes the request (its session hash keys the stop flag) only to a positional
        # parameter annotated gr.Request, hence the sampling settings spelled out.
        def send_message(
            user_text: str,
            turns: list[Turn],
            count: int,
            sys_text: str,
            cmp: bool,
            temp: float,
            top_p: float,
            top_k: float,
            max_new: float,
            penalty: float,
            seed: Any,
            request: gr.Request,
        ) -> Iterator:
            sampling = (temp, top_p, top_k, max_new, penalty, seed)
            yield from answer(user_text, turns, count, sys_text, cmp, sampling, request.session_hash)

        outputs = [prompt, tuned_chat, base_chat, turns_state, count_state, info]
        inputs = [prompt, turns_state, count_state, *settings]
        one_at_a_time = {"concurrency_id": "generate", "concurrency_limit": 1}
        send.click(send_message, inputs, outputs, **one_at_a_time)
        prompt.submit(send_message, inputs, outputs, **one_at_a_time)

        def retry_last(
            turns: list[Turn],
            count: int,
            sys_text: str,
            cmp: bool,
            temp: float,
            top_p: float,
            top_k: float,
            max_new: float,
            penalty: float,
            seed: Any,
            request: gr.Request,
        ) -> Iterator:
            if not turns:
                raise gr.Error("Nothing to retry yet.")
            sampling = (temp, top_p, top_k, max_new, penalty, seed)
            last, earlier = turns[-1].user, turns[:-1]
            yield from answer(last, earlier, count, sys_text, cmp, sampling, request.session_hash)

        retry.click(retry_last, [turns_state, count_state, *settings], outputs, **one_at_a_time)

        def stop_generation(request: gr.Request) -> None:
            chat.stop(request.session_hash)

        # The running generation ends itself at its next token and returns its last update, so the
        # page keeps the partial reply in its turns and numbering ("· stopped"). Gradio's `cancels`
        # would drop that update: the page would show a turn its state never recorded.
        stop.click(stop_generation, None, None, queue=False)

        chat_outputs = [prompt, tuned_chat, base_chat, turns_state]

        def undo_last(turns: list[Turn]) -> tuple:
            if not turns:
                return "", [], [], []
            kept = turns[:-1]
            return turns[-1].user, _messages(kept, TUNED), _messages(kept, BASE), kept

        undo.click(undo_last, [turns_state], chat_outputs)
        clear.click(lambda: ("", [], [], []), None, chat_outputs)
        compare.change(lambda on: gr.update(visible=on), compare, base_chat)
    return app


def free_port_or_error(host: str, port: int) -> None:
    """Raise a clear error when ``host:port`` cannot be bound (in use, or not an address of this machine).

    Raises:
        TunewizError: naming the address, with a hint to choose another port.
    """
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise TunewizError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint=f"pick another port: `--port {port + 1}`, or stop what uses {host}:{port}",
            ) from None


def serve(app: gr.Blocks, *, host: str, port: int, share: bool, on_ready: Any) -> None:
    """Start the page and block until Ctrl-C.

    Args:
        app: from :func:`build_app`.
        host: address to bind (127.0.0.1 by default: only this machine can connect).
        port: TCP port.
        share: also open a public Gradio share link.
        on_ready: called with the local URL once the server listens.
    """
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True, show_error=True
    )
    on_ready(app.local_url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


def about_markdown(target: str, loaded: LoadedModel, checkpoint: StepCheckpoint | None = None) -> str:
    """The model panel: base model, method, steps, final losses and eval results when a run has them.

    Args:
        target: what the user pointed at (a run directory gets the full panel).
        loaded: the loaded model (its description heads the panel).
        checkpoint: the step checkpoint loaded (``--from``): steps, losses and results up to it.
    """
    from tunewiz.hub.modelcard import read_card_facts
    from tunewiz.run.directory import RunDir

    lines = ["### About this model", f"- **Loaded**: {html.escape(loaded.description)}"]
    run = RunDir(Path(target).expanduser())
    if not run.config.is_file():
        return "\n".join(lines)
    facts = read_card_facts(run, checkpoint)
    stats = facts.stats
    lines.append(f"- **Base model**: `{facts.preset.model.path}` · **method**: {facts.preset.method}")
    if stats.steps is not None:
        lines.append(f"- **Steps**: {stats.steps} over {stats.launches} launch(es)")
    if stats.final_loss is not None:
        lines.append(f"- **Final training loss**: {stats.final_loss:.4f}")
    if stats.val_loss is not None:
        lines.append(f"- **Validation loss**: {stats.val_loss:.4f}")
    for task, metrics in ((facts.eval or {}).get("tasks") or {}).items():
        shown = ", ".join(
            f"{k} {v:.3f}"
            for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not k.endswith("_stderr")
        )
        if shown:
            lines.append(f"- **Eval `{task}`**: {shown}")
    return "\n".join(lines)


def _model_bytes(loaded: LoadedModel) -> int:
    return sum(p.numel() * p.element_size() for p in loaded.model.parameters())


def _free_bytes(loaded: LoadedModel) -> int:
    if loaded.device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(loaded.device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def _base_for_compare(target: str, loaded: LoadedModel, device: str) -> tuple[LoadedModel | None, str | None]:
    """The second model compare mode needs, or why compare is refused (LoRA runs need none)."""
    from tunewiz.inference.load import load_for_inference
    from tunewiz.run.directory import RunDir

    if loaded.has_adapter:
        return None, None
    if not RunDir(Path(target).expanduser()).config.is_file():
        return (
            None,
            f"{loaded.description} is a model, not a fine-tuned run: there is no base to compare with",
        )
    need, free = _model_bytes(loaded), _free_bytes(loaded)
    if free < need * 1.2:  # the second copy plus room for its KV cache and activations
        return None, (
            f"a full fine-tune's base model is a second {need / 2**30:.1f} GiB copy and only "
            f"{free / 2**30:.1f} GiB is free on {loaded.device.type}"
        )
    return load_for_inference(loaded.base_name, device=device), None


def launch_web_chat(
    target: str,
    *,
    adapter: Path | None,
    checkpoint: StepCheckpoint | None = None,
    device: str,
    system: str | None,
    host: str,
    port: int,
    share: bool,
    say: Any,
) -> None:
    """Load ``target`` and serve the chat page until Ctrl-C (what ``tunewiz chat --web`` does).

    Args:
        target: a run directory, model directory, ``tunewiz:NAME`` or cached Hub id.
        adapter: an extra PEFT adapter directory, as for the terminal chat.
        checkpoint: a step checkpoint of the run to chat with instead of ``final/`` (``--from``).
        device: ``auto``, ``cpu`` or ``cuda``.
        system: the system prompt the page starts with.
        host: the address to bind; anything but loopback is reachable by others.
        port: the TCP port.
        share: open a public Gradio share link as well.
        say: prints one line for the user (stderr).

    Raises:
        TunewizError: the port cannot be bound, or the model cannot be loaded.
    """
    from tunewiz.inference.load import load_for_inference, prompt_builder_for

    free_port_or_error(host, port)
    loaded = load_for_inference(target, adapter=adapter, device=device, checkpoint=checkpoint)
    prompts, warning = prompt_builder_for(target, loaded.tokenizer)
    if warning:
        say(f"warning: {warning}")
    base, refusal = _base_for_compare(target, loaded, device)
    about = about_markdown(target, loaded, checkpoint)
    chat = WebChat(loaded, prompts, about, base=base, compare_refusal=refusal)
    app = build_app(chat, title=loaded.description, system=system or "")
    if host not in ("127.0.0.1", "localhost", "::1") or share:
        say(
            "warning: the chat page is reachable from other machines"
            + (" through a public Gradio share link" if share else f" on {host}")
            + ": anyone with the address can use this machine's model and compute"
        )

    def ready(url: str) -> None:
        say(f"chat page: {url} (serving {loaded.description}; Ctrl-C stops it)")

    serve(app, host=host, port=port, share=share, on_ready=ready)
