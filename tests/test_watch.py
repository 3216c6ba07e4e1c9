"""The dashboard against real processes: a writer subprocess appends events while we follow them.

The writer is a few lines of Python using tunewiz.run.events.EventWriter (no torch), standing in for
a launcher and rank 0 of a torchrun recipe: it holds the run's lock and polls the STOP file like they do.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pexpect

from tunewiz.run.directory import RunDir
from tunewiz.ui import make_console, run_dashboard

WRITER = r"""
import math, sys, time, pathlib
from tunewiz.run.directory import RunDir
from tunewiz.run.events import EventWriter
from tunewiz.run.lock import RunLock

run_dir, steps, delay, mode = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
lock = RunLock.acquire(RunDir(run_dir), command="test writer")
w = EventWriter(run_dir / "events.jsonl")
w.write("start", run="demo", model="tiny-llama", method="lora", device="cpu", dtype="float32", world_size=1,
        micro_batch_size=2, grad_accum=1, global_batch_size=2, total_steps=steps, steps_per_epoch=steps,
        epochs=1, step=0, resumed_from=None, planned_peak_bytes=None, hardware="test machine",
        num_train_samples=2 * steps, num_val_samples=0, truncated_samples=0, trainable_params=1000,
        total_params=10000)
t0 = time.time()
for s in range(1, steps + 1):
    time.sleep(delay)
    w.write("step", step=s, epoch=1, loss=1 + 2 * math.exp(-s / 10), lr=1e-3, grad_norm=0.5, tokens=64,
            tokens_total=64 * s, tokens_per_s=640.0, peak_memory_bytes=[100 << 20], elapsed=time.time() - t0)
    # mode "stop" behaves like the recipe: finish this step, checkpoint, stop. "ignore" never stops.
    if mode == "stop" and (run_dir / "STOP").exists():
        ckpt = run_dir / "checkpoints" / f"step-{s}"
        w.write("checkpoint", step=s, path=str(ckpt))
        w.write(
            "stop", step=s, reason="signal", checkpoint=str(ckpt),
            resume_command=f"tunewiz resume {run_dir}",
        )
        lock.release()
        sys.exit(0)
if mode == "end":
    w.write(
        "samples", step=steps, max_new_tokens=64, seconds=0.5,
        samples=[{"prompt": "Ann has a red cup. What colour is the cup?", "reference": "red",
                  "output": "red"}],
    )
    w.write(
        "end", step=steps, elapsed=time.time() - t0, final_dir=str(run_dir / "final"),
        tokens_total=64 * steps,
    )
lock.release()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "FORCE_COLOR")}
    return {**env, "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}


def spawn_writer(run: RunDir, steps: int, delay: float, mode: str) -> subprocess.Popen[bytes]:
    # Like the launcher: its own session, so Ctrl-C in the terminal reaches only the parent.
    run.path.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run.path), str(steps), str(delay), mode],
        env=_env(),
        start_new_session=True,
    )


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def step_lines(run: RunDir) -> int:
    return run.events.read_text().count('"event": "step"') if run.events.exists() else 0


def plain_console() -> tuple:  # type: ignore[type-arg]
    console = make_console("plain")
    console.file = io.StringIO()
    return console, console.file


def test_plain_dashboard_follows_a_process_to_the_end(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=25, delay=0.02, mode="end")
    console, out = plain_console()
    state = run_dashboard(run, proc, mode="plain", plain_every=10, console=console)
    lines = out.getvalue().splitlines()
    assert state.returncode == 0 and state.end is not None and state.step == 25
    assert lines[0].startswith("start: run demo | model tiny-llama | method lora | cpu float32 | 1 rank(s)")
    assert [ln.split(" ")[1] for ln in lines if ln.startswith("step ")] == ["1/25", "10/25", "20/25", "25/25"]
    assert lines[-1].startswith("end: step 25 in ") and lines[-1].endswith(
        f"1,600 trained tokens; outputs in {run.final}"
    )
    assert "\x1b" not in out.getvalue()


def test_tui_dashboard_follows_a_process_and_leaves_the_last_frame(tmp_path: Path) -> None:
    from rich.console import Console

    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=12, delay=0.05, mode="end")
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system="truecolor")
    state = run_dashboard(run, proc, mode="tui", console=console)
    text = out.getvalue()
    assert state.end is not None and state.step == 12 and state.now is None
    assert "tunewiz · demo" in text and "✓ finished at step 12" in text
    assert text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")  # cursor shown again


def test_first_ctrl_c_asks_the_ranks_to_stop(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=600, delay=0.05, mode="stop")
    original = signal.getsignal(signal.SIGINT)

    def press_ctrl_c() -> None:
        # Only once the dashboard's handler is installed: a busy machine can write 3 steps before it is.
        wait_for(lambda: step_lines(run) >= 3 and signal.getsignal(signal.SIGINT) is not original)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    console, out = plain_console()
    state = run_dashboard(run, proc, mode="plain", plain_every=1000, console=console)
    text = out.getvalue()
    assert state.stop is not None and state.stop["reason"] == "signal"
    assert state.stop_requested and not state.killing and state.returncode == 0
    assert "stopping after this step… (Ctrl-C again to stop at once)" in text
    assert (
        f"stop: step {state.step}: stopped on request; last good checkpoint: {run.checkpoint(state.step)}"
        in text
    )
    assert f"resume with: tunewiz resume {run.path}" in text
    assert not run.stop_request.exists()  # consumed: a later resume must not stop at once
    assert signal.getsignal(signal.SIGINT) is original


def test_second_ctrl_c_terminates_the_process_group(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=600, delay=0.05, mode="ignore")

    def press_twice() -> None:
        wait_for(lambda: step_lines(run) >= 3)
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(run.stop_request.exists)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_twice, daemon=True).start()
    console, out = plain_console()
    started = time.monotonic()
    state = run_dashboard(run, proc, mode="plain", console=console)
    assert time.monotonic() - started < 20
    assert state.killing and state.returncode == -signal.SIGTERM
    assert "stopping now: terminating the training processes" in out.getvalue()
    assert not run.stop_request.exists()


def _watch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", "watch", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )


def test_watch_a_finished_run_prints_the_summary_and_exits(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    spawn_writer(run, steps=30, delay=0, mode="end").wait(timeout=60)
    result = _watch(str(run.path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("step 30/30 (100%) | epoch 1/1 | loss ")
    assert (
        "samples: step 30: greedy replies to 1 validation prompt in 0.5s\n"
        "  Ann has a red cup. What colour is the cup? → red  (reference: red)\n"
    ) in result.stdout
    assert "✓ run demo finished: 30 steps" in result.stdout
    assert f"tunewiz chat {run.path}" in result.stdout and "tunewiz resume" not in result.stdout
    assert "\x1b" not in result.stdout


def test_watch_follows_a_running_run_in_plain_mode(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=20, delay=0.1, mode="end")
    wait_for(lambda: step_lines(run) >= 1)
    result = _watch(str(run.path), "--no-tui", "--every", "5")
    proc.wait(timeout=30)
    steps = [ln.split(" ")[1] for ln in result.stdout.splitlines() if ln.startswith("step ")]
    assert result.returncode == 0, result.stderr
    headline, second = result.stdout.splitlines()[:2]
    assert headline.startswith(f"run {run.path} is running (pid ") and ": step " in headline
    assert second.startswith("start: run demo")
    assert steps == ["1/20", "5/20", "10/20", "15/20", "20/20"]
    assert "end: step 20" in result.stdout and "✓ run demo finished" in result.stdout
    assert "  Ann has a red cup. What colour is the cup? → red  (reference: red)" in result.stdout


def test_watch_rejects_a_directory_without_events(tmp_path: Path) -> None:
    result = _watch(str(tmp_path))
    assert result.returncode == 2
    assert f"error: `{tmp_path}` is not a run directory" in result.stderr
    assert "hint: " in result.stderr


def _spawn_watch_tty(run: RunDir) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "tunewiz", "watch", str(run.path)],
        env=_env(),
        dimensions=(40, 120),
        encoding="utf-8",
        # Ctrl-C makes the terminal driver discard the output it still queues (no NOFLSH), which can cut
        # a UTF-8 character of the dashboard in two: a terminal draws one replacement glyph there.
        codec_errors="replace",
        timeout=30,
    )


def test_watch_draws_the_dashboard_in_a_terminal(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=30, delay=0.15, mode="end")
    wait_for(lambda: step_lines(run) >= 1)
    child = _spawn_watch_tty(run)
    log = io.StringIO()
    child.logfile_read = log
    child.expect("tunewiz · demo")
    child.expect("tiny-llama · lora · cpu float32 · 1 rank · test machine")
    child.expect(r"step \d+/30 \(\d+%\) · epoch 1/1 · elapsed")
    child.expect("memory \\(RSS\\) rank 0")
    child.expect("replies at step 30 \\(greedy, validation prompts\\)")
    child.expect("→ red")
    child.expect("✓ finished at step 30")
    child.expect("✓ run demo finished: 30 steps")
    child.expect(pexpect.EOF)
    child.close()
    proc.wait(timeout=30)
    assert child.exitstatus == 0
    assert "\x1b[" in log.getvalue()  # a terminal gets the styled, redrawn dashboard


def test_ctrl_c_in_watch_detaches_and_restores_the_terminal(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    proc = spawn_writer(run, steps=600, delay=0.05, mode="ignore")
    try:
        wait_for(lambda: step_lines(run) >= 1)
        child = _spawn_watch_tty(run)
        log = io.StringIO()
        child.logfile_read = log
        child.expect(r"step \d+/600 \(\d+%\)")  # the dashboard's line, not the headline before it
        child.sendintr()
        child.expect("run demo is still running")
        child.expect(f"watch it again with: tunewiz watch {run.path}")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        screen = log.getvalue()
        # Live hid the cursor while drawing and showed it again on exit.
        assert "\x1b[?25l" in screen and screen.rindex("\x1b[?25h") > screen.rindex("\x1b[?25l")
        assert proc.poll() is None  # detaching leaves the run alone
    finally:
        proc.kill()
        proc.wait(timeout=10)
