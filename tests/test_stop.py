"""Graceful stop: Ctrl-C in `tunewiz train` (SIGINT to the parent) and SIGTERM to a rank both finish the
optimizer step, save a checkpoint and print the resume command; a NaN loss stops before the update."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runs import TUNEWIZ, cli, events, step_losses, write_preset

pytestmark = pytest.mark.slow

# The stopped run sleeps after each step (tunewiz/train/faults.py), so the signal after its first step lands
# seconds before its last; the resume runs the rest at full speed.
STEPS = 12
DELAY = {"TUNEWIZ_FAULT_STEP_DELAY": "0.5"}


def _wait_for_step(run: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "events.jsonl").exists() and any(e["event"] == "step" for e in events(run)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no step event")


def _children(pid: int) -> list[int]:
    return [
        int(p)
        for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    ]


def _rank_pids(tunewiz_pid: int) -> list[int]:
    """The recipe processes: children of torchrun, which is the child of `tunewiz train`."""
    return [rank for torchrun in _children(tunewiz_pid) for rank in _children(torchrun)]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-rank"])
def test_stop_saves_a_checkpoint_and_resumes(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, how: str
) -> None:
    preset = write_preset(
        tmp_path / "long.yaml",
        tiny_model_dir,
        tiny_dataset,
        train={"max_steps": STEPS},
        checkpoint={"every_n_steps": 1000},
    )
    run = tmp_path / "runs" / "long"
    proc = subprocess.Popen(
        [*TUNEWIZ, "train", str(preset), "--no-tui"],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path), **DELAY},
    )
    _wait_for_step(run, proc)
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    else:
        ranks = _rank_pids(proc.pid)
        assert ranks
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, out + err  # stopped on request
    stop = [e for e in events(run) if e["event"] == "stop"]
    assert stop and stop[0]["reason"] == "signal"
    stopped_at = stop[0]["step"]
    assert 0 < stopped_at < STEPS
    assert (run / "checkpoints" / f"step-{stopped_at}" / "COMPLETE").is_file()
    assert f"tunewiz resume {run}" in out or "tunewiz resume runs/long" in out
    assert not (run / "STOP").exists()

    resumed = cli("resume", str(run), "--no-tui", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert max(step_losses(run)) == STEPS


def test_nan_loss_stops_before_the_update(tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path) -> None:
    preset = write_preset(tmp_path / "nan.yaml", tiny_model_dir, tiny_dataset)
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path, env={"TUNEWIZ_FAULT_NAN": "5"})
    assert result.returncode == 1
    run = tmp_path / "runs" / "nan"
    assert max(step_losses(run)) == 4
    error = next(e for e in events(run) if e["event"] == "error")
    assert "loss is nan at step 5" in error["message"] and "step-4" in error["message"]
    assert "tunewiz resume" in result.stdout
