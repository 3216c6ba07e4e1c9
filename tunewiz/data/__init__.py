"""The data pipeline: rows → conversations or text → tokens with a loss mask → (packed) samples.

``build_datasets`` is the entry point for a run; ``load_rows`` and ``detect_format`` also serve
previews (the wizard). ``epoch_order`` and ``collate`` feed the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.data.batching import collate, epoch_order, pack
from tunewiz.data.formats import DataFormat, detect_format, row_to_messages, row_to_text
from tunewiz.data.samples import IGNORE_INDEX, Sample, SampleColumns, truncate
from tunewiz.data.sources import list_place, load_rows
from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    import threading

    from tunewiz.preset.schema import DataSection, DatasetEntry
    from tunewiz.text.prompt import PromptBuilder, PromptFormat
    from tunewiz.text.tokenizer import Tokenizer

__all__ = [
    "IGNORE_INDEX",
    "DataStats",
    "Sample",
    "SampleColumns",
    "SamplePlan",
    "build_datasets",
    "collate",
    "detect_format",
    "epoch_order",
    "load_rows",
    "pack",
    "plan_samples",
    "tokenize_rows",
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
    lengths: Sequence[int] = ()  # every train sample's length before truncation, ascending
    # per dataset of data.path: name, format, rows, weight, train and validation samples kept
    sources: tuple[dict[str, Any], ...] = ()

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
    plan = plan_samples(cfg, tokenizer, seed=seed, prompt=prompt, legacy=legacy)
    counts = {"train": _zero_counts(), "validation": _zero_counts()}
    lengths: list[int] = []
    train = tokenize_rows(plan.train_rows, plan.builder, cfg, counts["train"], lengths)
    val = tokenize_rows(plan.val_rows, plan.builder, cfg, counts["validation"], [])
    stats = plan.stats(cfg, counts, lengths, train.sources, val.sources)
    train_samples, val_samples = train.samples(), val.samples()
    if cfg.packing:
        train_samples, val_samples = pack(train_samples, cfg.max_seq_len), pack(val_samples, cfg.max_seq_len)
    return train_samples, val_samples, stats


@dataclass
class SamplePlan:
    """What ``build_datasets`` tokenizes, before tokenizing: the datasets read, the train and
    validation rows (weighted, split) and the prompt builder. ``tunewiz.data.prepared`` tokenizes the
    same rows in chunks (``tokenize_rows``) and gets bit-for-bit the same samples."""

    sources: list[_Source]
    train_rows: list[_Item]
    val_rows: list[_Item]
    builder: PromptBuilder
    prompt: PromptFormat
    format: str  # the data format, or the datasets' formats joined with `+`
    name: str  # the dataset's name (or the names joined with `+`), for messages

    def stats(
        self,
        cfg: DataSection,
        counts: dict[str, dict[str, int]],
        lengths: Sequence[int],
        train_sources: Sequence[int],
        val_sources: Sequence[int],
    ) -> DataStats:
        """The DataStats of the samples tokenized from this plan.

        Args:
            cfg: the data section.
            counts: per split, the tallies ``tokenize_rows`` made.
            lengths: the untruncated lengths of the train samples, in any order.
            train_sources: per train sample (before packing), the index of its dataset in ``data.path``.
            val_sources: the same for the validation samples.

        Raises:
            TunewizError: no train sample has a trained token.
        """
        import numpy as np

        if len(train_sources) == 0:
            raise _no_samples(self.name, counts["train"], cfg)
        ordered = np.sort(np.asarray(lengths, dtype=np.int64))
        per_train = np.bincount(np.asarray(train_sources, dtype=np.int64), minlength=len(self.sources))
        per_val = np.bincount(np.asarray(val_sources, dtype=np.int64), minlength=len(self.sources))
        per_source = tuple(
            {
                "name": src.name,
                "format": src.format,
                "rows": src.num_rows,
                "weight": src.entry.weight,
                "train": int(per_train[k]),
                "validation": int(per_val[k]),
            }
            for k, src in enumerate(self.sources)
        )
        return DataStats(
            num_train=len(train_sources),
            num_val=len(val_sources),
            counts=counts,
            format=self.format,
            template=self.prompt.template_source,
            token_lengths={
                q: int(_percentile(ordered, p)) for q, p in (("p50", 50), ("p95", 95), ("max", 100))
            },
            max_seq_len=cfg.max_seq_len,
            truncation=cfg.truncation,
            prompt=self.prompt,
            lengths=tuple(ordered.tolist()),
            sources=per_source,
        )


def plan_samples(
    cfg: DataSection,
    tokenizer: Tokenizer,
    *,
    seed: int,
    prompt: PromptFormat | None = None,
    legacy: bool = False,
) -> SamplePlan:
    """Read the datasets, cap and split their rows, weight the train rows, and fix the prompt format (the
    arguments are ``build_datasets``'s).

    Raises:
        TunewizError: an unreadable dataset or validation file, a weight that keeps no row, a format
            that cannot be told.
    """
    from tunewiz.text.prompt import PromptBuilder, legacy_prompt_format, new_prompt_format
    from tunewiz.text.templates import resolve_template

    sources = _load_sources(cfg)
    rows = [item for src in sources for item in src.rows]
    if cfg.max_samples is not None:
        rows = rows[: cfg.max_samples]
    # One prompt format for the run: the first dataset with a conversation format resolves `auto`.
    fmt: DataFormat = next((src.format for src in sources if src.format != "text"), "text")
    if prompt is None:
        template = None if fmt == "text" else resolve_template(cfg.template, tokenizer, fmt, cfg.thinking)
        prompt = (legacy_prompt_format if legacy else new_prompt_format)(template, tokenizer)
    name = sources[0].name if len(sources) == 1 else " + ".join(src.name for src in sources)

    if cfg.val_path is not None:
        train_rows = rows
        val_columns = sources[0].entry.columns or {}
        val_loaded = load_rows(cfg.val_path, split=cfg.split, columns=val_columns, setting="data.val_path")
        val_name = source_name(cfg.val_path)
        detect_format(val_loaded, source=val_name, fmt=sources[0].format)  # read as the first dataset
        val_src = _Source(val_name, sources[0].format, sources[0].entry, [])  # read as the first dataset
        val_rows = [(i, row, val_src) for i, row in enumerate(val_loaded, start=1)]
    else:
        train_rows, val_rows = _split(rows, cfg.val_fraction, seed)
    train_rows = _weighted(train_rows, sources, seed)
    formats = [src.format for src in sources]
    return SamplePlan(
        sources,
        train_rows,
        val_rows,
        PromptBuilder(tokenizer, prompt),
        prompt,
        fmt if len(set(formats)) == 1 else "+".join(formats),
        name,
    )


def _zero_counts() -> dict[str, int]:
    return {"truncated": 0, "dropped_long": 0, "dropped_empty": 0}


@dataclass
class _Source:
    """One dataset of ``data.path``: its name, format, settings and its (row number, row, self) items."""

    name: str
    format: DataFormat
    entry: DatasetEntry
    rows: list[tuple[int, dict[str, Any], _Source]]
    num_rows: int = 0
    index: int = 0  # its place in data.path


_Item = tuple[int, dict[str, Any], _Source]


def _load_sources(cfg: DataSection) -> list[_Source]:
    """Every dataset's rows, numbered from 1 in file order, each once (weights apply to the train rows,
    after the split: :func:`_weighted`)."""
    sources = []
    for k, entry in enumerate(cfg.datasets()):
        name = source_name(entry.path)
        split, columns, place = entry.split or cfg.split, entry.columns or {}, list_place(cfg, k)
        loaded = load_rows(entry.path, split=split, columns=columns, place=place)
        fmt = detect_format(loaded, source=name, fmt=entry.format)
        src = _Source(name, fmt, entry, [], len(loaded), k)
        src.rows = [(index, row, src) for index, row in enumerate(loaded, start=1)]
        sources.append(src)
    return sources


def _weighted(rows: list[_Item], sources: list[_Source], seed: int) -> list[_Item]:
    """The train rows with each dataset's ``weight`` applied, dataset by dataset in ``data.path`` order:
    weight w keeps floor(w) copies of each of its rows plus a seeded (w mod 1) share of them, in file
    order. Only train rows are weighted: a row held out for validation has no copy in training, and
    validation counts each row once. Rows of datasets all weighted 1 come back as they are.

    Raises:
        TunewizError: a weight keeps none of its dataset's train rows.
    """
    import numpy as np

    if all(src.entry.weight == 1 for src in sources):
        return rows
    by_source: list[list[_Item]] = [[] for _ in sources]
    for item in rows:
        by_source[item[2].index].append(item)
    weighted = []
    for k, (src, own) in enumerate(zip(sources, by_source, strict=True)):
        whole, part = divmod(src.entry.weight, 1.0)
        picked = own * int(whole)
        if part > 0:
            extra = round(len(own) * part)
            chosen = set(np.random.default_rng([seed, k]).permutation(len(own))[:extra].tolist())
            picked += [item for i, item in enumerate(own) if i in chosen]
        if not picked:
            raise TunewizError(
                f"{src.name}: weight {src.entry.weight} keeps none of its {len(own)} training row(s)",
                hint="raise this dataset's `weight` in `data.path`",
            )
        weighted += picked
    return weighted


def source_name(path: str) -> str:
    """What a dataset is called in messages, stats and model cards: a local file by its name
    (``/home/me/qa.jsonl`` → ``qa.jsonl``), a shipped sample or Hub id as written."""
    return path if path.startswith("tunewiz:") or not Path(path).suffix else Path(path).name


def _split(rows: list[_Item], val_fraction: float, seed: int) -> tuple[list[_Item], list[_Item]]:
    """Train and validation items; validation rows are a seeded random subset."""
    num_val = round(len(rows) * val_fraction)
    if val_fraction > 0 and len(rows) >= 2:
        num_val = min(max(num_val, 1), len(rows) - 1)
    if num_val == 0:
        return rows, []
    import numpy as np

    held_out = set(np.random.default_rng(seed).permutation(len(rows))[:num_val].tolist())
    return (
        [r for i, r in enumerate(rows) if i not in held_out],
        [r for i, r in enumerate(rows) if i in held_out],
    )


def tokenize_rows(
    rows: Sequence[_Item],
    builder: PromptBuilder,
    cfg: DataSection,
    counts: dict[str, int],
    lengths: list[int],
) -> SampleColumns:
    """Samples of ``rows``, with their datasets' indices; ``counts`` gets truncated/dropped tallies,
    ``lengths`` the untruncated lengths of the samples that have a trained token.

    A row whose every response (assistant turn) is empty or whitespace, or a text row that is, counts as
    ``dropped_empty`` and makes no sample, whatever ``train_on_inputs``: it would teach the model to end
    its turn at once.

    Each row's sample depends on that row only, so chunks of ``rows`` tokenized apart and joined in
    order give the same samples as one call.

    The rows are tokenized in a thread of their own. The tokenizer libraries allocate through C
    ``malloc``, and glibc serves a new thread from an arena of its own, not the main one. The main
    arena is where the process read its rows: parsing a large JSON/CSV file leaves it holding hundreds
    of thousands of strings interleaved with freed lines, and ``malloc`` in it is slow. With 100,000
    Alpaca rows read, ``tokenizers``' ``encode`` took 1.6-2.2x as long in the main thread as in a new
    one (``bench/malloc_arena.py``; ``bench/RESULTS.md``, "malloc arenas"). Ctrl-C stops it at the next
    row.

    Raises:
        TunewizError: a row that cannot be read (the sources' messages).
    """
    import threading

    from tunewiz.interrupts import ctrl_c_held

    stop, done = threading.Event(), threading.Event()
    outcome: list[SampleColumns | BaseException] = []

    def run() -> None:
        try:
            outcome.append(_tokenize_rows(rows, builder, cfg, counts, lengths, stop))
        except BaseException as exc:  # re-raised in the calling thread
            outcome.append(exc)
        finally:
            done.set()

    try:
        with ctrl_c_held():  # a Ctrl-C inside start() would leave the thread running unstopped
            threading.Thread(target=run, name="tunewiz-tokenize", daemon=True).start()
        # Not Thread.join (interrupted, Python 3.11's join can mark a running thread stopped), and in
        # short waits: a Ctrl-C the kernel gave another thread runs its handler when this one wakes.
        while not done.wait(0.1):
            pass
    except BaseException:  # Ctrl-C while waiting: the thread stops at its next row
        stop.set()
        done.wait()
        raise
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _tokenize_rows(
    rows: Sequence[_Item],
    builder: PromptBuilder,
    cfg: DataSection,
    counts: dict[str, int],
    lengths: list[int],
    stop: threading.Event,
) -> SampleColumns:
    tokens, trained, sources = [], [], []
    bos_id = builder.tokenizer.bos_id
    for index, row, src in rows:
        if stop.is_set():
            break
        if src.format == "text":
            text = row_to_text(row, index, src.name)
            if not text.strip():
                counts["dropped_empty"] += 1
                continue
            ids, mask = builder.text_sample(text)
        else:
            messages = row_to_messages(row, src.format, index, src.name)
            if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
                counts["dropped_empty"] += 1  # a blank answer would train only the end-of-turn token
                continue
            ids, mask = builder.chat_sample(messages, train_on_inputs=cfg.train_on_inputs)
        if not mask[1:].any():  # position 0 is never a target
            counts["dropped_empty"] += 1
            continue
        lengths.append(len(ids))
        fitted = truncate(ids, mask, cfg.max_seq_len, cfg.truncation, bos_id)
        if fitted is None or not fitted[1][1:].any():
            counts["dropped_long"] += 1
            continue
        counts["truncated"] += len(fitted[0]) < len(ids)
        tokens.append(fitted[0])
        trained.append(fitted[1])
        sources.append(src.index)
    return SampleColumns.join(tokens, trained, sources)


def _no_samples(source: str, counts: dict[str, int], cfg: DataSection) -> Exception:
    if not counts["dropped_long"]:
        hint = (
            "fill in the responses, or map the column that holds them: "
            "`--set 'data.columns={response: COLUMN}'`"
        )
    elif cfg.truncation != "left":
        hint = (
            "keep the responses and cut the prompts' beginnings: add `--set 'data.truncation=left'` to the "
            "command; or raise `data.max_seq_len`, check the response column (`data.columns`), or set "
            "`data.train_on_inputs: true`"
        )
    else:  # the replies alone are longer than max_seq_len
        hint = (
            "raise `data.max_seq_len`, check the response column (`data.columns`), or set "
            "`data.train_on_inputs: true`"
        )
    return TunewizError(
        f"{source}: no training sample has a trained token ({counts['dropped_empty']} with an empty "
        f"response, {counts['dropped_long']} longer than `data.max_seq_len` {cfg.max_seq_len} "
        f"and dropped with `data.truncation: {cfg.truncation}`)",
        hint=hint,
    )


def _percentile(sorted_values: Sequence[int], q: int) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-q * len(sorted_values) // 100))
    return sorted_values[rank - 1]
