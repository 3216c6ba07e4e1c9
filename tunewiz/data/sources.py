"""Reading rows: shipped samples, local .json/.jsonl/.csv/.parquet files, and Hub datasets."""

from __future__ import annotations

import codecs
import csv
import difflib
import json
import re
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunewiz.errors import TunewizError

SHIPPED_PREFIX = "tunewiz:"
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_DELIMITERS = (",", ";", "\t", "|")  # the first wins a tie
_NOT_CP1252 = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")


def shipped_datasets_dir() -> Path:
    """Directory of the sample datasets shipped in the package (``tunewiz:<name>``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "datasets"


def load_rows(path: str, *, split: str, columns: dict[str, str]) -> list[dict[str, Any]]:
    """Read every row of a data source as a dict, with columns renamed to the format's names.

    Args:
        path: ``tunewiz:<name>`` (shipped sample), a local .json (list or JSONL), .jsonl, .csv or
            .parquet file, or a Hugging Face dataset id.
        split: the split to read from a Hub dataset (local files have one split).
        columns: ``{role: dataset_column}`` renames, e.g. ``{"prompt": "question", "response": "answer"}``
            (see :mod:`tunewiz.data.formats`).

    Raises:
        TunewizError: no rows, an unreadable source, a mapped column the first row does not have.
    """
    rows = _read(path, split)
    if not rows:
        raise TunewizError(
            f"{_label(path)} has no rows", hint="check the file, or point `data.path` at another one"
        )
    if columns:
        missing = [c for c in columns.values() if c not in rows[0]]
        if missing:
            raise TunewizError(
                f"{_label(path)} has no column {', '.join(f'`{c}`' for c in missing)} "
                f"(named in `data.columns`); its columns are {sorted(rows[0])}",
                hint="map existing columns, e.g. `--set 'data.columns={prompt: "
                f"{next(iter(rows[0]), 'COLUMN')}, response: {list(rows[0])[-1]}}}'`",
            )
        renames = {source: target for target, source in columns.items()}
        rows = [{renames.get(key, key): value for key, value in row.items()} for row in rows]
    return rows


def _label(path: str) -> str:
    return Path(path).name if not path.startswith(SHIPPED_PREFIX) else path


def _read(path: str, split: str) -> list[dict[str, Any]]:
    if path.startswith(SHIPPED_PREFIX):
        return _read_shipped(path[len(SHIPPED_PREFIX) :])
    local = Path(path).expanduser()
    if local.is_file():
        return _read_local(local)
    close = _close_local_file(path)
    if (
        close is not None
        or local.suffix.lower() in LOCAL_SUFFIXES
        or local.is_absolute()
        or path.startswith((".", "~"))
        or not _HUB_ID.match(path)
    ):
        raise TunewizError(
            f"data file `{path}` does not exist" + (f" (did you mean `{close}`?)" if close else ""),
            hint=f"use `--set data.path={shlex.quote(close)}`"
            if close
            else "check `data.path`; it takes a local .json/.jsonl/.csv/.parquet file, "
            "`tunewiz:<sample>` or a Hugging Face dataset id",
        )
    return _read_hub(path, split)


def _close_local_file(path: str) -> str | None:
    """A data file next to ``path`` whose name is close to its name (a typo), as the user would write it."""
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        return None
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in LOCAL_SUFFIXES and p.is_file())
    close = difflib.get_close_matches(Path(path).name, names, n=1, cutoff=0.7)
    return str(Path(path).parent / close[0]) if close else None


def _read_shipped(name: str) -> list[dict[str, Any]]:
    folder = shipped_datasets_dir()
    file = folder / f"{name}.jsonl"
    if not file.is_file():
        available = sorted(p.stem for p in folder.glob("*.jsonl"))
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
        guess = f"{SHIPPED_PREFIX}{close[0]}" if close else None
        raise TunewizError(
            f"no shipped dataset `tunewiz:{name}`"
            + (f" (did you mean `{guess}`?)" if guess else "")
            + "; available: "
            + (", ".join(f"`{SHIPPED_PREFIX}{a}`" for a in available) or "none"),
            hint=f"use `--set data.path={guess}`"
            if guess
            else "use one of the names above, or a local file path in `data.path`",
        )
    return _read_jsonl(file)


def _read_local(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise TunewizError(
            f"{path.name}: unsupported data file type `{suffix}`",
            hint=f"convert it to one of {', '.join(LOCAL_SUFFIXES)}",
        )
    if path.stat().st_size == 0:
        raise TunewizError(
            f"{path.name} is empty", hint="check the file, or point `data.path` at another one"
        )
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path)
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_json(path: Path) -> list[dict[str, Any]]:
    """A .json file: a list of objects, or one object per line (JSONL under a .json name)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if not text.lstrip().startswith("["):
        return _jsonl_rows(path, text.split("\n"))
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TunewizError(
            f"{path.name} line {exc.lineno} is not valid JSON: {exc.msg}",
            hint="fix the file (a JSON list of objects, or one object per line)",
        ) from exc
    return _objects(rows, path.name)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line (LF or CRLF; a byte-order mark is skipped), read line by line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return _jsonl_rows(path, f)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _jsonl_rows(path: Path, lines: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TunewizError(
                f"{path.name} line {lineno} is not valid JSON: {exc.msg}",
                hint="each line of a .jsonl file must be one JSON object",
            ) from exc
        if not isinstance(row, dict):
            raise TunewizError(
                f"{path.name} line {lineno} is a JSON {type(row).__name__}, not an object",
                hint='each line must be an object such as {"instruction": ..., "output": ...}',
            )
        rows.append(row)
    return rows


def _objects(rows: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        raise TunewizError(
            f"{name} holds a JSON {type(rows).__name__}, not a list of rows",
            hint="use a JSON list of objects, or one object per line (.jsonl)",
        )
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise TunewizError(
                f"row {i} of {name} is a JSON {type(row).__name__}, not an object",
                hint='each row must be an object such as {"instruction": ..., "output": ...}',
            )
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """A CSV file as spreadsheets write it: UTF-8 with or without a byte-order mark, CRLF or LF,
    quoted fields with newlines, fields of any length, and `,`, `;` (European Excel) or tab
    separated (the separator that splits the header line into the most columns)."""
    # The csv module refuses fields over 131,072 characters by default; a long document is one field.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader: csv.DictReader[str] | None = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline()
            f.seek(0)
            delimiter = max(_DELIMITERS, key=lambda d: len(next(csv.reader([header], delimiter=d), [])))
            reader = csv.DictReader(f, delimiter=delimiter)
            rows = []
            for row in reader:
                if None in row:  # more fields than the header names
                    raise TunewizError(
                        f"{path.name} line {reader.line_num} has {len(row) - 1 + len(row[None])} fields; "
                        f"the header line names {len(row) - 1}",
                        hint=f'quote fields that hold the separator `{delimiter}` ("a{delimiter} b"), '
                        "as spreadsheets do when they save CSV",
                    )
                rows.append(row)
            columns = reader.fieldnames or []
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as exc:  # e.g. Python 3.10's "line contains NUL"
        line = reader.line_num if reader else 1
        raise TunewizError(
            f"{path.name} line {line} is not valid CSV: {exc}",
            hint="save the file from the spreadsheet again as `CSV UTF-8`",
        ) from None
    if not rows:
        raise TunewizError(
            f"{path.name} has a header line ({', '.join(columns)}) but no rows",
            hint="add rows under the header, or point `data.path` at another file",
        )
    return rows


def _not_utf8(path: Path) -> TunewizError:
    """The error for a file that is not UTF-8: its name, the line and byte offset of the first byte that
    is not, the bytes there, and an ``iconv`` command that re-saves it as UTF-8.

    Called where decoding failed; it reads the file again to find the byte (only on this error path:
    reading a good file decodes it once).
    """
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):  # a UTF-8 sequence never holds a newline byte
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line, offset, bad = lineno, offset + exc.start, raw[exc.start : exc.end]
                break
            offset += len(raw)
        else:
            line, bad = 0, b""  # not reached: the file failed to decode
        f.seek(0)
        # Windows-1252 leaves 0x81, 0x8d, 0x8f, 0x90 and 0x9d undefined; a file with them is Latin-1.
        cp1252 = not any(b in chunk for chunk in iter(lambda: f.read(1 << 20), b"") for b in _NOT_CP1252)
        f.seek(0)
        utf16 = f.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # Excel's "Unicode Text"
    encoding, name = (
        ("UTF-16", "UTF-16") if utf16 else ("CP1252", "Windows-1252") if cp1252 else ("ISO-8859-1", "Latin-1")
    )
    fixed = path.with_name(f"{path.stem}-utf8{path.suffix}")
    return TunewizError(
        f"{path.name} is not UTF-8: line {line}, byte {offset} is {bad.hex(' ')} "
        f"(likely {name}, as Excel and older tools save text)",
        hint=f"re-save it as UTF-8: `iconv -f {encoding} -t UTF-8 "
        f"{shlex.quote(str(path))} > {shlex.quote(str(fixed))}`, then use it: "
        f"`--set data.path={shlex.quote(str(fixed))}`",
    )


def _read_hub(dataset_id: str, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # offline, unknown id, unknown split, gated: all surface here
        raise TunewizError(
            f"could not load Hugging Face dataset `{dataset_id}` (split `{split}`): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="check the id and `data.split`; offline, only datasets already in the HF cache "
            "load (run once online), or download it and point `data.path` at the file",
        ) from exc
    return ds.to_list()
