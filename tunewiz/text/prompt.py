"""THE prompt builder: one rule that turns conversations and texts into token ids, for training and
for every inference path (chat, eval, the exported ``final/``, web chat, GGUF).

A run's prompt format is decided once, when training starts, and recorded as ``RUN/prompt.json``;
after that the record is the only source. It holds:

* ``template``: the jinja chat template the run trained with, *as trained*: when the tokenizer adds bos
  by default (``add_bos_token``, a tokenizer.json post-processor) and the template does not render it,
  the recorded template starts with ``{{ bos_token }}``. The exported ``final/`` carries exactly this
  template, so transformers' ``apply_chat_template(..., add_generation_prompt=True)`` (which encodes
  the rendering without adding special tokens) gives the ids training used.
* ``bos``: ``in_template`` (the rendering starts with bos), ``prepended`` (bos id put before the
  rendering's ids: runs made before this record existed) or ``none`` (the tokenizer has no bos, or does
  not add one). Plain text (``data.format: text``, lm-eval's loglikelihood contexts) gets bos first
  unless this is ``none``.
* ``eos``: ``last_reply``: when the last assistant turn's rendering holds no stop token (a template
  whose end-of-turn marker is plain text to this tokenizer), eos follows it and is trained; earlier
  turns stay exactly as the template renders them, so the prompt of a later turn is the same at
  inference. ``every_reply`` is the rule of runs made before the record existed.

Prompt ids are always ``[bos if prepended] + encode(render(messages, add_generation_prompt=True))``;
the training sample of the same conversation starts with exactly these ids (tests/test_prompt.py holds
this for every built-in template and tokenizer kind).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    import numpy as np

    from tunewiz.text.templates import ChatTemplate
    from tunewiz.text.tokenizer import Spans, Tokenizer

PROMPT_RECORD = "prompt.json"
RECORD_VERSION = 1
BosRule = Literal["in_template", "prepended", "none"]
EosRule = Literal["last_reply", "every_reply"]
_PROBE = [{"role": "user", "content": "probe"}]


@dataclass(frozen=True)
class PromptFormat:
    """How a run turns conversations into tokens (the content of ``prompt.json``).

    Args:
        template: the jinja template as trained (bos written into it when the rule adds one), or
            None for runs on plain text.
        template_name: ``model`` or a built-in name (``alpaca``, ``chatml``, ...), or None.
        template_source: where the template came from (``tokenizer_config.json``, ``builtin:alpaca``...).
        bos: see the module docstring.
        eos: see the module docstring.
        recorded: False when derived without a record (a model directory, or a run made before
            ``prompt.json`` existed); not saved.
    """

    template: str | None
    template_name: str | None
    template_source: str | None
    bos: BosRule
    eos: EosRule = "last_reply"
    recorded: bool = True

    def as_json(self) -> dict[str, Any]:
        """The ``prompt.json`` document."""
        data = asdict(self)
        del data["recorded"]
        return {"version": RECORD_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = PROMPT_RECORD) -> PromptFormat:
        """Parse a ``prompt.json`` document.

        Raises:
            TunewizError: a field is missing or has an unknown value.
        """
        try:
            fmt = cls(
                template=data["template"],
                template_name=data["template_name"],
                template_source=data["template_source"],
                bos=data["bos"],
                eos=data["eos"],
            )
        except (KeyError, TypeError) as exc:
            raise TunewizError(
                f"{where} lacks {exc}; it is not a tunewiz prompt record",
                hint="restore it, or delete it to fall back to the run's config.yaml",
            ) from exc
        if fmt.bos not in ("in_template", "prepended", "none") or fmt.eos not in (
            "last_reply",
            "every_reply",
        ):
            raise TunewizError(
                f"{where}: unknown bos/eos rule `{fmt.bos}`/`{fmt.eos}`",
                hint="upgrade tunewiz, or delete the file to fall back to the run's config.yaml",
            )
        return fmt

    def chat_template(self, tokenizer: Tokenizer) -> ChatTemplate | None:
        """The recorded template, rendered with ``tokenizer``'s special tokens."""
        from tunewiz.text.templates import ChatTemplate

        if self.template is None:
            return None
        return ChatTemplate(
            self.template_name or "model",
            self.template_source or "prompt.json",
            self.template,
            tokenizer.special_tokens,
        )


def new_prompt_format(template: ChatTemplate | None, tokenizer: Tokenizer) -> PromptFormat:
    """The prompt format of a new run (or of a model directory used without a run).

    bos goes into the template when the tokenizer adds it by default and the template does not
    render it already; plain-text runs (``template`` None) prepend it.

    Args:
        template: the template training uses (see ``resolve_template``), or None for plain text.
        tokenizer: the model's tokenizer.
    """
    if template is None:
        return PromptFormat(None, None, None, "prepended" if tokenizer.adds_bos else "none")
    source = template.template
    bos_token = tokenizer.special_tokens.get("bos_token")
    renders_bos = bool(bos_token) and template.render(_PROBE, add_generation_prompt=True).startswith(
        bos_token
    )
    if tokenizer.adds_bos and bos_token and not renders_bos:
        source = "{{ bos_token }}" + source
        renders_bos = True
    return PromptFormat(source, template.name, template.source, "in_template" if renders_bos else "none")


def legacy_prompt_format(template: ChatTemplate | None, tokenizer: Tokenizer) -> PromptFormat:
    """The rule of runs trained before ``prompt.json`` existed: bos id before every sample when the
    tokenizer has one and the template did not render it, eos after every reply without a stop token.

    Args:
        template: the template the run trained with (from its config.yaml), or None for plain text.
        tokenizer: the run's tokenizer.
    """
    bos: BosRule = "prepended" if tokenizer.bos_id is not None else "none"
    return PromptFormat(
        None if template is None else template.template,
        None if template is None else template.name,
        None if template is None else template.source,
        bos,
        "every_reply",
        recorded=False,
    )


def read_prompt_record(run_path: Path) -> PromptFormat | None:
    """``RUN/prompt.json``, or None when the run was made before it existed.

    Args:
        run_path: the run directory.
    """
    path = Path(run_path) / PROMPT_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TunewizError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})",
            hint="delete it to fall back to the run's config.yaml",
        ) from exc
    return PromptFormat.from_json(data, where=str(path))


def write_prompt_record(run_path: Path, fmt: PromptFormat) -> Path:
    """Write ``RUN/prompt.json`` atomically.

    Args:
        run_path: the run directory.
        fmt: the run's prompt format.
    """
    from tunewiz.atomic import atomic_write_json

    path = Path(run_path) / PROMPT_RECORD
    atomic_write_json(path, fmt.as_json())
    return path


class PromptBuilder:
    """Token ids from a :class:`PromptFormat` and a tokenizer: training samples and inference prompts.

    Args:
        tokenizer: the tokenizer.
        fmt: the prompt format.
    """

    def __init__(self, tokenizer: Tokenizer, fmt: PromptFormat) -> None:
        self.tokenizer = tokenizer
        self.format = fmt
        self.template = fmt.chat_template(tokenizer)

    def _with_bos(self, ids: list[int]) -> list[int]:
        bos = self.tokenizer.bos_id
        if self.format.bos == "prepended" and bos is not None and (not ids or ids[0] != bos):
            return [bos, *ids]
        return ids

    def _require_template(self) -> ChatTemplate:
        if self.template is None:
            raise TunewizError(
                "this run trained on plain text and recorded no chat template",
                hint="prompt it with plain text, or train with `data.format: chat` or `alpaca`",
            )
        return self.template

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The conversation as text, through the recorded template."""
        return self._require_template().render(messages, add_generation_prompt=add_generation_prompt)

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Ids that prompt the next assistant reply to ``messages`` (ending with the assistant header).

        Args:
            messages: the conversation so far, ending with a user (or system) message.
        """
        return self.encode_rendered(self.render(messages, add_generation_prompt=True))

    def encode_rendered(self, text: str) -> list[int]:
        """Ids of text the template rendered (bos prepended under the ``prepended`` rule)."""
        return self._with_bos(self.tokenizer.encode(text))

    def encode_text(self, text: str) -> list[int]:
        """Ids of plain text (no template): bos first unless the rule is ``none``, as a
        plain-text training sample starts."""
        ids = self.tokenizer.encode(text)
        bos = self.tokenizer.bos_id
        if self.format.bos != "none" and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def text_sample(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """A plain-text training sample: bos (per the rule) + text + eos, every token trained.

        Returns:
            ``(ids, trained)``: int64 and bool arrays of one length.
        """
        import numpy as np

        ids = np.array([*self.encode_text(text), self.tokenizer.eos_id], dtype=np.int64)
        return ids, np.ones(len(ids), dtype=bool)

    def chat_sample(
        self, messages: list[dict[str, str]], *, train_on_inputs: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of a conversation and which of them are trained.

        The rendering is encoded once, as at inference; each token goes to the template segment that
        holds its last character (so a token spanning the boundary into the reply, like
        SentencePiece's "▁answer" after "[/INST] ", is trained). eos follows a reply that has no stop
        token of its own: the last one (``last_reply``) or each (``every_reply``, older runs).

        Args:
            messages: the conversation.
            train_on_inputs: train on every token, not only the assistant's.

        Returns:
            ``(ids, trained)``: int64 and bool arrays of one length.
        """
        import numpy as np

        tokenizer = self.tokenizer
        segments = self._require_template().segments(messages)
        ids, spans = tokenizer.encode_with_offsets("".join(piece for piece, _ in segments))
        bos = tokenizer.bos_id
        with_bos = self.format.bos == "prepended" and bos is not None and not (len(ids) and ids[0] == bos)
        which = _segment_of_tokens(spans, [len(piece) for piece, _ in segments])
        if len(which) and not bool(np.all(which[1:] >= which[:-1])):
            order = np.argsort(which, kind="stable")  # each segment's tokens together, in segment order
            ids, which = ids[order], which[order]
        is_reply = np.array([reply for _, reply in segments], dtype=bool)
        trained = is_reply[which] | train_on_inputs
        # eos after a reply whose tokens hold no stop token: where the reply's tokens end.
        cuts = np.searchsorted(which, np.arange(len(segments) + 1), side="left")
        stops = np.concatenate(([0], np.cumsum(tokenizer.stop_mask[ids])))
        last_reply = max((i for i, (_, reply) in enumerate(segments) if reply), default=-1)
        ends = [
            cuts[i + 1]
            for i, (_, reply) in enumerate(segments)
            if reply
            and (self.format.eos == "every_reply" or i == last_reply)
            and stops[cuts[i + 1]] == stops[cuts[i]]
        ]
        if ends:
            ids, trained = np.insert(ids, ends, tokenizer.eos_id), np.insert(trained, ends, True)
        if with_bos:
            ids, trained = np.concatenate(([bos], ids)), np.concatenate(([False], trained))
        return ids, trained


def _segment_of_tokens(spans: Spans, lengths: list[int]) -> np.ndarray:
    """Per token, the index of the text segment it belongs to: the segment that holds its last character
    (``end - 1``; an empty span, a dummy-prefix or byte piece, goes by its ``start``); past the last
    segment, the last one.

    Args:
        spans: each token's ``(start, end)`` character span, an ``(n, 2)`` int array.
        lengths: the segments' lengths in characters, in order (they add up to the text's length).

    Returns:
        An ``(n,)`` int64 array.
    """
    import numpy as np

    ends = np.cumsum(lengths)
    keys = np.where(spans[:, 1] > spans[:, 0], spans[:, 1] - 1, spans[:, 0])
    return np.minimum(np.searchsorted(ends, keys, side="right"), len(lengths) - 1)


def exported_template(fmt: PromptFormat, tokenizer: Tokenizer) -> str | None:
    """The template to write into an exported model, so that transformers' ``apply_chat_template``
    (no special tokens added) gives the run's prompt ids; None when the run recorded none.

    A ``prepended`` (older) run gets ``{{ bos_token }}`` in front, the closest a template can say it.

    Args:
        fmt: the run's prompt format.
        tokenizer: the run's tokenizer (for its bos string).
    """
    template = fmt.chat_template(tokenizer)
    if template is None:
        return None
    bos_token = tokenizer.special_tokens.get("bos_token")
    if fmt.bos == "prepended" and bos_token:
        if not template.render(_PROBE, add_generation_prompt=True).startswith(bos_token):
            return "{{ bos_token }}" + template.template
    return template.template


def save_tokenizer_with_prompt(tokenizer: Tokenizer, out_dir: Path, fmt: PromptFormat) -> None:
    """Copy the tokenizer files into ``out_dir`` with the run's template as the model's template.

    The template goes into ``chat_template.jinja`` and, when the source tokenizer_config.json holds a
    ``chat_template`` of its own, replaces it there too, so every reader (transformers 4 and 5,
    llama.cpp's converter, tunewiz) finds the same one.

    Args:
        tokenizer: the run's tokenizer (its files are the source).
        out_dir: destination (created if missing).
        fmt: the run's prompt format; without a template the files are copied unchanged.
    """
    from tunewiz.atomic import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    template = exported_template(fmt, tokenizer)
    if template is None:
        return
    atomic_write_text(out_dir / "chat_template.jinja", template)
    config_path = out_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if "chat_template" in config:
            config["chat_template"] = template
            atomic_write_json(config_path, config)
