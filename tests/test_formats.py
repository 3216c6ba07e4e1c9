"""Formats that map: real files in every recognised spelling, columns mapped by role, and data hints that,
followed to the letter, work."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest

from tunewiz.data import IGNORE_INDEX, Sample, build_datasets, detect_format
from tunewiz.errors import TunewizError
from tunewiz.preset.files import apply_overrides
from tunewiz.preset.schema import DataSection
from tunewiz.text.tokenizer import Tokenizer, load_tokenizer

PAIRS = [("say hi", "hello world"), ("name an animal", "the llama"), ("what is python", "a language")]


@pytest.fixture(scope="module")
def bpe(bpe_tokenizer_dir: Path) -> Tokenizer:
    return load_tokenizer(bpe_tokenizer_dir)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _build(path: Path, tok: Tokenizer, **kw: object) -> list[Sample]:
    return build_datasets(DataSection(path=str(path), val_fraction=0.0, **kw), tok, seed=0)[0]


def _chat_reference(tmp_path: Path, tok: Tokenizer, system: str | None = None) -> list[Sample]:
    rows = [
        {
            "messages": [
                *([{"role": "system", "content": system}] if system else []),
                {"role": "user", "content": p},
                {"role": "assistant", "content": r},
            ]
        }
        for p, r in PAIRS
    ]
    return _build(_jsonl(tmp_path / "reference.jsonl", rows), tok, template="chatml")


@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ("prompt", "completion"),
        ("question", "answer"),
        ("input", "output"),
        ("instruction", "response"),
        ("query", "response"),
        ("instruction", "output"),
    ],
)
def test_pair_columns_recognised_without_configuration(
    tmp_path: Path, bpe: Tokenizer, prompt: str, response: str
) -> None:
    path = _jsonl(tmp_path / "pairs.jsonl", [{prompt: p, response: r} for p, r in PAIRS])
    assert _build(path, bpe, template="chatml") == _chat_reference(tmp_path, bpe)


def test_alpaca_input_is_context_and_system_column_is_the_system_turn(tmp_path: Path, bpe: Tokenizer) -> None:
    rows = [{"instruction": "Answer.", "input": p, "output": r, "system": "Be brief."} for p, r in PAIRS]
    got = _build(_jsonl(tmp_path / "a.jsonl", rows), bpe, template="chatml")
    expected = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Answer.\n\n{p}"},
                {"role": "assistant", "content": r},
            ]
        }
        for p, r in PAIRS
    ]
    assert got == _build(_jsonl(tmp_path / "ref.jsonl", expected), bpe, template="chatml")


@pytest.mark.parametrize(
    ("column", "role_key", "content_key", "user", "assistant"),
    [
        ("messages", "role", "content", "user", "assistant"),
        ("conversations", "from", "value", "human", "gpt"),
        ("conversations", "role", "content", "user", "assistant"),
        ("messages", "from", "value", "human", "model"),
    ],
)
def test_chat_spellings_multi_turn(
    tmp_path: Path, bpe: Tokenizer, column: str, role_key: str, content_key: str, user: str, assistant: str
) -> None:
    def conv(u: str, a: str, sys_role: str = "system") -> list[dict]:
        return [
            {role_key: sys_role, content_key: "Be brief."},
            {role_key: u, content_key: "hi"},
            {role_key: a, content_key: "hello"},
            {role_key: u, content_key: "and again?"},
            {role_key: a, content_key: "hello again"},
        ]

    got = _build(_jsonl(tmp_path / "c.jsonl", [{column: conv(user, assistant)}]), bpe, template="chatml")
    ref = _build(
        _jsonl(tmp_path / "r.jsonl", [{"messages": conv("user", "assistant")}]), bpe, template="chatml"
    )
    assert got == ref
    (sample,) = got
    trained = bpe.decode([t for t in sample.labels if t != IGNORE_INDEX])
    assert "hello" in trained and "hello again" in trained and "hi" not in trained  # both replies, no prompt


def test_columns_by_role_on_csv_and_the_old_form(tmp_path: Path, bpe: Tokenizer) -> None:
    with open(tmp_path / "d.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["q", "persona", "a"])
        writer.writeheader()
        writer.writerows({"q": p, "persona": "Be brief.", "a": r} for p, r in PAIRS)
    by_role = _build(
        tmp_path / "d.csv",
        bpe,
        template="chatml",
        columns={"prompt": "q", "response": "a", "system": "persona"},
    )
    assert by_role == _chat_reference(tmp_path, bpe, system="Be brief.")
    old = _build(tmp_path / "d.csv", bpe, template="chatml", columns={"instruction": "q", "output": "a"})
    assert old == _chat_reference(tmp_path, bpe)


def test_text_column_mapped(tmp_path: Path, bpe: Tokenizer) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"body": "once upon a time"}, {"body": "the end"}])
    samples = _build(path, bpe, columns={"text": "body"})
    assert [bpe.decode(s.input_ids) for s in samples][0].endswith("once upon a time")
    assert all(t != IGNORE_INDEX for t in samples[0].labels[:-1])  # text trains on every token


def test_unknown_role_and_missing_column_are_named() -> None:
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['answer_col'\]"):
        DataSection(path="x.jsonl", columns={"answer_col": "a"})


def test_missing_mapped_column(tmp_path: Path, bpe: Tokenizer) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}])
    with pytest.raises(TunewizError, match=r"d.jsonl has no column `answer`") as info:
        _build(path, bpe, columns={"prompt": "q", "response": "answer"})
    assert _follow(info.value.hint, DataSection(path=str(path), val_fraction=0.0, columns={"response": "x"}))


def _sets(hint: str) -> list[str]:
    """The ``--set`` arguments a hint tells the user to add."""
    return [shlex.split(m)[1] for m in re.findall(r"`(--set [^`]*)`", hint)]


def _follow(hint: str, cfg: DataSection) -> DataSection:
    """``cfg`` after the hint's ``--set``s, through the CLI's own override code."""
    sets = _sets(hint)
    assert sets, f"the hint names no --set: {hint}"
    data = apply_overrides({"data": cfg.model_dump()}, sets)
    return DataSection.model_validate(data["data"])


def test_every_data_hint_followed_works(tmp_path: Path, bpe: Tokenizer) -> None:
    """Each data error whose hint gives a command: run that command's --set, and the data builds."""
    cases = [
        (_jsonl(tmp_path / "qa.jsonl", [{"frage": p, "antwort": r} for p, r in PAIRS]), {}),  # unknown
        (_jsonl(tmp_path / "one.jsonl", [{"question": p, "reply_text": r} for p, r in PAIRS]), {}),
        (_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 200, "response": "x"}]), {"max_seq_len": 16}),
    ]
    for path, extra in cases:
        cfg = DataSection(path=str(path), val_fraction=0.0, template="chatml", **extra)
        with pytest.raises(TunewizError) as info:
            build_datasets(cfg, bpe, seed=0)
        followed = _follow(info.value.hint, cfg)
        train, _, _ = build_datasets(followed, bpe, seed=0)
        assert train, path.name


def test_numbers_in_text_fields_are_their_text(tmp_path: Path, bpe: Tokenizer) -> None:
    """pandas writes a numeric column to JSON and Parquet as numbers (`"answer": 4`): such a field trains
    as the text a CSV holds for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    questions = ["two plus two", "half of five", "a trillion"]
    answers = [4, 2.5, 10**12]
    with open(tmp_path / "qa.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [("question", "answer"), *zip(questions, ["4", "2.5", "1000000000000"], strict=True)]
        )
    as_text = _build(tmp_path / "qa.csv", bpe, template="chatml")
    numbers = _jsonl(
        tmp_path / "qa.jsonl", [{"question": q, "answer": a} for q, a in zip(questions, answers, strict=True)]
    )
    assert _build(numbers, bpe, template="chatml") == as_text
    pq.write_table(pa.table({"question": questions[::2], "answer": answers[::2]}), tmp_path / "qa.parquet")
    assert pa.types.is_integer(pq.read_schema(tmp_path / "qa.parquet").field("answer").type)
    assert _build(tmp_path / "qa.parquet", bpe, template="chatml") == as_text[::2]
    turns = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in zip(questions, answers, strict=True)
    ]
    chat = _jsonl(tmp_path / "chat.jsonl", [{"messages": t} for t in turns])
    assert _build(chat, bpe, template="chatml") == as_text


@pytest.mark.parametrize(
    ("value", "kind"), [([1, 2], "a list"), ({"a": 1}, "an object"), (True, "true/false")]
)
def test_a_field_that_is_not_text_names_its_role_and_the_hint_works(
    tmp_path: Path, bpe: Tokenizer, value: object, kind: str
) -> None:
    rows = [{"question": p, "answer": r, "reply": r} for p, r in PAIRS]
    rows[1]["answer"] = value
    cfg = DataSection(path=str(_jsonl(tmp_path / "bad.jsonl", rows)), val_fraction=0.0, template="chatml")
    with pytest.raises(TunewizError) as info:
        build_datasets(cfg, bpe, seed=0)
    assert info.value.message == f"row 2 of bad.jsonl: `answer` (the response) is {kind}, expected text"
    assert info.value.hint.startswith("make `answer` text in that row, or take the response from another")
    assert build_datasets(_follow(info.value.hint, cfg), bpe, seed=0)[0] == _chat_reference(tmp_path, bpe)
    alone = _jsonl(tmp_path / "alone.jsonl", [{"text": value}])
    with pytest.raises(TunewizError) as info:
        _build(alone, bpe)
    assert (info.value.message, info.value.hint) == (
        f"row 1 of alone.jsonl: `text` is {kind}, expected text",
        "make `text` text in that row",
    )


def test_detect_format_error_hint_uses_the_file_columns() -> None:
    with pytest.raises(TunewizError) as info:
        detect_format([{"frage": "x", "antwort": "y"}], source="d.jsonl")
    assert "--set 'data.columns={prompt: frage, response: antwort}'" in info.value.hint
    assert "tunewiz init --columns prompt=frage,response=antwort" in info.value.hint


def _mapped_until_it_builds(path: Path, tok: Tokenizer, **kw: object) -> list[dict[str, str]]:
    """Build ``path``, following each error's ``data.columns`` hint until it builds; the mappings tried."""
    cfg = DataSection(path=str(path), val_fraction=0.0, template="chatml", **kw)
    tried = []
    for _ in range(3):
        try:
            build_datasets(cfg, tok, seed=0)
            return tried
        except TunewizError as exc:
            cfg = _follow(exc.hint, cfg)
            tried.append(cfg.columns)
    raise AssertionError(f"still failing after {tried}")


@pytest.mark.parametrize(
    ("rows", "columns", "mapping"),
    [
        (
            [{"frage": p, "antwort": r} for p, r in PAIRS],
            {"prompt": "frage"},
            {"prompt": "frage", "response": "antwort"},
        ),
        (
            [{"frage": p, "antwort": r} for p, r in PAIRS],
            {"response": "antwrt"},
            {"prompt": "frage", "response": "antwort"},
        ),
        (
            [
                {"dialog": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                for p, r in PAIRS
            ],
            {},
            {"messages": "dialog"},
        ),
        ([{"body": p} for p, _ in PAIRS], {}, {"text": "body"}),
        ([{"Body Text": p, "n": 1} for p, _ in PAIRS], {}, {"prompt": "Body Text", "response": "n"}),
    ],
)
def test_column_hints_name_the_file_columns_and_work_when_followed(
    tmp_path: Path, bpe: Tokenizer, rows: list[dict], columns: dict[str, str], mapping: dict[str, str]
) -> None:
    """A column-mapping hint names the file's columns (not the roles they were renamed to), suggests
    `messages`/`text` for a lone conversation/text column, and following it once builds the data."""
    path = _jsonl(tmp_path / "d.jsonl", rows)
    assert _mapped_until_it_builds(path, bpe, columns=columns) == [mapping]


def test_a_null_field_is_an_empty_one(tmp_path: Path, bpe: Tokenizer) -> None:
    """A null response is dropped and counted as an empty one is; a null prompt is an empty prompt."""
    rows = [{"question": p, "answer": r} for p, r in PAIRS]
    built = {}
    for empty in (None, ""):
        for key in ("answer", "question"):
            changed = [dict(row) for row in rows]
            changed[1][key] = empty
            cfg = DataSection(
                path=str(_jsonl(tmp_path / "d.jsonl", changed)), val_fraction=0.0, template="chatml"
            )
            train, _, stats = build_datasets(cfg, bpe, seed=0)
            built[empty, key] = (train, stats.dropped_empty)
    assert built[None, "answer"] == built["", "answer"] and built[None, "answer"][1] == 1
    assert built[None, "question"] == built["", "question"] and built[None, "question"][1] == 0


def test_mixed_list_of_datasets_with_own_mappings_and_weights(tmp_path: Path, bpe: Tokenizer) -> None:
    qa = _jsonl(tmp_path / "qa.jsonl", [{"question": p, "answer": r} for p, r in PAIRS])
    with open(tmp_path / "faq.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["frage", "antwort"])
        writer.writeheader()
        writer.writerows({"frage": f"{p}?", "antwort": r} for p, r in PAIRS * 2)
    chat = _jsonl(
        tmp_path / "chat.jsonl",
        [{"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": r}]} for p, r in PAIRS],
    )
    cfg = DataSection.model_validate(
        {
            "path": [
                str(qa),
                {
                    "path": str(tmp_path / "faq.csv"),
                    "columns": {"prompt": "frage", "response": "antwort"},
                    "weight": 0.5,
                },
                {"path": str(chat), "weight": 2},
                "tunewiz:story-text",
            ],
            "val_fraction": 0.0,
            "template": "chatml",
        }
    )
    train, val, stats = build_datasets(cfg, bpe, seed=0)
    story_rows = sum(
        1 for _ in open(Path(__file__).parent.parent / "tunewiz/assets/datasets/story-text.jsonl")
    )
    assert [(d["name"], d["format"], d["rows"], d["weight"], d["train"]) for d in stats.sources] == [
        ("qa.jsonl", "alpaca", 3, 1.0, 3),
        ("faq.csv", "alpaca", 6, 0.5, 3),
        ("chat.jsonl", "chat", 3, 2.0, 6),
        ("tunewiz:story-text", "text", story_rows, 1.0, story_rows),
    ]
    assert stats.format == "alpaca+alpaca+chat+text" and len(train) == 12 + story_rows and val == []
    # Each part is what that dataset alone gives, in list order (the chat rows twice).
    reference = _chat_reference(tmp_path, bpe)
    assert train[:3] == reference and train[6:9] == reference and train[9:12] == reference
    only_faq = _build(
        tmp_path / "faq.csv", bpe, template="chatml", columns={"prompt": "frage", "response": "antwort"}
    )
    assert all(s in only_faq for s in train[3:6])
    assert train[12:] == _build(Path("tunewiz:story-text"), bpe)


@pytest.mark.parametrize("weight", [2.0, 1.5, 0.5])
def test_weights_repeat_only_training_rows_never_validation_rows(
    weight: float, tmp_path: Path, bpe: Tokenizer
) -> None:
    """Rows are split first and weighted after: a row held out for validation has no copy in training,
    and validation holds each row once (a weight applied before the split put copies of a row on both
    sides, so validation loss measured rows the model trained on)."""
    rows = [{"question": f"question number {i}?", "answer": f"answer {i}"} for i in range(300)]
    data = _jsonl(tmp_path / "qa.jsonl", rows)
    other = _jsonl(tmp_path / "other.jsonl", [{"question": f"other {i}?", "answer": "x"} for i in range(50)])
    cfg = DataSection.model_validate(
        {
            "path": [{"path": str(data), "weight": weight}, str(other)],
            "val_fraction": 0.1,
            "template": "chatml",
        }
    )
    train, val, stats = build_datasets(cfg, bpe, seed=0)
    val_ids = [tuple(s.input_ids) for s in val]
    train_ids = {tuple(s.input_ids) for s in train}
    assert len(val) == 35 and len(set(val_ids)) == 35 and not train_ids & set(val_ids)
    held_out_qa = stats.sources[0]["validation"]
    kept = 300 - held_out_qa
    whole, part = divmod(weight, 1.0)
    assert stats.sources[0]["train"] == int(whole) * kept + round(part * kept)
    assert stats.sources[1]["train"] == 50 - stats.sources[1]["validation"]
