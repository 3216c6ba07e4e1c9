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
from tunewiz.data.samples import IGNORE_INDEX, Sample, to_sample, truncate
from tunewiz.data.sources import load_rows

if TYPE_CHECKING:
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.prompt import PromptBuilder, PromptFormat
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
    """What ``build_datasets`` made, for the start event, the run summary and the planner.

    ``num_train``/``num_val`` count samples before packing. ``token_lengths`` summarises the train
    samples' lengths before truncation and packing (p50, p95, max). ``counts`` has, per split
    (``train``, ``validation``), the samples ``truncated`` (kept, shortened to ``max_seq_len``),
    ``dropped_long`` (longer than ``max_seq_len`` and dropped: ``truncation: drop``, or truncation
    left no trained token) and ``dropped_empty`` (no trained token at any length: an empty response).
    ``prompt`` is the prompt format the tokens were built with.
    """

    num_train: int
    num_val: int
    counts: dict[str, dict[str, int]]
    format: str
    template: str | None
    token_lengths: dict[str, int]
    max_seq_len: int
    truncation: str
    prompt: PromptFormat
    lengths: tuple[int, ...] = ()  # every train sample's length before truncation, ascending

    def _total(self, key: str) -> int:
        return sum(split[key] for split in self.counts.values())

    @property
    def truncated(self) -> int:
        """Samples shortened to ``max_seq_len``, train and validation."""
        return self._total("truncated")

    @property
    def dropped_long(self) -> int:
        """Samples dropped because of ``max_seq_len``, train and validation."""
        return self._total("dropped_long")

    @property
    def dropped_empty(self) -> int:
        """Samples with no trained token (empty response), train and validation."""
        return self._total("dropped_empty")

    def truncation_event(self) -> dict[str, object]:
        """The start event's ``truncation`` field (see tunewiz.run.events)."""
        return {"mode": self.truncation, "max_seq_len": self.max_seq_len, **self.counts}


def build_datasets(
    cfg: DataSection,
    tokenizer: Tokenizer,
    *,
    seed: int,
    prompt: PromptFormat | None = None,
    legacy: bool = False,
) -> tuple[list[Sample], list[Sample], DataStats]:
    """Load, tokenize, mask, truncate, split and (optionally) pack the run's data.

    Args:
        cfg: the preset's data section.
        tokenizer: the model's tokenizer.
        seed: run seed; it picks the validation rows when ``val_fraction`` is used.
        prompt: the prompt format (a resumed run's recorded one); default: the format a new run
            gets from ``data.template`` and this tokenizer (``tunewiz.text.prompt.new_prompt_format``).
        legacy: without ``prompt``, use the rule of runs made before prompt.json existed
            (``tunewiz.text.prompt.legacy_prompt_format``): resuming such a run keeps its tokens.
    """
    from tunewiz.text.prompt import PromptBuilder, legacy_prompt_format, new_prompt_format
    from tunewiz.text.templates import resolve_template

    source = _source_name(cfg.path)
    rows = load_rows(cfg.path, split=cfg.split, columns=cfg.columns)
    if cfg.max_samples is not None:
        rows = rows[: cfg.max_samples]
    fmt: DataFormat = detect_format(rows, source=source) if cfg.format == "auto" else cfg.format
    if prompt is None:
        template = None if fmt == "text" else resolve_template(cfg.template, tokenizer, fmt, cfg.thinking)
        prompt = (legacy_prompt_format if legacy else new_prompt_format)(template, tokenizer)
    builder = PromptBuilder(tokenizer, prompt)

    if cfg.val_path is not None:
        train_rows = list(enumerate(rows, start=1))
        val_rows = list(enumerate(load_rows(cfg.val_path, split=cfg.split, columns=cfg.columns), start=1))
        val_source = _source_name(cfg.val_path)
    else:
        train_rows, val_rows = _split(rows, cfg.val_fraction, seed)
        val_source = source

    counts = {"train": _zero_counts(), "validation": _zero_counts()}
    lengths: list[int] = []
    train = _tokenize(train_rows, fmt, builder, cfg, source, counts["train"], lengths)
    val = _tokenize(val_rows, fmt, builder, cfg, val_source, counts["validation"], [])
    if not train:
        raise _no_samples(source, counts["train"], cfg)
    lengths.sort()
    stats = DataStats(
        num_train=len(train),
        num_val=len(val),
        counts=counts,
        format=fmt,
        template=prompt.template_source,
        token_lengths={"p50": _percentile(lengths, 50), "p95": _percentile(lengths, 95), "max": lengths[-1]},
        max_seq_len=cfg.max_seq_len,
        truncation=cfg.truncation,
        prompt=prompt,
        lengths=tuple(lengths),
    )
    if cfg.packing:
        train, val = pack(train, cfg.max_seq_len), pack(val, cfg.max_seq_len)
    return train, val, stats


def _zero_counts() -> dict[str, int]:
    return {"truncated": 0, "dropped_long": 0, "dropped_empty": 0}


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
    builder: PromptBuilder,
    cfg: DataSection,
    source: str,
    counts: dict[str, int],
    lengths: list[int],
) -> list[Sample]:
    """Samples of ``rows``; ``counts`` gets truncated/dropped tallies, ``lengths`` the untruncated
    lengths of the samples that have a trained token."""
    samples = []
    bos_id = builder.tokenizer.bos_id
    for index, row in rows:
        if fmt == "text":
            tokens, trained = builder.text_sample(row_to_text(row, index, source))
        else:
            messages = row_to_messages(row, fmt, index, source)
            tokens, trained = builder.chat_sample(messages, train_on_inputs=cfg.train_on_inputs)
        if not any(trained[1:]):  # position 0 is never a target
            counts["dropped_empty"] += 1
            continue
        lengths.append(len(tokens))
        fitted = truncate(tokens, trained, cfg.max_seq_len, cfg.truncation, bos_id)
        if fitted is None or not any(fitted[1][1:]):
            counts["dropped_long"] += 1
            continue
        counts["truncated"] += len(fitted[0]) < len(tokens)
        samples.append(to_sample(*fitted))
    return samples


def _no_samples(source: str, counts: dict[str, int], cfg: DataSection) -> Exception:
    from tunewiz.errors import TunewizError

    return TunewizError(
        f"{source}: no training sample has a trained token ({counts['dropped_empty']} with an empty "
        f"response, {counts['dropped_long']} longer than `data.max_seq_len` {cfg.max_seq_len} "
        f"and dropped with `data.truncation: {cfg.truncation}`)",
        hint="raise `data.max_seq_len`, set `data.truncation: left` to keep responses, check the response "
        "column, or set `data.train_on_inputs: true`",
    )


def _percentile(sorted_values: list[int], q: int) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-q * len(sorted_values) // 100))
    return sorted_values[rank - 1]
