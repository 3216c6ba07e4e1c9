"""Reading rows: shipped samples, local .json/.jsonl/.csv/.tsv/.parquet files (the text ones also
compressed: ``.gz``, ``.bz2``, ``.xz``), and Hub datasets."""

from __future__ import annotations

import bz2
import codecs
import csv
import difflib
import gzip
import io
import json
import lzma
import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from tunewiz.data.formats import COLUMN_KEYS, recognised_renames
from tunewiz.errors import TunewizError

SHIPPED_PREFIX = "tunewiz:"
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet")
# Compressed text files (`rows.jsonl.gz`, as Hub repositories and `datasets` exports often hold them).
_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_DECOMPRESSORS = {".gz": "gzip -dc", ".bz2": "bzip2 -dc", ".xz": "xz -dc"}  # to stdout, for a hint
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_DELIMITERS = (",", ";", "\t", "|")  # the first wins a tie
_NOT_CP1252 = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")


def data_suffix(path: Path | str) -> str:
    """The data type suffix of a file name, lower-case, under a compression suffix: ``rows.jsonl.gz`` →
    ``.jsonl``, ``Sheet.CSV`` → ``.csv``; a compressed parquet file (not readable) keeps ``.gz``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _COMPRESSIONS:
        inner = Path(path.stem).suffix.lower()
        return inner if inner in LOCAL_SUFFIXES and inner != ".parquet" else suffix
    return suffix


def is_data_file(path: Path | str) -> bool:
    """Whether ``path``'s name is a data file tunewiz reads (:data:`LOCAL_SUFFIXES`, maybe compressed)."""
    return data_suffix(path) in LOCAL_SUFFIXES


def _open_bytes(path: Path) -> IO[bytes]:
    """``path`` for reading bytes, decompressed when its name says it is compressed."""
    opener = _COMPRESSIONS.get(path.suffix.lower())
    return opener(path, "rb") if opener is not None else open(path, "rb")  # type: ignore[operator]


def _open_text(path: Path, *, newline: str | None = None) -> IO[str]:
    """``path`` as text: UTF-16 when it starts with a UTF-16 byte-order mark (Excel's "Unicode Text"),
    else UTF-8 with or without one; decompressed as :func:`_open_bytes`.

    Raises:
        UnicodeDecodeError: while reading, at the first byte that is not UTF-8 (see :func:`_not_utf8`).
    """
    raw = _open_bytes(path)
    start = raw.read(2)
    raw.seek(0)
    utf16 = start in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    return io.TextIOWrapper(raw, encoding="utf-16" if utf16 else "utf-8-sig", newline=newline)


def shipped_datasets_dir() -> Path:
    """Directory of the sample datasets shipped in the package (``tunewiz:<name>``)."""
    return Path(__file__).resolve().parent.parent / "assets" / "datasets"


def load_rows(
    path: str, *, split: str, columns: dict[str, str], setting: str = "data.path"
) -> list[dict[str, Any]]:
    """Read every row of a data source as a dict, with columns renamed to the format's names.

    Column names match whatever their case and surrounding spaces: a mapped column `question` finds a
    file's `Question`, and a recognised name (`Answer`, ` output `) is renamed to the name
    :mod:`tunewiz.data.formats` knows (:func:`~tunewiz.data.formats.recognised_renames`).

    Args:
        path: ``tunewiz:<name>`` (shipped sample), a local .json (list or JSONL), .jsonl, .csv or
            .parquet file, or a Hugging Face dataset id.
        split: the split to read from a Hub dataset (local files have one split).
        columns: ``{role: dataset_column}`` renames, e.g. ``{"prompt": "question", "response": "answer"}``
            (see :mod:`tunewiz.data.formats`).
        setting: the preset key that names ``path`` (``data.path``, ``data.val_path``), for the hints.

    Raises:
        TunewizError: no rows, an unreadable source, a mapped column the first row does not have.
    """
    rows = _read(path, split, setting)
    if not rows:
        raise TunewizError(
            f"{_label(path)} has no rows", hint=f"check the file, or point `{setting}` at another one"
        )
    renames: dict[str, str] = {}
    if columns:
        found = {target: _column(rows[0], source) for target, source in columns.items()}
        missing = [columns[target] for target, column in found.items() if column is None]
        if missing:
            raise TunewizError(
                f"{_label(path)} has no column {', '.join(f'`{c}`' for c in missing)} "
                f"(named in `data.columns`); its columns are {sorted(rows[0])}",
                hint="map existing columns, e.g. `--set 'data.columns={prompt: "
                f"{next(iter(rows[0]), 'COLUMN')}, response: {list(rows[0])[-1]}}}'`",
            )
        renames = {column: target for target, column in found.items() if column is not None}
    renames |= recognised_renames([key for key in rows[0] if key not in renames], taken=set(renames.values()))
    if renames:
        rows = [{renames.get(key, key): value for key, value in row.items()} for row in rows]
    return rows


def _column(row: dict[str, Any], name: str) -> str | None:
    """The column of ``row`` that ``name`` means: itself, else the one column equal to it whatever the
    case and surrounding spaces."""
    if name in row:
        return name
    alike = [key for key in row if isinstance(key, str) and key.strip().lower() == name.strip().lower()]
    return alike[0] if len(alike) == 1 else None


def _label(path: str) -> str:
    return Path(path).name if not path.startswith(SHIPPED_PREFIX) else path


def _read(path: str, split: str, setting: str) -> list[dict[str, Any]]:
    if path.startswith(SHIPPED_PREFIX):
        return _read_shipped(path[len(SHIPPED_PREFIX) :], setting)
    check_local_path(path, setting)
    local = Path(path).expanduser()
    if local.is_file():
        return _read_local(local)
    return _read_hub(path, split, setting)


def check_local_path(path: str, setting: str = "data.path") -> None:
    """Raise unless ``path`` is a local data file, or a name that can only be a Hugging Face dataset id
    (or ``tunewiz:<sample>``). Shared by ``tunewiz prepare``, ``train``'s preflight and every read.

    Args:
        path: the value of ``setting``.
        setting: ``data.path`` or ``data.val_path``, for the hint's ``--set``.

    Raises:
        TunewizError: ``path`` is a directory (the hint names a data file in it), or a local-looking path
            (a data suffix, absolute, starting with ``.`` or ``~``, not an id) that does not exist (the
            hint names the closest data file next to it, when one is close).
    """
    if path.startswith(SHIPPED_PREFIX):
        return
    local = Path(path).expanduser()
    if local.is_file():
        return
    if local.is_dir():
        files = sorted(p.name for p in local.iterdir() if p.is_file() and is_data_file(p))
        shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        raise TunewizError(
            f"`{setting}` {path} is a directory"
            + (f"; its data files: {shown}" if files else f" with no {'/'.join(LOCAL_SUFFIXES)} file in it"),
            hint=f"point `{setting}` at one file in it: "
            f"`--set {setting}={shlex.quote(str(Path(path) / files[0]))}`"
            if files
            else f"point `{setting}` at a data file: `--set {setting}=FILE.jsonl`",
        )
    close = close_local_files(path)
    if (
        close
        or is_data_file(local)
        or local.is_absolute()
        or path.startswith((".", "~"))
        or not _HUB_ID.match(path)
    ):
        guesses = " or ".join(f"`{c}`" for c in close)
        raise TunewizError(
            f"data file `{path}` does not exist" + (f" (did you mean {guesses}?)" if close else ""),
            hint=f"use `--set {setting}={shlex.quote(close[0])}`"
            if close
            else f"check `{setting}` (relative paths are from the current directory); it takes a local "
            ".json/.jsonl/.csv/.tsv/.parquet file (maybe .gz), `tunewiz:<sample>` or a Hugging Face "
            "dataset id",
        )


def close_local_files(path: str) -> list[str]:
    """The data files next to ``path`` whose names are closest to its name (a typo), as the user would
    write them: all those tied for the closest, best first; empty when none is close (difflib ratio
    under 0.7)."""
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if is_data_file(p) and p.is_file())
    matcher = difflib.SequenceMatcher(b=Path(path).name)
    scored = []
    for name in names:
        matcher.set_seq1(name)
        scored.append((matcher.ratio(), name))
    best = max((score for score, _ in scored), default=0.0)
    if best < 0.7:
        return []
    return [str(Path(path).parent / name) for score, name in scored if score == best]


def _read_shipped(name: str, setting: str) -> list[dict[str, Any]]:
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
            hint=f"use `--set {setting}={guess}`"
            if guess
            else f"use one of the names above, or a local file path in `{setting}`",
        )
    return _read_jsonl(file)


def _read_local(path: Path) -> list[dict[str, Any]]:
    suffix = data_suffix(path)
    if suffix not in LOCAL_SUFFIXES:
        raise TunewizError(
            f"{path.name}: unsupported data file type `{suffix}`",
            hint=f"convert it to one of {', '.join(LOCAL_SUFFIXES)} (the text ones may be compressed: "
            f"{', '.join(_COMPRESSIONS)})",
        )
    if path.stat().st_size == 0:
        raise TunewizError(
            f"{path.name} is empty", hint="check the file, or point `data.path` at another one"
        )
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path)
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_json(path: Path) -> list[dict[str, Any]]:
    """A .json file: a list of objects, or one object per line (JSONL under a .json name)."""
    try:
        with _open_text(path) as f:
            text = f.read()
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if text.lstrip().startswith("{"):
        wrapped = _wrapped_rows(path, text)
        return wrapped if wrapped is not None else _jsonl_rows(path, text.split("\n"))
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


def _wrapped_rows(path: Path, text: str) -> list[dict[str, Any]] | None:
    """The rows of a .json file that is one object holding them in a list under one key, as
    ``{"data": [{...}, ...]}`` (what ``datasets``' json ``field=`` reads); says so on stderr. None when the
    file is not one such object (one row per line, or a single row with a recognised column).

    Raises:
        TunewizError: the object holds several lists of objects (the message names their keys).
    """
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(whole, dict) or any(key.strip().lower() in COLUMN_KEYS for key in whole):
        return None
    keys = [k for k, v in whole.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    if len(keys) > 1:
        raise TunewizError(
            f"{path.name} is one JSON object with lists of rows under several keys "
            f"({', '.join(f'`{k}`' for k in keys)}); tunewiz cannot tell which to read",
            hint=f"write the rows of one key as JSONL and use that file: `jq -c '.{keys[0]}[]' "
            f"{shlex.quote(str(path))} > {shlex.quote(str(path.with_suffix('.jsonl')))}`, then "
            f"`--set data.path={shlex.quote(str(path.with_suffix('.jsonl')))}`",
        )
    if not keys:
        return None
    print(
        f"note: {path.name} is one JSON object; reading the {len(whole[keys[0]]):,} row(s) of its "
        f"`{keys[0]}` list",
        file=sys.stderr,
    )
    return whole[keys[0]]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line (LF or CRLF; a byte-order mark is skipped), read line by line."""
    try:
        with _open_text(path) as f:
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
    """A CSV (or .tsv) file as spreadsheets write it: UTF-8 with or without a byte-order mark or UTF-16
    with one, CRLF or LF, quoted fields with newlines, fields of any length, and `,`, `;` (European
    Excel), tab or `|` separated: the separator that splits the header line into the most columns, or
    the one an Excel ``sep=;`` first line names."""
    # The csv module refuses fields over 131,072 characters by default; a long document is one field.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader: csv.DictReader[str] | None = None
    skipped = 0  # lines before the header (Excel's `sep=` line), for the line numbers of errors
    try:
        with _open_text(path, newline="") as f:
            header = f.readline()
            excel = re.fullmatch(r"sep=(.)\r?\n?", header)
            if excel:
                delimiter, skipped = excel.group(1), 1
            else:
                f.seek(0)
                delimiter = max(_DELIMITERS, key=lambda d: len(next(csv.reader([header], delimiter=d), [])))
            reader = csv.DictReader(f, delimiter=delimiter)
            # Header names without surrounding spaces (`question , answer`): a YAML mapping strips them.
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            rows = []
            for row in reader:
                if None in row:  # more fields than the header names
                    raise TunewizError(
                        f"{path.name} line {reader.line_num + skipped} has {len(row) - 1 + len(row[None])} "
                        f"fields; the header line names {len(row) - 1}",
                        hint=f'quote fields that hold the separator `{delimiter}` ("a{delimiter} b"), '
                        "as spreadsheets do when they save CSV",
                    )
                rows.append(row)
            columns = reader.fieldnames
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except csv.Error as exc:  # e.g. Python 3.10's "line contains NUL"
        line = (reader.line_num if reader else 1) + skipped
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
    """The error for a file that is not UTF-8 (nor UTF-16 with a byte-order mark): its name, the line and
    byte offset (of the decompressed text) of the first byte that is not, the bytes there, and an
    ``iconv`` command that re-saves it as UTF-8.

    Called where decoding failed; it reads the file again to find the byte (only on this error path:
    reading a good file decodes it once).
    """
    offset = 0
    with _open_bytes(path) as f:
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
    encoding, name = ("CP1252", "Windows-1252") if cp1252 else ("ISO-8859-1", "Latin-1")
    compression = path.suffix.lower() if path.suffix.lower() in _COMPRESSIONS else None
    stem = Path(path.stem).stem if compression else path.stem  # rows.jsonl.gz -> rows
    fixed = path.with_name(f"{stem}-utf8{data_suffix(path)}")  # written uncompressed
    iconv = f"iconv -f {encoding} -t UTF-8"
    command = (
        f"{_DECOMPRESSORS[compression]} {shlex.quote(str(path))} | {iconv}"
        if compression
        else f"{iconv} {shlex.quote(str(path))}"
    )
    return TunewizError(
        f"{path.name} is not UTF-8: line {line}, byte {offset} is {bad.hex(' ')} "
        f"(likely {name}, as Excel and older tools save text)",
        hint=f"re-save it as UTF-8: `{command} > {shlex.quote(str(fixed))}`, then use it: "
        f"`--set data.path={shlex.quote(str(fixed))}`",
    )


def _read_hub(dataset_id: str, split: str, setting: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # offline, unknown id, unknown split, gated: all surface here
        shipped = sorted(p.stem for p in shipped_datasets_dir().glob("*.jsonl"))
        close = difflib.get_close_matches(dataset_id, shipped, n=1, cutoff=0.8)
        raise TunewizError(
            f"could not load Hugging Face dataset `{dataset_id}` (split `{split}`): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint=f"for the shipped sample, use `--set {setting}={SHIPPED_PREFIX}{close[0]}`"
            if close
            else "check the id and `data.split`; offline, only datasets already in the HF cache "
            f"load (run once online), or download it and point `{setting}` at the file",
        ) from exc
    return ds.to_list()
