"""Prepared datasets: tokenized (and packed) samples on disk, made once, memory-mapped by every rank.

An entry is a directory of flat numpy arrays, read with ``numpy.memmap`` (no copy, no parsing):

- ``{split}.tokens`` / ``{split}.labels`` (int32): every sample's input ids and shifted labels, end to end;
- ``{split}.offsets`` (int64, samples + 1): where each sample starts in them;
- ``{split}.rows`` (int64, rows + 1, packing only): which samples share a packed row
  (:func:`tunewiz.data.batching.pack_bounds`); positions and document ids follow from the offsets;
- ``{split}.trained`` (int32): trained tokens per sample, for the loss normalisation; ``{split}.row_trained``
  per packed row;
- ``lengths`` (int32): the train samples' lengths before truncation, ascending (DataStats.lengths);
- ``stats.json`` (the rest of DataStats) and ``meta.json`` (what the entry was made from, when, its size).

Why numpy memmaps rather than Arrow: a rank opens an entry in milliseconds whatever its size, a sample
is two slices, the preparer streams chunks straight into the files, and nothing depends on the
``datasets`` library's own cache and fingerprints.

The entry's name is a hash of everything that changes the tokens (:func:`key_inputs`): the content of
every data file (a fast path on path, size and modification time reuses the content hash computed
when the file was last seen), a Hub dataset's fingerprint, the tokenizer files, the prompt format, the
seed, every token-changing data setting and the source of the data and text code. It is written into
a temporary directory and renamed into place (an entry is never seen half-written; a killed preparation
leaves only a ``.tmp-*`` directory that nothing reads and ``tunewiz cache clear`` removes). Concurrent
preparers on one host wait for each other (a lock file); on several hosts sharing the directory the
first rename wins and the others use it.

Location: ``data.cache_dir`` > ``$TUNEWIZ_CACHE`` > ``$XDG_CACHE_HOME/tunewiz/prepared``
(``~/.cache/tunewiz/prepared``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewiz.data import DataStats, Sample, SampleColumns, SamplePlan, plan_samples, tokenize_rows
from tunewiz.data.batching import pack_bounds
from tunewiz.data.formats import row_to_messages
from tunewiz.errors import TunewizError
from tunewiz.interrupts import ctrl_c_held

if TYPE_CHECKING:
    import numpy as np

    from tunewiz.preset.schema import DataSection
    from tunewiz.text.prompt import PromptFormat
    from tunewiz.text.tokenizer import Tokenizer

CACHE_ENV = "TUNEWIZ_CACHE"
VAL_CONVERSATIONS = "val_conversations.json"  # the replies' prompts (tunewiz.train.sample_generations)
LAYOUT_VERSION = 1
# Data settings that do not change a single token (they act after the samples are made); every other
# field of DataSection / DatasetEntry is part of the key (tests/test_prepared.py checks the choice).
TOKEN_NEUTRAL = frozenset({"shuffle", "cache_dir"})
SPLITS = ("train", "validation")
_TMP, _ALIASES, _HASHES, _LOCKS = ".tmp-", ".aliases", ".hashes", ".locks"
ProgressFn = Callable[[int, int], None]  # (rows done, rows in all)


def cache_root(cfg: DataSection | None = None) -> Path:
    """Where prepared entries live: ``data.cache_dir``, else ``$TUNEWIZ_CACHE``, else
    ``$XDG_CACHE_HOME/tunewiz/prepared`` (``~/.cache/tunewiz/prepared``)."""
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "tunewiz" / "prepared"


class PreparedSamples(Sequence[Sample]):
    """One split of an entry as a sequence of :class:`Sample` read from the memory-mapped arrays.

    ``trained`` holds, per item, its number of trained tokens (labels other than IGNORE_INDEX).
    """

    def __init__(self, entry: Path, split: str, packed: bool) -> None:
        import numpy as np

        def array(name: str, dtype: type) -> np.ndarray:
            path = entry / f"{split}.{name}"
            return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)

        self._tokens = array("tokens", np.int32)
        self._labels = array("labels", np.int32)
        self._offsets = array("offsets", np.int64)
        self._rows = array("rows", np.int64) if packed else None
        self.trained = array("row_trained" if packed else "trained", np.int32)

    def __len__(self) -> int:
        return len(self._rows if self._rows is not None else self._offsets) - 1

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        import numpy as np

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        if self._rows is None:
            start, end = self._offsets[index], self._offsets[index + 1]
            return Sample(self._tokens[start:end].tolist(), self._labels[start:end].tolist())
        bounds = self._offsets[self._rows[index] : self._rows[index + 1] + 1]
        start, end = bounds[0], bounds[-1]
        sizes = np.diff(bounds)
        positions = np.arange(end - start) - np.repeat(bounds[:-1] - start, sizes)
        docs = np.repeat(np.arange(len(sizes)), sizes)
        return Sample(
            self._tokens[start:end].tolist(),
            self._labels[start:end].tolist(),
            positions.tolist(),
            docs.tolist(),
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


@dataclass
class Prepared:
    """A mapped entry: the samples of both splits, the stats, and whether it was found or made now."""

    entry: Path
    train: PreparedSamples
    val: PreparedSamples
    stats: DataStats
    hit: bool
    seconds: float = 0.0  # time to find (hit) or make (miss) it
    meta: dict[str, Any] = field(default_factory=dict)

    def validation_conversations(self) -> list[list[dict[str, str]]]:
        """The first (up to 32) validation conversations of chat-format datasets, in split order."""
        return json.loads((self.entry / VAL_CONVERSATIONS).read_text(encoding="utf-8"))

    def unpacked(self, split: str) -> PreparedSamples:
        """One split's samples before packing (``train`` or ``validation``): a packed entry keeps them."""
        return PreparedSamples(self.entry, split, packed=False)


# --- the key -----------------------------------------------------------------------------------------


def key_inputs(
    cfg: DataSection, tokenizer: Tokenizer, *, seed: int, prompt: PromptFormat | None, legacy: bool
) -> dict[str, Any] | None:
    """Everything the samples are made from, as JSON: the key is its hash.

    None when a dataset cannot be identified (a missing file, a Hub dataset not loadable): the caller
    then reads the data to report the error.
    """
    from tunewiz.data import source_name

    root = cache_root(cfg)
    datasets = []
    for entry in cfg.datasets():
        ident = _data_identity(entry.path, entry.split or cfg.split, root)
        if ident is None:
            return None
        settings = entry.model_dump(mode="json", exclude={"path"})  # the path as its name and content
        datasets.append({**settings, "name": source_name(entry.path), "content": ident})
    val = None
    if cfg.val_path is not None:
        val = _data_identity(cfg.val_path, cfg.split, root)
        if val is None:
            return None
    settings = cfg.model_dump(mode="json", exclude={"path", "val_path", *TOKEN_NEUTRAL})
    if prompt is not None:
        prompt_spec: Any = prompt.as_json()
    else:
        prompt_spec = "legacy" if legacy else "new"
    return {
        "layout": LAYOUT_VERSION,
        "code": _code_digest(),
        "datasets": datasets,
        "val_path": None if val is None else {"name": source_name(str(cfg.val_path)), "content": val},
        "settings": settings,
        "seed": seed,
        "tokenizer": _tokenizer_digest(tokenizer, root),
        "prompt": prompt_spec,
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def _data_identity(path: str, split: str, root: Path) -> str | None:
    from tunewiz.data.sources import SHIPPED_PREFIX, shipped_datasets_dir

    if path.startswith(SHIPPED_PREFIX):
        file = shipped_datasets_dir() / f"{path[len(SHIPPED_PREFIX) :]}.jsonl"
        return _file_digest(file, root) if file.is_file() else None
    local = Path(path).expanduser()
    if local.is_file():
        return _file_digest(local, root)
    if local.exists() or local.suffix or local.is_absolute() or path.startswith((".", "~")):
        return None
    try:
        import datasets

        return "hub:" + datasets.load_dataset(path, split=split)._fingerprint
    except Exception:  # noqa: BLE001 - reading the rows reports it with the sources' own message
        return None


def _file_digest(path: Path, root: Path) -> str:
    """sha256 of a file's content; reused while the file's size and modification time are unchanged."""
    from tunewiz.atomic import atomic_write_json

    path = path.resolve()
    st = path.stat()
    stamp = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    record = root / _HASHES / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
        if {k: known.get(k) for k in stamp} == stamp:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    value = digest.hexdigest()
    try:
        atomic_write_json(record, {**stamp, "sha256": value})
    except OSError:
        pass  # a read-only cache still works, without the fast path
    return value


def _tokenizer_digest(tokenizer: Tokenizer, root: Path) -> dict[str, str]:
    from tunewiz.text.tokenizer import TOKENIZER_FILES

    names = (*TOKENIZER_FILES, "config.json", "generation_config.json")
    return {
        name: _file_digest(tokenizer.source_dir / name, root)
        for name in names
        if (tokenizer.source_dir / name).is_file()
    }


def _code_digest() -> str:
    """Hash of the code that turns rows into tokens (tunewiz/data, tunewiz/text): a change to it
    makes new entries rather than reusing samples an older version made."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("data", "text"):
        for file in sorted((package / folder).glob("*.py")):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:24]


# --- find, make, map ---------------------------------------------------------------------------------


def prepare(
    cfg: DataSection,
    tokenizer: Tokenizer,
    *,
    seed: int,
    prompt: PromptFormat | None = None,
    legacy: bool = False,
    progress: ProgressFn | None = None,
    workers: int | None = None,
    waiting: Callable[[str], None] | None = None,
) -> Prepared:
    """Find the prepared entry of this data, or make it; then map it.

    The arguments are ``build_datasets``'s; the samples are bit-for-bit its samples.

    Args:
        cfg: the preset's data section.
        tokenizer: the model's tokenizer.
        seed: the run seed (validation rows, dataset weights).
        prompt: the run's recorded prompt format; None: a new run's.
        legacy: a run from before prompt.json (see build_datasets).
        progress: called with (rows done, rows in all) while tokenizing.
        workers: processes that tokenize; default: every core this process may use.
        waiting: called with a line to show when another process on this host is preparing the same
            data and this one waits for it (to use its entry).

    Raises:
        TunewizError: the data cannot be read or makes no sample (the sources' messages); the cache
            directory is not writable.
    """
    started = time.monotonic()
    inputs = key_inputs(cfg, tokenizer, seed=seed, prompt=prompt, legacy=legacy)
    if inputs is None:  # not identifiable: reading it raises the sources' error
        plan_samples(cfg, tokenizer, seed=seed, prompt=prompt, legacy=legacy)
        raise TunewizError(
            f"cannot identify the data `{cfg.path_text}` for the prepared-data cache",
            hint="point `data.path` at a local file",
        )
    root = cache_root(cfg)
    spec = _digest(inputs)
    found = _lookup(root, spec)
    if found is not None:
        return _open(found, hit=True, seconds=time.monotonic() - started)
    with _held(root, spec, waiting) as held:
        found = _lookup(root, spec)  # made by another process while this one waited
        if found is not None:
            return _open(found, hit=True, seconds=time.monotonic() - started)
        if held.waited and waiting is not None:
            waiting("data: the other preparation stopped before it was done; this one prepares the data")
        entry = _make(root, spec, inputs, cfg, tokenizer, seed, prompt, legacy, progress, workers)
    return _open(entry, hit=False, seconds=time.monotonic() - started)


def find(
    cfg: DataSection,
    tokenizer: Tokenizer,
    *,
    seed: int,
    prompt: PromptFormat | None = None,
    legacy: bool = False,
) -> Prepared | None:
    """The mapped entry of this data when one exists (same arguments as :func:`prepare`), else None."""
    started = time.monotonic()
    inputs = key_inputs(cfg, tokenizer, seed=seed, prompt=prompt, legacy=legacy)
    found = None if inputs is None else _lookup(cache_root(cfg), _digest(inputs))
    return None if found is None else _open(found, hit=True, seconds=time.monotonic() - started)


def _lookup(root: Path, spec: str) -> Path | None:
    """The entry a key names: itself, or the entry an alias (a new run's key, made before the prompt
    format was resolved) points to."""
    if (root / spec / "meta.json").is_file():
        return root / spec
    try:
        target = (root / _ALIASES / spec).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return root / target if target and (root / target / "meta.json").is_file() else None


class _held:
    """An exclusive lock on one key's preparation (one host; other hosts race on the rename).

    The holder writes ``pid N on HOST`` into the lock file; a process that has to wait calls ``waiting``
    with a line that names it.
    """

    def __init__(self, root: Path, spec: str, waiting: Callable[[str], None] | None = None) -> None:
        self.path = root / _LOCKS / f"{spec}.lock"
        self.waiting = waiting
        self.waited = False

    def __enter__(self) -> _held:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise TunewizError(
                f"cannot write the prepared-data cache `{self.path.parent.parent}`: {exc.strerror or exc}",
                hint="choose a writable place with `--set data.cache_dir=DIR` or the TUNEWIZ_CACHE "
                "environment variable",
            ) from exc
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.waited = True
            if self.waiting is not None:
                holder = os.pread(self.fd, 256, 0).decode("utf-8", "replace").strip() or "another process"
                self.waiting(
                    f"data: waiting for tunewiz ({holder}), which is preparing the same data; "
                    "its entry is used when it is done"
                )
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock


def _make(
    root: Path,
    spec: str,
    inputs: dict[str, Any],
    cfg: DataSection,
    tokenizer: Tokenizer,
    seed: int,
    prompt: PromptFormat | None,
    legacy: bool,
    progress: ProgressFn | None,
    workers: int | None,
) -> Path:
    """Tokenize into a temporary directory and rename it into place; return the entry."""
    import numpy as np

    from tunewiz.atomic import atomic_write_text

    started = time.time()
    plan = plan_samples(cfg, tokenizer, seed=seed, prompt=prompt, legacy=legacy)
    # The entry is named by the resolved prompt format: a resume (which passes the recorded format)
    # finds the entry its new run made; the new run's key becomes an alias of it.
    final_inputs = {**inputs, "prompt": plan.prompt.as_json()}
    key = _digest(final_inputs)
    tmp = root / f"{_TMP}{key}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        counts, lengths, sources = _tokenize_into(tmp, plan, cfg, progress, workers)
        # The first validation conversations, for the replies at each validation: ranks read these
        # instead of reading and splitting the datasets again.
        chats = ((i, row, src) for i, row, src in plan.val_rows if src.format != "text")
        conversations = [row_to_messages(row, src.format, i, src.name) for i, row, src in islice(chats, 32)]
        _write_json(tmp / VAL_CONVERSATIONS, conversations)
        stats = plan.stats(cfg, counts, lengths, sources["train"], sources["validation"])
        np.asarray(stats.lengths, dtype=np.int32).tofile(tmp / "lengths")
        stats_doc = {
            k: getattr(stats, k)
            for k in ("num_train", "num_val", "counts", "format", "template", "token_lengths", "max_seq_len")
        }
        stats_doc |= {"truncation": stats.truncation, "sources": list(stats.sources)}
        stats_doc["prompt"] = stats.prompt.as_json()
        stats_doc["prompt_recorded"] = stats.prompt.recorded
        _write_json(tmp / "stats.json", stats_doc)
        size = _bytes_under(tmp)
        meta = {
            "key": key,
            "created": started,
            "seconds": round(time.time() - started, 3),
            "bytes": size,
            "packing": cfg.packing,
            "made_from": {
                "data": [f"{d['name']} ({d['content'][:12]})" for d in inputs["datasets"]],
                "paths": [_where(e.path) for e in cfg.datasets()],
                "rows": sum(src.num_rows for src in plan.sources),
                "tokenizer": str(tokenizer.source_dir.resolve()),
                "template": plan.prompt.template_source,
                "max_seq_len": cfg.max_seq_len,
                "samples": {"train": stats.num_train, "validation": stats.num_val},
            },
            "prepared_by": {"host": socket.gethostname(), "pid": os.getpid()},
            "inputs": final_inputs,
        }
        _write_json(tmp / "meta.json", meta)  # last: an entry without it is never used
        _fsync_dir(tmp)
        try:
            os.rename(tmp, root / key)
        except OSError:
            if not (root / key / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another host made the same entry first
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if spec != key:
        atomic_write_text(root / _ALIASES / spec, key + "\n")
    return root / key


def _where(path: str) -> str:
    """Where a dataset was read from, for ``cache list``: a local file's absolute path, else as written."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.is_file() else path


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- tokenizing in chunks, in a process pool ---------------------------------------------------------

_JOB: tuple[SamplePlan, DataSection] | None = None  # set before the pool forks; workers read it


@dataclass
class _Chunk:
    samples: SampleColumns | None
    counts: dict[str, int]
    lengths: list[int]
    error: tuple[str, str | None, int] | None = None  # a TunewizError's message, hint, exit code


def _tokenize_chunk(task: tuple[str, int, int]) -> _Chunk:
    """Tokenize rows ``start:stop`` of one split of the job (in a worker, or in this process)."""
    from tunewiz.data import _zero_counts

    assert _JOB is not None
    plan, cfg = _JOB
    split, start, stop = task
    rows = (plan.train_rows if split == "train" else plan.val_rows)[start:stop]
    counts = _zero_counts()
    lengths: list[int] = []
    try:
        return _Chunk(tokenize_rows(rows, plan.builder, cfg, counts, lengths), counts, lengths)
    except TunewizError as exc:  # sent back whole: the parent raises it as the sources wrote it
        return _Chunk(None, counts, [], (exc.message, exc.hint, exc.exit_code))


def default_workers() -> int:
    """Processes that tokenize: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _tokenize_into(
    tmp: Path, plan: SamplePlan, cfg: DataSection, progress: ProgressFn | None, workers: int | None
) -> tuple[dict[str, dict[str, int]], list[int], dict[str, np.ndarray]]:
    """Tokenize both splits of ``plan`` into ``tmp``'s arrays; return the counts, the train lengths
    and each sample's dataset index."""
    import gc
    import multiprocessing

    import numpy as np

    global _JOB
    total = len(plan.train_rows) + len(plan.val_rows)
    workers = workers or default_workers()
    # ~32 tasks per worker: the last ones are short, so no worker idles long at the end.
    chunk = max(16, min(1000, total // (workers * 32) or 1))
    tasks = [
        (split, start, min(start + chunk, n))
        for split, n in (("train", len(plan.train_rows)), ("validation", len(plan.val_rows)))
        for start in range(0, n, chunk)
    ]
    counts = {split: {"truncated": 0, "dropped_long": 0, "dropped_empty": 0} for split in SPLITS}
    lengths: list[int] = []
    sources: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    sizes: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    files = {
        (split, kind): open(tmp / f"{split}.{kind}", "wb")
        for split in SPLITS
        for kind in ("tokens", "labels")
    }
    _JOB = (plan, cfg)
    plan.builder.tokenizer.encode_with_offsets("warm up")  # lazily built tables, made once before the fork
    pool = None
    try:
        if workers > 1 and len(tasks) > 1:
            # The rows stay out of the workers' garbage collections: a collection walking them would
            # touch (and so copy, after the fork) every page that holds them.
            # Ctrl-C reaches every process of the terminal's group: the workers ignore it and this
            # process stops them (pool.terminate below), so only the CLI's one `interrupted` line shows.
            # It is held while the pool starts: arriving before `pool` is set, it left the workers
            # running, orphaned, holding the terminal's output open.
            with ctrl_c_held():
                gc.freeze()
                try:
                    pool = multiprocessing.get_context("fork").Pool(
                        min(workers, len(tasks)),
                        initializer=signal.signal,
                        initargs=(signal.SIGINT, signal.SIG_IGN),
                    )
                finally:
                    gc.unfreeze()
            results: Iterator[_Chunk] = pool.imap(_tokenize_chunk, tasks)
        else:
            results = map(_tokenize_chunk, tasks)
        done = 0
        if progress is not None:
            progress(0, total)
        for (split, start, stop), part in zip(tasks, results, strict=True):
            if part.samples is None:
                assert part.error is not None
                raise TunewizError(part.error[0], hint=part.error[1], exit_code=part.error[2])
            files[split, "tokens"].write(part.samples.tokens.tobytes())
            files[split, "labels"].write(part.samples.labels.tobytes())
            sizes[split].append(part.samples.sizes)
            sources[split].append(part.samples.sources)
            for name, value in part.counts.items():
                counts[split][name] += value
            if split == "train":
                lengths.extend(part.lengths)
            done += stop - start
            if progress is not None:
                progress(done, total)
    finally:
        _JOB = None
        if pool is not None:
            pool.terminate()
            pool.join()
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
    joined = {}
    for split in SPLITS:
        split_sizes = np.concatenate(sizes[split]) if sizes[split] else np.zeros(0, np.int64)
        offsets = np.zeros(len(split_sizes) + 1, np.int64)
        np.cumsum(split_sizes, out=offsets[1:])
        _write_array(tmp / f"{split}.offsets", offsets)
        labels = np.memmap(tmp / f"{split}.labels", np.int32, "r") if offsets[-1] else np.zeros(0, np.int32)
        trained_per_sample = (
            np.add.reduceat(labels != -100, offsets[:-1]) if len(split_sizes) else offsets[:0]
        )
        _write_array(tmp / f"{split}.trained", np.asarray(trained_per_sample, np.int32))
        if cfg.packing:
            rows = np.asarray(pack_bounds(split_sizes.tolist(), cfg.max_seq_len), np.int64)
            _write_array(tmp / f"{split}.rows", rows)
            per_row = np.add.reduceat(trained_per_sample, rows[:-1]) if len(rows) > 1 else rows[:0]
            _write_array(tmp / f"{split}.row_trained", np.asarray(per_row, np.int32))
        del labels
        joined[split] = np.concatenate(sources[split]) if sources[split] else np.zeros(0, np.int32)
    return counts, lengths, joined


def _write_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(array.tobytes())
        f.flush()
        os.fsync(f.fileno())


def _open(entry: Path, *, hit: bool, seconds: float) -> Prepared:
    """Map an entry and mark it used now."""
    import numpy as np

    from tunewiz.text.prompt import PromptFormat

    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    doc = json.loads((entry / "stats.json").read_text(encoding="utf-8"))
    prompt = PromptFormat.from_json(doc.pop("prompt"), where=str(entry / "stats.json"))
    if not doc.pop("prompt_recorded"):
        prompt = PromptFormat(
            prompt.template,
            prompt.template_name,
            prompt.template_source,
            prompt.bos,
            prompt.eos,
            recorded=False,
        )
    lengths_file = entry / "lengths"
    lengths = np.memmap(lengths_file, np.int32, "r") if lengths_file.stat().st_size else np.zeros(0, np.int32)
    stats = DataStats(**{**doc, "sources": tuple(doc["sources"])}, prompt=prompt, lengths=lengths)
    packed = bool(meta["packing"])
    try:
        os.utime(entry / "meta.json")  # last used (`tunewiz cache list`)
    except OSError:
        pass
    return Prepared(
        entry,
        PreparedSamples(entry, "train", packed),
        PreparedSamples(entry, "validation", packed),
        stats,
        hit,
        seconds,
        meta,
    )


def prepared_lengths(path: str, tokenizer: Tokenizer, columns: dict[str, str]) -> Sequence[int] | None:
    """The train samples' untruncated token lengths (ascending) of the most recently used entry made
    from exactly this one dataset (same content, ``columns`` and ``template: auto``) with this
    tokenizer, or None: the planner's length sample without tokenizing again.

    Args:
        path: ``data.path`` (one dataset).
        tokenizer: the model's tokenizer.
        columns: ``data.columns``.
    """
    import numpy as np

    root = cache_root()
    ident = _data_identity(path, "train", root)
    if ident is None:
        return None
    digest = _tokenizer_digest(tokenizer, root)
    for entry in list_entries(root):
        try:
            inputs = json.loads((entry.path / "meta.json").read_text(encoding="utf-8"))["inputs"]
            (dataset,) = inputs["datasets"]
        except (OSError, ValueError, KeyError):
            continue
        if (
            dataset["content"] == ident
            and (dataset["columns"] or {}) == columns
            and inputs["tokenizer"] == digest
            and inputs["settings"]["template"] == "auto"
            and (entry.path / "lengths").stat().st_size
        ):
            return np.memmap(entry.path / "lengths", np.int32, "r")
    return None


# --- listing and clearing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryInfo:
    """One entry for ``tunewiz cache list``: its key, size, what it was made from, when made and used."""

    key: str
    path: Path
    bytes: int
    created: float
    last_used: float
    made_from: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)  # the key's inputs (key_inputs)


def list_entries(root: Path) -> list[EntryInfo]:
    """The complete entries under ``root``, most recently used first."""
    entries = []
    if not root.is_dir():
        return []
    for path in root.iterdir():
        meta_file = path / "meta.json"
        if path.name.startswith(".") or not meta_file.is_file():
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entries.append(
            EntryInfo(
                path.name,
                path,
                _bytes_under(path),
                float(meta.get("created", 0)),
                meta_file.stat().st_mtime,
                meta.get("made_from", {}),
                meta.get("inputs", {}),
            )
        )
    return sorted(entries, key=lambda e: -e.last_used)


def _bytes_under(path: Path) -> int:
    """Bytes of the files under ``path`` (what deleting it frees)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def unfinished(root: Path) -> list[tuple[Path, int, bool]]:
    """Temporary directories of preparations under ``root``, running or killed: ``(path, bytes,
    abandoned)``. Abandoned: made on this host by a process that no longer runs (its name holds the host
    and pid); a directory of another host's preparation is never called abandoned."""
    found = []
    for path in sorted(root.glob(f"{_TMP}*")) if root.is_dir() else []:
        head, _, pid = path.name.rpartition("-")
        abandoned = False
        if pid.isdigit() and head.endswith(f"-{socket.gethostname()}"):
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                abandoned = True
            except OSError:  # alive, another user's
                pass
        try:
            found.append((path, _bytes_under(path), abandoned))
        except OSError:  # removed meanwhile
            continue
    return found


def differences(entries: Sequence[EntryInfo]) -> dict[str, list[str]]:
    """Per entry key, what sets it apart from the other entries made from the same data (same file names
    and content), as short labels: ``code 3f2a1b9c`` (the data/text code changed: a tunewiz update),
    ``layout 1``, ``seed 1``, ``max_seq_len 512``, ``tokenizer files 9e0d…``, ``prompt format 41aa…``.
    An entry alone with its data gets none.
    """
    groups: dict[tuple[str, ...], list[EntryInfo]] = {}
    for e in entries:
        groups.setdefault(tuple(e.made_from.get("data", [])), []).append(e)
    found: dict[str, list[str]] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        flat = [dict(_flatten(e.inputs)) for e in group]
        differing = sorted({k for f in flat for k in f if any(g.get(k) != f.get(k) for g in flat)})
        for e, f in zip(group, flat, strict=True):
            labels = [_difference_label(e.inputs, k, f.get(k)) for k in differing]
            found[e.key] = list(dict.fromkeys(labels))
    return found


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flatten(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], obj


def _difference_label(inputs: dict[str, Any], key: str, value: Any) -> str:
    head, _, rest = key.partition(".")
    if head in ("tokenizer", "prompt"):
        name = "tokenizer files" if head == "tokenizer" else "prompt format"
        return f"{name} {_digest(inputs.get(head))[:8]}"
    if head in ("settings", "datasets", "val_path"):
        key = rest.split(".", 1)[1] if head == "datasets" else rest  # datasets.0.weight -> weight
    text = "none" if value is None else str(value)
    return f"{key} {text[:8] if head == 'code' else text[:24]}"


def remove_entry(root: Path, key: str) -> int:
    """Delete one entry (renamed away first, so no reader sees it half-deleted) and its aliases; return
    how many bytes of files that removed.

    A rank that has the entry mapped keeps reading it until it exits (POSIX keeps unlinked files).
    """
    path = root / key
    doomed = root / f"{_TMP}removed-{key}-{socket.gethostname()}-{os.getpid()}"
    os.rename(path, doomed)
    freed = _bytes_under(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    aliases = root / _ALIASES
    if aliases.is_dir():
        for alias in aliases.iterdir():
            try:
                if alias.read_text(encoding="utf-8").strip() == key:
                    freed += alias.stat().st_size
                    alias.unlink()
            except OSError:
                continue
    return freed


def remove_leftovers(root: Path, *, older_than_s: float = 3600.0) -> int:
    """Delete what no entry needs: temporary directories of preparations that were killed (their process
    on this host is gone, or untouched for ``older_than_s``: another host's), aliases of removed entries,
    content hashes of files that are gone, and lock files nobody holds. Return how many bytes that freed.
    """
    import fcntl

    freed = 0
    if not root.is_dir():
        return 0
    for path, size, abandoned in unfinished(root):
        try:
            if not abandoned and time.time() - path.stat().st_mtime < older_than_s:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        freed += size

    def unused(path: Path) -> bool:
        if path.parent.name == _ALIASES:
            return not (root / path.read_text(encoding="utf-8").strip() / "meta.json").is_file()
        if path.parent.name == _HASHES:
            return not Path(json.loads(path.read_text(encoding="utf-8"))["path"]).is_file()
        fd = os.open(path, os.O_RDWR)  # a lock file: unused when nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    for folder in (_ALIASES, _HASHES, _LOCKS):
        for path in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            try:
                if unused(path):
                    freed += path.stat().st_size
                    path.unlink()
            except (OSError, ValueError, KeyError):
                continue
    return freed
