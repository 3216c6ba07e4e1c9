"""The wizard's dataset step: pick a dataset (shipped sample, local file, Hub id), preview a local
file with its detected format, and sample the token lengths that size ``max_seq_len``.

Heavy imports (datasets, the tokenizer, torch) stay inside the functions: they run after the first
question.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.errors import TunewizError
from tunewiz.models.catalog import CatalogModel
from tunewiz.wizard.asker import Asker, Choice

if TYPE_CHECKING:
    from rich.console import Console

SAMPLED_ROWS = 1000  # rows tokenized to size max_seq_len: enough for a stable 99th percentile
CHARS_PER_TOKEN = 4  # English text with a 32k-150k BPE vocabulary, when the tokenizer is not local
TEMPLATE_TOKENS_PER_MESSAGE = (
    5  # role header + end marker: `<|im_start|>user\n … <|im_end|>\n` (chatml, llama3)
)

_LOCAL, _HUB = "__local__", "__hub__"


def choose_dataset(
    flag: str | None, asker: Asker | None, console: Console, columns: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """The dataset and its column mapping: the flags, a shipped sample, a local file or a Hub id.

    A local file is previewed; when its format cannot be told from its columns, the step shows the
    columns and asks which one is the prompt and which the response (``--columns`` answers it).

    Args:
        flag: ``--dataset``.
        asker: asks when the flag is missing.
        console: where a local file's preview is printed.
        columns: ``--columns`` as ``{role: column}``, or None to ask when needed.

    Returns:
        (the dataset, ``data.columns``).

    Raises:
        TunewizError: nobody can be asked and the file's format is unknown (the hint is ``--columns``).
    """
    from tunewiz.data.sources import SHIPPED_PREFIX, shipped_datasets_dir

    if flag is not None:
        if Path(flag).expanduser().is_file():
            mapping = columns if columns is not None else ask_columns(flag, asker, console)
            console.print(preview_dataset(flag, mapping))
            return flag, mapping
        return flag, dict(columns or {})
    assert asker is not None
    shipped = sorted(p.stem for p in shipped_datasets_dir().glob("*.jsonl") if not p.stem.endswith("-test"))
    choices = [Choice(SHIPPED_PREFIX + s, f"{SHIPPED_PREFIX}{s}  (shipped sample)") for s in shipped]
    choices += [
        Choice(_LOCAL, "a local file (.jsonl, .json, .csv, .tsv, .parquet)…"),
        Choice(_HUB, "a Hugging Face dataset id…"),
    ]
    default = f"{SHIPPED_PREFIX}story-qa" if "story-qa" in shipped else None
    while True:
        picked = asker.select("Dataset:", choices, default)
        if picked == _HUB:
            return asker.text("Hugging Face dataset id (org/name):", "", _check_hub_id), dict(columns or {})
        if picked != _LOCAL:
            return picked, {}
        path = asker.text("Data file:", "", _check_data_file)
        mapping = columns if columns is not None else ask_columns(path, asker, console)
        console.print(preview_dataset(path, mapping))
        if asker.confirm("Train on this file?", default=True):
            return path, mapping


def ask_columns(path: str, asker: Asker | None, console: Console | None = None) -> dict[str, str]:
    """``{}`` when the file's format is recognised; else the columns the user picks as prompt and response.

    Args:
        path: a local data file.
        asker: asks which column is which; None raises the format error instead.
        console: where the file's columns are shown before asking.

    Raises:
        TunewizError: the format is unknown and nobody can be asked; or the file has fewer than two
            columns to pick from.
    """
    from tunewiz.data import detect_format, load_rows

    data = load_rows(path, split="train", columns={})
    try:
        detect_format(data, source=Path(path).name)
        return {}
    except TunewizError:
        if asker is None:
            raise
    columns = list(data[0])
    if len(columns) < 2:
        raise TunewizError(
            f"{Path(path).name} has one column `{columns[0]}`: not a prompt/response pair",
            hint="name it `text` to train on it as plain text: `--set 'data.columns={text: "
            f"{columns[0]}}}'`",
        )
    if console is not None:
        console.print(f"{Path(path).name}: the format is not clear from the columns {columns}")
    choices = [Choice(c, f"{c}  e.g. {_shorten(data[0].get(c), 60)}") for c in columns]
    prompt = asker.select("Which column is the prompt?", choices, columns[0])
    rest = [c for c in choices if c.value != prompt]
    response = asker.select("Which column is the response?", rest, rest[-1].value)
    return {"prompt": prompt, "response": response}


def parse_columns(text: str) -> dict[str, str]:
    """``prompt=question,response=answer`` (the ``--columns`` flag) as ``{role: column}``.

    Raises:
        TunewizError: an item without ``=`` or an unknown role.
    """
    from tunewiz.data.formats import COLUMN_KEYS, ROLES

    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, sep, column = (x.strip() for x in item.partition("="))
        if not sep or not role or not column:
            raise TunewizError(
                f"--columns item `{item}` is not ROLE=COLUMN",
                hint="e.g. `--columns prompt=question,response=answer`",
            )
        if role not in COLUMN_KEYS:
            raise TunewizError(
                f"--columns role `{role}` is not a role; roles are {', '.join(ROLES)}",
                hint="e.g. `--columns prompt=question,response=answer`",
            )
        mapping[role] = column
    return mapping


def preview_dataset(path: str, columns: dict[str, str] | None = None, rows: int = 3) -> Any:
    """A Rich table of the first ``rows`` rows of a data file, titled with its detected format.

    Args:
        path: a local data file or ``tunewiz:<sample>``.
        columns: ``data.columns`` to apply before detecting.
        rows: rows to show.
    """
    from rich.table import Table

    from tunewiz.data import detect_format, load_rows

    data = load_rows(path, split="train", columns=columns or {})
    try:
        how = f"format `{detect_format(data, source=path)}`" + (
            " (columns mapped)" if columns else " (detected from the columns)"
        )
    except TunewizError:
        how = "format not recognised from the columns"
    table = Table(title=f"{path}: {len(data)} rows, {how}", title_justify="left")
    names = list(data[0])
    for column in names:
        table.add_column(column, overflow="fold", max_width=50)
    for row in data[:rows]:
        table.add_row(*(_shorten(row.get(c)) for c in names))
    return table


def _shorten(value: object, width: int = 120) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_data_file(text: str) -> str | None:
    from tunewiz.data.sources import LOCAL_SUFFIXES, is_data_file

    path = Path(text).expanduser()
    if not path.is_file():
        return f"`{text}` is not a file"
    if not is_data_file(path):
        return f"expected one of {', '.join(LOCAL_SUFFIXES)}"
    return None


def _check_hub_id(text: str) -> str | None:
    return None if re.fullmatch(r"[\w.-]+/[\w.-]+", text.strip()) else "expected `org/name`"


def sample_token_lengths(
    model: CatalogModel, dataset: str, seq_len: int | None, columns: dict[str, str] | None = None
) -> tuple[list[int] | None, str, int | None]:
    """Token lengths of up to ``SAMPLED_ROWS`` rows, for sizing ``max_seq_len``.

    With the model's tokenizer when it is local (the shipped model, a directory, the HF cache);
    otherwise estimated from the characters. A Hub dataset is not read here (it downloads when
    training starts), and a fixed ``--seq-len`` needs no sample.

    Args:
        model: the chosen model.
        dataset: the chosen dataset.
        seq_len: ``--seq-len``, when given.
        columns: ``data.columns``.

    Returns:
        (lengths or None, how they were found, number of rows or None).
    """
    from tunewiz.data.sources import SHIPPED_PREFIX

    if not dataset.startswith(SHIPPED_PREFIX) and not Path(dataset).expanduser().is_file():
        return (
            None,
            "not sampled: a Hub dataset is read when training starts (give --seq-len to size it)",
            None,
        )
    from tunewiz.data import build_datasets, load_rows
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.tokenizer import load_tokenizer

    rows = load_rows(dataset, split="train", columns=columns or {})
    if seq_len is not None:
        return None, f"not sampled: --seq-len {seq_len} given", len(rows)
    try:
        tokenizer = load_tokenizer(resolve_model_dir(model.repo_id))
    except TunewizError:
        return (
            _estimated_lengths(rows, dataset),
            (
                f"estimated at {CHARS_PER_TOKEN} characters per token "
                f"+ {TEMPLATE_TOKENS_PER_MESSAGE} template tokens per message "
                f"(the tokenizer of {model.name} is not downloaded)"
            ),
            len(rows),
        )
    from tunewiz.data.prepared import prepared_lengths

    known = prepared_lengths(dataset, tokenizer, columns or {})
    if known is not None:  # `tunewiz prepare` or a run tokenized this dataset already
        return (
            [int(n) for n in known],
            f"measured with the tokenizer of {model.name} on {len(known)} rows (prepared data)",
            len(rows),
        )
    cfg = DataSection(
        path=dataset,
        columns=columns or {},
        max_seq_len=model.max_context,
        val_fraction=0.0,
        max_samples=SAMPLED_ROWS,
    )
    # Lengths before truncation, built by the training pipeline itself: the share the planner reports
    # as longer than max_seq_len is what training counts as truncated + dropped for these rows.
    lengths = list(build_datasets(cfg, tokenizer, seed=0)[2].lengths)
    return lengths, f"measured with the tokenizer of {model.name} on {len(lengths)} rows", len(rows)


def _estimated_lengths(rows: list[dict[str, Any]], source: str) -> list[int]:
    from tunewiz.data.formats import detect_format, row_to_messages, row_to_text

    fmt = detect_format(rows, source=source)
    lengths = []
    for index, row in enumerate(rows[:SAMPLED_ROWS], start=1):
        if fmt == "text":
            chars = len(row_to_text(row, index, source))
        else:
            messages = row_to_messages(row, fmt, index, source)
            chars = sum(len(m["content"]) + CHARS_PER_TOKEN * TEMPLATE_TOKENS_PER_MESSAGE for m in messages)
        lengths.append(max(1, math.ceil(chars / CHARS_PER_TOKEN)))
    return lengths
