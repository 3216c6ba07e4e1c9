"""Data files as people's tools write them: a byte-order mark, CRLF line endings, very long lines, Excel
CSVs (semicolons, Windows-1252), quoted fields with newlines; and every unreadable file is an
``error:`` with a ``hint:`` that works, never a traceback, before any training."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunewiz.data import load_rows
from tunewiz.errors import TunewizError

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


def test_excel_unicode_text_is_utf16_with_a_working_iconv(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"  # Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated
    path.write_bytes(_csv_bytes("\t", "\r\n", "utf-16"))
    err = _error(path)
    assert err.message.startswith("sheet.csv is not UTF-8: line 1, byte 0 is ff")
    assert f"`iconv -f UTF-16 -t UTF-8 {path} > {tmp_path / 'sheet-utf8.csv'}`" in err.hint
    if shutil.which("iconv") is None:
        pytest.skip("no iconv to run the hint's command")
    subprocess.run(err.hint.split("`")[1], shell=True, check=True)
    assert _load(tmp_path / "sheet-utf8.csv") == ROWS


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
    assert _error(tmp_path / "bad.jsonl").message.startswith("bad.jsonl line 2 is not valid JSON")
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
    from runs import cli

    (tmp_path / "data.jsonl").write_bytes('{"instruction": "café", "output": "ok"}\n'.encode("cp1252"))
    result = cli(
        command,
        "tiny-lora",
        "--set",
        "data.path=data.jsonl",
        "--no-tui",
        cwd=tmp_path,
        env={"TUNEWIZ_CACHE": str(tmp_path / "cache")},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "error: data.jsonl is not UTF-8: line 1, byte 20 is e9" in output
    assert "hint: re-save it as UTF-8: `iconv -f CP1252 -t UTF-8 data.jsonl > data-utf8.jsonl`" in output
    assert "Traceback" not in output and "rank 0" not in output
    assert not (tmp_path / "runs").exists()  # stopped before a run directory or a rank existed
