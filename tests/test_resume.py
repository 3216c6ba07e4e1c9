"""Exact resume and fault tolerance, through the real CLI: SIGKILL at several points (one in the
middle of writing a checkpoint), 1 and 2 ranks; resume with another micro-batch split; the OOM
fallback; a full disk; a finished run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from runs import SAMPLED, cli, events, samples_by_step, step_losses, write_preset

pytestmark = pytest.mark.slow


def _final_bytes(run: Path) -> bytes:
    return (run / "final" / "adapter" / "adapter_model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def killed_at_step_3(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_dataset: Path
) -> Path:
    """A run of tests/runs.py's default preset SIGKILLed after step 3 (`step-2` is its last complete
    checkpoint), killed once for the module; tests resume copies of it (`shutil.copytree`)."""
    work = tmp_path_factory.mktemp("killed")
    preset = write_preset(work / "killed.yaml", tiny_model_dir, tiny_dataset)
    killed = cli("train", str(preset), "--no-tui", cwd=work, env={"TUNEWIZ_FAULT_KILL": "step@3"})
    assert killed.returncode != 0, killed.stdout + killed.stderr
    run = work / "runs" / "killed"
    assert (run / "checkpoints" / "step-2" / "COMPLETE").is_file() and not (run / "final").exists()
    return run


@pytest.mark.parametrize(
    ("kill", "resumes_from", "nproc"),
    [
        ("step@3", "step-2", 1),  # between checkpoints: step 3 is redone
        ("step@5", "step-4", 1),  # one step after step 4's checkpoint
        ("checkpoint@4", "step-2", 1),  # mid-write: step-4 has no marker and is never loaded
        ("checkpoint@4", "step-2", 2),  # the same under torchrun with 2 ranks (FSDP2)
    ],
)
def test_killed_run_resumes_exactly(
    trained_run: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_dataset: Path,
    kill: str,
    resumes_from: str,
    nproc: int,
) -> None:
    mb = 4 // nproc  # the same global batch as the uninterrupted trained run
    preset = write_preset(
        tmp_path / "run.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": mb, **SAMPLED}
    )
    run = tmp_path / "runs" / "run"
    killed = cli(
        "train",
        str(preset),
        "--no-tui",
        "--nproc-per-node",
        str(nproc),
        cwd=tmp_path,
        env={"TUNEWIZ_FAULT_KILL": kill},
    )
    assert killed.returncode != 0
    assert not (run / "final").exists()
    if kill.startswith("checkpoint"):
        assert (run / "checkpoints" / "step-4").is_dir() and not (
            run / "checkpoints" / "step-4" / "COMPLETE"
        ).exists()

    resumed = cli("resume", str(run), "--no-tui", "--nproc-per-node", str(nproc), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"from {resumes_from}" in resumed.stdout
    assert step_losses(run) == pytest.approx(step_losses(trained_run), rel=1e-5)
    # Validations with greedy replies before the kill and after the resume change nothing: the same
    # losses and adapter bytes as the uninterrupted run, and the same replies at each step.
    assert samples_by_step(run) == samples_by_step(trained_run)
    if nproc == 1:
        assert _final_bytes(run) == _final_bytes(trained_run), "resumed adapter must be bitwise identical"
    starts = [e for e in events(run) if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"].endswith(resumes_from)


def test_resume_with_another_micro_batch_split(
    trained_run: Path, killed_at_step_3: Path, tmp_path: Path
) -> None:
    run = Path(shutil.copytree(killed_at_step_3, tmp_path / "runs" / "split"))
    resumed = cli(
        "resume",
        str(run),
        "--no-tui",
        "--set",
        "train.micro_batch_size=2",
        "--set",
        "train.grad_accum=2",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "changed train.micro_batch_size: 4 → 2" in resumed.stdout
    assert step_losses(run) == pytest.approx(step_losses(trained_run), rel=1e-5)


def test_resume_refuses_to_change_what_defines_the_run(tmp_path: Path, trained_run: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    result = cli("resume", str(run), "--set", "lora.rank=8", cwd=tmp_path)
    assert result.returncode == 2 and "`lora.rank` cannot change on resume" in result.stderr


def test_finished_run_says_it_is_finished(tmp_path: Path, trained_run: Path) -> None:
    result = cli("resume", str(trained_run), cwd=tmp_path)
    assert result.returncode == 0
    assert "is finished (step 6)" in result.stdout and "tunewiz chat" in result.stdout


def test_oom_fallback_keeps_the_global_batch(
    trained_run: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(tmp_path / "oom.yaml", tiny_model_dir, tiny_dataset)
    result = cli(
        "train", str(preset), "--no-tui", cwd=tmp_path, env={"TUNEWIZ_FAULT_OOM_ABOVE_MICRO_BATCH": "2"}
    )
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "oom"
    fallbacks = [e for e in events(run) if e["event"] == "oom_fallback"]
    assert [(e["micro_batch_size"], e["grad_accum"]) for e in fallbacks] == [(2, 2)]
    # The global batch of 4 is kept: the losses are the uninterrupted micro-batch-4 run's (a split of a
    # global batch changes no loss: test_recipe.py's accumulation test, and the split resume above).
    assert step_losses(run) == pytest.approx(step_losses(trained_run), rel=1e-5)


def test_oom_at_micro_batch_one_stops_with_a_hint(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(
        tmp_path / "tight.yaml", tiny_model_dir, tiny_dataset, train={"micro_batch_size": 2, "grad_accum": 2}
    )
    result = cli(
        "train", str(preset), "--no-tui", cwd=tmp_path, env={"TUNEWIZ_FAULT_OOM_ABOVE_MICRO_BATCH": "1"}
    )
    assert result.returncode == 0  # 2 → 1 fits
    result = cli(
        "train",
        str(preset),
        "--no-tui",
        "--run-dir",
        "runs/t2",
        cwd=tmp_path,
        env={"TUNEWIZ_FAULT_OOM_ABOVE_MICRO_BATCH": "-1"},
    )
    assert result.returncode != 0
    errors = [e for e in events(tmp_path / "runs" / "t2") if e["event"] == "error"]
    assert errors and "out of memory at micro-batch 1" in errors[0]["message"]
    assert "activation_checkpointing" in errors[0]["message"]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_keeps_the_last_checkpoint(
    trained_run: Path, killed_at_step_3: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        run = Path(shutil.copytree(killed_at_step_3, disk / "full"))
        assert (run / "checkpoints" / "step-2" / "COMPLETE").is_file()
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)  # fill the disk
        subprocess.run(
            ["truncate", "-s", f"-{16 * 1024}", str(filler)], check=True
        )  # leave 16 KiB for the logs

        result = cli("resume", str(run), "--no-tui", cwd=tmp_path)
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "could not save checkpoint" in output and "No space left on device" in output
        assert "Traceback" not in result.stderr
        assert (run / "checkpoints" / "step-2" / "COMPLETE").is_file()

        filler.unlink()
        result = cli("resume", str(run), "--no-tui", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _final_bytes(run) == _final_bytes(trained_run)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_run_made_before_prompt_json_resumes_with_its_old_prompt_rule(
    killed_at_step_3: Path, tmp_path: Path
) -> None:
    """A run from an older tunewiz has checkpoints but no prompt.json: resume keeps the rule it trained
    with (bos id before the rendering, eos after every reply), says so once, and records it."""
    import json

    run = Path(shutil.copytree(killed_at_step_3, tmp_path / "runs" / "old"))
    (run / "prompt.json").unlink()  # as an older tunewiz left it
    resumed = cli("resume", str(run), "--no-tui", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    warnings = [e["message"] for e in events(run) if e["event"] == "warning"]
    assert len(warnings) == 1 and "has no prompt.json" in warnings[0]
    assert "warning:" in resumed.stdout and "has no prompt.json" in resumed.stdout
    record = json.loads((run / "prompt.json").read_text())
    assert (record["bos"], record["eos"], record["template_source"]) == (
        "prepended",
        "every_reply",
        "builtin:alpaca",
    )
    # final/ says it the only way a template can: bos rendered first.
    assert (run / "final" / "chat_template.jinja").read_text() == "{{ bos_token }}" + record["template"]


def test_epochs_are_counted_from_one_in_a_run_bounded_by_max_steps(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """18 training samples, 4 per step: 4 steps per epoch, so `max_steps: 6` touches 2 epochs. Every step
    line, the step events and `tunewiz resume` name the epoch of the step trained, counted from 1."""
    from runs import write_dataset

    data = write_dataset(tmp_path / "small.jsonl", n=20)
    preset = write_preset(tmp_path / "small.yaml", tiny_model_dir, data)
    run = tmp_path / "runs" / "small"
    trained = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    start = next(e for e in events(run) if e["event"] == "start")
    assert (start["steps_per_epoch"], start["epochs"]) == (4, 2)
    assert [e["epoch"] for e in events(run) if e["event"] == "step"] == [1, 1, 1, 1, 2, 2]
    lines = [ln for ln in trained.stdout.splitlines() if ln.startswith("step ")]  # the first and the last
    assert [ln.split(" | ")[:2] for ln in lines] == [
        ["step 1/6 (17%)", "epoch 1/2"],
        ["step 6/6 (100%)", "epoch 2/2"],
    ]
    resumed = cli("resume", str(run), "--from", "4", "--no-tui", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "from step-4: step 4, epoch 1" in resumed.stdout


def test_resume_finds_relative_data_from_anywhere_and_refuses_changed_data(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    """The run's config.yaml holds its data files as absolute paths (a relative one was relative to
    where `train` ran, so `resume` from another directory could not find it); a data file whose content
    changed since the run started is refused (it re-prepared silently: another data order and another
    validation set)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    shutil.copy(tiny_dataset, a / "data.jsonl")
    preset = write_preset(a / "p.yaml", tiny_model_dir, Path("data.jsonl"), train={"max_steps": 2})
    assert cli("train", str(preset), "--no-tui", cwd=a).returncode == 0
    run = a / "runs" / "p"
    assert f"path: {a / 'data.jsonl'}" in (run / "config.yaml").read_text()
    longer = cli("resume", "../a/runs/p", "--set", "train.max_steps=3", "--no-tui", cwd=b)
    assert longer.returncode == 0, longer.stderr
    # The data moved: resume says the file is missing and takes its new place (same content).
    (a / "data.jsonl").rename(b / "moved.jsonl")
    missing = cli("resume", "../a/runs/p", "--set", "train.max_steps=4", "--no-tui", cwd=b)
    assert (
        missing.returncode == 2 and f"error: data file `{a / 'data.jsonl'}` does not exist" in missing.stderr
    )
    moved = cli(
        "resume", "../a/runs/p", "--set", "train.max_steps=4", "--set", "data.path=moved.jsonl", cwd=b
    )
    assert moved.returncode == 0, moved.stderr
    assert f"path: {b / 'moved.jsonl'}" in (run / "config.yaml").read_text()
    with open(b / "moved.jsonl", "a") as f:
        f.write('{"instruction": "a new row", "output": "changes the data"}\n')
    changed = cli("resume", "../a/runs/p", "--set", "train.max_steps=5", "--no-tui", cwd=b)
    assert changed.returncode == 2, changed.stderr
    assert (
        "error: the data of run `../a/runs/p` changed since it started: `moved.jsonl` has other content"
        in (changed.stderr)
    )
    assert "hint: put back the data it trained on and resume again" in changed.stderr
    assert [e["step"] for e in events(run) if e["event"] == "start"] == [0, 2, 3]  # nothing started
