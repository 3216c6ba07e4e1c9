"""Data formats: detect them from the columns, and turn rows into chat messages or plain text."""

from __future__ import annotations

from typing import Any, Literal

from tunewiz.errors import TunewizError

DataFormat = Literal["alpaca", "chat", "text"]
# ShareGPT `from` values and the chat roles they mean.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
CHAT_ROLES = ("system", "user", "assistant")
_FIX_HINT = "rename the columns with `data.columns` (e.g. {output: answer}) or set `data.format`"


def detect_format(rows: list[dict[str, Any]], *, source: str = "the dataset") -> DataFormat:
    """The format of ``rows`` from the first row's columns.

    Args:
        rows: rows as dicts (columns already renamed).
        source: the file or dataset name, for the error message.
    """
    keys = set(rows[0]) if rows else set()
    if "messages" in keys or "conversations" in keys:
        return "chat"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    raise TunewizError(
        f"cannot tell the format of {source} from its columns {sorted(keys)}: expected "
        "`instruction`+`output` "
        "(alpaca), `messages` or `conversations` (chat), or `text`",
        hint=_FIX_HINT,
    )


def _field(row: dict[str, Any], name: str, index: int, source: str, *, optional: bool = False) -> str:
    value = row.get(name)
    if value is None:
        if optional:
            return ""
        raise TunewizError(
            f"row {index} of {source} has no `{name}` field; columns are {sorted(row)}", hint=_FIX_HINT
        )
    if not isinstance(value, str):
        raise TunewizError(
            f"row {index} of {source}: `{name}` is a {type(value).__name__}, expected text",
            hint="fix that row, or map another column with `data.columns`",
        )
    return value


def row_to_messages(row: dict[str, Any], fmt: DataFormat, index: int, source: str) -> list[dict[str, str]]:
    """The conversation of an alpaca or chat row.

    Args:
        row: the row (columns renamed).
        fmt: ``alpaca`` or ``chat``.
        index: 1-based row number, for error messages.
        source: file or dataset name, for error messages.
    """
    if fmt == "alpaca":
        instruction = _field(row, "instruction", index, source)
        extra = _field(row, "input", index, source, optional=True)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": _field(row, "output", index, source)},
        ]
    if "messages" in row:
        turns, role_key, content_key, roles = row["messages"], "role", "content", {r: r for r in CHAT_ROLES}
        name = "messages"
    elif "conversations" in row:
        turns, role_key, content_key, roles = row["conversations"], "from", "value", SHAREGPT_ROLES
        name = "conversations"
    else:
        raise TunewizError(
            f"row {index} of {source} has no `messages` field; columns are {sorted(row)}", hint=_FIX_HINT
        )
    if not isinstance(turns, list) or not turns:
        raise TunewizError(
            f"row {index} of {source}: `{name}` must be a non-empty list of turns",
            hint=f"each turn is {{{role_key}: ..., {content_key}: ...}}",
        )
    messages = []
    for turn_no, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise TunewizError(
                f"row {index} of {source}: turn {turn_no} of `{name}` needs `{role_key}` and "
                f"`{content_key}`; it has {sorted(turn) if isinstance(turn, dict) else type(turn).__name__}",
                hint=f"each turn is {{{role_key}: ..., {content_key}: ...}}",
            )
        role = roles.get(turn[role_key])
        if role is None:
            raise TunewizError(
                f"row {index} of {source}: turn {turn_no} has unknown {role_key} `{turn[role_key]}`",
                hint=f"use one of {', '.join(roles)}",
            )
        if not isinstance(turn[content_key], str):
            raise TunewizError(
                f"row {index} of {source}: turn {turn_no} `{content_key}` is not text", hint="fix that row"
            )
        messages.append({"role": role, "content": turn[content_key]})
    return messages


def row_to_text(row: dict[str, Any], index: int, source: str) -> str:
    """The ``text`` of a text-format row.

    Args:
        row: the row (columns renamed).
        index: 1-based row number, for error messages.
        source: file or dataset name, for error messages.
    """
    return _field(row, "text", index, source)
