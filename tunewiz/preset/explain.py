"""Pydantic's validation errors, explained: one :class:`TunewizError` that names the key, the file and
line (from PyYAML's node marks) or the ``--set`` string, what was expected and what was given, and a
did-you-mean (a close key, or the name another fine-tuning tool uses for it)."""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tunewiz.errors import TunewizError, did_you_mean, set_argument
from tunewiz.preset.schema import Preset

# Names other fine-tuning tools use for our keys, so a user coming from them gets pointed right.
_SYNONYMS = {
    "learning_rate": "lr",
    "batch_size": "micro_batch_size",
    "per_device_train_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "gradient_accumulation": "grad_accum",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "lr_scheduler": "schedule",
    "lr_scheduler_type": "schedule",
    "scheduler": "schedule",
    "warmup": "warmup_steps",
    "gradient_checkpointing": "activation_checkpointing",
    "clip_grad_norm": "max_grad_norm",
    "r": "rank",
    "lora_r": "rank",
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "target_modules": "targets",
    "lora_target_modules": "targets",
    "sequence_len": "max_seq_len",
    "seq_len": "max_seq_len",
    "max_length": "max_seq_len",
    "model_name_or_path": "path",
    "base_model": "path",
    "dataset": "path",
    "save_steps": "every_n_steps",
    "save_total_limit": "keep_last",
}


def explain_validation_error(
    exc: ValidationError, path: Path, root: yaml.MappingNode, overrides: list[str]
) -> TunewizError:
    """Turn pydantic's errors into one TunewizError.

    The first (by line) is the message, the rest become `also:` lines.

    Args:
        exc: pydantic's error for the whole preset.
        path: the preset file, named in messages.
        root: the file's YAML node tree (for line numbers).
        overrides: the ``--set`` strings applied, so a message names the one that set a bad value.
    """
    explained = [_explain_one(err, path, root, overrides) for err in _without_union_tries(exc.errors())]
    explained.sort(key=lambda item: item[0])
    _, message, hint = explained[0]
    for _, other, _ in explained[1:]:
        message += f"\n  also: {other}"
    return TunewizError(message, hint=hint)


# How pydantic names the member of a union it tried, in an error's location: `str`, `DatasetEntry`,
# `list[union[str,DatasetEntry]]`, `function-after[...]`. Preset keys are lower-case words.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[A-Z]\w*|[\w-]+\[.*\])$")


def _without_union_tries(errors: list[Any]) -> list[dict[str, Any]]:
    """pydantic's errors with the union members it tried left out of their locations, and only the
    errors of the member that got furthest: a bad entry of ``data.path`` (``str | list[str |
    DatasetEntry]``) fails as a string, as a list item string, and as a DatasetEntry's field; only the
    last is the user's mistake. The value at each left-out location is kept as the ``input`` of a
    deeper error's ``container`` (for hints that rewrite the entry)."""
    cleaned = [
        {**err, "loc": tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))}
        for err in errors
    ]
    inputs = {err["loc"]: err.get("input") for err in cleaned}
    kept = []
    for err in cleaned:
        loc = err["loc"]
        if any(other["loc"][: len(loc)] == loc and len(other["loc"]) > len(loc) for other in cleaned):
            continue  # a shallower try of a union whose deeper member matched better
        if any(other["loc"] == loc for other in kept):
            continue  # the same place failed as another member of the union
        kept.append({**err, "containers": {k: v for k, v in inputs.items() if loc[: len(k)] == k}})
    return kept


def _entry_hint(err: dict[str, Any], override: str | None, fix: dict[str, Any]) -> str | None:
    """For an error in an entry of a list that a ``--set`` gave whole (``data.path=[...]``): the ``--set``
    of that list with the entry changed by ``fix`` (``{key: value}`` sets a key, ``{key: None}`` removes
    one), the other entries as written; None elsewhere."""
    loc = err["loc"]
    where = next((i for i, part in enumerate(loc) if isinstance(part, int)), None)
    if override is None or where is None:
        return None
    keys = override.partition("=")[0].strip()
    whole = err["containers"].get(loc[:where])
    if keys != _dotted(loc[:where]) or not isinstance(whole, list) or not isinstance(whole[loc[where]], dict):
        return None
    entries = list(whole)
    entry = {k: v for k, v in entries[loc[where]].items() if k not in fix}
    entries[loc[where]] = entry | {k: v for k, v in fix.items() if v is not None}
    return f"write it as `--set {set_argument(keys, entries)}`"


def _entry_of(err: dict[str, Any]) -> str:
    """`` (the entry of `d/qa.jsonl`)`` for an error in a list entry that has a ``path``, else ""."""
    loc = err["loc"]
    where = next((i for i, part in enumerate(loc) if isinstance(part, int)), None)
    entry = err["containers"].get(loc[: where + 1]) if where is not None else None
    return f" (the entry of `{entry['path']}`)" if isinstance(entry, dict) and "path" in entry else ""


def _explain_one(
    err: dict[str, Any], path: Path, root: yaml.MappingNode, overrides: list[str]
) -> tuple[int, str, str]:
    """Explain one pydantic error as (line for sorting, message, hint)."""
    loc = tuple(err["loc"])
    dotted = _dotted(loc)
    override = _override_for(loc, overrides)
    line = _line_of(root, loc)
    where = f" (from `--set {override}`)" if override else f" in `{path}` line {line}"
    parent, field = _field_at(loc)
    kind = err["type"]

    if kind == "extra_forbidden":
        section = _dotted(loc[:-1])
        model = parent if parent is not None else Preset
        suggestion = suggest_key(str(loc[-1]), model, section)
        close = re.search(r"`([^`]+)`", suggestion)
        rename = {str(loc[-1]): None} | (
            {close.group(1): err.get("input")} if close and close.group(1) in model.model_fields else {}
        )
        return (
            line,
            f"unknown key `{dotted}`{_entry_of(err)}{where}{suggestion}",
            f"{entry}; {valid_keys_hint(model, section)}"
            if (entry := _entry_hint(err, override, rename))
            else valid_keys_hint(model, section),
        )
    if kind == "missing":
        section = _dotted(loc[:-1])
        scope = f"section `{section}` of `{path}` (line {line})" if section else f"`{path}`"
        sub = section_model(field) if field is not None else None
        if sub is not None:
            required = ", ".join(f"`{k}`" for k, f in sub.model_fields.items() if f.is_required())
            hint = f"add a `{loc[-1]}:` section with {required} ({' '.join((sub.__doc__ or '').split())})"
            return line, f"missing required section `{dotted}` in {scope}", hint
        hint = f"add `{loc[-1]}:` to it" + (
            f" — {field.description}" if field is not None and field.description else ""
        )
        return line, f"missing required key `{dotted}` in {scope}", hint
    if loc == ():
        # A whole-preset rule (method vs output, ...): pydantic gives no location.
        return 0, f"`{path}`: {_strip_value_error(err['msg'])}", "change one of the keys it names"
    got = _show(err.get("input"))
    # An item of a list or mapping (train.betas[0]) is documented by the field that holds it.
    documented = field if field is not None else _field_at(loc[:-1])[1]
    hint = (
        documented.description
        if documented is not None and documented.description
        else valid_keys_hint(Preset, "")
    )
    if field is not None and section_model(field) is not None:
        return (
            line,
            f"`{dotted}`{where} must be a section (a mapping of keys), got `{got}`",
            valid_keys_hint(section_model(field), dotted),
        )
    choices = _literal_choices(field) if field is not None else None
    if choices and kind == "literal_error":
        suggestion = did_you_mean(str(err.get("input")), choices)
        return line, f"`{dotted}`{where} must be one of {', '.join(choices)}; got `{got}`{suggestion}", hint
    if field is not None and kind != "value_error":
        example = _example(field)
        fixed = _entry_hint(err, override, {str(loc[-1]): field.get_default()}) if example else None
        return (
            line,
            f"`{dotted}`{_entry_of(err)}{where}: expected {_expected(field)}, got `{got}`",
            f"{fixed} ({_expected(field)}): {field.description}"
            if fixed
            else _typed_hint(field, dotted, str(loc[-1]), override),
        )
    given = "" if kind == "value_error" else f", got `{got}`"
    return line, f"`{dotted}`{where}: {_strip_value_error(err['msg'])}{given}", hint


def _line_of(root: yaml.MappingNode, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest node along ``loc`` that exists in the file.

    The key itself when present.
    """
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _override_for(loc: tuple[Any, ...], overrides: list[str]) -> str | None:
    """The last override that set ``loc`` or a section containing it."""
    for override in reversed(overrides):
        keys = tuple(override.partition("=")[0].strip().split("."))
        if tuple(str(p) for p in loc[: len(keys)]) == keys:
            return override
    return None


def _field_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model that holds the last key of ``loc`` and that key's field.

    Both None unless ``loc`` names a schema field.
    """
    model: type[BaseModel] | None = Preset
    field: FieldInfo | None = None
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if isinstance(part, int) and field is not None and i < last:  # an item of a list of sections
            model = _item_model(field.annotation)
            continue
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return (model, None) if i == last else (None, None)
        field = model.model_fields[part]
        if i < last:
            model = section_model(field)
    return model, field


def _item_model(ann: Any) -> type[BaseModel] | None:
    """The section model an annotation's list items may be (``list[str | DatasetEntry]`` ->
    ``DatasetEntry``), or None."""
    for arg in get_args(ann):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        found = _item_model(arg)
        if found is not None:
            return found
    return None


def section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The section model a field holds (``Preset.train`` -> ``TrainSection``), or None for a value.

    Args:
        field: a schema field.
    """
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def suggest_key(key: str, model: type[BaseModel], section: str) -> str:
    """A did-you-mean for an unknown key, or "".

    A close key of this section, or a name other tools use for one, or a key of another section.

    Args:
        key: the unknown key.
        model: the section it was found in.
        section: that section's dotted name; "" for the top level.
    """
    valid = list(model.model_fields)
    close = did_you_mean(key, valid)
    if close:
        return close
    synonym = difflib.get_close_matches(key.lower(), list(_SYNONYMS), n=1, cutoff=0.8)
    target = _SYNONYMS[synonym[0]] if synonym else key
    if target in valid:
        return f" (did you mean `{target}`?)"
    for name, other in Preset.model_fields.items():
        sub = section_model(other)
        if sub is not None and target in sub.model_fields and name != section:
            return f" (did you mean `{name}.{target}`?)"
    return ""


def valid_keys_hint(model: type[BaseModel], section: str) -> str:
    """The hint that lists a section's keys.

    Args:
        model: the section's model.
        section: its dotted name; "" for the top level.
    """
    where = f"`{section}`" if section else "a preset's top level"
    return f"valid keys in {where}: {', '.join(model.model_fields)}"


def _literal_choices(field: FieldInfo) -> list[str] | None:
    ann = strip_optional(field.annotation)
    return [str(c) for c in get_args(ann)] if get_origin(ann) is Literal else None


def strip_optional(ann: Any) -> Any:
    """``X | None`` -> ``X``; any other annotation unchanged.

    Args:
        ann: a type annotation.
    """
    if get_origin(ann) in (Union, types.UnionType):
        rest = [a for a in get_args(ann) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return ann


def _expected(field: FieldInfo) -> str:
    """What a field takes, in words: ``an integer > 0``, ``a number >= 0 and < 1 (or null)``."""
    ann = strip_optional(field.annotation)
    origin = get_origin(ann)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if origin is list:
        text = "a list of strings" if get_args(ann) == (str,) else "a list"
    elif origin is dict:
        text = "a mapping of names to strings"
    elif origin is tuple:
        text = f"a list of {len(get_args(ann))} numbers"
    else:
        text = names.get(ann, getattr(ann, "__name__", str(ann)))
    bounds = []
    for meta in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, attr)}")
    if bounds:
        text += " " + " and ".join(bounds)
    if ann is not field.annotation:
        text += " (or null)"
    return text


def _typed_hint(field: FieldInfo, dotted: str, key: str, override: str | None) -> str:
    """A hint that shows the value written the way it is accepted, where the user wrote it (a ``--set``
    or the file), then what the field is: ``write it as `--set lora.rank=16` (an integer > 0): Rank r of
    the low-rank update B·A.``"""
    example = _example(field)
    if example is None:
        shown = f"{_expected(field)}"
    elif override:
        shown = f"`--set {dotted}={example}` ({_expected(field)})"
    else:
        shown = f"`{key}: {example}` ({_expected(field)})"
    about = f": {field.description}" if field.description else ""
    return f"write it as {shown}{about}"


def _example(field: FieldInfo) -> str | None:
    """A value the field accepts, as it would be typed: its default when it has one, else None."""
    default = field.get_default(call_default_factory=True)
    if default is None or default is PydanticUndefined:
        return None
    if isinstance(default, list | tuple):
        return "[" + ",".join(_show(item) for item in default) + "]"
    return _show(default)


def _strip_value_error(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    """A value as the user would have written it in YAML, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = (
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    )
    text = text.removesuffix("\n...").strip()
    return text if len(text) <= 60 else text[:57] + "..."
