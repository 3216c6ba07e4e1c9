"""The data pipeline on real small files: formats, masking, truncation, packing, batching, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tunewiz.data import (
    IGNORE_INDEX,
    Sample,
    build_datasets,
    collate,
    detect_format,
    epoch_order,
    load_rows,
    pack,
)
from tunewiz.errors import TunewizError
from tunewiz.preset.schema import DataSection
from tunewiz.text.tokenizer import Tokenizer, load_tokenizer

ALPACA = [
    {"instruction": "say hi", "input": "", "output": "hello world"},
    {"instruction": "name an animal", "input": "a big one", "output": "the llama"},
    {"instruction": "what is python", "output": "a language to code in"},
]


@pytest.fixture(scope="module")
def bpe(bpe_tokenizer_dir: Path) -> Tokenizer:
    return load_tokenizer(bpe_tokenizer_dir)


@pytest.fixture(scope="module")
def sp(sp_tokenizer_dir: Path) -> Tokenizer:
    return load_tokenizer(sp_tokenizer_dir)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(path: Path | str, **kw: object) -> DataSection:
    return DataSection(path=str(path), val_fraction=kw.pop("val_fraction", 0.0), **kw)


def _trained(sample: Sample) -> list[int]:
    return [label for label in sample.labels if label != IGNORE_INDEX]


def test_alpaca_exact_ids_and_mask(tmp_path: Path, bpe: Tokenizer) -> None:
    train, val, stats = build_datasets(_cfg(_jsonl(tmp_path / "d.jsonl", ALPACA[:1])), bpe, seed=0)
    prompt = bpe.encode("<|im_start|>user\nsay hi<|im_end|>\n<|im_start|>assistant\n")
    reply, newline = bpe.encode("hello world<|im_end|>"), bpe.encode("\n")
    (sample,) = train
    # bos first (the model's ChatML template does not emit it); no extra eos: <|im_end|> is a stop token.
    # The reply is trained through its end-of-turn token; the template's newline after it is not.
    assert sample.input_ids == [bpe.bos_id, *prompt, *reply, *newline]
    assert sample.labels == [IGNORE_INDEX] * len(prompt) + reply + [IGNORE_INDEX] * (len(newline) + 1)
    assert val == [] and stats.format == "alpaca" and stats.template == "tokenizer_config.json"
    assert (stats.num_train, stats.truncated, stats.dropped_empty) == (1, 0, 0)
    assert stats.token_lengths == {
        "p50": len(sample.input_ids),
        "p95": len(sample.input_ids),
        "max": len(sample.input_ids),
    }


def test_alpaca_input_and_train_on_inputs(tmp_path: Path, bpe: Tokenizer) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ALPACA[1:2])
    (masked,), _, _ = build_datasets(_cfg(path), bpe, seed=0)
    assert "name an animal\n\na big one" in bpe.decode(masked.input_ids)
    (full,), _, _ = build_datasets(_cfg(path, train_on_inputs=True), bpe, seed=0)
    assert full.input_ids == masked.input_ids
    assert full.labels == full.input_ids[1:] + [IGNORE_INDEX]


def test_builtin_template_without_stop_token_gets_eos(tmp_path: Path, sp: Tokenizer) -> None:
    path = _jsonl(
        tmp_path / "d.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the dog"}]}],
    )
    (sample,), _, stats = build_datasets(_cfg(path), sp, seed=0)
    assert stats.template == "builtin:chatml"  # no model template: chatml for chat data
    # "<|im_end|>" is plain text to this tokenizer, so eos follows the reply and is trained.
    # The template's newline after the end-of-turn text stays in the sample, untrained, after eos.
    eos_at = sample.input_ids.index(sp.eos_id)
    assert sample.input_ids[0] == sp.bos_id and sp.decode(sample.input_ids[eos_at + 1 :]).strip() == ""
    assert sp.decode(_trained(sample)) == "the dog<|im_end|>"
    assert sample.labels[eos_at - 1] == sp.eos_id and _trained(sample)[-1] == sp.eos_id


def test_llama2_reply_boundary_token_is_trained(tmp_path: Path, sp: Tokenizer) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"instruction": "hi", "output": "the dog"}])
    (sample,), _, _ = build_datasets(_cfg(path, template="llama2"), sp, seed=0)
    # "<s>[INST] hi [/INST] the dog </s>": the template emits bos (no second one); "▁the" spans the
    # boundary after "[/INST]" and is trained; "</s>" ends the reply, so no extra eos.
    assert sample.input_ids.count(sp.bos_id) == 1 and sample.input_ids[-1] == sp.eos_id
    assert _trained(sample) == sp.encode("the dog </s>")
    assert sp.decode(_trained(sample)) == "the dog "


def test_text_format(tmp_path: Path, sp: Tokenizer) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "the quick fox"}])
    (sample,), _, stats = build_datasets(_cfg(path), sp, seed=0)
    ids = [sp.bos_id, *sp.encode("the quick fox"), sp.eos_id]
    assert sample.input_ids == ids and sample.labels == ids[1:] + [IGNORE_INDEX]
    assert stats.format == "text" and stats.template is None


def test_sharegpt_maps_to_messages(tmp_path: Path, bpe: Tokenizer) -> None:
    messages = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]
    sharegpt = [
        {"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]), "value": m["content"]}
        for m in messages
    ]
    a, _, _ = build_datasets(_cfg(_jsonl(tmp_path / "a.jsonl", [{"messages": messages}])), bpe, seed=0)
    b, _, stats = build_datasets(
        _cfg(_jsonl(tmp_path / "b.jsonl", [{"conversations": sharegpt}])), bpe, seed=0
    )
    assert a == b and stats.format == "chat"


def test_csv_parquet_json_list_and_column_mapping(tmp_path: Path, bpe: Tokenizer) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    renamed = [{"question": r["instruction"], "answer": r["output"]} for r in ALPACA]
    with open(tmp_path / "d.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "answer"])
        writer.writeheader()
        writer.writerows(renamed)
    pq.write_table(pa.Table.from_pylist(renamed), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(renamed, indent=1))
    columns = {"instruction": "question", "output": "answer"}
    reference, _, _ = build_datasets(
        _cfg(
            _jsonl(
                tmp_path / "ref.jsonl",
                [{"instruction": r["instruction"], "output": r["output"]} for r in ALPACA],
            )
        ),
        bpe,
        seed=0,
    )
    for name in ("d.csv", "d.parquet", "d.json"):
        train, _, _ = build_datasets(_cfg(tmp_path / name, columns=columns), bpe, seed=0)
        assert train == reference, name
    assert load_rows(str(tmp_path / "d.csv"), split="train", columns=columns)[0] == {
        "instruction": "say hi",
        "output": "hello world",
    }


def test_detect_format() -> None:
    assert detect_format([{"instruction": "a", "output": "b"}]) == "alpaca"
    assert detect_format([{"conversations": []}]) == "chat"
    assert detect_format([{"text": "x"}]) == "text"
    assert detect_format([{"question": "a", "answer": "b"}]) == "alpaca"
    with pytest.raises(
        TunewizError, match=r"cannot tell the format of d.jsonl from its columns \['prompt'\]"
    ):
        detect_format([{"prompt": "x"}], source="d.jsonl")


def test_truncation_and_dropped_counts(tmp_path: Path, bpe: Tokenizer) -> None:
    rows = [
        {"text": "the dog " * 40},
        {"text": "hi"},
        {"instruction": "the quick brown fox " * 20, "output": "ok"},
    ]
    path = _jsonl(tmp_path / "d.jsonl", rows[:2])
    full = len(bpe.encode("the dog " * 40)) + 2
    train, _, stats = build_datasets(_cfg(path, max_seq_len=16), bpe, seed=0)
    assert [len(s.input_ids) for s in train] == [16, len(bpe.encode("hi")) + 2]
    # Lengths are reported before truncation: the percentiles show how far over max_seq_len samples are.
    assert stats.truncated == 1 and stats.token_lengths["max"] == full
    # A prompt longer than max_seq_len leaves no trained token: dropped and counted as too long.
    path = _jsonl(tmp_path / "e.jsonl", [rows[2], ALPACA[0]])
    train, _, stats = build_datasets(_cfg(path, max_seq_len=24), bpe, seed=0)
    assert (len(train), stats.dropped_long, stats.dropped_empty, stats.truncated) == (1, 1, 0, 0)
    assert stats.counts["train"] == {"truncated": 0, "dropped_long": 1, "dropped_empty": 0}


def test_truncation_modes_keep_prompt_reply_or_drop(tmp_path: Path, bpe: Tokenizer) -> None:
    long_prompt = {"instruction": "the quick brown fox " * 20, "output": "the lazy dog"}
    short = [{"instruction": "hi", "output": "ok"}, {"instruction": "say hi", "output": "hello"}]
    rows = [long_prompt, short[0], {**long_prompt, "output": "ok"}, short[1]]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    (whole,), _, _ = build_datasets(
        _cfg(_jsonl(tmp_path / "w.jsonl", rows[:1]), max_seq_len=512), bpe, seed=0
    )
    right = build_datasets(_cfg(path, max_seq_len=24, val_fraction=0.5), bpe, seed=0)
    left = build_datasets(_cfg(path, max_seq_len=24, val_fraction=0.5, truncation="left"), bpe, seed=0)
    drop = build_datasets(_cfg(path, max_seq_len=24, val_fraction=0.5, truncation="drop"), bpe, seed=0)
    # right: both long rows lose their reply and are dropped, in train and validation alike.
    assert right[2].dropped_long == 2 and right[2].truncated == 0
    assert sorted(right[2].counts) == ["train", "validation"]
    # left: bos, then the last 23 tokens, so the reply is whole and trained.
    assert left[2].truncated == 2 and left[2].dropped_long == 0
    cut = next(s for s in left[0] + left[1] if s.input_ids[-3:] == whole.input_ids[-3:])
    assert cut.input_ids == [bpe.bos_id, *whole.input_ids[-23:]]
    assert bpe.decode(_trained(cut)).startswith("the lazy dog")
    # drop: left out, counted the same way as right's cut-to-nothing rows.
    assert (drop[2].dropped_long, drop[2].truncated, drop[2].num_train + drop[2].num_val) == (2, 0, 2)
    assert drop[2].truncation_event()["mode"] == "drop"


def test_validation_split_val_path_and_max_samples(tmp_path: Path, bpe: Tokenizer) -> None:
    rows = [{"text": f"the dog {'and fox ' * i}"} for i in range(20)]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    t1, v1, s1 = build_datasets(_cfg(path, val_fraction=0.2), bpe, seed=3)
    t2, v2, _ = build_datasets(_cfg(path, val_fraction=0.2), bpe, seed=3)
    _, v3, _ = build_datasets(_cfg(path, val_fraction=0.2), bpe, seed=4)
    assert (s1.num_train, s1.num_val) == (16, 4) and (t1, v1) == (t2, v2) and v1 != v3
    assert not {tuple(s.input_ids) for s in t1} & {tuple(s.input_ids) for s in v1}
    val_path = _jsonl(tmp_path / "v.jsonl", rows[:3])
    train, val, stats = build_datasets(_cfg(path, val_path=str(val_path), max_samples=5), bpe, seed=0)
    assert (stats.num_train, stats.num_val) == (5, 3)


def test_packing_positions_documents_and_mask(tmp_path: Path, bpe: Tokenizer) -> None:
    rows = [{"text": "hi"}, {"text": "the dog"}, {"text": "the quick brown fox jumps over the lazy dog " * 3}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    unpacked, _, _ = build_datasets(_cfg(path, max_seq_len=32), bpe, seed=0)
    packed, _, stats = build_datasets(_cfg(path, max_seq_len=32, packing=True), bpe, seed=0)
    n0, n1 = len(unpacked[0].input_ids), len(unpacked[1].input_ids)
    assert stats.num_train == 3 and len(packed) == 2 and len(unpacked[2].input_ids) + n0 + n1 > 32
    row = packed[0]
    assert row.input_ids == unpacked[0].input_ids + unpacked[1].input_ids
    assert row.labels == unpacked[0].labels + unpacked[1].labels
    assert row.labels[n0 - 1] == IGNORE_INDEX  # never predict across samples
    assert row.position_ids == list(range(n0)) + list(range(n1))
    assert row.document_ids == [0] * n0 + [1] * n1

    batch = collate(packed, pad_id=bpe.pad_id)
    length = max(len(r.input_ids) for r in packed)
    assert batch["attn_mask"].shape == (2, 1, length, length) and batch["attn_mask"].dtype == torch.bool
    mask = batch["attn_mask"][0, 0]
    assert mask[n0, n0 - 1].item() is False and mask[n0 + 1, n0].item() is True and mask[0, 1].item() is False
    assert mask[n0 - 1, :n0].all() and mask.diagonal().all()  # padding attends to itself: no empty row
    assert batch["position_ids"][0, : n0 + n1].tolist() == row.position_ids


def test_pack_respects_limit() -> None:
    samples = [Sample([1] * n, [2] * (n - 1) + [IGNORE_INDEX]) for n in (3, 4, 2, 5)]
    assert [len(r.input_ids) for r in pack(samples, 7)] == [7, 2 + 5]


def test_epoch_order_is_deterministic() -> None:
    a = epoch_order(50, epoch=1, seed=7, shuffle=True)
    assert a == epoch_order(50, epoch=1, seed=7, shuffle=True) and sorted(a) == list(range(50))
    assert a != epoch_order(50, epoch=2, seed=7, shuffle=True) and a != list(range(50))
    assert epoch_order(5, epoch=3, seed=0, shuffle=False) == [0, 1, 2, 3, 4]


def test_collate_pads_right() -> None:
    batch = collate([Sample([5, 6, 7], [6, 7, IGNORE_INDEX]), Sample([8], [IGNORE_INDEX])], pad_id=0)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[6, 7, IGNORE_INDEX], [IGNORE_INDEX] * 3]
    assert batch["input_ids"].dtype == torch.long


def test_shipped_sample(tmp_path: Path, bpe: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewiz.data.sources as sources

    _jsonl(tmp_path / "alpaca-sample.jsonl", ALPACA)
    monkeypatch.setattr(sources, "shipped_datasets_dir", lambda: tmp_path)
    train, _, _ = build_datasets(_cfg("tunewiz:alpaca-sample"), bpe, seed=0)
    assert len(train) == 3
    with pytest.raises(
        TunewizError, match=r"no shipped dataset `tunewiz:nope`; available: `tunewiz:alpaca-sample`"
    ):
        load_rows("tunewiz:nope", split="train", columns={})


def _error(path: Path | str, tok: Tokenizer, **kw: object) -> TunewizError:
    with pytest.raises(TunewizError) as info:
        build_datasets(_cfg(path, **kw), tok, seed=0)
    return info.value


def test_bad_input_errors(tmp_path: Path, bpe: Tokenizer) -> None:
    assert str(_error(tmp_path / "missing.jsonl", bpe)).startswith(
        f"data file `{tmp_path / 'missing.jsonl'}` does not exist"
    )
    (tmp_path / "empty.jsonl").write_text("")
    assert _error(tmp_path / "empty.jsonl", bpe).message == "empty.jsonl is empty"
    (tmp_path / "blank.jsonl").write_text("\n\n")
    assert _error(tmp_path / "blank.jsonl", bpe).message == "blank.jsonl has no rows"

    rows = [*ALPACA[:2], {"instruction": "x", "reply": "y"}]
    err = _error(_jsonl(tmp_path / "data.jsonl", rows), bpe)
    assert err.message == "row 3 of data.jsonl has no `response` field; columns are ['instruction', 'reply']"
    assert (
        err.hint == "give that row its response (in the column the other rows hold it in), or remove the row"
    )

    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n\n{"text": oops}\n')
    assert _error(tmp_path / "bad.jsonl", bpe).message.startswith("bad.jsonl line 4 is not valid JSON")
    (tmp_path / "bad.json").write_text('[\n{"text": "a"},\n{"text": }\n]')
    assert _error(tmp_path / "bad.json", bpe).message.startswith("bad.json line 3 is not valid JSON")

    err = _error(_jsonl(tmp_path / "t.jsonl", [{"text": ["a"]}]), bpe)
    assert err.message == "row 1 of t.jsonl: `text` is a list, expected text"
    err = _error(_jsonl(tmp_path / "c.jsonl", [{"conversations": [{"from": "robot", "value": "x"}]}]), bpe)
    assert err.message == "row 1 of c.jsonl: turn 1 has unknown from `robot`"
    err = _error(_jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "user"}]}]), bpe)
    assert (
        err.message
        == "row 1 of m.jsonl: turn 1 of `messages` needs `role` and `content` (or `from` and `value`); "
        "it has ['role']"
    )
    (tmp_path / "d.txt").write_text("x")
    assert "unsupported data file type `.txt`" in _error(tmp_path / "d.txt", bpe).message
    err = _error(
        _jsonl(tmp_path / "cut.jsonl", [{"instruction": "the dog " * 30, "output": "ok"}]), bpe, max_seq_len=8
    )
    assert err.message.startswith(
        "cut.jsonl: no training sample has a trained token (0 with an empty response, 1 longer than "
        "`data.max_seq_len` 8 and dropped with `data.truncation: right`)"
    )
    assert "--set 'data.truncation=left'" in err.hint
    # Already `left`: the replies alone are too long, and the hint does not offer `left` again.
    err = _error(tmp_path / "cut.jsonl", bpe, max_seq_len=1, truncation="left")
    assert (
        err.hint is not None and err.hint.startswith("raise `data.max_seq_len`") and "=left" not in err.hint
    )


def test_hub_dataset_offline_error(bpe: Tokenizer) -> None:
    err = _error("tunewiz-tests/no-such-dataset", bpe)
    assert err.message.startswith(
        "could not load Hugging Face dataset `tunewiz-tests/no-such-dataset` (split `train`)"
    )
    assert "offline" in err.hint


def test_blank_responses_are_dropped_as_empty(tmp_path: Path, bpe: Tokenizer) -> None:
    """A blank answer would train only the end-of-turn token: the row is dropped and counted."""
    path = tmp_path / "blank.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "answer"])
        writer.writerows([["What is 1+1?", "2"], ["Name a colour", ""], ["Say hi", "  \n "], ["Hi", "hello"]])
    train, _, stats = build_datasets(_cfg(path, train_on_inputs=True), bpe, seed=0)
    assert (len(train), stats.dropped_empty, stats.counts["train"]["dropped_empty"]) == (2, 2, 2)
    chat = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": ""}] * 2},
    ]
    train, _, stats = build_datasets(_cfg(_jsonl(tmp_path / "chat.jsonl", chat)), bpe, seed=0)
    assert (len(train), stats.dropped_empty) == (1, 2)
    train, _, stats = build_datasets(
        _cfg(_jsonl(tmp_path / "t.jsonl", [{"text": "\n"}, {"text": "x"}])), bpe, seed=0
    )
    assert (len(train), stats.dropped_empty) == (1, 1)

    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("question,answer\r\nWhat is 1+1?,\r\nName a colour,\r\n")
    err = _error(path, bpe)
    assert err.message.startswith(
        "blank.csv: no training sample has a trained token (2 with an empty response, 0"
    )
    assert "fill in the responses" in err.hint and "truncation" not in err.hint


def test_ctrl_c_stops_tokenizing_at_the_next_row(tmp_path: Path, bpe: Tokenizer, ctrl_c: None) -> None:
    """tokenize_rows works in a thread of its own (a fresh malloc arena); Ctrl-C in the calling thread
    stops that thread at its next row instead of leaving it to tokenize the whole dataset."""
    import signal
    import threading
    import time

    from tunewiz.data import plan_samples, tokenize_rows

    rows = [{"instruction": f"question {i} " * 20, "output": f"answer {i} " * 60} for i in range(20_000)]
    cfg = _cfg(_jsonl(tmp_path / "big.jsonl", rows))
    plan = plan_samples(cfg, bpe, seed=0)
    lengths: list[int] = []

    def ctrl_c_once_tokenizing() -> None:
        while not lengths:
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # as a terminal's Ctrl-C

    presser = threading.Thread(target=ctrl_c_once_tokenizing)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        counts = {"dropped_empty": 0, "truncated": 0, "dropped_long": 0}
        tokenize_rows(plan.train_rows, plan.builder, cfg, counts, lengths)
    presser.join()
    stopped_at = len(lengths)
    assert 0 < stopped_at < len(rows)  # interrupted part way, not after the last row
    for thread in [t for t in threading.enumerate() if t.name == "tunewiz-tokenize"]:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert len(lengths) == stopped_at  # it tokenized nothing after the call returned
