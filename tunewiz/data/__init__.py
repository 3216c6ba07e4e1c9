"""The data pipeline: rows → conversations or text → tokens with a loss mask → (packed) samples.

``build_datasets`` is the entry point for a run; ``load_rows`` and ``detect_format`` also serve
previews (the wizard). ``epoch_order`` and ``collate`` feed the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.data.batching import collate, epoch_order, pack
from tunewiz.data.formats import DataFormat, detect_format, row_to_messages, row_to_text
from tunewiz.data.samples import IGNORE_INDEX, Sample, chat_tokens, text_tokens, to_sample
from tunewiz.data.sources import load_rows

if TYPE_CHECKING:
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.templates import ChatTemplate
    from tunewiz.text.tokenizer import Tokenizer

__all__ = [
    "IGNORE_INDEX",
    "DataStats",
    "Sample",
    "build_datasets",
    "collate",
    "detect_format",
    "epoch_order",
    "load_rows",
    "pack",
]


@dataclass(frozen=True)
class DataStats:
    """What ``build_datasets`` made, for the start event and the planner.

    ``num_train``/``num_val`` count samples before packing. ``token_lengths`` summarises the train
    samples' lengths before packing (p50, p95, max), the
    distribution the planner sizes activations with. ``truncated`` and ``dropped_empty`` count
    train and validation samples together.
    """

    num_train: int
    num_val: int
    truncated: int
    dropped_empty: int
    format: str
    template: str | None
    token_lengths: dict[str, int]


def build_datasets(
    cfg: DataSection, tokenizer: Tokenizer, *, seed: int
) -> tuple[list[Sample], list[Sample], DataStats]:
    """Load, tokenize, mask, truncate, split and (optionally) pack the run's data.

    Args:
        cfg: the preset's data section.
        tokenizer: the model's tokenizer.
        seed: run seed; it picks the validation rows when ``val_fraction`` is used.
    """
    from tunewiz.text.templates import resolve_template

    source = _source_name(cfg.path)
    rows = load_rows(cfg.path, split=cfg.split, columns=cfg.columns)
    if cfg.max_samples is not None:
        rows = rows[: cfg.max_samples]
    fmt: DataFormat = detect_format(rows, source=source) if cfg.format == "auto" else cfg.format
    template = None if fmt == "text" else resolve_template(cfg.template, tokenizer, fmt)

    if cfg.val_path is not None:
        train_rows = list(enumerate(rows, start=1))
        val_rows = list(enumerate(load_rows(cfg.val_path, split=cfg.split, columns=cfg.columns), start=1))
        val_source = _source_name(cfg.val_path)
    else:
        train_rows, val_rows = _split(rows, cfg.val_fraction, seed)
        val_source = source

    counts = {"truncated": 0, "dropped": 0}
    train = _tokenize(train_rows, fmt, template, tokenizer, cfg, source, counts)
    val = _tokenize(val_rows, fmt, template, tokenizer, cfg, val_source, counts)
    if not train:
        raise _no_samples(source, counts["dropped"])
    lengths = sorted(len(s.input_ids) for s in train)
    stats = DataStats(
        num_train=len(train),
        num_val=len(val),
        truncated=counts["truncated"],
        dropped_empty=counts["dropped"],
        format=fmt,
        template=None if template is None else template.source,
        token_lengths={"p50": _percentile(lengths, 50), "p95": _percentile(lengths, 95), "max": lengths[-1]},
    )
    if cfg.packing:
        train, val = pack(train, cfg.max_seq_len), pack(val, cfg.max_seq_len)
    return train, val, stats


def _source_name(path: str) -> str:
    return path if path.startswith("tunewiz:") or not Path(path).suffix else Path(path).name


def _split(
    rows: list[dict[str, Any]], val_fraction: float, seed: int
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
    """(row number, row) lists for train and validation; validation rows are a seeded random subset."""
    numbered = list(enumerate(rows, start=1))
    num_val = round(len(rows) * val_fraction)
    if val_fraction > 0 and len(rows) >= 2:
        num_val = min(max(num_val, 1), len(rows) - 1)
    if num_val == 0:
        return numbered, []
    import numpy as np

    held_out = set(np.random.default_rng(seed).permutation(len(rows))[:num_val].tolist())
    return (
        [r for i, r in enumerate(numbered) if i not in held_out],
        [r for i, r in enumerate(numbered) if i in held_out],
    )


def _tokenize(
    rows: list[tuple[int, dict[str, Any]]],
    fmt: DataFormat,
    template: ChatTemplate | None,
    tokenizer: Tokenizer,
    cfg: DataSection,
    source: str,
    counts: dict[str, int],
) -> list[Sample]:
    samples = []
    for index, row in rows:
        if fmt == "text":
            tokens, trained = text_tokens(row_to_text(row, index, source), tokenizer)
        else:
            assert template is not None
            messages = row_to_messages(row, fmt, index, source)
            tokens, trained = chat_tokens(messages, template, tokenizer, train_on_inputs=cfg.train_on_inputs)
        sample, truncated = to_sample(tokens, trained, cfg.max_seq_len)
        if all(label == IGNORE_INDEX for label in sample.labels):
            counts["dropped"] += 1
            continue
        counts["truncated"] += truncated
        samples.append(sample)
    return samples


def _no_samples(source: str, dropped: int) -> Exception:
    from tunewiz.errors import TunewizError

    return TunewizError(
        f"{source}: no training sample has a trained token ({dropped} dropped: the response "
        "was empty or cut off by `data.max_seq_len`)",
        hint="raise `data.max_seq_len`, check the response column, or set `data.train_on_inputs: true`",
    )


def _percentile(sorted_values: list[int], q: int) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-q * len(sorted_values) // 100))
    return sorted_values[rank - 1]
