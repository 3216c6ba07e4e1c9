"""Data formats: detect them from the columns, and turn rows into chat messages or plain text.

Three formats, recognised from the column names without configuration:

- ``alpaca`` (a prompt/response pair): a prompt column (``prompt``, ``instruction``, ``question``,
  ``query``, or ``input`` when none of those is there), a response column (``response``,
  ``completion``, ``output``, ``answer``), optional ``input`` (extra context appended to the prompt)
  and ``system``.
- ``chat``: ``messages`` or ``conversations``, a list of turns written ``{role, content}`` (OpenAI)
  or ``{from, value}`` (ShareGPT), roles spelt ``system``, ``user``/``human``,
  ``assistant``/``gpt``/``model``.
- ``text``: ``text``, trained on every token.

Column names match whatever their case and surrounding spaces (``Question``, `` answer ``).
``data.columns`` maps a role (``prompt``, ``response``, ``system``, ``input``, ``messages``, ``text``)
or any name above to a dataset column: ``{prompt: question, response: answer}``; the older
``{instruction: question, output: answer}`` means the same.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Collection
from typing import Any, Literal, NamedTuple, cast

from tunewiz.errors import TunewizError

DataFormat = Literal["alpaca", "chat", "text"]
PROMPT_NAMES = ("prompt", "instruction", "question", "query")  # in this order; `input` is the last resort
RESPONSE_NAMES = ("response", "completion", "output", "answer")
CHAT_NAMES = ("messages", "conversations")
ROLES = ("prompt", "response", "system", "input", "messages", "text")
# Keys data.columns accepts: the roles and every name the detection knows.
COLUMN_KEYS = tuple(dict.fromkeys((*ROLES, *PROMPT_NAMES, *RESPONSE_NAMES, *CHAT_NAMES)))
# Turn roles as datasets spell them (OpenAI, ShareGPT, Gemma) and the chat roles they mean.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}
CHAT_ROLES = ("system", "user", "assistant")
_KINDS = {list: "a list", dict: "an object", bool: "true/false"}  # as a JSON file spells them


class Place(NamedTuple):
    """A dataset's place in a list ``data.path``, for hints that fix that entry and keep the others."""

    entries: list[Any]  # data.path as the user wrote it: paths and {path, weight, ...} mappings
    index: int

    def set_argument(self, **changes: Any) -> str:
        """The ``--set`` argument (shell-quoted) of ``data.path`` with this entry's keys changed
        (``path=…``, ``columns={…}``), the other entries as written."""
        from tunewiz.errors import set_argument

        entries = list(self.entries)
        entry = entries[self.index]
        entry = (dict(entry) if isinstance(entry, dict) else {"path": entry}) | changes
        entries[self.index] = entry["path"] if list(entry) == ["path"] else entry
        return set_argument("data.path", entries)


def path_argument(path: str, setting: str, place: Place | None) -> str:
    """The ``--set`` argument (shell-quoted) that points ``setting`` at ``path``: in a list ``data.path``
    (``place``), the whole list with that entry's path changed."""
    return place.set_argument(path=path) if place is not None else shlex.quote(f"{setting}={path}")


class Rows(list[dict[str, Any]]):
    """A source's rows (dicts, their columns renamed to the format's names by ``data.columns`` and
    :func:`recognised_renames`) with ``file_names``: ``{renamed: column as the file names it}``, so that
    messages and hints name a column as the user knows it, and ``place``: where the source is in a list
    ``data.path`` (None for a single dataset), so that hints change that entry only."""

    def __init__(self, rows: list[dict[str, Any]], file_names: dict[str, str], place: Place | None) -> None:
        super().__init__(rows)
        self.file_names = file_names
        self.place = place


def suggest_columns(row: dict[str, Any]) -> dict[str, str] | None:
    """The ``data.columns`` mapping (``{role: column}``) a row's columns most likely mean, named as in
    ``row``: a column of conversation turns is ``messages``; a lone text column is ``text``; else a prompt
    and a response column, recognised names first (whatever their case), then the first text column is the
    prompt and the last other one the response (files are usually written question first). None when no
    column holds text.

    Args:
        row: a row with the columns as the file names them (numbers and nulls count as text).
    """
    for key, value in row.items():
        if _is_turns(value):
            return {"messages": key}
    texts = [k for k, v in row.items() if v is None or _as_text(v) is not None]
    if len(texts) <= 1:
        return {"text": texts[0]} if texts else None
    prompt = next((k for k in texts if _norm(k) in (*PROMPT_NAMES, "input")), None)
    prompt = prompt or next((k for k in texts if _norm(k) not in RESPONSE_NAMES), texts[0])
    response = next((k for k in texts if k != prompt and _norm(k) in RESPONSE_NAMES), None)
    return {"prompt": prompt, "response": response or next(k for k in reversed(texts) if k != prompt)}


def _norm(key: Any) -> Any:
    return key.strip().lower() if isinstance(key, str) else key


def _is_turns(value: Any) -> bool:
    """Whether ``value`` is a conversation: a non-empty list of {role, content} or {from, value} turns."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, dict) and ("role" in t or "from" in t) for t in value)
    )


def columns_hint(row: dict[str, Any], place: Place | None = None, fmt: str = "auto") -> str:
    """The hint that maps ``row``'s columns by role (:func:`suggest_columns`): a ``--set data.columns=…``
    that, followed, gets past a "cannot tell the format" error, naming only columns of ``row``; for a
    dataset of a list ``data.path`` (``place``), the list with ``columns:`` on that entry (a
    ``data.columns`` would apply to every dataset). When the dataset's ``format`` is set (``fmt``) and
    the columns are another format's, the hint sets it back to ``auto`` too.

    Args:
        row: a row with the columns as the file names them.
        place: where the dataset is in a list ``data.path``, or None.
        fmt: the dataset's ``format`` setting.
    """
    mapping = suggest_columns(row)
    if mapping is None:
        return "none of its columns holds text: check the file, or point `data.path` at another one"
    mapped = "chat" if "messages" in mapping else "text" if "text" in mapping else "alpaca"
    auto = fmt not in ("auto", mapped)
    if place is not None:
        changes = {"columns": mapping, **({"format": "auto"} if auto else {})}
        return f"map its columns by role on its entry: `--set {place.set_argument(**changes)}`"
    flow = "{" + ", ".join(f"{role}: {flow_scalar(column)}" for role, column in mapping.items()) + "}"
    init = ",".join(f"{role}={column}" for role, column in mapping.items())
    if auto:
        return (
            f"its columns are format `{mapped}`'s: add `--set data.format=auto` and "
            f"`--set {shlex.quote(f'data.columns={flow}')}` to the command"
        )
    return (
        f"map the columns by role: add `--set {shlex.quote(f'data.columns={flow}')}` to the command "
        f"(or `tunewiz init --columns {shlex.quote(init)}`), or set `data.format`"
    )


def flow_scalar(text: str) -> str:
    """``text`` as a YAML flow-style scalar (inside ``{...}`` or ``[...]``): as it is when YAML reads it
    back so, else double-quoted."""
    import yaml

    plain = bool(text) and not re.search(r"[,:{}\[\]#&*!|>'\"%@`]|^[-?\s]|\s$", text)
    if plain and yaml.safe_load(f"[{text}]") == [text]:
        return text
    return json.dumps(text, ensure_ascii=False)


def recognised_renames(keys: list[str], *, taken: Collection[str] = ()) -> dict[str, str]:
    """``{column: name}`` for the columns that are a recognised name (:data:`COLUMN_KEYS`) spelt in
    another case or with surrounding spaces, as spreadsheets write headers: ``Question`` → ``question``,
    `` Answer `` → ``answer``. A name already present exactly, or in ``taken`` (a ``data.columns``
    target), is left alone, as is the second column that means the same name.

    Args:
        keys: the columns of the first row.
        taken: names other columns are already renamed to.
    """
    renames: dict[str, str] = {}
    used = set(keys) | set(taken)
    for key in keys:
        name = key.strip().lower() if isinstance(key, str) else key
        if name != key and name in COLUMN_KEYS and name not in used:
            renames[key] = name
            used.add(name)
    return renames


def _find(keys: Any, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in keys), None)


def prompt_column(keys: Any) -> str | None:
    """The column that holds the prompt of a prompt/response row, or None."""
    found = _find(keys, PROMPT_NAMES)
    return found if found is not None else ("input" if "input" in keys else None)


def response_column(keys: Any) -> str | None:
    """The column that holds the response of a prompt/response row, or None."""
    return _find(keys, RESPONSE_NAMES)


def _reads(fmt: str, keys: list[Any]) -> bool:
    """Whether a row with columns ``keys`` has what format ``fmt`` reads."""
    if fmt == "chat":
        return _find(keys, CHAT_NAMES) is not None
    if fmt == "alpaca":
        return prompt_column(keys) is not None and response_column(keys) is not None
    return "text" in keys


# What each format reads, for messages.
_READS = {
    "alpaca": f"a prompt column ({', '.join(PROMPT_NAMES)}, input) and a response column "
    f"({', '.join(RESPONSE_NAMES)})",
    "chat": "`messages` or `conversations`",
    "text": "`text`",
}


def detect_format(
    rows: list[dict[str, Any]], *, source: str = "the dataset", fmt: str = "auto"
) -> DataFormat:
    """The format of ``rows`` from the first row's columns; with ``fmt`` set (not ``auto``), ``fmt`` once
    the first row has the columns it reads.

    Args:
        rows: rows as dicts (columns already renamed by ``data.columns``); :class:`Rows` (as ``load_rows``
            returns them) for messages that name the columns as the file does.
        source: the file or dataset name, for the error message.
        fmt: the dataset's ``format`` setting.

    Raises:
        TunewizError: no known column, or not the columns ``fmt`` reads (found when the dataset is read,
            not row by row while tokenizing); the hint is a ``--set data.columns=…`` that maps the
            file's columns (:func:`columns_hint`).
    """
    keys = list(rows[0]) if rows else []
    formats = ("chat", "alpaca", "text") if fmt == "auto" else (fmt,)
    found = next((f for f in formats if not rows or _reads(f, keys)), None)
    if found is not None:
        return cast(DataFormat, found)
    names, place = (rows.file_names, rows.place) if isinstance(rows, Rows) else ({}, None)
    row = {names.get(k, k): v for k, v in rows[0].items()}
    if fmt == "auto":
        message = (
            f"cannot tell the format of {source} from its columns {sorted(row)}: expected a prompt column "
            f"({', '.join(PROMPT_NAMES)}, input) and a response column ({', '.join(RESPONSE_NAMES)}), "
            "`messages` or `conversations` (chat), or `text`"
        )
    else:
        reads = _READS[fmt]
        message = (
            f"{source} has no column that `format: {fmt}` reads ({reads}); its columns are {sorted(row)}"
        )
    raise TunewizError(message, hint=columns_hint(row, place, fmt))


def _as_text(value: Any) -> str | None:
    """A text field's value as text: a string as it is, a number (int or float, not a bool) as the text
    a CSV holds for it (``4``, ``2.5``: pandas writes a numeric column to JSON and Parquet as numbers);
    None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _field(
    row: dict[str, Any], name: str, index: int, source: str, *, role: str, optional: bool = False
) -> str:
    """Row ``index``'s field ``name``, which holds the ``role`` (a key of ``data.columns``), as text.

    A null (or NaN) field is ``""``, as an empty one is.

    Raises:
        TunewizError: the row lacks the field (unless ``optional``: then it is ``""``), or it is not
            text or a number (a list, an object, true/false); the hint maps the role to another text
            column of the row when it has one.
    """
    if name not in row and not optional:
        raise TunewizError(
            f"row {index} of {source} has no `{name}` field; columns are {sorted(row)}",
            hint=f"give that row its {role} (in the column the other rows hold it in), or remove the row",
        )
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):  # NaN: pandas' missing number
        return ""  # as an empty field: an empty response drops the row (counted as `dropped_empty`)
    text = _as_text(value)
    if text is None:
        others = [k for k, v in row.items() if k != name and isinstance(v, str) and k not in COLUMN_KEYS]
        column = f"`{name}` (the {role})" if role != name else f"`{name}`"
        kind = _KINDS.get(type(value), f"a {type(value).__name__}")
        mapping = shlex.quote(f"data.columns.{role}={others[0]}") if others else None
        raise TunewizError(
            f"row {index} of {source}: {column} is {kind}, expected text",
            hint=f"make `{name}` text in that row"
            + (f", or take the {role} from another column: `--set {mapping}`" if mapping else ""),
        )
    return text


def row_to_messages(row: dict[str, Any], fmt: DataFormat, index: int, source: str) -> list[dict[str, str]]:
    """The conversation of a prompt/response (``alpaca``) or ``chat`` row.

    A prompt/response row becomes [system,] user, assistant; its ``input`` (when the prompt is
    another column) follows the prompt after a blank line. A chat row's turns keep their order.

    Args:
        row: the row (columns renamed).
        fmt: ``alpaca`` or ``chat``.
        index: 1-based row number, for error messages.
        source: file or dataset name, for error messages.

    Raises:
        TunewizError: a missing or non-text field, a malformed turn, an unknown role.
    """
    if fmt == "alpaca":
        prompt_key = prompt_column(row) or "prompt"
        response_key = response_column(row) or "response"
        prompt = _field(row, prompt_key, index, source, role="prompt")
        extra = (
            _field(row, "input", index, source, role="input", optional=True) if prompt_key != "input" else ""
        )
        if extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        system = _field(row, "system", index, source, role="system", optional=True)
        return [
            *([{"role": "system", "content": system}] if system.strip() else []),
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": _field(row, response_key, index, source, role="response")},
        ]
    name = _find(row, CHAT_NAMES)
    if name is None:
        raise TunewizError(
            f"row {index} of {source} has no `messages` field; columns are {sorted(row)}",
            hint="give that row its conversation (in the column the other rows hold it in), or remove it",
        )
    turns = row[name]
    if not isinstance(turns, list) or not turns:
        raise TunewizError(
            f"row {index} of {source}: `{name}` must be a non-empty list of turns",
            hint="each turn is {role: ..., content: ...} or {from: ..., value: ...}",
        )
    messages = []
    for turn_no, turn in enumerate(turns, start=1):
        role_key = next((k for k in ("role", "from") if isinstance(turn, dict) and k in turn), None)
        content_key = next((k for k in ("content", "value") if isinstance(turn, dict) and k in turn), None)
        if role_key is None or content_key is None:
            raise TunewizError(
                f"row {index} of {source}: turn {turn_no} of `{name}` needs `role` and `content` "
                f"(or `from` and `value`); it has "
                f"{sorted(turn) if isinstance(turn, dict) else type(turn).__name__}",
                hint="each turn is {role: ..., content: ...} or {from: ..., value: ...}",
            )
        role = SHAREGPT_ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise TunewizError(
                f"row {index} of {source}: turn {turn_no} has unknown {role_key} `{turn[role_key]}`",
                hint=f"use one of {', '.join(SHAREGPT_ROLES)}",
            )
        content = _as_text(turn[content_key])
        if content is None:
            raise TunewizError(
                f"row {index} of {source}: turn {turn_no} `{content_key}` is not text", hint="fix that row"
            )
        messages.append({"role": role, "content": content})
    return messages


def row_to_text(row: dict[str, Any], index: int, source: str) -> str:
    """The ``text`` of a text-format row.

    Args:
        row: the row (columns renamed).
        index: 1-based row number, for error messages.
        source: file or dataset name, for error messages.
    """
    return _field(row, "text", index, source, role="text")
