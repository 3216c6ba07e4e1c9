"""The fault battery: interrupt a real run every way a user's machine does, then `tunewiz resume` it.

Each scenario must end with a final adapter byte-identical to an uninterrupted run's (1 rank, fp32;
losses equal for 2 ranks), no incomplete checkpoint loaded, and never two writers in the run
directory. One uninterrupted reference run is shared by all scenarios. Faulted runs sleep
`TUNEWIZ_FAULT_STEP_DELAY` after each step, so that a signal lands between two steps and not after
the run's end. A kill in the middle of a checkpoint write is covered by tests/test_resume.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from runs import TUNEWIZ, cli, events, step_losses, write_preset

from tunewiz.run.directory import RunDir
from tunewiz.run.lock import probe

pytestmark = pytest.mark.slow

STEPS = 12
DELAY = {"TUNEWIZ_FAULT_STEP_DELAY": "0.4"}
SLOW = {"TUNEWIZ_FAULT_STEP_DELAY": "5"}  # time for a few more CLI calls while the run trains


def _preset(where: Path, model: Path, data: Path, name: str, **train: int) -> Path:
    return write_preset(
        where / f"{name}.yaml",
        model,
        data,
        train={"max_steps": STEPS, **train},
        checkpoint={"every_n_steps": 3, "keep_last": 10},
    )


def _adapter(run: Path) -> bytes:
    return (run / "final" / "adapter" / "adapter_model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_dataset: Path) -> Path:
    work = tmp_path_factory.mktemp("reference")
    result = cli("train", str(_preset(work, tiny_model_dir, tiny_dataset, "ref")), "--no-tui", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "runs" / "ref"


class Launches:
    """`tunewiz` processes started by a test, and every process they start; all killed at teardown."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.seen: dict[int, psutil.Process] = {}

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*TUNEWIZ, *args],
            cwd=self.cwd,
            env={**os.environ, "TMPDIR": str(self.cwd), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal in a test reaches only the process it is sent to
        )
        self.seen[proc.pid] = psutil.Process(proc.pid)
        return proc

    def tree(self, pid: int) -> list[psutil.Process]:
        """``pid``'s descendants now (torchrun, the ranks); remembered for the teardown."""
        found = psutil.Process(pid).children(recursive=True)
        self.seen.update({p.pid: p for p in found})
        return found

    def kill_all(self) -> None:
        for proc in self.seen.values():
            try:
                proc.kill()  # psutil checks that the pid still names the process it saw
            except psutil.Error:
                pass


@pytest.fixture
def launches(tmp_path: Path) -> Iterator[Launches]:
    started = Launches(tmp_path)
    yield started
    started.kill_all()


def _role(proc: psutil.Process) -> str:
    """``agent`` for torchrun (and its helper processes), ``rank`` for a recipe process, else ``""``."""
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:  # gone, or a zombie nobody reaped yet
        return ""
    if "torch.distributed.run" in cmdline:  # its argv names the recipe module too: test it first
        return "agent"
    return "rank" if "tunewiz.train.recipe" in cmdline else ""


def _live_training(launches: Launches, timeout: float = 30) -> list[psutil.Process]:
    """Every torchrun agent or rank a test started that still runs (zombies do not) once torchrun had
    ``timeout`` seconds to tear down after its ranks."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in launches.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and _role(proc):
                    alive.append(proc)
            except psutil.Error:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen[str] | None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "events.jsonl").is_file() and any(
            e["event"] == "step" and e["step"] >= step for e in events(run)
        ):
            return
        assert proc is None or proc.poll() is None, proc.communicate() if proc else None
        time.sleep(0.05)
    raise AssertionError(f"no step {step} event")


def _wait_until_free(run: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while probe(RunDir(run)).running:
        assert time.monotonic() < deadline, "the run's processes did not exit"
        time.sleep(0.1)


def _assert_one_writer(run: Path) -> None:
    """Each launch's steps rise strictly, and a launch ends before the next one starts."""
    launch: list[int] = []
    for event in events(run):
        if event["event"] == "start":
            launch = []
        elif event["event"] == "step":
            assert not launch or event["step"] > launch[-1], (
                f"steps interleave: {launch} then {event['step']}"
            )
            launch.append(event["step"])


def _resume_to_the_end(run: Path, reference: Path, cwd: Path, *args: str) -> None:
    result = cli("resume", str(run), "--no-tui", *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "incomplete" not in result.stdout + result.stderr
    starts = [e for e in events(run) if e["event"] == "start"]
    loaded = Path(starts[-1]["resumed_from"])
    assert (loaded / "COMPLETE").is_file(), f"{loaded} was loaded without its COMPLETE marker"
    _assert_one_writer(run)
    assert step_losses(run) == pytest.approx(step_losses(reference), rel=1e-5)
    if "--nproc-per-node" not in args:
        assert _adapter(run) == _adapter(reference), "the resumed adapter must be byte-identical"


def _stop_event(run: Path) -> dict:
    stops = [e for e in events(run) if e["event"] == "stop"]
    assert stops, [e["event"] for e in events(run)]
    return stops[-1]


def test_sigkill_to_the_launcher_stops_the_ranks_and_resumes_exactly(
    reference: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, launches: Launches
) -> None:
    preset = _preset(tmp_path, tiny_model_dir, tiny_dataset, "run")
    run = tmp_path / "runs" / "run"
    parent = launches.start("train", str(preset), "--no-tui", env=DELAY)
    _wait_for_step(run, 2, parent)
    launches.tree(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    assert probe(RunDir(run)).state == "orphaned"  # the ranks still hold the run while they stop
    _wait_until_free(run)
    stop = _stop_event(run)
    assert stop["reason"] == "orphaned" and f"(pid {parent.pid}), exited" in stop["detail"]
    assert (run / "checkpoints" / f"step-{stop['step']}" / "COMPLETE").is_file()
    assert not _live_training(launches)
    _resume_to_the_end(run, reference, tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_to_the_launcher_stop_gracefully(
    reference: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_dataset: Path,
    launches: Launches,
    sig: signal.Signals,
) -> None:
    run = tmp_path / "runs" / "run"
    parent = launches.start(
        "train", str(_preset(tmp_path, tiny_model_dir, tiny_dataset, "run")), "--no-tui", env=DELAY
    )
    _wait_for_step(run, 2, parent)
    launches.tree(parent.pid)
    parent.send_signal(sig)
    out, err = parent.communicate(timeout=120)
    assert parent.returncode == 130, out + err
    stop = _stop_event(run)
    assert stop["reason"] == "signal" and stop["step"] < STEPS
    assert "stopped on request" in out and f"tunewiz resume {run}" in out.replace("runs/run", str(run))
    assert (run / "loss.png").is_file() and not (run / "STOP").exists()
    assert probe(RunDir(run)).state == "free"
    _resume_to_the_end(run, reference, tmp_path)


def test_sigkill_to_the_torchrun_agent_leaves_no_orphan_training(
    reference: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, launches: Launches
) -> None:
    run = tmp_path / "runs" / "run"
    parent = launches.start(
        "train", str(_preset(tmp_path, tiny_model_dir, tiny_dataset, "run")), "--no-tui", env=DELAY
    )
    _wait_for_step(run, 2, parent)
    agent = next(p for p in psutil.Process(parent.pid).children() if _role(p) == "agent")
    launches.tree(parent.pid)
    agent.kill()
    out, err = parent.communicate(timeout=120)  # the launcher waits for the orphaned rank
    assert parent.returncode == 1, out + err
    stop = _stop_event(run)
    assert stop["reason"] == "orphaned" and f"torchrun agent (pid {agent.pid}) exited" in stop["detail"]
    assert "because its torchrun agent" in out
    assert not _live_training(launches)
    _resume_to_the_end(run, reference, tmp_path)


def test_sigkill_to_one_rank_of_two_resumes_to_the_same_losses(
    reference: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, launches: Launches
) -> None:
    run = tmp_path / "runs" / "run"
    preset = _preset(tmp_path, tiny_model_dir, tiny_dataset, "run", micro_batch_size=2)  # same global batch
    parent = launches.start("train", str(preset), "--no-tui", "--nproc-per-node", "2", env=DELAY)
    _wait_for_step(run, 4, parent)
    ranks = [p for p in launches.tree(parent.pid) if _role(p) == "rank"]
    assert len(ranks) == 2
    ranks[1].kill()
    out, err = parent.communicate(timeout=180)
    assert parent.returncode == 1, out + err
    _wait_until_free(run)
    assert not _live_training(launches)
    _resume_to_the_end(run, reference, tmp_path, "--nproc-per-node", "2")


def test_a_second_resume_while_the_first_runs_is_refused(
    reference: Path, tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, launches: Launches
) -> None:
    preset = _preset(tmp_path, tiny_model_dir, tiny_dataset, "run")
    run = tmp_path / "runs" / "run"
    crashed = cli("train", str(preset), "--no-tui", cwd=tmp_path, env={"TUNEWIZ_FAULT_KILL": "step@4"})
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr
    # The first resume runs in the background (`--detach`), outliving the command that started it.
    started = cli("resume", "runs/run", "--no-tui", "--detach", cwd=tmp_path, env=SLOW)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "resuming runs/run from step-3" in started.stdout
    holder = probe(RunDir(run)).holder
    assert holder is not None and holder.detached
    launches.seen[holder.pid] = psutil.Process(holder.pid)
    assert "tunewiz watch runs/run" in started.stdout and "tunewiz stop runs/run" in started.stdout
    _wait_for_step(run, 4, None)
    launches.tree(holder.pid)

    for args in (("resume", "runs/run"), ("train", str(preset), "--overwrite")):
        refused = cli(*args, "--no-tui", cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"in use: a trainer is running there (pid {holder.pid} on host" in refused.stderr
    assert (run / "checkpoints").is_dir()  # --overwrite deleted nothing

    stopped = cli("stop", "runs/run", cwd=tmp_path)
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert "stopped on request at step" in stopped.stdout
    watched = cli("watch", "runs/run", "--no-tui", cwd=tmp_path)
    assert watched.returncode == 130 and "resumable from step-" in watched.stdout
    assert "stopped on request" in (run / "logs" / "launcher.log").read_text()
    _resume_to_the_end(run, reference, tmp_path)
