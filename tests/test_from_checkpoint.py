"""`--from CHECKPOINT` on every command that reads a run's weights: one resolver with errors that name the
complete steps, and at the run's last step the same scores (eval --tasks), the same published files
(push --dry-run) and the same GGUF tensors (export) as `final/`. Reads the session's `trained_run` (LoRA,
6 steps, checkpoints at 2, 4, 6); a test that writes into a run copies it first."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi
from runs import cli

from tunewiz.cli import main
from tunewiz.errors import TunewizError
from tunewiz.hub import stage_push
from tunewiz.inference.load import resolve_from

PROMPT = "Ann has a red cup. What colour is the cup?"


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's trained run, for commands that write into it (eval/, export/)."""
    return Path(
        shutil.copytree(trained_run, tmp_path / "runs" / "golden", ignore=shutil.ignore_patterns("lock*"))
    )


def test_from_names_a_step_latest_or_final(trained_run: Path, tmp_path: Path) -> None:
    command = f"tunewiz chat {trained_run}"
    assert resolve_from(trained_run, None, command=command) is None
    assert resolve_from(trained_run, "final", command=command) is None
    for name in ("step-4", "4"):
        found = resolve_from(trained_run, name, command=command)
        assert found is not None and found.step == 4 and found.path == trained_run / "checkpoints" / "step-4"
    latest = resolve_from(trained_run, "latest", command=command)
    assert latest is not None and latest.name == "step-6"

    with pytest.raises(TunewizError) as unknown:
        resolve_from(trained_run, "step-5", command=command)
    assert (
        "has no complete checkpoint `step-5`; complete ones: step-2, step-4, step-6" in unknown.value.message
    )
    assert unknown.value.hint == f"`{command} --from step-6`"
    with pytest.raises(TunewizError, match="`five` is not a checkpoint name"):
        resolve_from(trained_run, "five", command=command)
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(TunewizError, match="is not one \\(no config.yaml\\)") as not_run:
        resolve_from(model, "step-2", command=f"tunewiz chat {model}")
    assert not_run.value.hint == f"drop `--from`: `tunewiz chat {model}`"

    bare = Path(shutil.copytree(trained_run, tmp_path / "bare", ignore=shutil.ignore_patterns("checkpoints")))
    with pytest.raises(TunewizError, match="has no complete step checkpoint") as none:
        resolve_from(bare, "latest", command=f"tunewiz chat {bare}")
    assert none.value.hint == f"use its final weights: `tunewiz chat {bare}`"


def test_hints_are_commands_that_work(trained_run: Path) -> None:
    """Each command's error for an unknown step repeats the command as typed, every option kept
    (`--limit` too) and `--from` replaced by an existing step, wherever it was given; the hinted chat
    runs."""
    cwd, run = trained_run.parent.parent, str(trained_run)
    typed = [  # as typed, without --from (each in the order the command declares its options)
        ("chat", run, "--prompt", PROMPT, "--max-new-tokens", "4"),
        ("chat", run, "--web"),
        ("eval", run, "--tasks", "story_qa", "--limit", "5"),
        ("eval", run, "--limit", "5"),
        ("push", run, "--repo-id", "alice/tiny", "--merged", "--dry-run"),
        ("export", run, "--format", "gguf", "--quant", "f16"),
    ]
    for args in typed:
        done = cli(*args[:2], "--from", "step-7", *args[2:], cwd=cwd)
        assert done.returncode == 2, (args, done.stderr)
        assert "error: " in done.stderr and "complete ones: step-2, step-4, step-6" in done.stderr, args
        assert f"hint: `{shlex.join(['tunewiz', *args])} --from step-6`" in done.stderr, (args, done.stderr)
    hinted = cli("chat", run, "--prompt", PROMPT, "--max-new-tokens", "4", "--from", "step-6", cwd=cwd)
    assert hinted.returncode == 0 and "step-6 (LoRA rank 4)" in hinted.stderr, hinted.stderr


def _ppl_task(out: Path) -> Path:
    """One local lm-eval task that scores the rolling log-likelihood of a few stories (a continuous
    number, so equal scores mean equal weights)."""
    out.mkdir()
    rows = [
        {"story": f"{n} has a {c} cup. What colour is the cup? {c}."}
        for n, c in [("Mia", "red"), ("Tom", "blue")]
    ]
    (out / "stories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {
        "task": "tw_story_ppl",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(out / "stories.jsonl")}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{story}}",
        "metric_list": [{"metric": "word_perplexity"}],
        "metadata": {"version": 1.0},
    }
    (out / "tw_story_ppl.yaml").write_text(yaml.safe_dump(task))
    return out


def test_eval_tasks_from_the_last_step_equals_final(run_copy: Path, tmp_path: Path) -> None:
    from tunewiz.inference.evaluate import run_eval

    tasks = _ppl_task(tmp_path / "tasks")

    def scores(name: str | None) -> dict:
        checkpoint = resolve_from(run_copy, name, command="tunewiz eval")
        result = run_eval(
            str(run_copy), tasks=["tw_story_ppl"], include_path=tasks, device="cpu", checkpoint=checkpoint
        )
        return result.tasks["tw_story_ppl"]

    final, last, early = scores(None), scores("step-6"), scores("step-2")
    assert last == final and early["word_perplexity"] != final["word_perplexity"]
    written = json.loads((run_copy / "eval" / "results-step-6.json").read_text())
    assert written["checkpoint"] == "step-6" and written["adapter"] == str(
        run_copy / "checkpoints" / "step-6"
    )
    assert (
        json.loads((run_copy / "eval" / "results.json").read_text())["checkpoint"] == "final"
    )  # not replaced


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "README.md"}


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_push_dry_run_from_the_last_step_publishes_final_s_files(
    trained_run: Path, tmp_path: Path, kind: str
) -> None:
    def staged(name: str | None) -> Path:
        checkpoint = resolve_from(trained_run, name, command="tunewiz push")
        out = tmp_path / f"{kind}-{name or 'final'}"
        return stage_push(trained_run, out, repo_id="alice/tiny", kind=kind, checkpoint=checkpoint).path  # type: ignore[arg-type]

    final, last, early = staged(None), staged("step-6"), staged("step-2")
    assert _files(last) == _files(final)  # weights, config and tokenizer byte for byte
    weights = "adapter_model.safetensors" if kind == "adapter" else "model.safetensors"
    assert _files(early).keys() == _files(final).keys() and _files(early)[weights] != _files(final)[weights]
    card = (early / "README.md").read_text()
    assert "step checkpoint `step-2` (after 2 of the run's 6 optimizer steps)" in card
    assert "| Optimizer steps | 2 |" in card and "step-2" not in (final / "README.md").read_text()
    assert not list(tmp_path.glob(".*"))  # the step's export beside the staged folder is gone


def test_push_from_a_step_uploads_it(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real upload path (HfApi mocked at its boundary, as tests/test_hub.py does)."""
    uploaded: dict[str, object] = {}

    def upload_folder(self: HfApi, *, repo_id: str, folder_path: Path, **kwargs: object) -> None:
        uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
        uploaded["card"] = (Path(folder_path) / "README.md").read_text()

    monkeypatch.setenv("HF_TOKEN", "hf_fakeTOKENforTHEtest0123456789")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(
        sys, "argv", ["tunewiz", "push", str(trained_run), "--repo-id", "alice/tiny", "--from", "step-4"]
    )
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0, capsys.readouterr().err
    assert "adapter_model.safetensors" in uploaded["files"]  # type: ignore[operator]
    assert "step checkpoint `step-4` (after 4 of the run's 6 optimizer steps)" in uploaded["card"]  # type: ignore[operator]


def test_export_from_the_last_step_writes_final_s_tensors(run_copy: Path) -> None:
    from gguf import GGUFReader

    from tunewiz.export.gguf import export_gguf

    def tensors(name: str | None) -> dict[str, bytes]:
        checkpoint = resolve_from(run_copy, name, command="tunewiz export")
        path = export_gguf(run_copy, checkpoint=checkpoint).path
        return {t.name: bytes(t.data.tobytes()) for t in GGUFReader(path).tensors}

    final, last, early = tensors(None), tensors("step-6"), tensors("step-2")
    assert (run_copy / "export" / "step-6" / "golden-step-6.q8_0.gguf").is_file()
    assert (run_copy / "export" / "golden.q8_0.gguf").is_file()  # the final export stays
    assert last == final and early.keys() == final.keys() and early != final
