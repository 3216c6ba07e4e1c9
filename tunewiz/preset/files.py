"""Preset files: find them, read them, apply ``--set`` overrides, validate, and write them back.

The schema lives in :mod:`tunewiz.preset.schema`; this module turns a YAML file plus overrides into a
:class:`~tunewiz.preset.schema.Preset`, and turns every way that can fail into a :class:`TunewizError`
that names the culprit: the file and line of a key (from PyYAML's node marks), the ``--set``
string that set it, what was expected and what was given, and a did-you-mean
(:mod:`tunewiz.preset.explain` explains pydantic's errors).
"""

from __future__ import annotations

import copy
import json
import re
import textwrap
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from tunewiz import __version__
from tunewiz.atomic import atomic_write_text
from tunewiz.errors import TunewizError, did_you_mean
from tunewiz.preset.explain import (
    explain_validation_error,
    section_model,
    strip_optional,
    suggest_key,
    valid_keys_hint,
)
from tunewiz.preset.schema import Preset

PRESET_SUFFIXES = (".yaml", ".yml")
# A checkout (or an editable install) has presets/ beside the package; an installed package's
# parent is site-packages, where a stray presets/ from another package must not count.
_CHECKOUT = Path(__file__).resolve().parents[2]  # tunewiz/preset/files.py -> the checkout
# Where `pip install .` puts them (pyproject's [tool.setuptools.data-files]), relative to the prefix.
_INSTALLED_PRESETS = ("share", "tunewiz", "presets")


def shipped_presets() -> list[Path]:
    """Shipped preset files, sorted: the checkout's ``presets/`` (recursively), else the installed copies."""
    if (_CHECKOUT / "pyproject.toml").is_file():
        found = (_CHECKOUT / "presets").rglob("*")
        return sorted(p for p in found if p.suffix in PRESET_SUFFIXES and p.is_file())
    return _installed_presets()


def _installed_presets() -> list[Path]:
    # A non-editable install has no checkout beside the package; the wheel's data files sit under
    # the install prefix, which the distribution's RECORD knows for every scheme (venv, --user).
    from importlib import metadata

    try:
        files = metadata.distribution("tunewiz").files or []
    except metadata.PackageNotFoundError:
        return []
    found = []
    for file in files:
        parts = file.parts
        if file.suffix in PRESET_SUFFIXES and len(parts) >= 4 and parts[-4:-1] == _INSTALLED_PRESETS:
            found.append(Path(file.locate()).resolve())
    return sorted(found)


def preset_name(path: Path) -> str:
    """The name a shipped preset is called by: its file name without the suffix (``tiny-lora``)."""
    return path.stem


def resolve_preset_path(path_or_name: str) -> Path:
    """Find a preset: an existing YAML file, else a shipped preset by name.

    Args:
        path_or_name: a path to a YAML file, or the name of a shipped preset (``tiny-lora``).

    Raises:
        TunewizError: neither exists; the hint lists the shipped names.
    """
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    shipped = {preset_name(p): p for p in shipped_presets()}
    if path_or_name in shipped:
        return shipped[path_or_name]
    if path.is_dir():
        raise TunewizError(
            f"preset `{path_or_name}` is a directory, not a YAML file", hint="give the path of a .yaml file"
        )
    names = ", ".join(f"`{n}`" for n in shipped) or "none found"
    raise TunewizError(
        f"preset `{path_or_name}` not found{did_you_mean(path.stem, list(shipped))}",
        hint=f"give a YAML file, or a shipped preset name: {names} (see `tunewiz presets list`)",
    )


def header_comment(path: Path) -> str:
    """The first sentence of the comment block a preset file starts with (its description), or ``""``.

    A sentence may run over several comment lines; it ends at a line ending in ``.``, at a labelled
    line such as ``Launch: ...``, or where the comment block ends.
    """
    parts: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        text = stripped.lstrip("#").strip()
        if not text:
            if parts:
                break
            continue
        if parts and re.match(r"[A-Z][\w' ]*:\s", text):  # `Launch: ...` starts the next item
            break
        parts.append(text)
        if text.endswith((".", "!", "?")):
            break
    return " ".join(parts)


def copy_preset(path_or_name: str, dest: Path, force: bool = False) -> Path:
    """Copy a preset file as written (comments kept) to ``dest``.

    Args:
        path_or_name: a shipped preset name or a YAML file.
        dest: the file to write, or an existing directory to write the preset's file name into.
        force: overwrite ``dest`` when it exists.

    Returns:
        The file written.

    Raises:
        TunewizError: the preset is not found, or ``dest`` exists and ``force`` is false.
    """
    source = resolve_preset_path(path_or_name)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise TunewizError(
            f"`{target}` already exists; not overwriting it",
            hint="pass `--force` to overwrite it, or choose another file: `tunewiz presets copy "
            f"{path_or_name} OTHER.yaml`",
        )
    atomic_write_text(target, source.read_text(encoding="utf-8"))
    return target


def load_preset(path_or_name: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Preset, Path | None]:
    """Read a preset file or shipped preset, apply ``--set`` overrides, and validate it.

    Args:
        path_or_name: a YAML file path, or a shipped preset name (``tiny-lora``).
        overrides: ``KEY=VALUE`` strings (``train.lr=1e-4``), applied in order after the file.

    Returns:
        The validated preset, and the file it was read from.

    Raises:
        TunewizError: the file is missing or not valid YAML, a key is unknown, a value has the
            wrong type or range, a required key is missing, or an override is malformed.
    """
    path = resolve_preset_path(path_or_name)
    data, root = _read_yaml(path)
    data = apply_overrides(data, list(overrides))
    try:
        return Preset.model_validate(data), path
    except ValidationError as exc:
        raise explain_validation_error(exc, path, root, list(overrides)) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.MappingNode]:
    """Parse ``path`` into plain data and the node tree that knows each key's line."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark and exc.context_mark is not mark:
            # An unclosed bracket or quote fails at the end; say where it was opened.
            start = exc.context_mark
            problem += f" ({exc.context} that starts at line {start.line + 1}, column {start.column + 1})"
        raise TunewizError(
            f"`{where}`: YAML syntax error: {problem}",
            hint="fix the YAML at that line and column (check indentation, a missing `:`, or an "
            "unclosed quote or bracket)",
        ) from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise TunewizError(
            f"preset `{path}` must be a mapping of keys (name, model, data, ...), got {_kind(data)}",
            hint="start from a shipped preset: `tunewiz presets copy tiny-lora my.yaml`",
        )
    _check_duplicate_keys(root, path)
    return data, root


def _check_duplicate_keys(node: yaml.Node, path: Path, prefix: str = "") -> None:
    # PyYAML keeps the last of two equal keys silently; a preset with both is a mistake.
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            dotted = f"{prefix}{key.value}"
            line = key.start_mark.line + 1
            if key.value in seen:
                raise TunewizError(
                    f"`{dotted}` appears twice in `{path}` (lines {seen[key.value]} and {line})",
                    hint="keep one of them",
                )
            seen[key.value] = line
            _check_duplicate_keys(value, path, f"{dotted}.")
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, path, prefix)


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``KEY=VALUE`` overrides applied in order.

    Values are parsed as YAML (``1e-4``, ``true``, ``null``, ``[q_proj, v_proj]``), except that a
    string-typed key keeps the text as written (``name=2024`` stays ``"2024"``) and a list-typed key
    also takes the comma form (``lora.targets=q_proj,v_proj`` is ``[q_proj, v_proj]``, and
    ``lora.targets=q_proj`` is ``[q_proj]``).

    Args:
        data: the preset as plain data (not modified).
        overrides: strings like ``train.lr=1e-4`` or ``lora.targets=[q_proj,v_proj]``.

    Raises:
        TunewizError: an override has no ``=``, names an unknown key, or has unparsable YAML.
    """
    result = copy.deepcopy(data)
    for override in overrides:
        keys, raw = _split_override(override)
        annotation = _check_override_keys(keys, override)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise TunewizError(
                f"`--set {override}`: `{raw}` is not a valid YAML value",
                hint="quote strings with special characters, and write lists as `[a, b]`",
            ) from None
        keys_glued = _glued_colons(value)
        if keys_glued:
            fixed = raw
            for key in keys_glued:  # one at a time: a key glued twice is fixed at each place
                name, _, item = key.partition(":")
                fixed = fixed.replace(key, f"{name}: {item}", 1)
            fixed = f"{'.'.join(keys)}={fixed}"
            distinct = list(dict.fromkeys(keys_glued))
            glued = " and ".join(f"`{key}`" for key in distinct) + (
                " reads as one key" if len(distinct) == 1 else " read as keys"
            )
            raise TunewizError(
                f"`--set {override}`: {glued} with no value (YAML needs a space after the colon)",
                hint=f"put a space after the colon: `--set '{fixed}'`",
            )
        if strip_optional(annotation) is str and value is not None and not isinstance(value, str):
            value = raw
        if get_origin(strip_optional(annotation)) is list and isinstance(value, str):
            value = [
                part.strip() for part in value.split(",") if part.strip()
            ]  # `a,b` is `[a, b]`, `a` `[a]`
        target = result
        for depth, key in enumerate(keys[:-1]):
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                section = ".".join(keys[: depth + 1])
                raise TunewizError(
                    f"`--set {override}`: `{section}` is {_kind(child)} in the preset, not a section",
                    hint=f"set the whole value instead: `--set {section}=...`",
                )
            target = child
        target[keys[-1]] = value
    return result


def _glued_colons(value: Any) -> list[str]:
    """The mapping keys like ``prompt:question`` with no value in a parsed value (``{prompt:question}``:
    YAML reads ``key:value`` without a space as one key), in the order they are written."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and ":" in key.strip(":") and item is None:
                found.append(key)
            else:
                found += _glued_colons(item)
    elif isinstance(value, list):
        for item in value:
            found += _glued_colons(item)
    return found


def _split_override(override: str) -> tuple[list[str], str]:
    key, sep, raw = override.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise TunewizError(
            f"`--set {override}` must have the form KEY=VALUE",
            hint="for example `--set train.lr=1e-4` or `--set lora.targets=[q_proj,v_proj]`",
        )
    return keys, raw.strip()


def _check_override_keys(keys: list[str], override: str) -> Any:
    """Check an override's key path against the schema; return the type of the value it sets."""
    model: type[BaseModel] | None = Preset
    field: FieldInfo | None = None
    for depth, key in enumerate(keys):
        if model is None:
            # Past a leaf: only a mapping-valued field (data.columns) takes sub-keys.
            if field is not None and get_origin(field.annotation) is dict and depth == len(keys) - 1:
                return get_args(field.annotation)[1]
            parent = ".".join(keys[:depth])
            raise TunewizError(
                f"`--set {override}`: `{parent}` is a single value, not a section",
                hint=f"set it directly: `--set {parent}=...`",
            )
        if key not in model.model_fields:
            section = ".".join(keys[:depth])
            raise TunewizError(
                f"unknown key `{'.'.join(keys[: depth + 1])}` in `--set "
                f"{override}`{suggest_key(key, model, section)}",
                hint=valid_keys_hint(model, section),
            )
        field = model.model_fields[key]
        model = section_model(field)
    return field.annotation if field is not None else None


def _kind(value: Any) -> str:
    return "empty" if value is None else f"a {type(value).__name__}"


def dump_preset(preset: Preset) -> str:
    """The resolved preset as YAML: every key with its value (defaults filled in), in schema order,
    each preceded by its description as a comment, under a header comment.

    Args:
        preset: a validated preset.

    Returns:
        YAML text that :func:`load_preset` reads back to an equal preset.
    """
    data = preset.model_dump(mode="json")
    lines = [
        f"# Resolved tunewiz preset `{' '.join(preset.name.split())}`: every default filled in "
        f"(tunewiz {__version__}).",
        "# Train it with `tunewiz train THIS_FILE`; the comments say what each key does.",
    ]
    for name, field in Preset.model_fields.items():
        section = section_model(field)
        lines.append("")
        lines.extend(_comment(field.description or (section.__doc__ if section else ""), ""))
        if section is None:
            lines.append(_yaml_line(name, data[name]))
            continue
        lines.append(f"{name}:")
        for sub_name, sub_field in section.model_fields.items():
            lines.extend(_comment(sub_field.description or "", "  "))
            lines.append(_yaml_line(sub_name, data[name][sub_name], "  "))
    return "\n".join(lines) + "\n"


def _comment(text: str, indent: str) -> list[str]:
    text = " ".join(text.split())
    return (
        textwrap.wrap(text, width=100, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")
        if text
        else []
    )


def _yaml_line(key: str, value: Any, indent: str = "") -> str:
    # Flow style keeps each key on one line, so the comment above it stays next to it. A plain
    # scalar dumped alone ends with the document-end marker `...`, which is dropped.
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    text = text.removesuffix("\n").removesuffix("\n...").strip()
    if "\n" in text:
        # A string with line breaks would fold over several lines; JSON is YAML on one line.
        text = json.dumps(value, ensure_ascii=False)
    return f"{indent}{key}: {text}"
