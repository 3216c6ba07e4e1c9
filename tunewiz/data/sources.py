"""Reading rows: shipped samples, local .json/.jsonl/.csv/.tsv/.parquet files (the text ones also
compressed: ``.gz``, ``.bz2``, ``.xz``), and Hub datasets."""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import difflib
import gzip
import io
import json
import lzma
import re
import shlex
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from tunewiz.data.formats import COLUMN_KEYS, Place, Rows, columns_hint, path_argument, recognised_renames
from tunewiz.errors import TunewizError, did_you_mean

if TYPE_CHECKING:
    from tunewiz.preset.schema import DataSection

SHIPPED_PREFIX = "tunewiz:"
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet")


class _Compression(NamedTuple):
    """A compression a text data file may have (``rows.jsonl.gz``, as Hub repositories and ``datasets``
    exports often hold them)."""

    open: Callable[..., IO[bytes]]
    tool: str  # its command, for hints: `TOOL -dc FILE` decompresses to stdout, `TOOL -t FILE` checks it
    magic: bytes  # how every file of this kind starts


_COMPRESSIONS = {
    ".gz": _Compression(gzip.open, "gzip", b"\x1f\x8b"),
    ".bz2": _Compression(bz2.open, "bzip2", b"BZh"),
    ".xz": _Compression(lzma.open, "xz", b"\xfd7zXZ\x00"),
}
# What a damaged compressed file raises while it is read: EOFError (cut off), zlib/lzma errors and OSError
# without an errno (gzip's BadGzipFile, bz2's "Invalid data stream"). An OSError with an errno is the
# system's (a permission, a disk) and is not about the file's content.
_DAMAGED = (EOFError, OSError, zlib.error, lzma.LZMAError)
_PARQUET_MAGIC = b"PAR1"  # a Parquet file starts and ends with it
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_DELIMITERS = (",", ";", "\t", "|")  # the first wins a tie
_NOT_CP1252 = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")
_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, decoded with "surrogateescape"
_NON_ASCII = re.compile("[^\x00-\x7f\udc80-\udcff]")  # a valid UTF-8 character that is not ASCII


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
    compression = _COMPRESSIONS.get(path.suffix.lower())
    return compression.open(path, "rb") if compression is not None else open(path, "rb")


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
    path: str, *, split: str, columns: dict[str, str], setting: str = "data.path", place: Place | None = None
) -> Rows:
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
        place: where ``path`` is in a list ``data.path`` (:func:`list_place`), so that hints change that
            entry only; None for a single dataset.

    Returns:
        the rows, as :class:`~tunewiz.data.formats.Rows` (which keeps the file's names of renamed columns).

    Raises:
        TunewizError: no rows, an unreadable source, a mapped column the first row does not have (the
            hint maps the file's columns: :func:`~tunewiz.data.formats.columns_hint`).
    """
    rows = _read(path, split, setting, place)
    if not rows:
        raise TunewizError(
            f"{_label(path)} has no rows", hint=f"check the file, or point `{setting}` at another one"
        )
    renames: dict[str, str] = {}
    if columns:
        found = {target: _column(rows[0], source) for target, source in columns.items()}
        missing = [columns[target] for target, column in found.items() if column is None]
        if missing:
            suggestion = "".join(did_you_mean(str(c), [str(k) for k in rows[0]]) for c in missing)
            raise TunewizError(
                f"{_label(path)} has no column {', '.join(f'`{c}`' for c in missing)} "
                f"(named in `data.columns`){suggestion}; its columns are {sorted(rows[0])}",
                hint=columns_hint(rows[0], place),
            )
        renames = {column: target for target, column in found.items() if column is not None}
    renames |= recognised_renames([key for key in rows[0] if key not in renames], taken=set(renames.values()))
    if renames:
        rows = [{renames.get(key, key): value for key, value in row.items()} for row in rows]
    return Rows(rows, {target: column for column, target in renames.items()}, place)


def _column(row: dict[str, Any], name: str) -> str | None:
    """The column of ``row`` that ``name`` means: itself, else the one column equal to it whatever the
    case and surrounding spaces."""
    if name in row:
        return name
    alike = [key for key in row if isinstance(key, str) and key.strip().lower() == name.strip().lower()]
    return alike[0] if len(alike) == 1 else None


def _label(path: str) -> str:
    return Path(path).name if not path.startswith(SHIPPED_PREFIX) else path


def _read(path: str, split: str, setting: str, place: Place | None) -> list[dict[str, Any]]:
    if path.startswith(SHIPPED_PREFIX):
        return _read_shipped(path[len(SHIPPED_PREFIX) :], setting, place)
    check_local_path(path, setting, place)
    local = Path(path).expanduser()
    if local.is_file():
        return _read_local(local, setting, place)
    return _read_hub(path, split, setting, place)


def check_data_paths(data: DataSection) -> None:
    """:func:`check_local_path` on every dataset of a preset's ``data`` and its ``val_path``: before
    anything reads or identifies the data (a Hub id is looked up on the Hub, with retries when offline).

    Raises:
        TunewizError: as :func:`check_local_path`, for the first path that is not there.
    """
    for k, entry in enumerate(data.datasets()):
        check_local_path(entry.path, place=list_place(data, k))
    if data.val_path:
        check_local_path(data.val_path, "data.val_path")


def list_place(data: DataSection, index: int) -> Place | None:
    """Where dataset ``index`` of ``data.path`` is when ``data.path`` is a list (the entries as the user
    wrote them: the keys they set), for hints that change that entry only; None for a single path."""
    if isinstance(data.path, str):
        return None
    entries = [e if isinstance(e, str) else e.model_dump(exclude_unset=True) for e in data.path]
    return Place(entries, index)


def check_local_path(path: str, setting: str = "data.path", place: Place | None = None) -> None:
    """Raise unless ``path`` is a local data file, or a name that can only be a Hugging Face dataset id
    (or ``tunewiz:<sample>``). Shared by ``tunewiz prepare``, ``train``'s preflight and every read.

    Args:
        path: the value of ``setting``.
        setting: ``data.path`` or ``data.val_path``, for the hint's ``--set``.
        place: where ``path`` is in a list ``data.path``: the hint's ``--set`` gives the whole list with
            this entry changed (one path would drop the others).

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
            f"`--set {path_argument(str(Path(path) / files[0]), setting, place)}`"
            if files
            else f"point `{setting}` at a data file: `--set {setting}=FILE.jsonl`",
        )
    close = close_local_files(path)
    # `d/qa` where `d` is a folder here is a local path: a Hub id whose owner is a local folder is unlikely.
    folder = Path(path).parent != Path(".") and local.parent.is_dir()
    if (
        close
        or folder
        or is_data_file(local)
        or local.is_absolute()
        or path.startswith((".", "~"))
        or not _HUB_ID.match(path)
    ):
        guesses = " or ".join(f"`{c}`" for c in close)
        hub = (
            f"; `{Path(path).parent}` is a folder here, so this is read as a local path (for the Hugging "
            "Face dataset, run from another directory)"
            if folder and _HUB_ID.match(path)
            else ""
        )
        raise TunewizError(
            f"data file `{path}` does not exist" + (f" (did you mean {guesses}?)" if close else ""),
            hint=f"use `--set {path_argument(close[0], setting, place)}`"
            if close
            else f"check `{setting}` (relative paths are from the current directory); it takes a local "
            ".json/.jsonl/.csv/.tsv/.parquet file (maybe .gz), `tunewiz:<sample>` or a Hugging Face "
            f"dataset id{hub}",
        )


def close_local_files(path: str) -> list[str]:
    """The data files next to ``path`` whose names are closest to its name (a typo), as the user would
    write them: all those tied for the closest, in name order; empty when none is close.

    Names are compared without their type and compression suffixes (``d/qa`` finds ``d/qa.jsonl``,
    ``train.jsnol`` finds ``train.jsonl``; a shared ``.jsonl`` alone makes no match: ``nope.jsonl`` does
    not find ``num.jsonl``), then as written to break ties. Close: a difflib ratio of at least 0.6
    between the bare names, 0.5 for names of 3 characters or fewer (``xa`` finds ``qa``).
    """
    folder = Path(path).expanduser().parent
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if is_data_file(p) and p.is_file())
    wanted = Path(path).name
    bare = _without_suffixes(wanted)

    def score(name: str) -> tuple[float, float]:
        stems = difflib.SequenceMatcher(a=bare, b=_without_suffixes(name)).ratio()
        return stems, difflib.SequenceMatcher(a=wanted, b=name).ratio()

    scored = [(score(name), name) for name in names]
    best = max((s for s, _ in scored), default=(0.0, 0.0))
    if best[0] < (0.5 if len(bare) <= 3 else 0.6):
        return []
    return [str(Path(path).parent / name) for s, name in scored if s == best]


def _without_suffixes(name: str) -> str:
    """A data file's name without its type and compression suffixes: ``qa.jsonl.gz`` → ``qa``."""
    if name.lower().endswith(tuple(_COMPRESSIONS)):
        name = Path(name).stem
    return Path(name).stem


def _read_shipped(name: str, setting: str, place: Place | None) -> list[dict[str, Any]]:
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
            hint=f"use `--set {path_argument(guess, setting, place)}`"
            if guess
            else f"use one of the names above, or a local file path in `{setting}`",
        )
    return _read_jsonl(file)


def _read_local(path: Path, setting: str, place: Place | None) -> list[dict[str, Any]]:
    """The rows of a local data file, read by its type (:func:`data_suffix`).

    Args:
        path: an existing file.
        setting: the preset key that names it (``data.path``, ``data.val_path``), for the hints.
        place: where it is in a list ``data.path``, or None (see :func:`load_rows`).

    Raises:
        TunewizError: an unsupported type (a ``.txt`` file: how to use it), an empty file, a file that is
            not what its name says or is damaged (cut off, corrupt), text that is not UTF-8, and the errors
            of each reader.
    """
    suffix = data_suffix(path)
    if suffix == ".txt":
        raise _txt_error(path, setting, place)
    if suffix not in LOCAL_SUFFIXES:
        raise TunewizError(
            f"{path.name}: unsupported data file type `{suffix}`",
            hint=f"convert it to one of {', '.join(LOCAL_SUFFIXES)} (the text ones may be compressed: "
            f"{', '.join(_COMPRESSIONS)})",
        )
    if path.stat().st_size == 0:
        raise TunewizError(
            f"{path.name} is empty", hint=f"check the file, or point `{setting}` at another one"
        )
    if suffix == ".parquet":
        return _read_parquet(path, setting, place)
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".tsv": _read_csv}[suffix]
    compression = _COMPRESSIONS.get(path.suffix.lower())
    try:
        try:
            return reader(path)
        except UnicodeDecodeError:  # read again byte by byte, for the line, the byte and the fix
            raise _not_utf8(path, setting, place) from None
    except _DAMAGED as exc:
        if compression is None or (isinstance(exc, OSError) and exc.errno is not None):
            raise
        raise _damaged(path, compression, exc, setting, place) from None


def _txt_error(path: Path, setting: str, place: Place | None) -> TunewizError:
    """The error for a ``.txt`` file, with how to use it: a tab-separated one (Excel's "Unicode Text"
    saves a sheet so) is a ``.tsv``; other text becomes one ``text`` row (``format: text``) per line."""
    quoted = shlex.quote(str(path))
    try:
        with _open_text(path) as f:
            first = f.readline()
    except UnicodeDecodeError:
        first = ""
    if "\t" in first:
        tsv = shlex.quote(str(path.with_suffix(".tsv")))
        return TunewizError(
            f"{path.name}: unsupported data file type `.txt`; its first line is tab-separated, as Excel's "
            '"Unicode Text" saves a sheet',
            hint=f"name it `.tsv`: `mv {quoted} {tsv}`, then use it: "
            f"`--set {path_argument(str(path.with_suffix('.tsv')), setting, place)}`",
        )
    jsonl = shlex.quote(str(path.with_suffix(".jsonl")))
    return TunewizError(
        f"{path.name}: unsupported data file type `.txt`",
        hint="to train on each line as one document (`format: text`), write the lines as JSONL rows: "
        f"`jq -Rc 'rtrimstr(\"\\r\") | select(length > 0) | {{text: .}}' {quoted} > {jsonl}`, then "
        f"`--set {path_argument(str(path.with_suffix('.jsonl')), setting, place)}`; a tab-separated table "
        "with a header line: name it `.tsv`",
    )


def _damaged(
    path: Path, compression: _Compression, exc: Exception, setting: str, place: Place | None
) -> TunewizError:
    """The error for a compressed file that did not decompress: it is not that kind of file at all (a
    browser that decompressed a download keeps its ``.gz`` name), or it is cut off or corrupt."""
    with open(path, "rb") as f:
        head = f.read(64)
    quoted = shlex.quote(str(path))
    tool, suffix = compression.tool, path.suffix
    if not head.startswith(compression.magic):
        if _looks_like_text(head):
            inner = shlex.quote(str(path.with_suffix("")))  # rows.jsonl.gz -> rows.jsonl
            return TunewizError(
                f"{path.name} is not compressed with {tool} despite its `{suffix}` name: it holds plain text "
                "(already decompressed, as browsers do with downloads)",
                hint=f"name it for what it is: `mv {quoted} {inner}`, then use it: "
                f"`--set {path_argument(str(path.with_suffix('')), setting, place)}`",
            )
        return TunewizError(
            f"{path.name} is not compressed with {tool} despite its `{suffix}` name: it starts with the "
            f"bytes {head[:8].hex(' ')}",
            hint=f"see what it is with `file {quoted}` and name it for that type, or download it again",
        )
    check = f"download or copy it again; `{tool} -t {quoted}` prints nothing once a copy is whole"
    if isinstance(exc, EOFError):
        return TunewizError(
            f"{path.name} is cut off: its compressed data ends early, as an interrupted download or copy "
            "leaves it",
            hint=check,
        )
    return TunewizError(f"{path.name} is damaged: its compressed data is corrupt ({exc})", hint=check)


def _read_parquet(path: Path, setting: str, place: Place | None) -> list[dict[str, Any]]:
    """A Parquet file's rows.

    Raises:
        TunewizError: the file is not Parquet (text under a ``.parquet`` name: the hint renames it), is
            cut off (no footer), or is damaged.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:  # pyarrow raises OSError for unreadable content too
        if isinstance(exc, OSError) and exc.errno is not None:  # the system's: permission, disk
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    quoted = shlex.quote(str(path))
    with open(path, "rb") as f:
        head = f.read(64)
        f.seek(max(path.stat().st_size - len(_PARQUET_MAGIC), 0))
        tail = f.read()
    if not head.startswith(_PARQUET_MAGIC):
        if _looks_like_text(head):
            json_like = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1] in (b"{", b"[")
            renamed = str(path.with_suffix(".json" if json_like else ".csv"))
            raise TunewizError(
                f"{path.name} is not a Parquet file despite its name: it holds text",
                hint=f"name it for what it is: `mv {quoted} {shlex.quote(renamed)}`, then use it: "
                f"`--set {path_argument(renamed, setting, place)}`",
            )
        raise TunewizError(
            f"{path.name} is not a Parquet file (one starts with `PAR1`; it starts with the bytes "
            f"{head[:8].hex(' ')})",
            hint=f"see what it is with `file {quoted}` and name it for that type, or download it again",
        )
    if tail != _PARQUET_MAGIC:
        raise TunewizError(
            f"{path.name} is cut off: it starts as a Parquet file but lacks its end (the footer), as an "
            "interrupted download or copy leaves it",
            hint="download or copy it again, or write it again (pandas: `df.to_parquet(...)`)",
        )
    raise TunewizError(
        f"{path.name} is a damaged Parquet file: {reason}",
        hint="download or copy it again, or write it again (pandas: `df.to_parquet(...)`)",
    )


def _looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes are text (UTF-8, or UTF-16 with a byte-order mark), not binary."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut by the end of `head`
            return False
        text = head[: exc.start].decode("utf-8")
    text = text.removeprefix("\ufeff")
    return bool(text.strip()) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _read_json(path: Path) -> list[dict[str, Any]]:
    """A .json file: a list of objects, or one object per line (JSONL under a .json name)."""
    with _open_text(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        wrapped = _wrapped_rows(path, text)
        return wrapped if wrapped is not None else _jsonl_rows(path, io.StringIO(text))
    if not text.lstrip().startswith("["):
        return _jsonl_rows(path, io.StringIO(text))
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "fix the file (a JSON list of objects, or one object per line)"
        raise _invalid_json(path.name, exc.lineno, exc, len(text.rstrip()), hint) from exc
    return _objects(rows, path.name)


def _invalid_json(name: str, lineno: int, exc: json.JSONDecodeError, end: int, hint: str) -> TunewizError:
    """The error for JSON that does not parse at line ``lineno``: json's reason without its dangling
    position (``Unterminated string starting at`` → ``Unterminated string``) and the column; when the
    text ends inside the value (an unterminated string, or the error at ``end``, the text's last
    character), that the file is cut off."""
    reason = re.sub(r"\s+(starting\s+)?at$", "", exc.msg)
    if exc.msg.startswith("Unterminated string") or exc.pos >= end:
        return TunewizError(
            f"{name} line {lineno} is not valid JSON: the file ends inside it ({reason}, column "
            f"{exc.colno}): it is cut off, as an interrupted download or copy leaves it",
            hint="get the whole file again, or delete its last, unfinished row",
        )
    return TunewizError(f"{name} line {lineno} is not valid JSON (column {exc.colno}): {reason}", hint=hint)


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
    with _open_text(path) as f:
        return _jsonl_rows(path, f)


def _jsonl_rows(path: Path, lines: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            # Only the last line can lack its newline: there, an error at the end is a cut-off file.
            end = len(line.rstrip()) if not line.endswith("\n") else len(line) + 1
            hint = "each line of a .jsonl file must be one JSON object"
            raise _invalid_json(path.name, lineno, exc, end, hint) from exc
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
            end = reader.line_num  # the line the previous row ended on
            for row in reader:
                start, end = end + 1 + skipped, reader.line_num
                if None in row.values():  # fewer fields than the header names
                    raise _short_row(path, row, start, end + skipped)
                if None in row:  # more fields than the header names
                    raise TunewizError(
                        f"{path.name} line {reader.line_num + skipped} has {len(row) - 1 + len(row[None])} "
                        f"fields; the header line names {len(row) - 1}",
                        hint=f'quote fields that hold the separator `{delimiter}` ("a{delimiter} b"), '
                        "as spreadsheets do when they save CSV",
                    )
                rows.append(row)
            columns = reader.fieldnames
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


def _short_row(path: Path, row: dict[str | None, Any], start: int, end: int) -> TunewizError:
    """The error for a CSV row with fewer fields than the header names (``None`` for the missing ones),
    lines ``start`` to ``end``: a quote opened in it and never closed (its field ran on to line ``end``,
    swallowing the rows after it) or a row that is short."""
    given = sum(value is not None for value in row.values())
    if end > start and any("\n" in value for value in row.values() if value):
        return TunewizError(
            f'{path.name} line {start}: a `"` opens a quoted field that is not closed before line {end}, so '
            f"the lines between are read as one field",
            hint=f'close the quote on line {start} (a `"` inside a quoted field is written `""`), or '
            "remove it",
        )
    return TunewizError(
        f"{path.name} line {start} has {given} field{'s' if given != 1 else ''}; the header line names "
        f"{len(row)}",
        hint="fill in that row's missing fields (an empty field is written with its separator: `a,,c`)",
    )


def _not_utf8(path: Path, setting: str, place: Place | None) -> TunewizError:
    """The error for a file that is not UTF-8 (nor UTF-16 with a byte-order mark): its name, the line and
    byte offset (of the decompressed text) of the first byte that is not, the bytes there, and a command
    that makes a UTF-8 copy.

    A file that is UTF-8 but for a few bytes (it holds at least as many valid non-ASCII UTF-8 characters
    as invalid bytes: a stray Windows-1252 apostrophe pasted into UTF-8 text) gets ``iconv -c``, which
    drops only the invalid bytes; re-encoding it from Windows-1252 would garble every UTF-8 character
    (`café` → `cafÃ©`). Any other file is taken as Windows-1252 (or Latin-1, when it holds a byte
    Windows-1252 leaves undefined) and gets the ``iconv`` that converts it.

    Called where decoding failed; it reads the file again (only on this error path: reading a good file
    decodes it once).
    """
    first: tuple[int, int, bytes] | None = None  # line, byte offset and bytes of the first invalid sequence
    bad_lines: list[int] = []
    invalid = utf8_chars = offset = 0
    cp1252 = True
    with _open_bytes(path) as f:
        for lineno, raw in enumerate(f, start=1):  # a UTF-8 sequence never holds a newline byte
            text = raw.decode("utf-8", errors="surrogateescape")  # an invalid byte: a lone surrogate
            bad = len(_ESCAPED.findall(text))
            if bad:
                if first is None:
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        first = lineno, offset + exc.start, raw[exc.start : exc.end]
                bad_lines.append(lineno)
                invalid += bad
            utf8_chars += len(_NON_ASCII.findall(text))
            # Windows-1252 leaves 0x81, 0x8d, 0x8f, 0x90 and 0x9d undefined; a file with them is Latin-1.
            cp1252 = cp1252 and not any(b in raw for b in _NOT_CP1252)
            offset += len(raw)
    line, offset, bad_bytes = first if first is not None else (0, 0, b"")  # None not reached: it failed
    compression = _COMPRESSIONS.get(path.suffix.lower())
    stem = Path(path.stem).stem if compression else path.stem  # rows.jsonl.gz -> rows
    fixed_path = str(path.with_name(f"{stem}-utf8{data_suffix(path)}"))  # written uncompressed
    fixed, use = shlex.quote(fixed_path), path_argument(fixed_path, setting, place)
    if utf8_chars >= invalid:
        meant = ""
        if len(bad_bytes) == 1:
            with contextlib.suppress(UnicodeDecodeError):  # a byte Windows-1252 leaves undefined
                meant = f" (`{bad_bytes.decode('cp1252')}` in Windows-1252)"
        others = [str(n) for n in bad_lines[1:6]] + (["…"] if len(bad_lines) > 6 else [])
        command = _piped(path, compression, "iconv -f UTF-8 -t UTF-8 -c")
        return TunewizError(
            f"{path.name} is UTF-8 except for {invalid} byte{'s' if invalid > 1 else ''}: line {line}, "
            f"byte {offset} is {bad_bytes.hex(' ')}{meant}"
            + (f"; more on line(s) {', '.join(others)}" if others else ""),
            hint=f"fix {'that line' if len(bad_lines) == 1 else 'those lines'} in an editor, or copy the "
            f"file without the bytes that are not UTF-8 (every other character is kept): `{command} > "
            f"{fixed}`, then use it: `--set {use}`",
        )
    encoding, likely = ("CP1252", "Windows-1252") if cp1252 else ("ISO-8859-1", "Latin-1")
    command = _piped(path, compression, f"iconv -f {encoding} -t UTF-8")
    return TunewizError(
        f"{path.name} is not UTF-8: line {line}, byte {offset} is {bad_bytes.hex(' ')} (likely {likely}, as "
        "Excel and older tools save text)",
        hint=f"re-save it as UTF-8: `{command} > {fixed}`, then use it: `--set {use}`",
    )


def _piped(path: Path, compression: _Compression | None, command: str) -> str:
    """``command`` (which reads stdin, or the file named last) run on ``path``'s text, decompressed."""
    quoted = shlex.quote(str(path))
    return f"{compression.tool} -dc {quoted} | {command}" if compression else f"{command} {quoted}"


def _read_hub(dataset_id: str, split: str, setting: str, place: Place | None) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # offline, unknown id, unknown split, gated: all surface here
        shipped = sorted(p.stem for p in shipped_datasets_dir().glob("*.jsonl"))
        close = difflib.get_close_matches(dataset_id, shipped, n=1, cutoff=0.8)
        raise TunewizError(
            f"could not load Hugging Face dataset `{dataset_id}` (split `{split}`): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="for the shipped sample, use "
            f"`--set {path_argument(SHIPPED_PREFIX + close[0], setting, place)}`"
            if close
            else "check the id and `data.split`; offline, only datasets already in the HF cache "
            f"load (run once online), or download it and point `{setting}` at the file",
        ) from exc
    return ds.to_list()
