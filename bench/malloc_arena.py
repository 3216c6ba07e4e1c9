"""Why ``tokenize_rows`` tokenizes in a thread of its own: C ``malloc`` in the main arena after a large
dataset was read (issue 16).

Times ``tokenizers``' ``encode`` (the bench's byte-level BPE tokenizer.json) over the same 1,500
rendered Alpaca rows, in the main thread and in a new thread (glibc gives each new thread a malloc
arena of its own), in fresh processes that first hold:

- ``nothing``: no dataset;
- ``parsed rows``: N generated Alpaca rows parsed with ``json.loads`` (dicts of strings: what
  ``tunewiz.data.sources`` holds; the freed line strings are left between them);
- ``one string``: the same file read as one string (as many bytes, one allocation).

    python bench/malloc_arena.py [--rows 100000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _encode_us(tk: object, texts: list[str]) -> float:
    """Median over 3 passes of µs of process CPU time per text."""
    times = []
    for _ in range(3):
        started = time.process_time()
        for text in texts:
            tk.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
        times.append(1e6 * (time.process_time() - started) / len(texts))
    return sorted(times)[1]


def child(holding: str, data: Path, tok_dir: Path) -> dict[str, float]:
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    with open(data, encoding="utf-8") as f:
        texts = [
            f"<|im_start|>user\n{row['instruction']}<|im_end|>\n"
            f"<|im_start|>assistant\n{row['output']}<|im_end|>\n"
            for row in map(json.loads, islice(f, 1500))
        ]
    held: object = None
    if holding == "parsed rows":
        with open(data, encoding="utf-8") as f:
            held = [json.loads(line) for line in f]
    elif holding == "one string":
        held = data.read_text(encoding="utf-8")
    result: dict[str, float] = {"main thread": _encode_us(tk, texts)}
    thread = threading.Thread(target=lambda: result.update({"new thread": _encode_us(tk, texts)}))
    thread.start()
    thread.join()
    del held
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        holding, data, tok_dir = args.child
        print(json.dumps(child(holding, Path(data), Path(tok_dir))))
        return
    from data_prep import build_json_tokenizer, write_rows

    work = args.work or Path(tempfile.mkdtemp(prefix="tunewiz-bench-arena-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"alpaca-{args.rows}.jsonl"
    if not data.is_file():
        write_rows(data, args.rows, 420)
    tok_dir = build_json_tokenizer(work / "json-tok")
    print(f"| process holds ({args.rows:,} rows) | encode µs/row, main thread | new thread | main / new |")
    print("|---|---:|---:|---:|")
    for holding in ("nothing", "parsed rows", "one string"):
        argv = [sys.executable, __file__, "--child", holding, str(data), str(tok_dir)]
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        main_us, new_us = out["main thread"], out["new thread"]
        print(f"| {holding} | {main_us:,.0f} | {new_us:,.0f} | {main_us / new_us:.2f}× |")


if __name__ == "__main__":
    main()
