"""Reading rows: shipped samples, local .json/.jsonl/.csv/.parquet files, and Hub datasets."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from tunewiz.errors import TunewizError

SHIPPED_PREFIX = "tunewiz:"
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


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
    if (
        local.suffix.lower() in LOCAL_SUFFIXES
        or local.is_absolute()
        or path.startswith((".", "~"))
        or not _HUB_ID.match(path)
    ):
        raise TunewizError(
            f"data file `{path}` does not exist",
            hint="check `data.path`; it takes a local .json/.jsonl/.csv/.parquet file, "
            "`tunewiz:<sample>` or a Hugging Face dataset id",
        )
    return _read_hub(path, split)


def _read_shipped(name: str) -> list[dict[str, Any]]:
    folder = shipped_datasets_dir()
    file = folder / f"{name}.jsonl"
    if not file.is_file():
        available = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []
        raise TunewizError(
            f"no shipped dataset `tunewiz:{name}`; available: "
            + (", ".join(f"`tunewiz:{a}`" for a in available) or "none"),
            hint="use one of the names above, or a local file path in `data.path`",
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
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TunewizError(
                    f"{path.name} line {exc.lineno} is not valid JSON: {exc.msg}",
                    hint="fix the file (a JSON list of objects, or one object per line)",
                ) from exc
            return _objects(rows, path.name)
        return _read_jsonl(path)
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TunewizError(
                    f"{path.name} line {lineno} is not valid JSON: {exc.msg}",
                    hint="each line of a .jsonl file must be one JSON object",
                ) from exc
    return _objects(rows, path.name)


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
