"""Preset loading, `--set` overrides, the resolved dump, shipped presets, and `tunewiz presets`.

Every error a user can hit is checked for its exact wording: the file and line, or the override
string, the expected value and the given one, and a hint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunewiz.errors import TunewizError
from tunewiz.preset import files as presets
from tunewiz.preset.files import (
    apply_overrides,
    copy_preset,
    dump_preset,
    header_comment,
    load_preset,
    shipped_presets,
)
from tunewiz.preset.schema import Preset

REPO = Path(__file__).resolve().parent.parent
# Bump this when a preset is added under presets/ (so this test never silently covers fewer).
SHIPPED_PRESET_COUNT = 15

# Line numbers matter: the tests below edit this text and expect errors at these lines.
GOOD = """\
# A tiny LoRA run for tests.
# Second header line.
name: demo
method: lora
model:
  path: tunewiz:tiny
data:
  path: tunewiz:alpaca-sample
train:
  lr: 1e-4
  micro_batch_size: 2
lora:
  targets: [q_proj, v_proj]
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path_or_name: str, overrides: tuple[str, ...] = ()) -> TunewizError:
    with pytest.raises(TunewizError) as info:
        load_preset(path_or_name, overrides)
    assert info.value.hint, "every preset error carries a hint"
    assert info.value.exit_code == 2
    return info.value


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def shipped_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake checkout with two shipped presets, one in a sub-directory."""
    root = tmp_path / "checkout"
    (root / "presets" / "gpu").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "presets" / "tiny-lora.yaml").write_text(GOOD)
    (root / "presets" / "gpu" / "big-full.yaml").write_text(GOOD.replace("method: lora", "method: full"))
    monkeypatch.setattr(presets, "_CHECKOUT", root)
    return root / "presets"


def test_load_fills_defaults_and_parses_values(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    preset, source = load_preset(str(path))
    assert source == path
    assert preset.name == "demo"
    assert preset.train.lr == pytest.approx(1e-4)
    assert preset.train.micro_batch_size == 2
    assert preset.train.epochs == 1  # default
    assert preset.lora.rank == 8  # default
    assert preset.model.dtype == "bf16"


def test_shipped_presets_found_recursively_and_by_name(shipped_dir: Path) -> None:
    assert shipped_presets() == [shipped_dir / "gpu" / "big-full.yaml", shipped_dir / "tiny-lora.yaml"]
    preset, source = load_preset("tiny-lora")
    assert source == shipped_dir / "tiny-lora.yaml"
    assert preset.method == "lora"
    assert load_preset("big-full")[0].method == "full"


def test_missing_file_names_it_and_lists_shipped_presets(shipped_dir: Path) -> None:
    err = error_of("x.yaml")
    assert err.message == "preset `x.yaml` not found"
    assert "`big-full`, `tiny-lora`" in err.hint
    assert "`tunewiz presets list`" in err.hint
    assert error_of("tiny-lroa").message == "preset `tiny-lroa` not found (did you mean `tiny-lora`?)"


def test_yaml_syntax_error_has_file_line_column(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  micro_batch_size: 2", " micro_batch_size: 2"))
    err = error_of(str(path))
    assert err.message.startswith(f"`{path}:11:2`: YAML syntax error:")
    path = write(tmp_path, GOOD.replace("[q_proj, v_proj]", "[q_proj, v_proj"))
    assert error_of(str(path)).message == (
        f"`{path}:14:1`: YAML syntax error: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence that starts at line 13, column 12)"
    )


def test_unknown_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  lr: 1e-4", "  lerning_rate: 1e-4"))
    err = error_of(str(path))
    assert err.message == f"unknown key `train.lerning_rate` in `{path}` line 10 (did you mean `lr`?)"
    assert err.hint.startswith("valid keys in `train`: epochs, max_steps, micro_batch_size")


def test_unknown_key_suggests_names_from_other_tools_and_sections(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  lr: 1e-4", "  gradient_accumulation_steps: 4"))
    assert error_of(str(path)).message.endswith("line 10 (did you mean `grad_accum`?)")
    path = write(tmp_path, GOOD + "learning_rate: 0.1\n")
    assert (
        error_of(str(path)).message
        == f"unknown key `learning_rate` in `{path}` line 14 (did you mean `train.lr`?)"
    )
    path = write(tmp_path, GOOD.replace("train:", "trian:"))
    assert error_of(str(path)).message == f"unknown key `trian` in `{path}` line 9 (did you mean `train`?)"


def test_out_of_range_names_key_line_expectation_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("micro_batch_size: 2", "micro_batch_size: -1"))
    err = error_of(str(path))
    assert err.message == f"`train.micro_batch_size` in `{path}` line 11: expected an integer > 0, got `-1`"
    assert err.hint == (
        "write it as `micro_batch_size: 4` (an integer > 0): Samples per rank per forward/backward."
    )


def test_a_bad_value_hint_shows_an_accepted_value_where_it_was_typed() -> None:
    # From `--set`: the hint is a `--set` that the same command accepts, then what the field is.
    with pytest.raises(TunewizError) as info:
        load_preset("tiny-lora", ["lora.rank=abc"])
    assert info.value.hint.startswith("write it as `--set lora.rank=8` (an integer > 0): ")
    override = info.value.hint.split("`")[1].removeprefix("--set ")
    assert load_preset("tiny-lora", [override])[0].lora.rank == 8
    # A list field takes one bare item as a one-item list, as it takes `a,b`.
    assert load_preset("tiny-lora", ["lora.targets=q_proj"])[0].lora.targets == ["q_proj"]


@pytest.mark.parametrize(
    ("entry", "field", "fixed"),
    [
        ("{path: b.csv, weight: 0}", "weight", "{path: b.csv, weight: 1.0}"),
        ("{path: b.csv, weight: -1}", "weight", "{path: b.csv, weight: 1.0}"),
        (
            "{path: b.csv, wieght: 2, columns: {prompt: q}}",
            "wieght",
            "{path: b.csv, columns: {prompt: q}, weight: 2}",
        ),
    ],
)
def test_a_bad_entry_of_a_dataset_list_is_one_error_and_its_hint_fixes_that_entry(
    entry: str, field: str, fixed: str
) -> None:
    """pydantic reports a bad `data.path` entry once per member of `str | list[str | DatasetEntry]`; the
    user sees one error naming the entry and its field, and a `--set` of the list with that entry fixed."""
    override = f"data.path=[a.jsonl, {entry}]"
    err = error_of("tiny-lora", (override,))
    assert "\n" not in err.message and "union" not in err.message and "DatasetEntry" not in err.message
    assert err.message.startswith(
        f"{'unknown key ' if field == 'wieght' else ''}`data.path[1].{field}` (the entry of `b.csv`)"
    )
    if field == "wieght":
        assert err.message.endswith("(did you mean `weight`?)")
    assert err.hint.startswith(f"write it as `--set 'data.path=[a.jsonl, {fixed}]'`")
    followed = err.hint.split("`")[1].removeprefix("--set ").strip("'")
    assert (
        load_preset("tiny-lora", [followed])[0].data.path
        == load_preset("tiny-lora", [f"data.path=[a.jsonl, {fixed}]"])[0].data.path
    )


def test_a_bad_entry_of_a_dataset_list_in_a_file_names_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace(
            "  path: tunewiz:alpaca-sample", "  path:\n    - a.jsonl\n    - path: b.csv\n      weight: 0"
        ),
    )
    err = error_of(str(path))
    assert (
        err.message
        == f"`data.path[1].weight` (the entry of `b.csv`) in `{path}` line 11: expected a number > 0, got `0`"
    )
    assert err.hint.startswith("write it as `weight: 1.0` (a number > 0): Mixing weight")


def test_wrong_type_names_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("lr: 1e-4", "lr: fast"))
    assert error_of(str(path)).message == f"`train.lr` in `{path}` line 10: expected a number > 0, got `fast`"
    path = write(tmp_path, GOOD + "checkpoint:\n  every_n_steps: many\n")
    assert error_of(str(path)).message == (
        f"`checkpoint.every_n_steps` in `{path}` line 15: expected an integer > 0 (or null), got `many`"
    )
    path = write(tmp_path, GOOD.replace("train:\n", "train: 3\nx:\n"))
    assert error_of(str(path)).message.startswith(
        f"`train` in `{path}` line 9 must be a section (a mapping of keys), got `3`"
    )


def test_literal_lists_choices(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("method: lora", "method: lroa"))
    assert error_of(str(path)).message == (
        f"`method` in `{path}` line 4 must be one of lora, qlora, full; got `lroa` (did you mean `lora`?)"
    )


def test_schema_rule_errors_keep_their_message(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("[q_proj, v_proj]", "[q_proj, qq_proj]"))
    err = error_of(str(path))
    assert err.message.startswith(f"`lora.targets` in `{path}` line 13: unknown LoRA target(s) ['qq_proj']")


def test_missing_required_names_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  path: tunewiz:tiny", "  dtype: fp32"))
    err = error_of(str(path))
    assert err.message == f"missing required key `model.path` in section `model` of `{path}` (line 5)"
    assert err.hint.startswith("add `path:` to it — The base model")
    path = write(tmp_path, GOOD.replace("data:\n  path: tunewiz:alpaca-sample\n", ""))
    err = error_of(str(path))
    assert err.message == f"missing required section `data` in `{path}`"
    assert err.hint.startswith("add a `data:` section with `path`")


def test_several_errors_are_all_reported_in_line_order(tmp_path: Path) -> None:
    text = GOOD.replace("method: lora", "method: x").replace("micro_batch_size: 2", "micro_batch_size: 0")
    err = error_of(str(write(tmp_path, text)))
    first, second = err.message.splitlines()
    assert first.startswith("`method` in ")
    assert second.startswith("  also: `train.micro_batch_size` in ")


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  micro_batch_size: 2", "  micro_batch_size: 2\n  lr: 0.1"))
    assert error_of(str(path)).message == f"`train.lr` appears twice in `{path}` (lines 10 and 12)"


def test_non_mapping_file_is_an_error(tmp_path: Path) -> None:
    assert "must be a mapping of keys" in error_of(str(write(tmp_path, "- a\n- b\n"))).message
    assert "got empty" in error_of(str(write(tmp_path, "# only a comment\n"))).message


def test_apply_overrides_parses_yaml_values_and_leaves_input_alone() -> None:
    data = {"name": "demo", "train": {"lr": 0.1}}
    result = apply_overrides(
        data,
        [
            "train.lr=1e-4",
            "lora.targets=[q_proj,v_proj]",
            "train.max_steps=null",
            "train.activation_checkpointing=true",
            "name=2024",
            "data.columns.instruction=question: text",
        ],
    )
    assert data == {"name": "demo", "train": {"lr": 0.1}}
    assert result == {
        "name": "2024",  # a string key keeps the text as written
        "train": {"lr": "1e-4", "max_steps": None, "activation_checkpointing": True},
        "lora": {"targets": ["q_proj", "v_proj"]},
        "data": {"columns": {"instruction": "question: text"}},
    }


def test_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    preset, _ = load_preset(str(path), ["train.lr=3e-5", "lora.targets=[all-linear]", "lora.rank=16"])
    assert preset.train.lr == pytest.approx(3e-5)
    assert preset.lora.rank == 16
    assert preset.lora.targets == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr", "`--set train.lr` must have the form KEY=VALUE"),
        (
            "train.lerning_rate=1",
            "unknown key `train.lerning_rate` in `--set train.lerning_rate=1` (did you mean `lr`?)",
        ),
        ("trian.lr=1", "unknown key `trian` in `--set trian.lr=1` (did you mean `train`?)"),
        ("train.lr.x=1", "`--set train.lr.x=1`: `train.lr` is a single value, not a section"),
        ("lora.targets=[q_proj", "`--set lora.targets=[q_proj`: `[q_proj` is not a valid YAML value"),
        (
            "train.micro_batch_size=-1",
            "`train.micro_batch_size` (from `--set train.micro_batch_size=-1`): expected an integer "
            "> 0, got `-1`",
        ),
        ("device=mps", "`device` (from `--set device=mps`) must be one of auto, cpu, cuda; got `mps`"),
    ],
)
def test_override_errors_name_the_override(tmp_path: Path, override: str, message: str) -> None:
    assert error_of(str(write(tmp_path, GOOD)), (override,)).message == message


@pytest.mark.parametrize(
    ("override", "fixed"),
    [
        ("data.columns={prompt:question}", "data.columns={prompt: question}"),
        (
            "data.path=[{path: a.jsonl, columns: {prompt:question, response: answer}}]",
            "data.path=[{path: a.jsonl, columns: {prompt: question, response: answer}}]",
        ),
        (
            "data.columns={prompt:question, response:answer}",
            "data.columns={prompt: question, response: answer}",
        ),
        (
            "data.path=[{path: a.jsonl, columns: {prompt:question}}, "
            "{path: b.csv, columns: {prompt:question}}]",
            "data.path=[{path: a.jsonl, columns: {prompt: question}}, "
            "{path: b.csv, columns: {prompt: question}}]",
        ),
    ],
)
def test_a_colon_without_a_space_gets_the_fixed_override(tmp_path: Path, override: str, fixed: str) -> None:
    """`{prompt:question}` is YAML for one key `prompt:question` with no value; the hint is the override
    with a space after every such colon, and the fixed override loads."""
    error = error_of(str(write(tmp_path, GOOD)), (override,))
    several = "response:answer" in override
    assert (
        "`prompt:question` and `response:answer` read as keys with no value"
        if several
        else "`prompt:question` reads as one key with no value"
    ) in error.message
    assert error.hint == f"put a space after the colon: `--set '{fixed}'`"
    preset, _ = load_preset(str(write(tmp_path, GOOD)), [fixed])
    assert preset.data.datasets()[0].columns in (
        {"prompt": "question"},
        {"prompt": "question", "response": "answer"},
    )


def test_dump_is_resolved_documented_and_loads_back_equal(tmp_path: Path) -> None:
    odd_name = 'run: "one"\n# not a comment'
    preset, _ = load_preset(
        str(write(tmp_path, GOOD)),
        [
            f"name={odd_name}",
            "data.columns.instruction=q: x",
            "train.max_grad_norm=null",
            "model.revision=null",
        ],
    )
    text = dump_preset(preset)
    assert text.startswith('# Resolved tunewiz preset `run: "one" # not a comment`: every default filled in')
    assert "  # Peak learning rate.\n  lr: 0.0001\n" in text
    assert "  epochs: 1\n" in text  # a default, written out
    assert list(yaml.safe_load(text)) == list(Preset.model_fields)
    assert list(yaml.safe_load(text)["train"]) == list(Preset.model_fields["train"].annotation.model_fields)
    again, _ = load_preset(str(write(tmp_path, text, "resolved.yaml")))
    assert again == preset
    assert again.name == odd_name
    assert dump_preset(again) == text


def test_header_comment_and_copy(tmp_path: Path) -> None:
    source = write(tmp_path, GOOD)
    assert header_comment(source) == "A tiny LoRA run for tests."
    assert header_comment(write(tmp_path, "name: x\n", "bare.yaml")) == ""
    dest = tmp_path / "out"
    dest.mkdir()
    assert copy_preset(str(source), dest) == dest / "p.yaml"
    assert (dest / "p.yaml").read_text() == GOOD
    with pytest.raises(TunewizError, match="already exists; not overwriting it") as info:
        copy_preset(str(source), dest / "p.yaml")
    assert "--force" in info.value.hint
    source.write_text(GOOD.replace("demo", "changed"))
    copy_preset(str(source), dest / "p.yaml", force=True)
    assert "name: changed" in (dest / "p.yaml").read_text()


def test_every_shipped_preset_validates(tmp_path: Path) -> None:
    found = sorted((REPO / "presets").rglob("*.yaml"))
    assert len(found) == SHIPPED_PRESET_COUNT, f"found {[p.name for p in found]}: update SHIPPED_PRESET_COUNT"
    assert found == [p for p in shipped_presets() if p.suffix == ".yaml"]
    for path in found:
        preset, _ = load_preset(path.stem)
        assert header_comment(path), f"{path} needs a header comment (its one-line description)"
        resolved = write(tmp_path, dump_preset(preset), f"{path.stem}.resolved.yaml")
        assert load_preset(str(resolved))[0] == preset


# The real command line: known errors are one error/hint pair and exit code 2, never a traceback.


def test_cli_unknown_key_exits_2_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  lr: 1e-4", "  lerning_rate: 1e-4"))
    result = run_cli("presets", "show", str(path), "--resolved", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: unknown key `train.lerning_rate` in `{path}` line 10 (did you mean `lr`?)",
        "hint: valid keys in `train`: epochs, max_steps, micro_batch_size, grad_accum, lr, min_lr_ratio, "
        "weight_decay, betas, warmup_steps, schedule, max_grad_norm, seed, activation_checkpointing, "
        "activation_offloading, optimizer, optimizer_in_backward, eval_every_n_steps, log_every_n_steps, "
        "sample_generations, sample_max_new_tokens",
    ]


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (["presets", "show", "missing.yaml"], "error: preset `missing.yaml` not found"),
        (["presets", "show", "syntax.yaml", "--resolved"], "error: `syntax.yaml:4:2`: YAML syntax error:"),
        (
            ["presets", "show", "range.yaml", "--resolved"],
            "error: `train.micro_batch_size` in `range.yaml` line 11: expected an integer > 0, got `-1`",
        ),
        (
            ["presets", "show", "choice.yaml", "--resolved"],
            "error: `method` in `choice.yaml` line 4 must be one of lora, qlora, full; got `lroa`",
        ),
        (
            ["presets", "show", "nopath.yaml", "--resolved"],
            "error: missing required key `model.path` in section `model` of `nopath.yaml` (line 5)",
        ),
        (
            ["presets", "show", "good.yaml", "--set", "train.lr=-1"],
            "error: `train.lr` (from `--set train.lr=-1`): expected a number > 0, got `-1`",
        ),
        (
            ["presets", "copy", "good.yaml", "good.yaml"],
            "error: `good.yaml` already exists; not overwriting it",
        ),
    ],
)
def test_cli_errors(tmp_path: Path, args: list[str], first_line: str) -> None:
    write(tmp_path, GOOD, "good.yaml")
    write(tmp_path, "name: x\nmodel:\n  path: a\n data: b\n", "syntax.yaml")
    write(tmp_path, GOOD.replace("micro_batch_size: 2", "micro_batch_size: -1"), "range.yaml")
    write(tmp_path, GOOD.replace("method: lora", "method: lroa"), "choice.yaml")
    write(tmp_path, GOOD.replace("  path: tunewiz:tiny", "  dtype: fp32"), "nopath.yaml")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(first_line), lines
    assert lines[-1].startswith("hint: ")
    assert "Traceback" not in result.stderr


def test_cli_show_copy_and_list(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    shown = run_cli("presets", "show", "good.yaml", cwd=tmp_path)
    assert (shown.returncode, shown.stdout) == (0, GOOD)
    resolved = run_cli("presets", "show", "good.yaml", "--set", "train.lr=0.5", cwd=tmp_path)
    assert resolved.returncode == 0
    assert (
        load_preset(str(write(tmp_path, resolved.stdout, "r.yaml")))[0]
        == load_preset(str(good), ["train.lr=0.5"])[0]
    )
    copied = run_cli("presets", "copy", "good.yaml", "mine.yaml", cwd=tmp_path)
    assert copied.returncode == 0
    assert (tmp_path / "mine.yaml").read_text() == GOOD
    assert "tunewiz train mine.yaml" in copied.stderr
    assert run_cli("presets", "copy", "good.yaml", "mine.yaml", "--force", cwd=tmp_path).returncode == 0
    listed = run_cli("presets", "list", cwd=tmp_path)
    assert listed.returncode == 0
    expected = []
    for path in shipped_presets():
        preset, _ = load_preset(str(path))
        expected.append("\t".join([path.stem, preset.model.path, preset.method, header_comment(path)]))
    assert listed.stdout.splitlines() == expected
