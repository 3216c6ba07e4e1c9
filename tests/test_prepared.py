"""The prepared-data cache (tunewiz.data.prepared): the same samples as build_datasets, keyed on every
input that changes a token, written atomically, prepared once; `tunewiz prepare` and `tunewiz cache`."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tunewiz.data import build_datasets
from tunewiz.data.prepared import TOKEN_NEUTRAL, key_inputs, list_entries, prepare
from tunewiz.data.sources import shipped_datasets_dir
from tunewiz.preset.files import load_preset
from tunewiz.preset.schema import DataSection, DatasetEntry
from tunewiz.text.tokenizer import Tokenizer, load_tokenizer

REPO = Path(__file__).resolve().parent.parent
TINY_TOKENIZER = REPO / "tunewiz" / "assets" / "tiny"
SHIPPED = sorted(p.stem for p in shipped_datasets_dir().glob("*.jsonl"))
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def bpe(bpe_tokenizer_dir: Path) -> Tokenizer:
    return load_tokenizer(bpe_tokenizer_dir)


@pytest.fixture(scope="module")
def sp() -> Tokenizer:
    return load_tokenizer(TINY_TOKENIZER)  # the shipped SentencePiece tokenizer


def _rows(n: int, *, start: int = 0) -> list[dict[str, str]]:
    return [
        {"instruction": f"question number {i} about llamas", "output": f"answer {i} " + "words " * (i % 17)}
        for i in range(start, start + n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _same(cfg: DataSection, tok: Tokenizer, seed: int = 0, **kw: object) -> None:
    """The prepared entry holds exactly build_datasets' samples and stats."""
    train, val, stats = build_datasets(cfg, tok, seed=seed)
    prepared = prepare(cfg, tok, seed=seed, **kw)
    assert list(prepared.train) == train
    assert list(prepared.val) == val
    got = prepared.stats
    assert list(got.lengths) == list(stats.lengths)
    assert (got.num_train, got.num_val, got.counts, got.format, got.template) == (
        stats.num_train,
        stats.num_val,
        stats.counts,
        stats.format,
        stats.template,
    )
    assert (got.token_lengths, got.sources, got.prompt) == (stats.token_lengths, stats.sources, stats.prompt)
    labels = [[x for x in s.labels if x != -100] for s in train]
    assert prepared.train.trained.tolist() == [len(x) for x in labels]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_dataset_is_bit_for_bit(
    name: str, sp: Tokenizer, bpe: Tokenizer, tmp_path: Path
) -> None:
    for tok in (sp, bpe):
        _same(DataSection(path=f"tunewiz:{name}", cache_dir=str(tmp_path), max_seq_len=192), tok, workers=2)


@pytest.mark.parametrize(
    "settings",
    [
        {"packing": True, "max_seq_len": 64},
        {"packing": True, "max_seq_len": 40, "truncation": "left", "val_fraction": 0.2},
        {"truncation": "drop", "max_seq_len": 56, "train_on_inputs": True},
        {"max_samples": 37, "val_fraction": 0.1},
    ],
)
def test_data_settings_and_packing_are_bit_for_bit(
    settings: dict, sp: Tokenizer, bpe: Tokenizer, tmp_path: Path
) -> None:
    path = _jsonl(tmp_path / "d.jsonl", _rows(300))
    for tok in (sp, bpe):
        cfg = DataSection(path=str(path), cache_dir=str(tmp_path / "cache"), **settings)
        _same(cfg, tok, seed=5, workers=3)


def test_dataset_list_with_weights_val_path_and_one_process(bpe: Tokenizer, tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", _rows(120))
    chat = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "yo"}]}
        for i in range(50)
    ]
    b = _jsonl(tmp_path / "b.jsonl", chat)
    v = _jsonl(tmp_path / "v.jsonl", _rows(9, start=500))
    entries = [DatasetEntry(path=str(a), weight=1.5), DatasetEntry(path=str(b), weight=0.4)]
    cache = str(tmp_path / "cache")
    _same(DataSection(path=entries, packing=True, max_seq_len=80, cache_dir=cache), bpe, seed=2, workers=4)
    _same(DataSection(path=[str(a), "tunewiz:story-chat"], val_path=str(v), cache_dir=cache), bpe, workers=1)


# The value each data setting is changed to, to check that the key follows it. A new field of
# DataSection or DatasetEntry must be added here or to TOKEN_NEUTRAL: this test fails until it is.
CHANGED = {
    "path": "tunewiz:story-chat",
    "split": "test",
    "format": "alpaca",
    "columns": {"prompt": "instruction"},
    "template": "chatml",
    "thinking": False,
    "max_seq_len": 100,
    "truncation": "left",
    "train_on_inputs": True,
    "packing": True,
    "val_fraction": 0.3,
    "val_path": "tunewiz:story-qa-test",
    "max_samples": 10,
}
ENTRY_CHANGED = {
    "path": "tunewiz:story-chat",
    "split": "test",
    "format": "alpaca",
    "columns": {"prompt": "instruction"},
    "weight": 0.5,
}


def test_every_data_field_is_keyed_or_declared_token_neutral(sp: Tokenizer) -> None:
    base = DataSection(path="tunewiz:story-qa")
    key = key_inputs(base, sp, seed=0, prompt=None, legacy=False)
    for name in DataSection.model_fields:
        if name in TOKEN_NEUTRAL:
            changed = base.model_copy(update={name: {"shuffle": False, "cache_dir": None}[name]})
            assert key_inputs(changed, sp, seed=0, prompt=None, legacy=False) == key, name
            continue
        assert name in CHANGED, f"data.{name}: add it to the cache key or to TOKEN_NEUTRAL"
        changed = base.model_copy(update={name: CHANGED[name]})
        assert key_inputs(changed, sp, seed=0, prompt=None, legacy=False) != key, name
    one = DataSection(path=[DatasetEntry(path="tunewiz:story-qa")])
    key = key_inputs(one, sp, seed=0, prompt=None, legacy=False)
    for name in DatasetEntry.model_fields:
        assert name in ENTRY_CHANGED, f"DatasetEntry.{name}: add it to the cache key or to TOKEN_NEUTRAL"
        entry = DatasetEntry(**{"path": "tunewiz:story-qa", name: ENTRY_CHANGED[name]})
        changed = one.model_copy(update={"path": [entry]})
        assert key_inputs(changed, sp, seed=0, prompt=None, legacy=False) != key, name
    assert key_inputs(base, sp, seed=1, prompt=None, legacy=False) != key_inputs(
        base, sp, seed=0, prompt=None, legacy=False
    )


def test_any_changed_input_prepares_again(sp: Tokenizer, bpe_tokenizer_dir: Path, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", _rows(40))
    cfg = DataSection(path=str(path), cache_dir=str(tmp_path / "cache"))
    first = prepare(cfg, sp, seed=0)
    assert not first.hit and prepare(cfg, sp, seed=0).hit
    # One row changed (a new modification time: the content is hashed again).
    _jsonl(path, [*_rows(39), {"instruction": "a new row", "output": "new"}])
    changed = prepare(cfg, sp, seed=0)
    assert not changed.hit and changed.entry != first.entry
    assert not prepare(cfg.model_copy(update={"max_seq_len": 33}), sp, seed=0).hit
    assert not prepare(cfg.model_copy(update={"template": "chatml"}), sp, seed=0).hit
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for f in bpe_tokenizer_dir.iterdir():
        (tok_dir / f.name).write_bytes(f.read_bytes())
    other = load_tokenizer(tok_dir)
    assert not prepare(cfg, other, seed=0).hit and prepare(cfg, other, seed=0).hit
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps({**config, "chat_template": "Hi. " + config["chat_template"]})
    )
    assert not prepare(cfg, load_tokenizer(tok_dir), seed=0).hit


def test_resume_with_the_recorded_prompt_finds_the_new_runs_entry(sp: Tokenizer, tmp_path: Path) -> None:
    cfg = DataSection(path="tunewiz:story-qa", cache_dir=str(tmp_path), max_samples=200)
    new = prepare(cfg, sp, seed=0)
    resumed = prepare(cfg, sp, seed=0, prompt=new.stats.prompt)
    assert resumed.hit and resumed.entry == new.entry


def _prepare_script(cache: Path, data: Path, marker: Path | None = None) -> str:
    return (
        "import sys, time\n"
        "from tunewiz.data.prepared import prepare\n"
        "from tunewiz.preset.schema import DataSection\n"
        "from tunewiz.text.tokenizer import load_tokenizer\n"
        f"cfg = DataSection(path={str(data)!r}, cache_dir={str(cache)!r})\n"
        f"def slow(done, total):\n"
        f"    if {marker is not None}:\n"
        f"        open({str(marker)!r}, 'w').write(str(done)); time.sleep(0.5)\n"
        f"p = prepare(cfg, load_tokenizer({str(TINY_TOKENIZER)!r}), seed=0, progress=slow, workers=1)\n"
        "print('HIT' if p.hit else 'MADE', p.entry)\n"
    )


def test_a_killed_preparation_leaves_no_entry(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "d.jsonl", _rows(3000))
    cache, marker = tmp_path / "cache", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _prepare_script(cache, data, marker)], env=ENV)
    deadline = time.monotonic() + 120
    while not (marker.is_file() and marker.read_text() not in ("", "0")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_entries(cache) == []
    leftover = [p for p in cache.iterdir() if p.name.startswith(".tmp-")]  # never read as an entry
    assert len(leftover) == 1
    # `cache list` shows it; `cache clear` removes it at once: its process is gone (not after an hour).
    size = sum(f.stat().st_size for f in leftover[0].rglob("*") if f.is_file())
    listed = _tunewiz("cache", "list", "--cache-dir", str(cache), cwd=tmp_path)
    from tunewiz.units import fmt_bytes

    assert listed.stdout.splitlines()[1] == (
        f"and 1 unfinished preparation ({fmt_bytes(size)}; never used as an entry): 1 of a process that is "
        "gone, which `tunewiz cache clear` removes"
    )
    cleared = _tunewiz("cache", "clear", "--cache-dir", str(cache), cwd=tmp_path)
    assert cleared.stdout.strip() == f"removed 0 entries from {cache}, freed {fmt_bytes(size)}"
    assert not leftover[0].exists()
    out = subprocess.run(
        [sys.executable, "-c", _prepare_script(cache, data)],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("MADE")
    assert len(list_entries(cache)) == 1


def test_ctrl_c_while_preparing_prints_one_line_and_leaves_nothing(tmp_path: Path, ctrl_c: None) -> None:
    """Ctrl-C reaches the whole process group (the launcher and its pool's workers): one `error:
    interrupted` line, exit 130, no traceback from a worker, no entry and no temporary directory."""
    words = " ".join(["llamas graze on the high plains"] * 40)
    data = _jsonl(
        tmp_path / "big.jsonl", [{"instruction": f"q{i} {words}", "output": words} for i in range(60_000)]
    )
    env = {**ENV, "TUNEWIZ_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "tunewiz", "prepare", "tiny-lora", "--set", f"data.path={data}", "--no-tui"]
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first progress line: the pool is tokenizing
    assert first.startswith("preparing data: ") and "100%" not in first, first
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130, first + rest
    assert "Traceback" not in rest and rest.endswith("error: interrupted\n"), rest
    assert list_entries(tmp_path / "cache") == []
    assert not [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_ctrl_c_as_the_pool_starts_leaves_no_worker_behind(
    tmp_path: Path, sp: Tokenizer, monkeypatch: pytest.MonkeyPatch, ctrl_c: None
) -> None:
    """A Ctrl-C just after the pool forked its workers (before `pool` was set) left them running,
    orphaned, holding the terminal's output open: it is held until the pool can be stopped."""
    import multiprocessing.pool

    import psutil

    forked = multiprocessing.pool.Pool._repopulate_pool

    def then_ctrl_c(self: multiprocessing.pool.Pool) -> object:
        started = forked(self)
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's Ctrl-C, the workers just forked
        return started

    monkeypatch.setattr(multiprocessing.pool.Pool, "_repopulate_pool", then_ctrl_c)
    cfg = DataSection(path=str(_jsonl(tmp_path / "d.jsonl", _rows(200))), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, sp, seed=0, workers=2)
    assert psutil.Process().children() == []
    assert list_entries(tmp_path / "cache") == []


def test_two_processes_prepare_once(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "d.jsonl", _rows(400))
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _prepare_script(cache, data)], env=ENV, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = sorted(p.communicate()[0].split()[0] for p in procs)
    assert outs == ["HIT", "MADE"]
    assert len(list_entries(cache)) == 1


def test_a_second_preparer_says_whom_it_waits_for(tmp_path: Path) -> None:
    """`tunewiz prepare` of data another process is preparing says it waits, naming that process, and
    then makes or uses the entry."""
    import fcntl
    import os
    import socket

    from tunewiz.data.prepared import _digest, cache_root
    from tunewiz.models.loading import resolve_model_dir

    data = _jsonl(tmp_path / "d.jsonl", _rows(50))
    sets = [f"data.path={data}", f"data.cache_dir={tmp_path / 'cache'}"]
    resolved, _ = load_preset("tiny-lora", sets)
    tok = load_tokenizer(resolve_model_dir(resolved.model.path, resolved.model.revision))
    spec = _digest(key_inputs(resolved.data, tok, seed=resolved.train.seed, prompt=None, legacy=False))
    lock = cache_root(resolved.data) / ".locks" / f"{spec}.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a preparing process holds it
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    argv = [sys.executable, "-m", "tunewiz", "prepare", "tiny-lora", "--no-tui"]
    argv += [arg for s in sets for arg in ("--set", s)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # blocks until the preparer says something
    os.close(fd)  # the other process is done: the waiter goes on
    rest = proc.stderr.read()
    assert proc.wait() == 0, first + rest
    assert first == (
        f"data: waiting for tunewiz (pid {os.getpid()} on {socket.gethostname()}), which is preparing "
        "the same data; its entry is used when it is done\n"
    )
    # The holder let go without an entry (as a killed preparer does): this one says it prepares instead.
    assert rest.startswith(
        "data: the other preparation stopped before it was done; this one prepares the data\n"
    )
    assert "made" in rest and len(list_entries(tmp_path / "cache")) == 1


def _tunewiz(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", *args], cwd=cwd, env=env or ENV, capture_output=True, text=True
    )


def test_prepare_command_and_cache_list_clear(tmp_path: Path) -> None:
    env = {**ENV, "TUNEWIZ_CACHE": str(tmp_path / "cache")}
    made = _tunewiz(
        "prepare", "tiny-lora", "--set", "data.max_samples=300", "--no-tui", cwd=tmp_path, env=env
    )
    assert made.returncode == 0, made.stderr
    assert "preparing data: 100% · 300 rows" in made.stderr and "made" in made.stderr
    from tunewiz.ui.data_phase import progress_line

    assert progress_line(1, 1, 0.5) == "preparing data: 100% · 1 row in 0.5 s · 2 rows/s"
    again = _tunewiz(
        "prepare", "tiny-lora", "--set", "data.max_samples=300", "--no-tui", cwd=tmp_path, env=env
    )
    assert again.returncode == 0 and "preparing data" not in again.stderr
    assert again.stderr.count("\n") == 1 and "found" in again.stderr
    assert again.stdout == made.stdout
    key = Path(made.stdout.strip()).name
    listed = _tunewiz("cache", "list", cwd=tmp_path, env=env)
    assert "1 entry" in listed.stdout and key[:12] in listed.stdout and "285 train + 15 val" in listed.stdout
    aliases, locks = tmp_path / "cache" / ".aliases", tmp_path / "cache" / ".locks"
    assert list(aliases.iterdir()) and list(locks.iterdir())
    cleared = _tunewiz("cache", "clear", "--older-than", "1d", cwd=tmp_path, env=env)
    assert "removed 0 entries" in cleared.stdout
    assert list(aliases.iterdir()) and not list(locks.iterdir())  # the entry's alias stays
    cleared = _tunewiz("cache", "clear", key[:8], cwd=tmp_path, env=env)
    assert "removed 1 entry" in cleared.stdout
    assert list_entries(tmp_path / "cache") == []
    # The bookkeeping goes with it (the alias, the lock file); the hashes of files that exist stay.
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert left and {p.parent.name for p in left} == {".hashes"}
    bad = _tunewiz("cache", "clear", "--older-than", "soon", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "error: `--older-than soon` is not an age" in bad.stderr
    empty = _tunewiz("cache", "clear", "", cwd=tmp_path, env=env)  # not "every entry"
    assert empty.returncode == 2 and "error: `tunewiz cache clear` got an empty key" in empty.stderr


def test_cache_list_says_what_sets_entries_of_the_same_data_apart(
    tmp_path: Path, sp: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tunewiz.data.prepared as prepared_module

    cache = tmp_path / "cache"
    path = _jsonl(tmp_path / "qa.jsonl", _rows(20))
    cfg = DataSection(path=str(path), cache_dir=str(cache))
    first = prepare(cfg, sp, seed=0)
    seeded = prepare(cfg, sp, seed=1)
    # A tunewiz update that changes the data code: the same data, settings and seed make a new entry.
    monkeypatch.setattr(prepared_module, "_code_digest", lambda: "0123456789abcdef01234567")
    updated = prepare(cfg, sp, seed=0)
    listed = _tunewiz("cache", "list", "--cache-dir", str(cache), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = {line[:12]: line for line in listed.stdout.splitlines()[1:]}
    assert f"from {path.resolve()}" in lines[first.entry.name[:12]]
    apart = "differs from the other entries of this data in: "
    assert lines[updated.entry.name[:12]].endswith(apart + "code 01234567, seed 0")
    assert lines[seeded.entry.name[:12]].endswith(f"{apart}code {first.meta['inputs']['code'][:8]}, seed 1")
    assert lines[first.entry.name[:12]].endswith(f"{apart}code {first.meta['inputs']['code'][:8]}, seed 0")

    # `cache clear` with no key and no --older-than removes every entry and says how many and how much.
    def stored() -> int:  # the entries and their bookkeeping (aliases, locks, content hashes)
        return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())

    before = stored()
    cleared = _tunewiz("cache", "clear", "--cache-dir", str(cache), cwd=tmp_path)
    from tunewiz.units import fmt_bytes

    assert cleared.stdout.strip() == f"removed 3 entries from {cache}, freed {fmt_bytes(before - stored())}"
    assert list_entries(cache) == []


def test_prepare_counts_rows_dropped_for_an_empty_response(tmp_path: Path) -> None:
    data = tmp_path / "blank.csv"
    data.write_text("question,answer\n" + "".join(f"q{i},{'a' if i % 3 else ' '}\n" for i in range(30)))
    env = {**ENV, "TUNEWIZ_CACHE": str(tmp_path / "cache")}
    out = _tunewiz("prepare", "tiny-lora", "--set", f"data.path={data}", "--no-tui", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "validation samples; 10 rows dropped: empty response," in out.stderr
    # Samples cut to max_seq_len are counted on the same line, as the run's start event counts them.
    long = tmp_path / "long.csv"
    long.write_text("question,answer\n" + "".join(f"q{i},{'word ' * (i * 4)}\n" for i in range(1, 31)))
    sets = [f"data.path={long}", "data.max_seq_len=48"]
    out = _tunewiz(
        "prepare", "tiny-lora", *(a for s in sets for a in ("--set", s)), "--no-tui", cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    resolved, _ = load_preset("tiny-lora", sets)
    stats = build_datasets(resolved.data, load_tokenizer(TINY_TOKENIZER), seed=resolved.train.seed)[2]
    assert 0 < stats.truncated < 30 and stats.dropped_long == 0
    assert (
        f"samples; {stats.truncated} truncated (right) / 0 dropped: longer than max_seq_len 48," in out.stderr
    )


def test_prepare_reports_bad_data_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": ["a"], "output": "b"}\n' * 40)
    env = {**ENV, "TUNEWIZ_CACHE": str(tmp_path / "cache")}
    out = _tunewiz("prepare", "tiny-lora", "--set", f"data.path={bad}", "--no-tui", cwd=tmp_path, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: row 2 of bad.jsonl: `instruction` (the prompt) is a list, expected text" in out.stderr
    assert list_entries(tmp_path / "cache") == []


# --- the launcher prepares, the ranks map ------------------------------------------------------------


def test_bad_data_stops_train_before_any_run_directory(tmp_path: Path, tiny_model_dir: Path) -> None:
    from runs import cli, write_preset

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n' * 30 + '{"instruction": "a"}\n')
    preset = write_preset(tmp_path / "bad.yaml", tiny_model_dir, bad)
    out = cli("train", str(preset), "--no-tui", cwd=tmp_path, env={"TUNEWIZ_CACHE": str(tmp_path / "c")})
    assert out.returncode == 2, out.stderr
    assert "error: row 31 of bad.jsonl has no `response` field" in out.stderr
    assert "Traceback" not in out.stderr and "rank" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_train_into_a_started_run_is_refused_before_the_data_phase(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A refused launch costs no data preparation: the run directory is checked first."""
    from runs import cli, write_preset

    data = _jsonl(tmp_path / "data.jsonl", _rows(40))
    preset = write_preset(tmp_path / "p.yaml", tiny_model_dir, data)
    run = tmp_path / "runs" / "p"
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text(json.dumps({"event": "start", "time": time.time(), "step": 0}) + "\n")
    cache = tmp_path / "c"
    out = cli(
        "train",
        str(preset),
        "--no-tui",
        "--run-dir",
        str(run),
        cwd=tmp_path,
        env={"TUNEWIZ_CACHE": str(cache)},
    )
    assert out.returncode == 2, out.stderr
    assert f"error: run directory `{run}` already exists" in out.stderr
    assert "preparing data" not in out.stdout + out.stderr
    assert list_entries(cache) == []


def test_too_few_samples_for_one_step_is_refused_before_an_overwrite(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A training set smaller than one global batch is refused by the launcher, before `--overwrite` empties
    the run directory (it was found in rank 0, after the old run was deleted); the hint, followed, trains."""
    from runs import cli, write_preset

    data = _jsonl(tmp_path / "data.jsonl", _rows(3))  # val_fraction 0.1: 2 train samples, 1 validation
    preset = write_preset(tmp_path / "p.yaml", tiny_model_dir, data, train={"max_steps": 1})
    run = tmp_path / "runs" / "p"
    (run / "final").mkdir(parents=True)
    (run / "final" / "adapter_model.safetensors").write_text("the finished run's adapter")
    (run / "events.jsonl").write_text(json.dumps({"event": "start", "time": time.time(), "step": 0}) + "\n")
    env = {"TUNEWIZ_CACHE": str(tmp_path / "c")}
    out = cli("train", str(preset), "--no-tui", "--run-dir", str(run), "--overwrite", cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stderr
    assert "error: the training set has 2 samples, fewer than one global batch (4 = micro_batch_size 4" in (
        out.stderr
    )
    assert "rank" not in out.stderr.split("error:")[1].split("(")[0] and "Traceback" not in out.stderr
    assert (run / "final" / "adapter_model.safetensors").read_text() == "the finished run's adapter"
    hint = out.stderr.split("hint: ")[1]
    assert hint.startswith("`--set train.micro_batch_size=2 --set train.grad_accum=1` takes 2 samples")
    followed = shlex.split(hint.split("`")[1])
    again = cli(
        "train",
        str(preset),
        "--no-tui",
        "--run-dir",
        str(run),
        "--overwrite",
        *followed,
        cwd=tmp_path,
        env=env,
    )
    assert again.returncode == 0, again.stderr
    files = [f for f in (run / "final").rglob("*") if f.is_file()]
    assert files and all(b"the finished run's adapter" not in f.read_bytes() for f in files)


def _train_in_a_terminal(preset: Path, cwd: Path) -> tuple[pexpect.spawn, io.StringIO]:
    """`tunewiz train PRESET` in a 120×50 pseudo-terminal with its own cache; the log gets what it draws."""
    env = {k: v for k, v in ENV.items() if k not in ("CI", "NO_COLOR", "FORCE_COLOR")}
    env = {**env, "TERM": "xterm-256color", "TUNEWIZ_CACHE": str(cwd / "cache"), "TMPDIR": str(cwd)}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tunewiz", "train", str(preset)],
        cwd=str(cwd),
        env=env,
        dimensions=(50, 120),
        encoding="utf-8",
        codec_errors="replace",  # a redraw cut by the terminal driver can split a UTF-8 character
        timeout=300,
    )
    log = io.StringIO()
    child.logfile_read = log
    return child, log


def test_bad_data_in_a_terminal_leaves_the_error_alone(tmp_path: Path, tiny_model_dir: Path) -> None:
    from runs import write_preset

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n' * 30 + '{"instruction": "a"}\n')
    preset = write_preset(tmp_path / "bad.yaml", tiny_model_dir, bad)
    child, log = _train_in_a_terminal(preset, tmp_path)
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", log.getvalue())
    assert child.exitstatus == 2, text[-3000:]
    assert "╭─ tunewiz · bad" in text  # the dashboard opened for the data phase, then gave way to the error
    error = text.index("error: row 31 of bad.jsonl has no `response` field")
    assert "hint: " in text[error:] and "╭─" not in text[error:] and "Traceback" not in text
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_ranks_map_what_the_launcher_prepared_and_resume_reuses_it(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    from runs import TUNEWIZ, events, write_preset

    cache = tmp_path / "cache"
    env = {**ENV, "TUNEWIZ_CACHE": str(cache), "TMPDIR": str(tmp_path)}
    preset = write_preset(tmp_path / "run.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 2})
    proc = subprocess.Popen(
        [*TUNEWIZ, "train", str(preset), "--no-tui", "--nproc-per-node", "2"],
        cwd=tmp_path,
        env={**env, "TUNEWIZ_FAULT_KILL": "step@3"},  # killed after step 2's checkpoint
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, err
    (entry,) = list_entries(cache)
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["prepared_by"]["pid"] == proc.pid  # the launcher tokenized; the ranks only mapped
    assert "preparing data: 100%" in err and "made" in err
    run = tmp_path / "runs" / "run"
    resumed = subprocess.run(
        [*TUNEWIZ, "resume", str(run), "--no-tui", "--nproc-per-node", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "preparing data" not in resumed.stderr and f"prepared entry {entry.key[:12]} found" in resumed.stderr
    )
    assert [e.key for e in list_entries(cache)] == [entry.key]
    starts = [e for e in events(run) if e["event"] == "start"]
    assert [s["step"] for s in starts] == [0, 2] and starts[1]["num_train_samples"] == meta["made_from"][
        "samples"
    ]["train"]


@pytest.mark.slow
def test_train_in_a_terminal_shows_the_data_phase_inside_the_dashboard(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from runs import write_dataset, write_preset

    data = write_dataset(tmp_path / "rows.jsonl", 4000)  # a few seconds of preparation here
    preset = write_preset(tmp_path / "demo.yaml", tiny_model_dir, data, train={"max_steps": 3})
    child, log = _train_in_a_terminal(preset, tmp_path)
    child.expect(r"preparing data: \d+% · [\d,]+ rows/s · ETA")
    child.expect(r"data: prepared entry \w{12} made")
    child.expect(r"step \d+/3")
    child.expect("✓ finished at step 3")
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", log.getvalue())
    assert child.exitstatus == 0, text[-3000:]
    frame = text.index("╭─ tunewiz · demo")
    preparing = re.search(r"│ preparing data: \d+% · [\d,]+ rows/s · ETA \w+", text)
    made = re.search(r"│ data: prepared entry \w{12} made \(3,600 train \+ 400 validation samples", text)
    training = re.search(r"│ \S+tiny_model\w* · lora · cpu fp32 · 1 rank", text)
    assert preparing and made and training, text[-3000:]
    # One dashboard from the start: its frame before the data phase, then the run in the same frame.
    assert frame < preparing.start() < made.start() < training.start()
    assert "preparing data ━" not in text and "Traceback" not in text  # no separate progress bar


# --- eval and the planner reuse the entry ------------------------------------------------------------


def test_eval_on_own_data_reuses_the_runs_entry(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs import write_preset

    from tunewiz.data.prepared import remove_entry
    from tunewiz.inference.own_data import own_samples

    cache = tmp_path / "cache"
    path = write_preset(
        tmp_path / "run.yaml", tiny_model_dir, tiny_dataset, data={"packing": True, "cache_dir": str(cache)}
    )
    preset, _ = load_preset(str(path))
    tok = load_tokenizer(tiny_model_dir)
    made = prepare(preset.data, tok, seed=preset.train.seed)
    unpacked = preset.data.model_copy(update={"packing": False})
    _, val, _ = build_datasets(unpacked, tok, seed=preset.train.seed, prompt=made.stats.prompt)
    assert val and own_samples(preset, tok, made.stats.prompt, None) == val

    def rebuilt(*args: object, **kwargs: object) -> None:
        raise AssertionError("built again")

    monkeypatch.setattr("tunewiz.data.build_datasets", rebuilt)
    assert own_samples(preset, tok, made.stats.prompt, None) == val  # from the entry
    remove_entry(cache, made.entry.name)
    with pytest.raises(AssertionError, match="built again"):
        own_samples(preset, tok, made.stats.prompt, None)


def test_planner_lengths_come_from_the_prepared_entry(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunewiz.data.prepared import prepared_lengths

    path = _jsonl(tmp_path / "d.jsonl", _rows(80))
    tok = load_tokenizer(tiny_model_dir)
    assert prepared_lengths(str(path), tok, {}) is None
    made = prepare(DataSection(path=str(path), packing=True), tok, seed=0)
    assert list(prepared_lengths(str(path), tok, {})) == list(made.stats.lengths)
    assert prepared_lengths(str(path), tok, {"prompt": "instruction"}) is None
