"""Chat templates: the model's own (jinja, rendered exactly as transformers renders it) or a built-in.

``ChatTemplate.segments`` splits a rendered conversation into prompt and assistant pieces for loss
masking, for any template, by rendering prefixes of the conversation:

* the text before assistant message ``i`` ends where ``render(messages[:i], add_generation_prompt=True)``
  ends (the prompt includes the assistant header), and
* assistant message ``i`` ends where ``render(messages[:i + 1])`` ends (so it includes the template's
  end-of-turn token, which the model must learn to emit).

This assumes the template is *prefix-stable*: rendering a prefix of a conversation gives a prefix of
the full rendering. Templates that rewrite earlier turns (e.g. Qwen3 dropping reasoning from old
assistant turns) or date-stamp the system prompt can break that; then the assistant piece falls back
to the message's content found in the rendering, plus an end-of-turn token that directly follows it.

Either way an assistant piece ends with its end-of-turn token: whitespace the template writes after
it (ChatML's and Gemma's newline) belongs to the next prompt, as the model never generates it (it
stops at the end-of-turn token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tunewiz.errors import TunewizError, did_you_mean

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger(__name__)

BuiltinName = Literal["alpaca", "llama2", "llama3", "chatml"]
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request."
)

# Built-in templates, written for transformers' jinja settings (trim_blocks, lstrip_blocks). Each
# starts with `messages and` guards so that rendering an empty prefix works (segments needs it).
_BUILTINS: dict[str, str] = {
    "alpaca": (
        "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}"
        "{% set loop_messages = messages[1:] %}{% else %}{{ '" + ALPACA_PREAMBLE + "\\n\\n' }}"
        "{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}{{ ('\\n\\n' if not loop.first else '') + '### "
        "Instruction:\\n' + message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token }}"
        "{% else %}{{ raise_exception('the alpaca template has no role ' + message['role']) }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
    "llama2": (
        "{% if messages and messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('the llama2 template needs alternating user/assistant messages') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token }}{{ '[INST] ' + content | trim + ' [/INST]' }}"
        "{% else %}{{ ' ' + content | trim + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
        "message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
}
# Special tokens a built-in template renders with when no tokenizer supplies them.
_DEFAULT_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}
# End-of-turn strings the non-prefix-stable fallback keeps with the assistant's text.
_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>")


class ChatTemplate:
    """A jinja chat template and the special tokens it renders with.

    Args:
        name: a label for messages (``model`` or the built-in's name).
        source: where it came from: ``tokenizer_config.json``, ``chat_template.jinja`` or ``builtin:<name>``.
        template: the jinja source.
        special_tokens: ``bos_token``, ``eos_token``, ... strings passed to the template as variables.
    """

    def __init__(self, name: str, source: str, template: str, special_tokens: Mapping[str, str]) -> None:
        self.name = name
        self.source = source
        self.template = template
        self.special_tokens = dict(special_tokens)
        self._compiled: jinja2.Template | None = None

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r}, source={self.source!r})"

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
        """The conversation as text, as transformers' ``apply_chat_template(tokenize=False)`` gives it.

        Args:
            messages: ``{"role": ..., "content": ...}`` dicts.
            add_generation_prompt: append the assistant header that prompts a reply.
        """
        import jinja2

        try:
            if self._compiled is None:
                self._compiled = _compile(self.template)
            return self._compiled.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise TunewizError(
                f"chat template `{self.name}` ({self.source}) failed: {exc}",
                hint="check the conversation's roles, or choose another `data.template`",
            ) from exc

    def with_thinking(self, enabled: bool) -> ChatTemplate:
        """This template with Qwen3's ``enable_thinking`` switch fixed, written into the template itself
        (``{%- set enable_thinking = false -%}`` first), so that every path that renders the recorded
        template (training, chat, eval, the exported ``final/``, GGUF) renders what
        ``apply_chat_template(..., enable_thinking=enabled)`` renders.

        Args:
            enabled: False puts the empty ``<think></think>`` block into the prompt (the model answers
                directly); True lets the model reason first.

        Raises:
            TunewizError: the template has no ``enable_thinking`` switch.
        """
        if "enable_thinking" not in self.template:
            raise TunewizError(
                f"data.thinking is set, but chat template `{self.name}` ({self.source}) has no "
                "`enable_thinking` switch",
                hint="remove `data.thinking` (it applies to Qwen3-style templates)",
            )
        prefix = "{%- set enable_thinking = " + ("true" if enabled else "false") + " -%}"
        return ChatTemplate(self.name, self.source, prefix + self.template, self.special_tokens)

    def segments(self, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
        """Split ``render(messages)`` into ``(text, is_assistant_output)`` pieces, in order.

        The pieces concatenate to ``render(messages)``. See the module docstring for the approach.

        Args:
            messages: the conversation; assistant messages become the ``True`` pieces.
        """
        full = self.render(messages)
        pieces: list[tuple[str, bool]] = []
        pos = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            span = self._prefix_span(messages, i, full, pos) or self._content_span(
                message["content"], full, pos
            )
            if span is None:
                log.warning(
                    "chat template `%s`: assistant message %d not found in the rendering; it is not trained",
                    self.name,
                    i,
                )
                continue
            start, end = self._end_at_end_of_turn(full, *span)
            if start > pos:
                pieces.append((full[pos:start], False))
            pieces.append((full[start:end], True))
            pos = end
        if pos < len(full):
            pieces.append((full[pos:], False))
        return pieces

    def _end_at_end_of_turn(self, full: str, start: int, end: int) -> tuple[int, int]:
        """Cut whitespace that follows the piece's final end-of-turn token off an assistant piece."""
        piece = full[start:end]
        stripped = piece.rstrip()
        if stripped != piece and stripped.endswith(
            (*_END_OF_TURN, self.special_tokens.get("eos_token") or "\0")
        ):
            return start, start + len(stripped)
        return start, end

    def _prefix_span(
        self, messages: list[dict[str, str]], i: int, full: str, pos: int
    ) -> tuple[int, int] | None:
        """Span of assistant message ``i`` from prefix renderings.

        None if the template is not prefix-stable.
        """
        try:
            before = self.render(messages[:i], add_generation_prompt=True)
            # the last message's prefix is the whole conversation: `full` is its rendering
            through = full if i == len(messages) - 1 else self.render(messages[: i + 1])
        except TunewizError:
            return None  # e.g. a template that rejects a conversation not ending in a user turn
        if not (
            len(before) >= pos
            and full.startswith(before)
            and full.startswith(through)
            and len(through) > len(before)
        ):
            return None
        return len(before), len(through)

    def _content_span(self, content: str, full: str, pos: int) -> tuple[int, int] | None:
        """Fallback: the message's content as rendered, plus a directly following end-of-turn token.

        Reasoning templates (Qwen3) render an earlier turn without its ``<think>...</think>`` block: then
        the answer after the block is what the rendering holds."""
        stripped = content.strip()
        start = full.find(stripped, pos) if stripped else -1
        if start < 0 and "</think>" in stripped:
            stripped = stripped.split("</think>")[-1].strip()
            start = full.find(stripped, pos) if stripped else -1
        if start < 0:
            return None
        end = start + len(stripped)
        for marker in (*_END_OF_TURN, self.special_tokens.get("eos_token", "")):
            if marker and full.startswith(marker, end):
                return start, end + len(marker)
        return start, end


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """Compile like transformers: immutable sandbox, trim_blocks, lstrip_blocks, its globals and tojson."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        # Jinja's own tojson escapes HTML characters; templates expect plain JSON.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    class GenerationTag(jinja2.ext.Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for transformers' assistant masks;
        # it renders its body unchanged (segments finds assistant text by prefixes instead).
        tags = {"generation"}

        def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.Scope(body).set_lineno(lineno)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


def builtin_template(name: BuiltinName, *, special_tokens: Mapping[str, str] | None = None) -> ChatTemplate:
    """A built-in template.

    Args:
        name: ``alpaca``, ``llama2``, ``llama3`` or ``chatml``.
        special_tokens: the tokenizer's named special token strings (default ``<s>``/``</s>`` when no
            tokenizer is given).
    """
    if name not in _BUILTINS:
        raise TunewizError(
            f"unknown built-in template `{name}`{did_you_mean(name, _BUILTINS)}",
            hint=f"choose one of {', '.join(_BUILTINS)}",
        )
    # A tokenizer's own special tokens only: a tokenizer without bos (Qwen) must render none, as
    # transformers renders the exported template with that tokenizer.
    specials = _DEFAULT_SPECIALS if special_tokens is None else special_tokens
    return ChatTemplate(name, f"builtin:{name}", _BUILTINS[name], specials)


def load_model_template(
    model_dir: Path, tokenizer_config: Mapping[str, Any], special_tokens: Mapping[str, str]
) -> ChatTemplate | None:
    """The model's chat template: ``chat_template.jinja``, else ``chat_template`` in tokenizer_config.json,
    else a multimodal processor's ``chat_template.json``.

    Args:
        model_dir: the model directory.
        tokenizer_config: its parsed tokenizer_config.json (empty if absent).
        special_tokens: the tokenizer's named special token strings.
    """
    jinja_file = Path(model_dir) / "chat_template.jinja"
    if jinja_file.is_file():
        return ChatTemplate(
            "model", "chat_template.jinja", jinja_file.read_text(encoding="utf-8"), special_tokens
        )
    value = tokenizer_config.get("chat_template")
    if isinstance(value, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {entry.get("name"): entry.get("template") for entry in value if isinstance(entry, dict)}
        value = named.get("default")
    if isinstance(value, str) and value:
        return ChatTemplate("model", "tokenizer_config.json", value, special_tokens)
    processor_file = Path(model_dir) / "chat_template.json"  # a multimodal processor's {"chat_template": ...}
    if processor_file.is_file():
        try:
            value = json.loads(processor_file.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, AttributeError):
            value = None
        if isinstance(value, str) and value:
            return ChatTemplate("model", "chat_template.json", value, special_tokens)
    return None


class TemplateSource(Protocol):
    """What :func:`resolve_template` reads of a tokenizer (``tunewiz.text.tokenizer.Tokenizer`` is one).

    A protocol rather than an import: the tokenizer module imports this one to load the model's
    template, so importing it back would make a cycle.
    """

    chat_template: ChatTemplate | None
    source_dir: Path
    special_tokens: dict[str, str]


def resolve_template(
    choice: str, tokenizer: TemplateSource, data_format: str, thinking: bool | None = None
) -> ChatTemplate:
    """The template a run uses, from ``data.template`` (and ``data.thinking``).

    Args:
        choice: ``model`` (the model's, an error if it has none), ``auto`` (the model's if any, else
            alpaca for alpaca data and chatml otherwise) or a built-in name.
        tokenizer: the model's tokenizer (its template and special tokens).
        data_format: the resolved data format (``alpaca``, ``chat`` or ``text``).
        thinking: Qwen3's ``enable_thinking`` fixed into the template (see ``ChatTemplate.with_thinking``),
            or None for the template's default.
    """
    template = _resolve_template(choice, tokenizer, data_format)
    return template if thinking is None else template.with_thinking(thinking)


def _resolve_template(choice: str, tokenizer: TemplateSource, data_format: str) -> ChatTemplate:
    if choice == "model":
        if tokenizer.chat_template is None:
            raise TunewizError(
                f"data.template is `model` but {tokenizer.source_dir} has no chat template "
                "(no chat_template.jinja, no `chat_template` in tokenizer_config.json)",
                hint="set `data.template` to `auto`, `alpaca`, `llama2`, `llama3` or `chatml`",
            )
        return tokenizer.chat_template
    if choice == "auto":
        if tokenizer.chat_template is not None:
            return tokenizer.chat_template
        choice = "alpaca" if data_format == "alpaca" else "chatml"
    return builtin_template(choice, special_tokens=tokenizer.special_tokens)  # type: ignore[arg-type]
