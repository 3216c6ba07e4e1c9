"""Data files as people's tools write them: a byte-order mark, CRLF line endings, very long lines, Excel
CSVs (semicolons, Windows-1252), quoted fields with newlines; and every unreadable file is an
``error:`` with a ``hint:`` that works, never a traceback, before any training."""

from __future__ import annotations

import codecs
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tunewiz.data import build_datasets, load_rows
from tunewiz.data.formats import COLUMN_KEYS
from tunewiz.data.sources import data_suffix, is_data_file
from tunewiz.errors import TunewizError
from tunewiz.preset.files import apply_overrides
from tunewiz.preset.schema import DataSection
from tunewiz.text.tokenizer import Tokenizer, load_tokenizer

ROWS = [
    {"instruction": "Name the café's dish", "output": "Crème brûlée; sweet, with a crust"},
    {"instruction": 'Quote "this"', "output": "line one\nline two"},
]
BOM = b"\xef\xbb\xbf"


def _load(path: Path) -> list[dict]:
    return load_rows(str(path), split="train", columns={})


def _error(path: Path | str) -> TunewizError:
    with pytest.raises(TunewizError) as info:
        load_rows(str(path), split="train", columns={})
    return info.value


def _tiny_lora(command: str, data_setting: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`tunewiz COMMAND tiny-lora --set DATA_SETTING --no-tui` in ``cwd``, with a cache of its own there."""
    from runs import cli

    return cli(
        command,
        "tiny-lora",
        "--set",
        data_setting,
        "--no-tui",
        cwd=cwd,
        env={"TUNEWIZ_CACHE": str(cwd / "cache")},
    )


def _csv_bytes(delimiter: str, newline: str, encoding: str) -> bytes:
    def field(value: str) -> str:
        needs_quotes = any(c in value for c in (delimiter, '"', "\n", "\r"))
        return '"' + value.replace('"', '""') + '"' if needs_quotes else value

    lines = [delimiter.join(["instruction", "output"])]
    lines += [delimiter.join(field(row[k]) for k in ("instruction", "output")) for row in ROWS]
    return (newline.join(lines) + newline).encode(encoding)


@pytest.mark.parametrize("bom", [False, True], ids=["no-bom", "bom"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize(
    "suffix", [".jsonl", ".json-list", ".json-lines", ".csv", ".csv-semicolon", ".csv-tab"]
)
def test_utf8_with_or_without_bom_and_either_line_ending(
    suffix: str, newline: str, bom: bool, tmp_path: Path
) -> None:
    if suffix == ".jsonl" or suffix == ".json-lines":
        data = newline.join(json.dumps(r, ensure_ascii=False) for r in ROWS).encode() + newline.encode()
    elif suffix == ".json-list":
        data = ("[" + ("," + newline).join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "]").encode()
    else:
        delimiter = {".csv": ",", ".csv-semicolon": ";", ".csv-tab": "\t"}[suffix]
        data = _csv_bytes(delimiter, newline, "utf-8")
    path = tmp_path / f"data{suffix.split('-')[0]}"
    path.write_bytes((BOM if bom else b"") + data)
    assert _load(path) == ROWS


def test_very_long_lines_and_fields(tmp_path: Path) -> None:
    long = "word " * 60_000  # 300,000 characters: over the csv module's default field limit of 131,072
    rows = [{"text": long}, {"text": "short"}]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "long.csv").write_text(f'text\r\n"{long}"\r\nshort\r\n')
    assert _load(tmp_path / "long.jsonl") == rows
    assert _load(tmp_path / "long.csv") == rows


@pytest.mark.parametrize(
    ("suffix", "encoding", "source"),
    [
        (".csv", "cp1252", "CP1252"),  # Excel's "CSV" on Windows
        (".jsonl", "latin-1", "ISO-8859-1"),  # has \x90, which Windows-1252 leaves undefined
        (".json", "cp1252", "CP1252"),
    ],
)
def test_another_encoding_names_file_line_byte_and_a_working_iconv(
    suffix: str, encoding: str, source: str, tmp_path: Path
) -> None:
    rows = [*ROWS, {"instruction": "x", "output": "\x90" if encoding == "latin-1" else "ok"}]
    if suffix == ".csv":
        data = _csv_bytes(";", "\r\n", encoding)
        line = 2  # the first row, after the header
    elif suffix == ".json":
        data = ("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]").encode(encoding)
        line = 2
    else:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(encoding)
        line = 1
    path = tmp_path / f"data{suffix}"
    path.write_bytes(data)
    offset = data.index("é".encode(encoding))
    err = _error(path)
    assert err.message.startswith(
        f"data{suffix} is not UTF-8: line {line}, byte {offset} is {data[offset]:02x}"
    )
    fixed = tmp_path / f"data-utf8{suffix}"
    assert f"`iconv -f {source} -t UTF-8 {path} > {fixed}`" in err.hint
    if shutil.which("iconv") is None:
        pytest.skip("no iconv to run the hint's command")
    command = err.hint.split("`")[1]
    subprocess.run(command, shell=True, check=True)
    assert _load(fixed) == (ROWS if suffix == ".csv" else rows)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_utf16_with_a_byte_order_mark_is_read(encoding: str, suffix: str, tmp_path: Path) -> None:
    """Excel's "Unicode Text" (UTF-16 with a byte-order mark, tab-separated) and other UTF-16 files with
    one: the mark says the encoding, so they read as they are."""
    bom = {"utf-16": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}[encoding]
    if suffix in (".csv", ".tsv"):
        data = _csv_bytes("\t", "\r\n", encoding)
    elif suffix == ".json":
        data = json.dumps(ROWS, ensure_ascii=False).encode(encoding)
    else:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in ROWS).encode(encoding)
    path = tmp_path / f"sheet{suffix}"
    path.write_bytes(bom + data)  # Python's "utf-16" writes its own mark
    assert _load(path) == ROWS


def test_excel_sep_line_names_the_separator(tmp_path: Path) -> None:
    """Excel writes (and reads) a first line `sep=;` naming the separator; a too-long row's line number
    counts it."""
    path = tmp_path / "excel.csv"
    path.write_bytes(b"sep=;\r\n" + _csv_bytes(";", "\r\n", "utf-8"))
    assert _load(path) == ROWS
    path.write_bytes(b"sep=|\r\ninstruction|output\r\na|b\r\nc|d|e\r\n")
    assert _error(path).message == "excel.csv line 4 has 3 fields; the header line names 2"


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".json.bz2", ".csv.xz", ".tsv.gz", ".JSONL.GZ"])
def test_compressed_files_are_read(suffix: str, tmp_path: Path) -> None:
    import bz2
    import gzip
    import lzma

    inner = suffix.lower().rsplit(".", 1)[0]
    if inner == ".jsonl":
        data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    elif inner == ".json":
        data = json.dumps(ROWS).encode()
    else:
        data = _csv_bytes("," if inner == ".csv" else "\t", "\r\n", "utf-8")
    compress = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[
        suffix.lower().rsplit(".", 1)[1]
    ]
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(compress(data))
    assert (data_suffix(path), is_data_file(path)) == (inner, True)
    assert _load(path) == ROWS


def test_a_compressed_file_in_another_encoding_gets_a_working_command(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "excel.csv.gz"
    data = _csv_bytes(";", "\r\n", "cp1252")
    path.write_bytes(gzip.compress(data))
    err = _error(path)  # the line and byte of the decompressed text
    offset = data.index("é".encode("cp1252"))
    assert err.message.startswith(f"excel.csv.gz is not UTF-8: line 2, byte {offset} is e9")
    fixed = tmp_path / "excel-utf8.csv"
    assert f"`gzip -dc {path} | iconv -f CP1252 -t UTF-8 > {fixed}`" in err.hint
    if shutil.which("iconv") is None or shutil.which("gzip") is None:
        pytest.skip("no iconv or gzip to run the hint's command")
    subprocess.run(err.hint.split("`")[1], shell=True, check=True)
    assert _load(fixed) == ROWS


def test_which_names_are_data_files() -> None:
    assert [data_suffix(n) for n in ("a.jsonl", "a.CSV", "a.parquet.gz", "a.txt.gz", "a.gz")] == [
        ".jsonl",
        ".csv",
        ".gz",
        ".gz",
        ".gz",
    ]
    assert [is_data_file(n) for n in ("a.tsv", "a.json.xz", "a.parquet", "a.parquet.gz", "a.txt")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_unreadable_files_are_errors_with_hints(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    assert _error(tmp_path / "empty.csv").message == "empty.csv is empty"
    (tmp_path / "header.csv").write_bytes(BOM + b"instruction;output\r\n")
    err = _error(tmp_path / "header.csv")
    assert err.message == "header.csv has a header line (instruction, output) but no rows"
    (tmp_path / "extra.csv").write_bytes(b"prompt,response\r\nhi,hello\r\nhi, you,hello\r\n")
    err = _error(tmp_path / "extra.csv")
    assert err.message == "extra.csv line 3 has 3 fields; the header line names 2"
    assert "quote fields that hold the separator `,`" in err.hint
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\r\n{"text": }\r\n')
    assert (
        _error(tmp_path / "bad.jsonl").message
        == "bad.jsonl line 2 is not valid JSON (column 10): Expecting value"
    )
    # json's reason without its dangling "at"; a file that ends inside its last row is called cut off.
    (tmp_path / "tab.jsonl").write_text('{"text": "a\tb"}\n{"text": "c"}\n')
    err = _error(tmp_path / "tab.jsonl")
    assert err.message == "tab.jsonl line 1 is not valid JSON (column 12): Invalid control character"
    cut = "the file ends inside it ({}): it is cut off, as an interrupted download or copy leaves it"
    (tmp_path / "cut.jsonl").write_text('{"text": "a"}\n{"text": "bc')
    err = _error(tmp_path / "cut.jsonl")
    assert err.message == "cut.jsonl line 2 is not valid JSON: " + cut.format(
        "Unterminated string, column 10"
    )
    assert err.hint == "get the whole file again, or delete its last, unfinished row"
    (tmp_path / "cut.json").write_text('[{"text": "a"},\n {"text": "b"},\n {"text": ')
    err = _error(tmp_path / "cut.json")
    assert err.message == "cut.json line 3 is not valid JSON: " + cut.format("Expecting value, column 11")
    (tmp_path / "end.jsonl").write_text('{"text": "a"}\n{"text" "b"}')  # a mistake, not an end: no "cut off"
    assert _error(tmp_path / "end.jsonl").message == (
        "end.jsonl line 2 is not valid JSON (column 9): Expecting ':' delimiter"
    )
    (tmp_path / "list.jsonl").write_text('{"text": "a"}\n\n["text", "b"]\n')
    err = _error(tmp_path / "list.jsonl")
    assert err.message == "list.jsonl line 3 is a JSON list, not an object"
    (tmp_path / "rows.json").write_text('[{"text": "a"}, "b"]')
    assert _error(tmp_path / "rows.json").message == "row 2 of rows.json is a JSON str, not an object"


def test_misspelt_names_get_did_you_mean_and_a_working_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _error("tunewiz:story-q")
    assert err.message.startswith("no shipped dataset `tunewiz:story-q` (did you mean `tunewiz:story-qa`?)")
    assert err.hint == "use `--set data.path=tunewiz:story-qa`"
    assert _load(err.hint.split("=")[1].rstrip("`"))  # the suggestion loads

    monkeypatch.chdir(tmp_path)
    Path("train-data.jsonl").write_text('{"text": "a"}\n')
    for typo in ("train-dat.jsonl", "train-data.jsnol", "./train_data.jsonl"):
        err = _error(typo)
        suggestion = str(Path(typo).parent / "train-data.jsonl")
        assert err.message == f"data file `{typo}` does not exist (did you mean `{suggestion}`?)", typo
        assert err.hint == f"use `--set data.path={suggestion}`"
        assert _load(suggestion) == [{"text": "a"}]
    assert "did you mean" not in _error("nothing-like-it.jsonl").message


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_cli_shows_the_error_and_hint_before_any_run(command: str, tmp_path: Path) -> None:

    (tmp_path / "data.jsonl").write_bytes('{"instruction": "café", "output": "ok"}\n'.encode("cp1252"))
    result = _tiny_lora(command, "data.path=data.jsonl", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "error: data.jsonl is not UTF-8: line 1, byte 20 is e9" in output
    folder = tmp_path if command == "train" else Path()  # train holds data paths absolute (for resume)
    iconv = f"iconv -f CP1252 -t UTF-8 {folder / 'data.jsonl'} > {folder / 'data-utf8.jsonl'}"
    assert f"hint: re-save it as UTF-8: `{iconv}`" in output
    assert "Traceback" not in output and "rank 0" not in output
    assert not (tmp_path / "runs").exists()  # stopped before a run directory or a rank existed


# --- headers as spreadsheets write them, wrapped rows, paths that are not files -------------------------

PAIRS = [("What is 1+1?", "2"), ("Name a colour", "blue"), ("Say hi", "hello")]


def _followed(hint: str, path: str) -> DataSection:
    """The data section after the hint's ``--set``s (every `` `--set …` `` in it), applied by the CLI's
    own override code to a preset whose ``data.path`` is ``path``."""
    sets = [shlex.split(arg)[0] for arg in re.findall(r"`--set ([^`]*)`", hint)]
    assert sets, f"the hint names no --set: {hint}"
    data = apply_overrides({"data": DataSection(path=path, val_fraction=0.0).model_dump()}, sets)
    return DataSection.model_validate(data["data"])


def _builds(cfg: DataSection, tok: Tokenizer) -> int:
    """How many train samples ``cfg`` makes (each row of PAIRS is one)."""
    train, _, _ = build_datasets(cfg, tok, seed=0)
    return len(train)


@pytest.fixture(scope="module")
def bpe(bpe_tokenizer_dir: Path) -> Tokenizer:
    return load_tokenizer(bpe_tokenizer_dir)


@pytest.mark.parametrize(
    "header", ["Question,Answer", "QUESTION;Answer", " question , answer ", "Instruction\tOutput "]
)
def test_recognised_columns_match_in_any_case_and_with_spaces(
    header: str, tmp_path: Path, bpe: Tokenizer
) -> None:
    delimiter = next(d for d in ",;\t" if d in header)
    lines = [header, *(delimiter.join(pair) for pair in PAIRS)]
    path = tmp_path / "excel.csv"
    path.write_bytes(BOM + "\r\n".join(lines).encode() + b"\r\n")
    rows = _load(path)
    assert [list(r.values()) for r in rows] == [list(p) for p in PAIRS]
    assert all(name in COLUMN_KEYS for name in rows[0])  # renamed to the names the formats know
    assert _builds(DataSection(path=str(path), val_fraction=0.0), bpe) == len(PAIRS)


def test_column_mapping_is_exact_but_tolerant_of_case_and_spaces(tmp_path: Path, bpe: Tokenizer) -> None:
    path = tmp_path / "frage.csv"
    path.write_text("Frage , ANTWORT\n" + "".join(f"{q},{a}\n" for q, a in PAIRS), encoding="utf-8")
    with pytest.raises(TunewizError) as info:
        _builds(DataSection(path=str(path), val_fraction=0.0), bpe)  # unknown names: the hint maps them
    rows_cfg = _followed(info.value.hint, str(path))
    assert rows_cfg.columns == {"prompt": "Frage", "response": "ANTWORT"}
    assert _builds(rows_cfg, bpe) == len(PAIRS)
    # A mapping written in another case still finds the column; one that names no column is an error.
    assert _builds(DataSection(path=str(path), columns={"prompt": "frage", "response": "antwort"}), bpe)
    with pytest.raises(TunewizError, match=r"frage.csv has no column `reply`"):
        load_rows(str(path), split="train", columns={"prompt": "frage", "response": "reply"})
    # A file with both spellings keeps the exact one.
    both = _jsonl_file(tmp_path / "both.jsonl", [{"output": "exact", "Output": "other", "prompt": "p"}])
    assert load_rows(str(both), split="train", columns={}) == [
        {"output": "exact", "Output": "other", "prompt": "p"}
    ]


def _jsonl_file(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("indent", [None, 2], ids=["one-line", "pretty"])
def test_rows_wrapped_in_one_object_are_read_from_their_key(
    indent: int | None, tmp_path: Path, bpe: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dict.json"
    rows = [{"question": q, "answer": a} for q, a in PAIRS]
    path.write_text(json.dumps({"version": 2, "data": rows}, indent=indent), encoding="utf-8")
    assert _load(path) == rows
    assert (
        "note: dict.json is one JSON object; reading the 3 row(s) of its `data` list"
        in capsys.readouterr().err
    )
    assert _builds(DataSection(path=str(path), val_fraction=0.0), bpe) == len(PAIRS)
    # One chat row in a .json file is a row, not a wrapper of its turns.
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    (tmp_path / "chat.json").write_text(json.dumps(chat), encoding="utf-8")
    assert _load(tmp_path / "chat.json") == [chat]


def test_rows_under_several_keys_get_a_jq_hint_that_works(tmp_path: Path, bpe: Tokenizer) -> None:
    rows = [{"question": q, "answer": a} for q, a in PAIRS]
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"train": rows, "test": rows[:1]}), encoding="utf-8")
    err = _error(path)
    assert err.message.startswith("two.json is one JSON object with lists of rows under several keys")
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    command = re.search(r"`(jq [^`]*)`", err.hint).group(1)
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)
    assert _builds(_followed(err.hint, str(path)), bpe) == len(PAIRS)


def test_a_directory_names_its_data_files_and_the_hint_loads_one(
    tmp_path: Path, bpe: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    _jsonl_file(Path("data/qa.jsonl"), [{"question": q, "answer": a} for q, a in PAIRS])
    Path("data/notes.txt").write_text("not data")
    err = _error("data")
    assert err.message == "`data.path` data is a directory; its data files: qa.jsonl"
    assert _builds(_followed(err.hint, "data"), bpe) == len(PAIRS)
    Path("empty").mkdir()
    assert _error("empty").message.startswith("`data.path` empty is a directory with no .json/")


def test_a_shipped_name_without_its_prefix_is_suggested_when_the_hub_fails(bpe: Tokenizer) -> None:
    err = _error("story-qa")  # the tests run offline: the Hub cannot load it
    assert err.message.startswith("could not load Hugging Face dataset `story-qa`")
    assert err.hint == "for the shipped sample, use `--set data.path=tunewiz:story-qa`"
    cfg = _followed(err.hint, "story-qa")
    assert cfg.path == "tunewiz:story-qa" and _builds(cfg, bpe) > 0


def test_did_you_mean_lists_every_closest_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("pa.jsonl", "qa.jsonl", "zzzz.jsonl", "num.jsonl"):
        _jsonl_file(Path(name), [{"text": name}])
    err = _error("xa.jsonl")
    assert err.message == "data file `xa.jsonl` does not exist (did you mean `pa.jsonl` or `qa.jsonl`?)"
    assert _load(_followed(err.hint, "xa.jsonl").path) == [{"text": "pa.jsonl"}]
    # Only the names count: a shared `.jsonl` is no likeness (it offered num.jsonl, other data).
    assert _error("nope.jsonl").message == "data file `nope.jsonl` does not exist"


def test_train_and_prepare_say_the_same_about_a_mistyped_path(tmp_path: Path) -> None:

    _jsonl_file(tmp_path / "train-data.jsonl", [{"question": q, "answer": a} for q, a in PAIRS])
    outputs = []
    for command in ("train", "prepare"):
        result = _tiny_lora(command, "data.path=train-dat.jsonl", tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        outputs.append([line for line in result.stderr.splitlines() if line.startswith(("error:", "hint:"))])
    assert (
        outputs[0]
        == outputs[1]
        == [
            "error: data file `train-dat.jsonl` does not exist (did you mean `train-data.jsonl`?)",
            "hint: use `--set data.path=train-data.jsonl`",
        ]
    )
    assert not (tmp_path / "runs").exists()


# --- damaged files, stray bytes, names that are not local files, .txt ------------------------------------


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _run(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A hint's shell command, run as the user would."""
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(("suffix", "tool"), [(".gz", "gzip"), (".bz2", "bzip2"), (".xz", "xz")])
def test_a_cut_off_compressed_file_is_named_and_the_check_in_the_hint_tells(
    suffix: str, tool: str, tmp_path: Path
) -> None:
    import bz2
    import gzip
    import lzma

    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(300)]
    whole = compress(_jsonl_bytes(rows))
    path = tmp_path / f"rows.jsonl{suffix}"
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    err = _error(path)
    assert err.message == (
        f"rows.jsonl{suffix} is cut off: its compressed data ends early, as an interrupted download or copy "
        "leaves it"
    )
    check = f"{tool} -t {path}"
    assert err.hint == f"download or copy it again; `{check}` prints nothing once a copy is whole"
    if shutil.which(tool) is None:
        pytest.skip(f"no {tool} to run the hint's check")
    assert _run(check).returncode != 0
    path.write_bytes(whole)  # downloaded again
    done = _run(check)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "") and _load(path) == rows


def test_corrupt_compressed_data_is_named(tmp_path: Path) -> None:
    import gzip

    data = bytearray(gzip.compress(_jsonl_bytes([{"text": f"line {i} " * 20} for i in range(200)])))
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)  # bytes overwritten in the middle
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(bytes(data))
    err = _error(path)
    assert err.message.startswith("rows.jsonl.gz is damaged: its compressed data is corrupt (")
    assert f"`gzip -t {path}`" in err.hint


def test_a_compressed_name_on_plain_text_gets_a_rename_that_loads(tmp_path: Path, bpe: Tokenizer) -> None:
    """A browser that decompresses a download keeps the `.gz` name."""
    path = tmp_path / "qa.jsonl.gz"
    path.write_bytes(_jsonl_bytes([{"question": q, "answer": a} for q, a in PAIRS]))
    err = _error(path)
    assert err.message == (
        "qa.jsonl.gz is not compressed with gzip despite its `.gz` name: it holds plain text (already "
        "decompressed, as browsers do with downloads)"
    )
    command = err.hint.split("`")[1]
    assert command == f"mv {path} {tmp_path / 'qa.jsonl'}"
    assert _run(command).returncode == 0
    assert _builds(_followed(err.hint, str(path)), bpe) == len(PAIRS)
    (tmp_path / "zip.jsonl.xz").write_bytes(b"PK\x03\x04" + bytes(60))  # a zip archive, not xz
    err = _error(tmp_path / "zip.jsonl.xz")
    assert err.message == (
        "zip.jsonl.xz is not compressed with xz despite its `.xz` name: it starts with the bytes "
        "50 4b 03 04 00 00 00 00"
    )
    assert err.hint.startswith(f"see what it is with `file {tmp_path / 'zip.jsonl.xz'}`")


def test_a_bad_parquet_file_says_what_is_wrong(tmp_path: Path, bpe: Tokenizer) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"question": [q for q, _ in PAIRS], "answer": [a for _, a in PAIRS]})
    pq.write_table(table, tmp_path / "whole.parquet")
    whole = (tmp_path / "whole.parquet").read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole[: len(whole) - 100])
    err = _error(cut)
    assert err.message == (
        "cut.parquet is cut off: it starts as a Parquet file but lacks its end (the footer), as an "
        "interrupted download or copy leaves it"
    )
    assert err.hint == "download or copy it again, or write it again (pandas: `df.to_parquet(...)`)"
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(whole[:4] + bytes(len(whole) - 8) + whole[-4:])
    assert _error(damaged).message.startswith("damaged.parquet is a damaged Parquet file: ")

    csv_named_parquet = tmp_path / "export.parquet"  # CSV text saved under a .parquet name
    csv_named_parquet.write_bytes(_csv_bytes(",", "\r\n", "utf-8"))
    err = _error(csv_named_parquet)
    assert err.message == "export.parquet is not a Parquet file despite its name: it holds text"
    assert _run(err.hint.split("`")[1]).returncode == 0
    assert _load(_followed(err.hint, str(csv_named_parquet)).path) == ROWS
    (tmp_path / "image.parquet").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(60))
    assert _error(tmp_path / "image.parquet").message == (
        "image.parquet is not a Parquet file (one starts with `PAR1`; it starts with the bytes "
        "89 50 4e 47 0d 0a 1a 0a)"
    )


def test_prepare_names_a_cut_off_file_instead_of_aborting(tmp_path: Path) -> None:
    """An EOFError that reaches the command line reads as Ctrl-D at a prompt (`error: aborted`)."""
    import gzip

    whole = gzip.compress(_jsonl_bytes([{"question": f"q{i}", "answer": f"a{i}"} for i in range(500)]))
    (tmp_path / "rows.jsonl.gz").write_bytes(whole[:800])
    result = _tiny_lora("prepare", "data.path=rows.jsonl.gz", tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines()[-2:] == [
        "error: rows.jsonl.gz is cut off: its compressed data ends early, as an interrupted download or copy "
        "leaves it",
        "hint: download or copy it again; `gzip -t rows.jsonl.gz` prints nothing once a copy is whole",
    ]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gz"])
def test_stray_bytes_in_utf8_get_a_fix_that_keeps_the_utf8(compressed: bool, tmp_path: Path) -> None:
    """One Windows-1252 apostrophe pasted into a UTF-8 file: converting the whole file from Windows-1252
    would garble every `é`; the hint's command drops only the stray bytes."""
    import gzip

    rows = [{"question": f"Où est le café {i}?", "answer": "Ici — à côté."} for i in range(20)]
    lines = _jsonl_bytes(rows).splitlines(keepends=True)
    lines[6] = lines[6].replace(b"Ici", b"It\x92s ici")
    lines[11] = lines[11].replace(b"Ici", b"\x93Ici\x94")
    data = b"".join(lines)
    path = tmp_path / ("mixed.jsonl.gz" if compressed else "mixed.jsonl")
    path.write_bytes(gzip.compress(data) if compressed else data)
    err = _error(path)
    offset = data.index(b"\x92")
    assert err.message == (
        f"{path.name} is UTF-8 except for 3 bytes: line 7, byte {offset} is 92 (`’` in Windows-1252); "
        "more on line(s) 12"
    )
    fixed = tmp_path / "mixed-utf8.jsonl"
    command = f"{'gzip -dc ' + str(path) + ' | ' if compressed else ''}iconv -f UTF-8 -t UTF-8 -c"
    command += "" if compressed else f" {path}"
    assert f"`{command} > {fixed}`" in err.hint and err.hint.startswith("fix those lines in an editor")
    if shutil.which("iconv") is None or shutil.which("gzip") is None:
        pytest.skip("no iconv or gzip to run the hint's command")
    assert _run(err.hint.split("`")[1]).returncode == 0
    got = _load(_followed(err.hint, str(path)).path)
    expected = [dict(r) for r in rows]
    expected[6]["answer"] = "Its ici — à côté."
    expected[11]["answer"] = "Ici — à côté."
    assert got == expected  # every UTF-8 character kept, only the three stray bytes gone


def test_a_path_in_a_local_folder_is_local_and_gets_did_you_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bpe: Tokenizer
) -> None:
    """`d/qa` with a folder `d` here is a local path, never a Hub id (no Hub call, no retries)."""
    import datasets

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    Path("d").mkdir()
    _jsonl_file(Path("d/qa.jsonl"), [{"question": q, "answer": a} for q, a in PAIRS])
    err = _error("d/qa")
    assert err.message == "data file `d/qa` does not exist (did you mean `d/qa.jsonl`?)"
    assert _builds(_followed(err.hint, "d/qa"), bpe) == len(PAIRS)
    err = _error("d/other")
    assert err.message == "data file `d/other` does not exist"
    assert err.hint.endswith(
        "; `d` is a folder here, so this is read as a local path (for the Hugging Face dataset, run from "
        "another directory)"
    )
    monkeypatch.undo()
    assert "could not load Hugging Face dataset `e/qa`" in _error("e/qa").message  # no folder `e`: the Hub


def test_a_txt_file_gets_how_to_use_it(tmp_path: Path, bpe: Tokenizer) -> None:
    """Excel's "Unicode Text" is a tab-separated `.txt` (UTF-16 with a byte-order mark): named `.tsv`, it
    reads; a plain text file becomes one `text` row per line."""
    sheet = tmp_path / "Sheet1.txt"
    sheet.write_bytes(codecs.BOM_UTF16_LE + _csv_bytes("\t", "\r\n", "utf-16-le"))
    err = _error(sheet)
    assert err.message == (
        "Sheet1.txt: unsupported data file type `.txt`; its first line is tab-separated, as Excel's "
        '"Unicode Text" saves a sheet'
    )
    assert _run(err.hint.split("`")[3]).returncode == 0
    assert _load(_followed(err.hint, str(sheet)).path) == ROWS

    notes = tmp_path / "notes.txt"
    notes.write_bytes("Once upon a time.\r\n\r\nThe café closed — at last.\r\n".encode())
    err = _error(notes)
    assert err.message == "notes.txt: unsupported data file type `.txt`"
    if shutil.which("jq") is None:
        pytest.skip("no jq to run the hint's command")
    assert _run(err.hint.split("`")[3]).returncode == 0
    cfg = _followed(err.hint, str(notes))
    assert _load(cfg.path) == [{"text": "Once upon a time."}, {"text": "The café closed — at last."}]
    assert _builds(cfg, bpe) == 2


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_train_and_prepare_never_ask_the_hub_about_a_path_in_a_local_folder(
    command: str, tmp_path: Path
) -> None:
    """With the Hub reachable (here: a closed port, so a lookup would retry and print its address), a
    missing `d/qa` fails at once with the did-you-mean; `prepare` identified the data on the Hub first."""
    import time

    from runs import cli

    (tmp_path / "d").mkdir()
    _jsonl_file(tmp_path / "d" / "qa.jsonl", [{"question": q, "answer": a} for q, a in PAIRS])
    hub = "http://127.0.0.1:9"
    started = time.monotonic()
    result = cli(
        command,
        "tiny-lora",
        "--set",
        "data.path=d/qa",
        "--no-tui",
        cwd=tmp_path,
        env={
            "TUNEWIZ_CACHE": str(tmp_path / "cache"),
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_ENDPOINT": hub,
        },
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert hub not in result.stderr and time.monotonic() - started < 20
    assert result.stderr.splitlines()[-2:] == [
        "error: data file `d/qa` does not exist (did you mean `d/qa.jsonl`?)",
        "hint: use `--set data.path=d/qa.jsonl`",
    ]


def test_in_a_list_of_datasets_each_hint_fixes_its_entry_and_keeps_the_others(
    tmp_path: Path, bpe: Tokenizer
) -> None:
    """A misspelt path, a file in another encoding and unknown columns, each one entry of a list
    `data.path`: every hint is the whole list with that entry fixed (one path, or one `data.columns` for
    all, would drop or break the others); followed in turn, all four datasets build, weight kept."""
    from tunewiz.data.sources import check_data_paths

    qa = _jsonl_file(tmp_path / "qa.jsonl", [{"question": p, "answer": r} for p, r in PAIRS])
    shutil.copy(qa, tmp_path / "more.jsonl")
    latin = tmp_path / "latin.csv"
    rows = "".join(f"{p};{r} é\r\n" for p, r in PAIRS)
    latin.write_bytes(f"question;answer\r\n{rows}".encode("cp1252"))
    german = _jsonl_file(tmp_path / "de.jsonl", [{"frage": p, "antwort": r} for p, r in PAIRS])
    entries = [str(qa), {"path": str(tmp_path / "more.jsnol"), "weight": 2}, str(latin), str(german)]
    cfg = DataSection(path=entries, val_fraction=0.0)
    with pytest.raises(TunewizError) as info:
        check_data_paths(cfg)
    cfg = _followed(info.value.hint, entries)
    with pytest.raises(TunewizError, match="latin.csv is not UTF-8") as info:
        build_datasets(cfg, bpe, seed=0)
    if shutil.which("iconv") is None:
        pytest.skip("no iconv to run the hint's command")
    subprocess.run(info.value.hint.split("`")[1], shell=True, check=True)
    cfg = _followed(info.value.hint, cfg.path)
    with pytest.raises(TunewizError, match="cannot tell the format of de.jsonl") as info:
        build_datasets(cfg, bpe, seed=0)
    cfg = _followed(info.value.hint, cfg.path)
    assert not cfg.columns
    _, _, stats = build_datasets(cfg, bpe, seed=0)
    assert [(s["name"], s["weight"], s["train"]) for s in stats.sources] == [
        ("qa.jsonl", 1, 3),
        ("more.jsonl", 2, 6),
        ("latin-utf8.csv", 1, 3),
        ("de.jsonl", 1, 3),
    ]


@pytest.mark.parametrize("culprit", ["rows.jsonl.gz", "sheet.txt", "tunewiz:story-q"])
def test_a_renaming_hint_for_one_dataset_of_a_list_keeps_the_others(
    culprit: str, tmp_path: Path, bpe: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain text under a `.gz` name, a tab-separated `.txt`, a shipped name misspelt: in a list, the
    hint (its `mv`, then its `--set`) keeps the other dataset and this one's weight."""
    monkeypatch.chdir(tmp_path)
    qa = _jsonl_file(tmp_path / "qa.jsonl", [{"question": p, "answer": r} for p, r in PAIRS])
    if culprit == "rows.jsonl.gz":
        shutil.copy(qa, culprit)
    elif culprit == "sheet.txt":
        Path(culprit).write_text("".join(f"{p}\t{r}\n" for p, r in [("question", "answer"), *PAIRS]))
    entries = ["qa.jsonl", {"path": culprit, "weight": 2}]
    with pytest.raises(TunewizError) as info:
        build_datasets(DataSection(path=entries, val_fraction=0.0), bpe, seed=0)
    move = re.search(r"`(mv [^`]*)`", info.value.hint)
    if move:
        subprocess.run(move.group(1), shell=True, check=True)
    _, _, stats = build_datasets(_followed(info.value.hint, entries), bpe, seed=0)
    assert [(s["name"], s["weight"]) for s in stats.sources][0] == ("qa.jsonl", 1)
    assert [s["weight"] for s in stats.sources] == [1, 2]


@pytest.mark.parametrize(
    ("fmt", "rows", "listed"),
    [
        (
            "chat",
            [
                {"dialog": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                for p, r in PAIRS
            ],
            True,
        ),
        (
            "chat",
            [
                {"dialog": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                for p, r in PAIRS
            ],
            False,
        ),
        ("text", [{"frage": p, "antwort": r} for p, r in PAIRS], True),
        ("chat", [{"instruction": p, "output": r} for p, r in PAIRS], False),
        ("alpaca", [{"body": f"{p} {r}"} for p, r in PAIRS], False),
    ],
)
def test_a_set_format_the_columns_do_not_fit_is_found_when_read(
    fmt: str, rows: list[dict], listed: bool, tmp_path: Path, bpe: Tokenizer
) -> None:
    """A dataset whose `format` is set but whose columns are not that format's is named when it is read
    (not row by row while tokenizing, with a placeholder `COLUMN` hint), and the hint, followed, builds
    it: its columns mapped on its own entry of a list, the format set back to `auto` when the columns
    are another format's."""
    culprit = _jsonl_file(tmp_path / "rows.jsonl", rows)
    qa = _jsonl_file(tmp_path / "qa.jsonl", [{"question": p, "answer": r} for p, r in PAIRS])
    path = [str(qa), {"path": str(culprit), "format": fmt, "weight": 2}] if listed else str(culprit)
    cfg = DataSection(path=path, val_fraction=0.0, **({} if listed else {"format": fmt}))
    with pytest.raises(TunewizError) as info:
        build_datasets(cfg, bpe, seed=0)
    assert info.value.message.startswith(f"rows.jsonl has no column that `format: {fmt}` reads")
    assert "COLUMN" not in str(info.value.hint)
    sets = [shlex.split(arg)[0] for arg in re.findall(r"`--set ([^`]*)`", info.value.hint or "")]
    fixed = apply_overrides({"data": cfg.model_dump(exclude_unset=True)}, sets)
    _, _, stats = build_datasets(DataSection.model_validate(fixed["data"]), bpe, seed=0)
    assert [(s["name"], s["train"]) for s in stats.sources][-1] == ("rows.jsonl", 6 if listed else 3)


def test_a_csv_row_short_of_fields_or_an_unclosed_quote_is_named(tmp_path: Path) -> None:
    """A `"` never closed swallows the rest of the file into one field: named with its line, not read as
    rows with an empty response (dropped without a word). A row short of fields is named too."""
    lines = ["question,answer", *(f"q{i},a{i}" for i in range(5))]
    lines[3] = '"' + lines[3]
    path = tmp_path / "unclosed.csv"
    path.write_text("\n".join(lines) + "\n")
    err = _error(path)
    assert err.message.startswith('unclosed.csv line 4: a `"` opens a quoted field that is not closed')
    path.write_text("\n".join(lines).replace('"', "") + "\n")  # the hint's "remove it"
    assert len(_load(path)) == 5
    path.write_text("question,answer\nq,a\nq2\n")
    assert _error(path).message == "unclosed.csv line 3 has 1 field; the header line names 2"
