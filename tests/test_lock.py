"""One trainer per run directory: the lock, its refusals, stale and remote holders, multi-node joins,
and the run states that `tunewiz watch` and `tunewiz stop` report. Real processes hold the locks; no
training runs here (tests/test_faults.py has the end-to-end battery)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runs import TUNEWIZ, write_preset

from tunewiz.errors import TunewizError
from tunewiz.run.directory import RunDir
from tunewiz.run.lock import HEARTBEAT_TIMEOUT_S, RunLock, acquire_or_join, clear_stale, probe
from tunewiz.run.status import run_status

HOLDER = r"""
import sys, time
from pathlib import Path
from tunewiz.run.directory import RunDir
from tunewiz.run.lock import RunLock, hold_ranks_lock

run, what = RunDir(Path(sys.argv[1])), sys.argv[2]
if what == "ranks":
    hold_ranks_lock(run)
else:
    RunLock.acquire(run, command="holder", rdzv_id=sys.argv[3], node_rank=0, nnodes=int(sys.argv[4]))
print("ready", flush=True)
time.sleep(600)
"""

# Stands in for rank 0 of a live run: holds the lock like a launcher, writes events like the recipe,
# and honours the STOP file at each step.
WRITER = r"""
import sys, time
from pathlib import Path
from tunewiz.run.directory import RunDir
from tunewiz.run.events import EventWriter
from tunewiz.run.lock import RunLock

run = RunDir(Path(sys.argv[1]))
lock = RunLock.acquire(run, command="writer")
w = EventWriter(run.events)
w.write("start", run="w", total_steps=1000, step=0)
for s in range(1, 1001):
    time.sleep(0.05)
    w.write("step", step=s, loss=1.0)
    if run.stop_request.exists():
        ckpt = run.checkpoint(s)
        ckpt.mkdir(parents=True)
        (ckpt / "COMPLETE").write_text("{}")
        w.write("checkpoint", step=s, path=str(ckpt))
        resume = f"tunewiz resume {run.path}"
        w.write("stop", step=s, reason="signal", checkpoint=str(ckpt), resume_command=resume)
        run.stop_request.unlink()
        break
lock.release()
"""


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start helper processes; every one is killed at the end of the test."""
    started: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str, ready: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=_env(tmp_path)
        )
        started.append(proc)
        if ready:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNEWIZ, *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=120
    )


def test_a_held_lock_is_refused_named_and_released_by_the_kernel(tmp_path: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    run = RunDir(tmp_path / "run")
    holder = spawn(HOLDER, str(run.path), "lock", "r", "1")
    status = probe(run)
    assert status.state == "held" and status.running and status.holder is not None
    assert status.holder.pid == holder.pid and status.holder.host == socket.gethostname()
    with pytest.raises(TunewizError) as refused:
        RunLock.acquire(run, command="second", doing="resume it")
    message = str(refused.value)
    assert (
        f"cannot resume it: run `{run.path}` is in use: a trainer is running there (pid {holder.pid} on host"
        in message
    )
    assert f"`tunewiz watch {run.path}`" in message and f"`tunewiz stop {run.path}`" in message
    assert refused.value.exit_code == 2

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert probe(run).state == "dead"  # lock.json left behind, flock released by the kernel
    with RunLock.acquire(run, command="after") as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == holder.pid
        assert json.loads((run.path / "lock.json").read_text())["pid"] == os.getpid()
    assert probe(run).state == "free" and not (run.path / "lock.json").exists()


def test_ranks_outliving_their_launcher_keep_the_run_locked(tmp_path: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    spawn(HOLDER, str(run.path), "ranks")
    assert probe(run).state == "orphaned"
    with pytest.raises(TunewizError, match="ranks are finishing their step and saving a checkpoint"):
        RunLock.acquire(run, command="resume")
    assert run_status(run).phase == "stopping"


def _fake_holder(run: RunDir, *, host: str, age_s: float) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    now = time.time()
    holder = dict(
        pid=4242, host=host, started=now - age_s - 60, heartbeat=now - age_s, command="x", rdzv_id="r"
    )
    (run.path / "lock.json").write_text(json.dumps(holder))


def test_a_holder_on_another_host_is_live_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _fake_holder(run, host="gpu-node-7", age_s=5)
    assert probe(run).state == "remote"
    with pytest.raises(
        TunewizError, match=r"in use: a trainer is running there \(pid 4242 on host gpu-node-7"
    ):
        RunLock.acquire(run, command="x")
    with pytest.raises(TunewizError, match="cannot unlock it"):
        clear_stale(run)


def test_a_silent_remote_holder_is_stale_explained_and_never_taken_silently(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    _fake_holder(run, host="gpu-node-7", age_s=HEARTBEAT_TIMEOUT_S + 600)
    assert probe(run).state == "stale"
    with pytest.raises(TunewizError) as refused:
        RunLock.acquire(run, command="x")
    assert "heartbeat stopped more than" in refused.value.message and "probably died" in refused.value.message
    assert f"`tunewiz unlock {run.path}`" in str(refused.value.hint)
    result = _cli("unlock", str(run.path), cwd=tmp_path)
    assert result.returncode == 0 and "cleared the lock of pid 4242 on host gpu-node-7" in result.stdout
    assert probe(run).state == "free"


def test_other_nodes_join_only_the_same_rendezvous(tmp_path: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    run = RunDir(tmp_path / "run")
    spawn(HOLDER, str(run.path), "lock", "run-r", "2")  # node 0 of 2 holds the lock
    joined = acquire_or_join(run, command="n1", rdzv_id="run-r", node_rank=1, nnodes=2, doing="train")
    assert joined is None  # joined without a lock of its own
    with pytest.raises(TunewizError, match="its rendezvous id is `run-r`, this launcher's is `other`"):
        acquire_or_join(run, command="n1", rdzv_id="other", node_rank=1, nnodes=2, doing="train")
    with pytest.raises(TunewizError, match="node rank 0 is already running there"):
        acquire_or_join(run, command="n0", rdzv_id="run-r", node_rank=0, nnodes=2, doing="train")
    with pytest.raises(TunewizError, match="is in use"):  # a single-node launch never joins
        acquire_or_join(run, command="x", rdzv_id="run-r", node_rank=0, nnodes=1, doing="train")


def test_train_resume_chat_and_push_refuse_a_live_run(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, spawn
) -> None:  # type: ignore[no-untyped-def]
    preset = write_preset(tmp_path / "live.yaml", tiny_model_dir, tiny_dataset)
    run = tmp_path / "runs" / "live"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(preset.read_text())
    (run / "events.jsonl").write_text(json.dumps({"event": "start", "time": time.time(), "step": 0}) + "\n")
    (run / "precious").write_text("an earlier checkpoint")
    holder = spawn(HOLDER, str(run), "lock", "live", "1")
    who = f"pid {holder.pid} on host {socket.gethostname()}"
    rel = "runs/live"  # as the user types it, and as every message must repeat it
    for args in (
        ("train", str(preset)),
        ("train", str(preset), "--overwrite"),
        ("resume", rel),
        ("chat", rel, "--prompt", "hi"),
        ("push", rel, "--repo-id", "you/live", "--dry-run"),
    ):
        result = _cli(*args, *(["--no-tui"] if args[0] in ("train", "resume") else []), cwd=tmp_path)
        err = result.stderr
        assert result.returncode == 2, (args, result.stdout, err)
        assert f"is in use: a trainer is running there ({who}" in err, (args, err)
        assert f"hint: follow it with `tunewiz watch {rel}`, or stop it with `tunewiz stop {rel}`" in err
        assert "--overwrite`" not in err and "tunewiz resume" not in err, (args, err)
    assert (run / "precious").read_text() == "an earlier checkpoint"  # --overwrite deleted nothing


def test_stop_asks_a_live_run_to_stop_and_reports_its_state(tmp_path: Path, spawn) -> None:  # type: ignore[no-untyped-def]
    run = RunDir(tmp_path / "run")
    spawn(WRITER, str(run.path), ready=False)
    deadline = time.monotonic() + 60
    while not (run.events.is_file() and '"step"' in run.events.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    watching = subprocess.Popen(
        [*TUNEWIZ, "watch", str(run.path), "--no-tui", "--every", "1000"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None
    headline = watching.stdout.readline()  # watch has seen the run live before it is stopped
    stopped = _cli("stop", str(run.path), cwd=tmp_path)
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert f"asked run {run.path} to stop" in stopped.stdout
    step = run_status(run).step
    assert (
        f"run {run.path} stopped on request at step {step}/1000; resumable from step-{step}" in stopped.stdout
    )
    assert f"tunewiz resume {run.path}" in stopped.stdout
    again = _cli("stop", str(run.path), cwd=tmp_path)
    assert again.returncode == 130 and again.stdout.startswith("nothing to stop: ")
    watched, _ = watching.communicate(timeout=60)
    assert watching.returncode == 130, watched
    assert headline.startswith(f"run {run.path} is running (pid ") and "stopped on request" in watched


@pytest.mark.parametrize(
    ("events", "phase", "code", "says"),
    [
        ([("start", {}), ("step", {"step": 3}), ("end", {"step": 3})], "finished", 0, "✓ run"),
        (
            [("start", {}), ("step", {"step": 3}), ("stop", {"step": 2, "reason": "signal"})],
            "stopped",
            130,
            "stopped on request at step 2/6; resumable from step-2",
        ),
        (
            [
                ("start", {}),
                ("step", {"step": 3}),
                ("stop", {"step": 2, "reason": "orphaned", "detail": "X"}),
            ],
            "interrupted",
            1,
            "stopped at step 2/6 because X; resumable from step-2",
        ),
        ([("start", {}), ("step", {"step": 3})], "crashed", 1, "crashed at step 3/6: nothing holds its lock"),
    ],
)
def test_watch_says_the_state_and_exits_with_its_code(
    tmp_path: Path, events: list, phase: str, code: int, says: str
) -> None:
    run = RunDir(tmp_path / "run")
    (run.checkpoint(2)).mkdir(parents=True)
    (run.checkpoint(2) / "COMPLETE").write_text("{}")
    lines = [
        {"event": kind, "time": time.time(), **({"total_steps": 6, "step": 0} if kind == "start" else fields)}
        for kind, fields in events
    ]
    run.events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert run_status(run).phase == phase
    result = _cli("watch", str(run.path), "--no-tui", cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout
    if phase != "finished":
        assert f"tunewiz resume {run.path}" in result.stdout


def test_the_holder_keeps_its_heartbeat_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewiz.run.lock as run_lock

    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    run = RunDir(tmp_path / "run")
    with RunLock.acquire(run, command="beating") as lock:
        started = lock.holder.started
        deadline = time.monotonic() + 10
        while json.loads((run.path / "lock.json").read_text())["heartbeat"] <= started:
            assert time.monotonic() < deadline, "the heartbeat was never refreshed"
            time.sleep(0.05)


def test_overwrite_empties_the_run_but_keeps_the_held_lock_file(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    from tunewiz.preset.files import load_preset
    from tunewiz.train.launcher import prepare_run_dir

    preset, _ = load_preset(str(write_preset(tmp_path / "again.yaml", tiny_model_dir, tiny_dataset)))
    run = RunDir(tmp_path / "runs" / "again")
    with RunLock.acquire(run, command="train --overwrite"):
        inode = (run.path / "lock").stat().st_ino
        run.checkpoint(2).mkdir(parents=True)
        run.events.write_text('{"event": "start"}\n')
        prepare_run_dir(preset, run.path, overwrite=True)
        assert not run.checkpoints.exists() and not run.events.exists() and run.config.is_file()
        assert (run.path / "lock").stat().st_ino == inode  # the very file this process holds
        assert probe(run).state == "held"


def test_an_existing_run_gets_the_hint_that_fits_its_state(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, trained_run: Path
) -> None:
    import shutil

    from tunewiz.errors import TunewizError
    from tunewiz.preset.files import load_preset
    from tunewiz.train.launcher import prepare_run_dir

    preset, _ = load_preset(str(write_preset(tmp_path / "again.yaml", tiny_model_dir, tiny_dataset)))
    # A finished run has nothing to resume: use it or train it longer.
    finished = shutil.copytree(trained_run, tmp_path / "finished")
    with pytest.raises(TunewizError) as info:
        prepare_run_dir(preset, finished, overwrite=False)
    assert f"`tunewiz resume {finished} --set train.max_steps=N`" in info.value.hint
    assert f"`tunewiz chat {finished}`" in info.value.hint and "--overwrite" in info.value.hint
    # A run that stopped with a checkpoint is continued by resume.
    stopped = RunDir(tmp_path / "stopped")
    stopped.checkpoint(2).mkdir(parents=True)
    stopped.events.write_text('{"event": "start"}\n')
    with pytest.raises(TunewizError) as info:
        prepare_run_dir(preset, stopped.path, overwrite=False)
    assert info.value.hint.startswith(f"continue it with `tunewiz resume {stopped.path}`")
