"""`tunewiz init` without a terminal: flags end to end, the missing-flags error, a scripted asker
through every question, and the first question appearing without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tunewiz.errors import TunewizError
from tunewiz.plan.time_budget import parse_duration
from tunewiz.preset.files import load_preset
from tunewiz.wizard.asker import Choice
from tunewiz.wizard.flow import WizardFlags, run_wizard

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def tunewiz(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", *args],
        cwd=cwd,
        env=ENV,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ScriptedAsker:
    """Answers from a list, in order, and records every question and its choices."""

    def __init__(self, answers: list[object]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, list[Choice] | None, object]] = []

    def _next(self, message: str, choices: list[Choice] | None, default: object) -> object:
        self.asked.append((message, choices, default))
        assert self.answers, f"unexpected question {message!r}"
        answer = self.answers.pop(0)
        return default if answer is DEFAULT else answer

    def select(self, message: str, choices: list[Choice], default: str | None) -> str:
        answer = self._next(message, choices, default)
        assert answer in [c.value for c in choices], f"{answer!r} is not a choice of {message!r}"
        return str(answer)

    def text(self, message: str, default: str, validate) -> str:  # noqa: ANN001
        answer = str(self._next(message, None, default))
        assert validate(answer) is None, f"{answer!r} rejected by {message!r}: {validate(answer)}"
        return answer

    def confirm(self, message: str, default: bool) -> bool:
        return bool(self._next(message, None, default))

    def checkbox(self, message: str, choices: list[Choice], default: list[str]) -> list[str]:
        answer = self._next(message, choices, default)
        assert isinstance(answer, list) and set(answer) <= {c.value for c in choices}, answer
        return answer


DEFAULT = object()


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=200)  # noqa: SIM115


def test_flags_end_to_end_writes_a_preset_train_accepts(tmp_path: Path) -> None:
    out = tmp_path / "run.yaml"
    done = tunewiz(
        "init",
        "--model",
        "tunewiz:tiny",
        "--dataset",
        "tunewiz:story-qa",
        "--epochs",
        "2",
        "--lora-rank",
        "4",
        "--output",
        str(out),
        "--name",
        "wiz",
        "--report-to",
        "mlflow,tensorboard",
        "--no-launch",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "no GPU found" in done.stdout and "predicted peak" in done.stdout
    assert f"tunewiz train {out}" in done.stdout
    preset, _ = load_preset(str(out))
    assert (preset.name, preset.method, preset.device) == ("wiz", "lora", "cpu")
    assert (preset.model.path, preset.model.dtype, preset.data.path) == (
        "tunewiz:tiny",
        "fp32",
        "tunewiz:story-qa",
    )
    assert (preset.lora.rank, preset.lora.alpha, preset.train.epochs, preset.train.max_steps) == (
        4,
        8.0,
        2,
        None,
    )
    assert preset.output.report_to == ["mlflow", "tensorboard"]
    # The story-QA answers are short: the 99th percentile of the tokenized rows is under 128 tokens.
    assert preset.data.max_seq_len == 128
    # Global batch 16 on one process: the largest power-of-two micro-batch that fits, no accumulation.
    assert (preset.train.micro_batch_size, preset.train.grad_accum) == (16, 1)
    header = out.read_text().splitlines()[:4]
    assert header[1] == f"# Launch: tunewiz train {out}"
    assert header[2].startswith("# Planner's predicted peak: ")
    assert "GiB ± 10% per device; fits: " in header[2]
    dry = tunewiz("train", str(out), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "-m torch.distributed.run" in dry.stdout and "--run-dir runs/wiz" in dry.stdout


def test_described_gpu_machine_and_method_flag(tmp_path: Path) -> None:
    out = tmp_path / "l1b.yaml"
    done = tunewiz(
        "init",
        "-m",
        "llama-3.2-1b-instruct",
        "-d",
        "tunewiz:story-chat",
        "--gpus",
        "2",
        "--gpu-memory",
        "24GB",
        "--method",
        "full",
        "--seq-len",
        "1024",
        "-o",
        str(out),
        "--yes",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    preset, _ = load_preset(str(out))
    assert (preset.method, preset.device, preset.model.path) == (
        "full",
        "auto",
        "meta-llama/Llama-3.2-1B-Instruct",
    )
    assert (preset.model.dtype, preset.data.max_seq_len, preset.train.lr) == ("bf16", 1024, 2e-5)
    assert preset.output.adapter is False
    # Two GPUs: the command starts one process per GPU, and the batch is split over them.
    assert "tunewiz train " + str(out) + " --nproc-per-node 2" in done.stdout
    t = preset.train
    assert t.micro_batch_size * t.grad_accum * 2 >= 16


def test_missing_flags_without_a_tty(tmp_path: Path) -> None:
    done = tunewiz("init", "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert (
        lines[0] == "error: no terminal to ask on (stdin is not a TTY), and --model, --dataset are not given"
    )
    assert lines[1].startswith("hint: give `--model` and `--dataset` as flags, e.g. `tunewiz init --model ")
    assert "Traceback" not in done.stderr and "EOFError" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_tracker_flag_fails_before_any_question(tmp_path: Path) -> None:
    asker = ScriptedAsker([])
    flags = WizardFlags(model="tunewiz:tiny", dataset="tunewiz:story-qa", report_to="tensorboard,neptune")
    with pytest.raises(TunewizError) as err:
        run_wizard(flags, asker, quiet())
    assert err.value.message == "--report-to `tensorboard,neptune`: unknown tracker(s) `neptune`"
    assert "tensorboard, mlflow, wandb" in (err.value.hint or "") and asker.asked == []


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "run.yaml"
    out.write_text("keep me\n")
    args = ("init", "-m", "tunewiz:tiny", "-d", "tunewiz:story-text", "-o", str(out), "--no-launch")
    done = tunewiz(*args, cwd=tmp_path)
    assert done.returncode == 2 and f"error: `{out}` already exists; not overwriting it" in done.stderr
    assert out.read_text() == "keep me\n"
    assert tunewiz(*args, "--force", cwd=tmp_path).returncode == 0
    assert load_preset(str(out))[0].data.path == "tunewiz:story-text"


def test_plan_that_does_not_fit_stops_with_what_would(tmp_path: Path) -> None:
    flags = WizardFlags(
        model="llama-2-13b",
        dataset="tunewiz:story-qa",
        method="full",
        gpus=1,
        gpu_memory="8GB",
        output=tmp_path / "x.yaml",
    )
    with pytest.raises(TunewizError, match="llama-2-13b with full does not fit 1 × 8 GiB GPU") as info:
        run_wizard(flags, None, quiet())
    assert "smaller model" in info.value.hint
    assert not (tmp_path / "x.yaml").exists()


def test_scripted_asker_every_question(tmp_path: Path) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(f'{{"instruction": "say {i}", "output": "{i} {i} {i}"}}\n' for i in range(40)))
    out = tmp_path / "asked.yaml"
    out.write_text("old\n")
    asker = ScriptedAsker(
        [
            "tunewiz:tiny",  # model
            "__local__",  # dataset: a local file…
            str(data),  # …its path
            True,  # train on this previewed file
            DEFAULT,  # method: the recommended one
            "budget",
            "2m",  # a time budget
            "asked-run",  # name
            str(out),  # output
            ["tensorboard", "wandb"],  # experiment trackers
            True,  # overwrite the existing file
            False,  # do not launch
        ]
    )
    result = run_wizard(WizardFlags(), asker, quiet())
    assert asker.answers == []
    questions = [q for q, _, _ in asker.asked]
    assert questions[0].startswith("Model (fit verdicts for CPU")
    model_choices = asker.asked[0][1]
    assert model_choices is not None and model_choices[0].value == "tunewiz:tiny"
    assert "✓ fits  lora mb" in model_choices[0].title and model_choices[-1].value == "__other__"
    assert asker.asked[0][2] == "tunewiz:tiny"  # the default on CPU
    method_choices = {c.value: c for c in asker.asked[4][1]}
    assert asker.asked[4][2] == "lora" and method_choices["lora"].title.endswith("(recommended)")
    assert method_choices["lora"].description.startswith("recommended: trains ~1% of the weights")
    assert result.launch is False and result.path == out
    preset, _ = load_preset(str(out))
    assert (preset.name, preset.data.path, preset.data.max_seq_len) == ("asked-run", str(data), 64)
    assert preset.train.max_steps is not None and preset.train.max_steps >= 1
    assert preset.output.report_to == ["tensorboard", "wandb"]
    tracker_question = next(a for a in asker.asked if a[0].startswith("Also report metrics to"))
    assert [c.value for c in tracker_question[1]] == ["tensorboard", "mlflow", "wandb"]
    assert tracker_question[2] == []  # none unless chosen


def test_hub_model_without_local_tokenizer_estimates_lengths(tmp_path: Path) -> None:
    flags = WizardFlags(
        model="qwen2.5-0.5b-instruct",
        dataset="tunewiz:story-qa",
        gpus=1,
        gpu_memory="12GB",
        output=tmp_path / "q.yaml",
        launch=False,
    )
    console = Console(record=True, width=200, file=open(os.devnull, "w"))  # noqa: SIM115
    result = run_wizard(flags, None, console)
    assert (
        "estimated at 4 characters per token + 5 template tokens per message (the tokenizer of "
        "qwen2.5-0.5b-instruct is not downloaded)"
    ) in console.export_text()
    # The estimate's 99th percentile (65 tokens) lands where the shipped tokenizer's (69) does.
    assert result.preset.model.path == "Qwen/Qwen2.5-0.5B-Instruct" and result.preset.data.max_seq_len == 128


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("90m", "2h", "1h30m", "45s", "10")] == [5400, 7200, 5400, 45, 600]
    with pytest.raises(TunewizError, match="--time-budget `soon` is not a duration"):
        parse_duration("soon")


def test_first_question_imports_no_torch() -> None:
    # A fresh interpreter: the asker records what is imported when the first question is asked.
    code = """
import sys
from rich.console import Console
from tunewiz.wizard.flow import WizardFlags, run_wizard

class Stop(Exception):
    pass

class FirstQuestion:
    def select(self, message, choices, default):
        heavy = [m for m in ("torch", "datasets", "lm_eval", "transformers") if m in sys.modules]
        print("FIRST", message.split(" ")[0], heavy)
        raise Stop
    text = confirm = select

try:
    run_wizard(WizardFlags(), FirstQuestion(), Console(file=open("/dev/null", "w")))
except Stop:
    pass
"""
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "FIRST Model []"


def test_reference_presets_carry_the_planners_current_prediction(tmp_path: Path) -> None:
    # Each wizard-made shipped preset records the command that made it; making it again must give the
    # same file apart from the date and the honesty note, so a planner change cannot leave stale numbers.
    made = sorted(
        p for p in (REPO / "presets").glob("*.yaml") if "# Made with: tunewiz init " in p.read_text()
    )
    assert [p.stem for p in made] == [
        "gemma-3-4b-lora-12gb",
        "gemma-3-4b-lora-16gb",
        "llama-3.1-8b-full-8x80gb",
        "llama-3.1-8b-lora-24gb",
        "llama-3.1-8b-qlora-12gb",
        "llama-3.1-8b-qlora-16gb",
        "llama-3.2-1b-lora-8gb",
        "llama-3.2-3b-lora-12gb",
        "qwen2.5-0.5b-lora-12gb",
        "qwen3-4b-lora-12gb",
        "qwen3-4b-lora-16gb",
        "qwen3-8b-qlora-12gb",
        "qwen3-8b-qlora-16gb",
    ]
    for path in made:
        text = path.read_text()
        args = next(line for line in text.splitlines() if line.startswith("# Made with: tunewiz init "))
        argv = args.removeprefix("# Made with: tunewiz ").split()
        out = argv.index("-o") + 1
        argv[out] = str(tmp_path / path.name)
        done = tunewiz(*argv, cwd=REPO)
        assert done.returncode == 0, done.stderr
        again = (tmp_path / path.name).read_text()
        assert _body(again) == _body(text), (
            f"{path.name} is stale: run the `Made with` line in its header again"
        )
        assert "# Not measured here: no GPU" in text


def _body(text: str) -> list[str]:
    # Everything but the first line (it carries the date) and the lines the wizard does not write.
    return [
        line
        for line in text.splitlines()[1:]
        if not line.startswith(("# Not measured", "# next to this", "# Made with", "# Launch"))
    ]


@pytest.mark.slow
def test_launch_runs_the_written_preset_through_tunewiz_train(tmp_path: Path) -> None:
    # A 0.1 s budget is one optimizer step: the launch is the normal `tunewiz train` path (~45 s on 2 cores).
    env = {**ENV, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunewiz",
            "init",
            "-m",
            "tunewiz:tiny",
            "-d",
            "tunewiz:story-qa",
            "--time-budget",
            "0.1s",
            "--name",
            "launched",
            "-o",
            "launched.yaml",
            "--launch",
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_preset(str(tmp_path / "launched.yaml"))[0].train.max_steps == 1
    assert "max_steps 1: a 0.1s budget at an estimated" in done.stdout
    assert (tmp_path / "runs" / "launched" / "final" / "adapter").is_dir()


def test_columns_flag_and_the_hint_that_names_it(tmp_path: Path) -> None:
    """Without a terminal an unknown file is an error whose hint is an `init --columns` that works."""
    import re
    import shlex

    data = tmp_path / "faq.csv"
    data.write_text("frage,antwort\nWhat colour is the sky?,blue\nAnd grass?,green\n")
    args = ("init", "-m", "tunewiz:tiny", "-d", str(data), "-o", str(tmp_path / "faq.yaml"), "--no-launch")
    done = tunewiz(*args, cwd=tmp_path)
    assert done.returncode != 0 and "error: cannot tell the format of faq.csv" in done.stderr, done.stderr
    (flag,) = re.findall(r"`tunewiz init (--columns \S+)`", done.stderr)
    assert flag == "--columns prompt=frage,response=antwort"
    done = tunewiz(*args, *shlex.split(flag), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    preset, _ = load_preset(str(tmp_path / "faq.yaml"))
    assert preset.data.columns == {"prompt": "frage", "response": "antwort"}
    bad = tunewiz(*args, "--force", "--columns", "reply=antwort", cwd=tmp_path)
    assert bad.returncode != 0 and "error: --columns role `reply` is not a role" in bad.stderr
