"""Per-row tokenization speed of ``build_datasets`` (single process) against the tokenizer library's own
batch call over the same rendered texts, for the shipped SentencePiece tokenizer (tunewiz/assets/tiny)
and a byte-level BPE ``tokenizer.json`` trained on the generated rows.

The rows are Alpaca-style (instruction, input, output), built from random sentences of the shipped
``pretrain.jsonl`` to about ``--tokens`` tokens of the tiny tokenizer each.

    python bench/tokenize_speed.py [--rows 2000] [--tokens 450] [--profile sentencepiece|json]

Columns: ``build_datasets`` rows/s (wall clock, and per second of the process's CPU time, steadier on a
shared machine); the library's batch encode of the rendered texts (``tokenizers`` ``encode_batch``;
``sentencepiece`` ``encode`` on a list with ``num_threads=-1``) rows/s; build_datasets over the library.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tunewiz" / "assets" / "tiny"


def write_alpaca_jsonl(path: Path, rows: int, *, tokens: int = 450, seed: int = 0) -> Path:
    """Write ``rows`` Alpaca-style rows of about ``tokens`` tiny-tokenizer tokens each (seeded).

    About 4 characters make a token of the tiny tokenizer on these sentences; a fifth of the
    characters go to the instruction and input, the rest to the output.
    """
    source = (ROOT / "tunewiz" / "assets" / "datasets" / "pretrain.jsonl").read_text(encoding="utf-8")
    sentences = sorted(
        {s.strip() + "." for line in source.splitlines() for s in json.loads(line)["text"].split(".")} - {"."}
    )
    rng = random.Random(seed)

    def text(chars: int) -> str:
        out: list[str] = []
        while sum(len(s) + 1 for s in out) < chars:
            out.append(rng.choice(sentences))
        return " ".join(out)

    chars = tokens * 4
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(rows):
            row = {
                "instruction": "Answer the question about the story. " + text(chars // 10),
                "input": text(chars // 10) if rng.random() < 0.6 else "",
                "output": text(chars * 4 // 5),
            }
            f.write(json.dumps(row) + "\n")
    return path


def make_json_tokenizer(out: Path, texts: Iterable[str], vocab_size: int = 4000) -> Path:
    """A byte-level BPE tokenizer.json trained on ``texts`` (Llama-3 style bos post-processor, ChatML
    template); ``bench/data_prep.py`` uses it too."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    chatml = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
        "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
        "'<|im_start|>assistant\\n' }}{% endif %}"
    )
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": chatml,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _library_batch(tokenizer_dir: Path, texts: list[str]) -> float:
    """Seconds of the library's own batch encode of ``texts`` (all threads)."""
    if (tokenizer_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tk = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        start = time.perf_counter()
        tk.encode_batch(texts, add_special_tokens=False)
        return time.perf_counter() - start
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    start = time.perf_counter()
    sp.encode(texts, num_threads=-1)
    return time.perf_counter() - start


def measure(name: str, tokenizer_dir: Path, data: Path, rows: int, profile: bool) -> None:
    from tunewiz.data import build_datasets, load_rows
    from tunewiz.data.formats import row_to_messages
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    cfg = DataSection(path=str(data), max_seq_len=4096, val_fraction=0.0)
    profiler = cProfile.Profile() if profile else None
    start, cpu_start = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    train, _, stats = build_datasets(cfg, tokenizer, seed=0)
    if profiler:
        profiler.disable()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    template = stats.prompt.chat_template(tokenizer)
    assert template is not None
    texts = [
        template.render(row_to_messages(row, "alpaca", i, "bench"))
        for i, row in enumerate(load_rows(str(data), split="train", columns={}), start=1)
    ]
    library = _library_batch(tokenizer_dir, texts)
    mean_tokens = sum(len(s.input_ids) for s in train) / len(train)
    print(
        f"| {name} | {rows:,} | {mean_tokens:.0f} | {rows / seconds:,.0f} | {rows / cpu_seconds:,.0f} | "
        f"{rows / library:,.0f} | "
        f"{library / seconds:.2f} |",
        flush=True,
    )
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=450)
    parser.add_argument("--profile", choices=("sentencepiece", "json"), default=None)
    parser.add_argument("--only", choices=("sentencepiece", "json"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_alpaca_jsonl(Path(tmp) / "alpaca.jsonl", args.rows, tokens=args.tokens)
        kinds = {
            "sentencepiece": TINY,
            "json": make_json_tokenizer(
                Path(tmp) / "json", data.read_text(encoding="utf-8").splitlines()[:500]
            ),
        }
        print(
            "| tokenizer | rows | tokens/row | build_datasets rows/s | build_datasets rows per CPU-s | "
            "library batch rows/s | ratio |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, path in kinds.items():
            if args.only in (None, name):
                measure(name, path, data, args.rows, args.profile == name)


if __name__ == "__main__":
    main()
