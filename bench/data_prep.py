"""Data preparation at scale (issue 16): today's in-memory path, the tokenizer library's own batch call,
the first preparation (tunewiz.data.prepared), a cache hit, a rank's memory, and who tokenized.

Generated Alpaca-style JSONL sets (instruction + output of random words, ~450 tokens a row with the
tokenizer.json tokenizer), two tokenizers side by side: a byte-level BPE ``tokenizer.json`` (vocab 8000,
trained here on the generated words, ChatML template) and the shipped SentencePiece one
(``tunewiz/assets/tiny``). Every measurement runs in a fresh process with its own cache directory.

- (a) today's path: ``build_datasets`` in one process (``--today-rows`` rows only, it is slow);
- (b) the library alone: the same rows rendered by the run's template, then ``tokenizers``'
  ``encode_batch`` / ``sentencepiece``'s ``encode(list, num_threads=-1)`` (encode time only);
- (c) first preparation: ``prepare`` with every core (rows/s);
- (d) cache hit: from calling ``prepare`` to the samples mapped, in a new process (tokenizer load
  included; the interpreter start and imports not);
- (e) a rank's memory: RSS and private (anonymous) RSS growth of a process that does what a rank does
  with the data (map the entry, read the trained-token counts, make an epoch order, read a batch);
- (f) with ``--ranks``: ``tunewiz train --nproc-per-node 2`` (1 step on the tiny model) on the smallest
  set; how many processes made an entry (the launcher) and how many only mapped it.

    python bench/data_prep.py --sizes 10000,100000,1000000 [--today-rows 10000] [--ranks] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SP_DIR = REPO / "tunewiz" / "assets" / "tiny"


def _words(n: int = 3000) -> list[str]:
    rng = random.Random(1)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "pe", "do", "li", "ma", "zu", "chi", "ten"]
    return sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)})


def write_rows(path: Path, n: int, words_per_row: int) -> None:
    """``n`` Alpaca rows of random words: an instruction of ~1/8 of them, the output the rest."""
    rng = random.Random(n)
    vocab = _words()
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            k = rng.randint(words_per_row // 2, words_per_row * 3 // 2)
            text = [rng.choice(vocab) for _ in range(k)]
            split = max(1, k // 8)
            row = {
                "instruction": " ".join(text[:split]) + "?",
                "input": "",
                "output": " ".join(text[split:]) + ".",
            }
            f.write(json.dumps(row) + "\n")


def write_text_rows(path: Path, n: int, words_per_row: int) -> None:
    """``n`` plain-text rows of ``words_per_row`` random words (cheap to prepare: no template)."""
    rng = random.Random(n)
    vocab = _words()
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.choice(vocab) for _ in range(words_per_row))}) + "\n")


def build_json_tokenizer(out: Path) -> Path:
    """A byte-level BPE tokenizer.json (vocab 8000) with a ChatML template, trained on the generated words."""
    from tokenize_speed import make_json_tokenizer

    if (out / "tokenizer.json").is_file():
        return out
    rng = random.Random(0)
    vocab = _words()
    return make_json_tokenizer(
        out, (" ".join(rng.choice(vocab) for _ in range(40)) for _ in range(5000)), vocab_size=8000
    )


# --- measurements, each in a child process -----------------------------------------------------------


def _rss() -> tuple[int, int]:
    """(VmRSS, RssAnon) of this process in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["RssAnon"]


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children (the pool's workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _peak_rss() -> tuple[int, int]:
    """Peak RSS in bytes of this process and of its largest waited-for child (a pool worker)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_maxrss * 1024, kids.ru_maxrss * 1024


def child(kind: str, tok_dir: str, data: str, rows: int) -> dict:
    """One measurement (``kind``) in this process; returns its numbers."""
    from tunewiz.data import build_datasets
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.tokenizer import load_tokenizer

    cfg = DataSection(path=data, max_seq_len=1024)
    if kind == "today":  # also with an older tree (--today-code): only build_datasets
        started, cpu = time.perf_counter(), _cpu()
        train, val, stats = build_datasets(cfg, load_tokenizer(Path(tok_dir)), seed=0)
        seconds = time.perf_counter() - started
        mean = sum(stats.lengths) / len(stats.lengths)
        return {"seconds": seconds, "cpu": _cpu() - cpu, "rows": rows, "tokens_per_row": mean}
    from tunewiz.data import plan_samples
    from tunewiz.data.prepared import default_workers, prepare

    if kind == "rank":  # what FineTune does with the data, after the imports a rank has anyway
        import numpy as np
        import torch  # noqa: F401  (a rank has it loaded)

        from tunewiz.data import epoch_order

        tok = load_tokenizer(Path(tok_dir))
        before = _rss()
        started = time.perf_counter()
        p = prepare(cfg, tok, seed=0)
        seconds = time.perf_counter() - started
        total = int(np.asarray(p.train.trained).sum())
        order = epoch_order(len(p.train), epoch=0, seed=0, shuffle=True)
        batch = [p.train[i] for i in order[:8]]
        after = _rss()
        return {
            "hit": p.hit,
            "seconds": seconds,
            "rss": after[0] - before[0],
            "anon": after[1] - before[1],
            "tokens": total,
            "batch": len(batch),
        }
    started, cpu = time.perf_counter(), _cpu()
    tok = load_tokenizer(Path(tok_dir))
    if kind in ("prepare", "hit"):
        p = prepare(cfg, tok, seed=0)
        seconds = time.perf_counter() - started
        workers = default_workers()
        return {
            "seconds": seconds,
            "cpu": _cpu() - cpu,
            "hit": p.hit,
            "workers": workers,
            "bytes": p.meta["bytes"],
            "peak_rss": _peak_rss(),
        }
    if kind == "library":
        plan = plan_samples(cfg, tok, seed=0)
        from tunewiz.data.formats import row_to_messages

        texts = [
            plan.builder.render(row_to_messages(row, src.format, i, src.name), add_generation_prompt=False)
            for i, row, src in plan.train_rows + plan.val_rows
        ]
        backend = tok._backend
        started, cpu = time.perf_counter(), _cpu()
        if hasattr(backend, "_tk"):
            backend._tk.encode_batch(texts, add_special_tokens=False)
        else:
            backend._sp.encode(texts, num_threads=-1)
        return {"seconds": time.perf_counter() - started, "cpu": _cpu() - cpu, "rows": len(texts)}
    raise ValueError(kind)


def run_child(kind: str, tok_dir: Path, data: Path, rows: int, cache: Path, code: Path = REPO) -> dict:
    env = {**os.environ, "TUNEWIZ_CACHE": str(cache), "PYTHONPATH": str(code)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(tok_dir), str(data), str(rows)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def ranks(work: Path, data: Path) -> str:
    """`tunewiz train --nproc-per-node 2` for one step; who made the entry and who mapped it."""
    cache = work / "cache-ranks"
    env = {**os.environ, "TUNEWIZ_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    sets = ["data.max_seq_len=1024", "train.max_steps=1", "checkpoint.every_n_steps=1"]
    argv = [sys.executable, "-m", "tunewiz", "train", str(REPO / "presets" / "tiny-lora.yaml"), "--no-tui"]
    argv += ["--nproc-per-node", "2"]
    argv += ["--run-dir", str(work / "run-ranks"), "--overwrite", "--set", f"data.path={data}"]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.Popen(
        argv, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    from tunewiz.data.prepared import list_entries

    made = [json.loads((e.path / "meta.json").read_text())["prepared_by"]["pid"] for e in list_entries(cache)]
    by_launcher = sum(pid == proc.pid for pid in made)
    return (
        f"{len(made)} entry made, {by_launcher} of them by the launcher (pid {proc.pid}, with its pool of "
        "workers); the 2 ranks mapped it and tokenized nothing"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--today-rows", type=int, default=10000)
    parser.add_argument("--words", type=int, default=300, help="words per row on average (~450 BPE tokens)")
    parser.add_argument("--tokenizers", default="json,sp")
    parser.add_argument("--ranks", action="store_true")
    parser.add_argument(
        "--today-code",
        type=Path,
        default=None,
        help="a tunewiz source tree (e.g. `git archive d7a958e tunewiz`) whose build_datasets is (a) "
        "too, to show the per-row speed work's effect",
    )
    parser.add_argument(
        "--hit-rows",
        type=int,
        default=0,
        help="also measure (d) and (e) on this many short plain-text rows (vs 10,000 of them), for a row "
        "count too slow to prepare as Alpaca rows on this machine",
    )
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, tok_dir, data, rows = args.child
        print(json.dumps(child(kind, tok_dir, data, int(rows))))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="tunewiz-bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    files = {n: work / f"alpaca-{n}.jsonl" for n in {*sizes, args.today_rows}}
    for n, path in files.items():
        if not path.is_file():
            write_rows(path, n, args.words)
    tokenizers = {"tokenizer.json": build_json_tokenizer(work / "json-tok"), "SentencePiece": SP_DIR}
    tokenizers = {k: v for k, v in tokenizers.items() if ("json" if "json" in k else "sp") in args.tokenizers}
    print(f"work dir {work}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
    print(
        "| tokenizer | rows | tokens/row | (a) today rows/s (per CPU-s) | (b) library rows/s (per CPU-s) | "
        "(c) first prep rows/s (per CPU-s) | "
        "(c)/(a) | (b)/(c) | (d) cache hit | (e) rank RSS / private growth | entry size | preparer peak RSS "
        "(launcher / a worker) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, tok_dir in tokenizers.items():
        today = run_child("today", tok_dir, files[args.today_rows], args.today_rows, work / "cache-today")
        today_rate = args.today_rows / today["seconds"]
        if args.today_code is not None:
            old = run_child(
                "today", tok_dir, files[args.today_rows], args.today_rows, work / "c", args.today_code
            )
            print(
                f"{name}: (a) with {args.today_code}: {args.today_rows / old['seconds']:,.0f} rows/s "
                f"({args.today_rows / old['cpu']:,.0f} per CPU-s); with this tree: {today_rate:,.0f} rows/s "
                f"({args.today_rows / today['cpu']:,.0f} per CPU-s)"
            )
        base_rank = None
        for n in sizes:
            cache = work / f"cache-{name}-{n}"
            lib = run_child("library", tok_dir, files[n], n, cache)
            first = run_child("prepare", tok_dir, files[n], n, cache)
            hit = run_child("hit", tok_dir, files[n], n, cache)
            rank = run_child("rank", tok_dir, files[n], n, cache)
            base_rank = base_rank or rank
            lib_rate, first_rate = n / lib["seconds"], n / first["seconds"]
            mib = 2**20
            if n == sizes[0]:
                growth = f"{rank['rss'] / mib:.0f} / {rank['anon'] / mib:.0f} MiB (base)"
            else:
                rss, anon = rank["rss"] - base_rank["rss"], rank["anon"] - base_rank["anon"]
                growth = f"+{rss / mib:.0f} / +{anon / mib:.0f} MiB"
            print(
                f"| {name} | {n:,} | {today['tokens_per_row']:.0f} | "
                f"{today_rate:,.0f} ({args.today_rows / today['cpu']:,.0f}) at {args.today_rows:,} | "
                f"{lib_rate:,.0f} ({n / lib['cpu']:,.0f}) | "
                f"{first_rate:,.0f} ({n / first['cpu']:,.0f}; {first['workers']} workers) | "
                f"{first_rate / today_rate:.1f}× | "
                f"{lib_rate / first_rate:.2f}× | {hit['seconds']:.2f} s | {growth} | "
                f"{first['bytes'] / mib:,.0f} MiB | {first['peak_rss'][0] / mib:,.0f} / "
                f"{first['peak_rss'][1] / mib:,.0f} MiB |",
                flush=True,
            )
    if args.hit_rows:
        tok_dir = next(iter(tokenizers.values()))
        small, big = work / "text-10000.jsonl", work / f"text-{args.hit_rows}.jsonl"
        for n, path in ((10000, small), (args.hit_rows, big)):
            if not path.is_file():
                write_text_rows(path, n, 12)
        cache = work / "cache-hit-rows"
        base = run_child("prepare", tok_dir, small, 10000, cache)
        base_rank = run_child("rank", tok_dir, small, 10000, cache)
        first = run_child("prepare", tok_dir, big, args.hit_rows, cache)
        hit = run_child("hit", tok_dir, big, args.hit_rows, cache)
        rank = run_child("rank", tok_dir, big, args.hit_rows, cache)
        print(
            f"plain-text rows ({args.hit_rows:,}): first preparation {first['seconds']:.0f} s "
            f"({args.hit_rows / first['seconds']:,.0f} rows/s; 10,000 rows {base['seconds']:.1f} s); "
            f"cache hit {hit['seconds']:.2f} s (a rank's prepare() call: {rank['seconds']:.2f} s); "
            f"rank growth 10k → {args.hit_rows:,}: RSS +{(rank['rss'] - base_rank['rss']) / 2**20:.0f} MiB, "
            f"private +{(rank['anon'] - base_rank['anon']) / 2**20:.0f} MiB"
        )
    if args.ranks:
        print("(f)", ranks(work, files[sizes[0]]))


if __name__ == "__main__":
    main()
