"""The dashboard's pure parts.

Folding events, rendering to a capture console, plain lines, summary, loss.png.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tunewiz.run.directory import CHECKPOINT_COMPLETE_MARKER, RunDir
from tunewiz.run.events import read_events
from tunewiz.ui import (
    choose_mode,
    fold_events,
    make_console,
    plain_lines,
    print_summary,
    render,
    status_line,
    write_loss_plot,
)
from tunewiz.ui.state import DashboardState, apply_event, ema
from tunewiz.units import fmt_count

GIB = 1 << 30


def start(
    step: int = 0, t: float = 1000.0, resumed_from: str | None = None, planned: int | None = 2 * GIB
) -> dict[str, Any]:
    return {
        "event": "start",
        "time": t,
        "events_version": 2,
        "run": "demo",
        "model": "tiny-llama",
        "method": "lora",
        "device": "cpu",
        "dtype": "float32",
        "world_size": 2,
        "micro_batch_size": 4,
        "grad_accum": 2,
        "global_batch_size": 16,
        "total_steps": 200,
        "steps_per_epoch": 100,
        "epochs": 2,
        "step": step,
        "resumed_from": resumed_from,
        "planned_peak_bytes": planned,
        "hardware": "CPU, 2 cores, 24 GiB",
        "num_train_samples": 1600,
        "num_val_samples": 16,
        "truncated_samples": 0,
        "trainable_params": 120_000,
        "total_params": 900_000,
    }


def step(s: int, loss: float, t0: float = 1000.0, elapsed: float | None = None) -> dict[str, Any]:
    # Setup takes 5 s, then each step 0.5 s.
    elapsed = 5 + 0.5 * s if elapsed is None else elapsed
    return {
        "event": "step",
        "time": t0 + elapsed,
        "step": s,
        "epoch": 1 + (s - 1) // 100,
        "loss": loss,
        "lr": 3e-4,
        "grad_norm": 1.25,
        "tokens": 4096,
        "tokens_total": 4096 * s,
        "tokens_per_s": 800.0 + s,
        "peak_memory_bytes": [GIB, GIB + GIB // 2],
        "elapsed": elapsed,
    }


def curve(s: int) -> float:
    return 1.0 + 3.0 * math.exp(-s / 40)


def normal_run(steps: int = 120) -> list[dict[str, Any]]:
    events = [start()]
    for s in range(1, steps + 1):
        events.append(step(s, curve(s)))
        if s % 50 == 0:
            events.append({"event": "eval", "time": 1005 + 0.5 * s, "step": s, "val_loss": curve(s) + 0.05})
            events.append(
                {
                    "event": "checkpoint",
                    "time": 1005 + 0.5 * s,
                    "step": s,
                    "path": f"runs/demo/checkpoints/step-{s}",
                }
            )
    return events


def capture(renderable: Any, width: int = 100, terminal: bool = True) -> tuple[str, str]:
    """(plain text, text with escape codes) of ``renderable`` drawn ``width`` columns wide."""
    console = Console(
        record=True,
        width=width,
        force_terminal=terminal,
        color_system="truecolor" if terminal else None,
        file=io.StringIO(),
        legacy_windows=False,
    )
    console.print(renderable)
    styled = console.file.getvalue()  # type: ignore[attr-defined]
    return console.export_text(), styled


def test_render_normal_run() -> None:
    state = fold_events(normal_run())
    text, styled = capture(render(state))
    assert "tunewiz · demo" in text
    assert "tiny-llama · lora · cpu float32 · 2 ranks · CPU, 2 cores, 24 GiB" in text
    # 120 of 200 steps; steps 1..120 took 59.5 s at 2 steps/s, so 80 steps are left: 40 s.
    assert "step 120/200 (60%) · epoch 2/2 · elapsed 1m 05s · ETA 40s" in text
    assert f"{curve(120):.4f}" in text
    # The run's throughput: the median over the steps, the first (warm-up) step left out.
    throughput = f"{statistics.median(800.0 + s for s in range(2, 121)):,.0f}"
    assert "3.00e-04" in text and "1.25" in text  # lr, grad norm
    assert re.search(rf"val loss +{curve(100) + 0.05:.4f} @ 100", text)
    assert re.search(rf"in tok/s +{throughput}\b", text) and re.search(r"trained +[\d,]+", text)
    assert "memory (RSS) rank 0" in text and "1.00 GiB of 2.00 GiB planned (50%)" in text
    assert "rank 1" in text and "1.50 GiB of 2.00 GiB planned (75%)" in text
    assert "last checkpoint: step 100 · runs/demo/checkpoints/step-100" in text
    assert "█" in text and "step 1" in text  # the chart and its step axis
    assert "warnings" not in text and "error" not in text
    assert "\x1b[" in styled  # a terminal gets colour
    assert max(len(line) for line in text.splitlines()) <= 100


def test_chart_falls_with_the_loss() -> None:
    state = fold_events(normal_run())
    text, _ = capture(render(state))
    rows = [line for line in text.splitlines() if "█" in line or "▁" in line]
    # The top chart row is filled only at the start (high loss), the bottom row in every column.
    top, bottom = rows[0], rows[-1]
    assert len(rows) == 6
    assert sum(top.count(b) for b in "▁▂▃▄▅▆▇█") < 15
    assert sum(bottom.count(b) for b in "▁▂▃▄▅▆▇█") > 60
    assert bottom.index("█") < bottom.index("▁")  # high on the left, low on the right


def test_render_oom_fallback_run() -> None:
    events = normal_run(30) + [
        {
            "event": "oom_fallback",
            "time": 1030.0,
            "step": 30,
            "micro_batch_size": 2,
            "grad_accum": 4,
            "reason": "CUDA out of memory at micro-batch 4",
        }
    ]
    state = fold_events(events)
    text, _ = capture(render(state), width=140)
    assert "warnings" in text
    assert (
        "step 30: out of memory: now micro-batch 2 × accumulation 4 (CUDA out of memory at micro-batch 4)"
        in text
    )
    assert "batch 2 × accum 4 × 2 ranks = 16" in text


def test_render_failed_rank() -> None:
    tb = 'Traceback (most recent call last):\n  File "recipes/train.py", line 12\nRuntimeError: boom'
    events = normal_run(7) + [
        {
            "event": "error",
            "time": 1010.0,
            "rank": 1,
            "message": "RuntimeError: boom",
            "traceback": tb,
            "step": 7,
        }
    ]
    state = fold_events(events)
    assert state.finished
    text, _ = capture(render(state))
    assert "rank 1 failed at step 7: RuntimeError: boom" in text
    assert 'File "recipes/train.py", line 12' in text


def test_render_nan_stop() -> None:
    events = normal_run(4) + [
        step(5, float("nan")),
        {
            "event": "stop",
            "time": 1008.0,
            "step": 5,
            "reason": "nan",
            "checkpoint": "runs/demo/checkpoints/step-4",
            "resume_command": "tunewiz resume runs/demo",
        },
    ]
    state = fold_events(events)
    text, _ = capture(render(state))
    assert "step 5: loss is nan at step 5" in text
    assert "■ stopped at step 5: loss became NaN/inf" in text
    assert "last good checkpoint: runs/demo/checkpoints/step-4" in text
    assert "resume: tunewiz resume runs/demo" in text
    assert "last checkpoint: step 4 · runs/demo/checkpoints/step-4" in text
    assert "×" in text  # the NaN step is marked in the chart


def test_render_without_plan_before_start_and_narrow() -> None:
    text, _ = capture(render(DashboardState()))
    assert "waiting for the run to start…" in text
    state = fold_events([start(planned=None), step(1, 2.0)])
    text, _ = capture(render(state), width=60)
    assert "(no plan)" in text
    assert max(len(line) for line in text.splitlines()) <= 60


def test_stop_requested_and_kill_status() -> None:
    state = fold_events(normal_run(3))
    state.stop_requested = True
    assert "stopping after this step… (Ctrl-C again to stop at once)" in capture(render(state))[0]
    state.killing = True
    assert "stopping now" in capture(render(state))[0]


def test_ema_is_bias_corrected_and_skips_nan() -> None:
    # (0.9·0.1·2 + 0.1·1) / (1 − 0.9²) = 0.28 / 0.19
    assert ema([2.0, 1.0]) == pytest.approx([2.0, 0.28 / 0.19])
    assert ema([2.0, float("nan"), 1.0])[1] == pytest.approx(2.0)
    state = fold_events([start(), step(1, 2.0), step(2, 1.0)])
    assert state.loss_ema == pytest.approx(0.28 / 0.19)


def test_fold_loss_spike_and_inf() -> None:
    events = [start()] + [step(s, 1.0) for s in range(1, 21)] + [step(21, 5.0), step(22, float("inf"))]
    state = fold_events(events)
    messages = [w.message for w in state.warnings]
    assert messages[0].startswith("loss spike at step 21: 5 is 5.0× the smoothed 1")
    assert messages[1] == "loss is inf at step 22"
    assert state.loss == math.inf


def test_fold_resume_continues_steps_and_accumulates_time() -> None:
    first = [start(t=1000.0)] + [step(s, 2.0) for s in range(1, 13)]
    first += [
        {"event": "checkpoint", "time": 1010.0, "step": 10, "path": "runs/demo/checkpoints/step-10"},
        {
            "event": "stop",
            "time": 1011.5,
            "step": 12,
            "reason": "signal",
            "checkpoint": None,
            "resume_command": "tunewiz resume runs/demo",
        },
    ]
    # The second launch starts an hour later from step 10: steps 11 and 12 are trained again.
    second = [start(step=10, t=5000.0, resumed_from="runs/demo/checkpoints/step-10")]
    second += [step(s, 1.0, t0=5000.0, elapsed=4 + 0.5 * (s - 10)) for s in range(11, 21)]
    state = fold_events(first)
    assert state.finished and state.stop is not None
    assert state.elapsed == pytest.approx(11.5)  # the stop event came 11.5 s after the start
    state = fold_events(second, state)
    assert not state.finished and state.stop is None
    assert state.launches == 2
    assert state.resumed_from == "runs/demo/checkpoints/step-10"
    assert [s for s, _ in state.losses] == list(range(1, 21))
    assert dict(state.losses)[11] == 1.0 and dict(state.losses)[10] == 2.0
    assert state.step == 20
    assert state.elapsed == pytest.approx(11.5 + 9.0)  # not the hour between the launches
    assert state.last_checkpoint == (10, "runs/demo/checkpoints/step-10")
    # The rate comes from this launch's steps only: 9 steps in 4.5 s.
    assert state.steps_per_s == pytest.approx(2.0)
    assert state.eta_s == pytest.approx(90.0)


def test_epoch_of_a_run_bounded_by_max_steps_and_of_an_old_log() -> None:
    # 20 steps of 10 per epoch. Version 2 writes the 1-based epoch of each step and the epochs touched.
    head = {"total_steps": 20, "steps_per_epoch": 10}
    new = [{**start(), **head, "epochs": 2}] + [
        {**step(s, 1.0), "epoch": 1 + (s - 1) // 10} for s in (10, 11)
    ]
    # A version-1 log (no events_version): `epochs` held train.epochs (1, capped by max_steps) and `epoch`
    # the 0-based data position, already 1 after step 10.
    old_start = {k: v for k, v in start().items() if k != "events_version"}
    old = [{**old_start, **head, "epochs": 1}] + [{**step(s, 1.0), "epoch": 1} for s in (10, 11)]
    for events in (new, old):
        state = fold_events(events[:2])
        assert status_line(state).startswith("step 10/20 (50%) | epoch 1/2 |")
        apply_event(state, events[2])
        assert status_line(state).startswith("step 11/20 (55%) | epoch 2/2 |")


def test_unknown_kinds_and_keys_are_ignored() -> None:
    state = DashboardState()
    apply_event(state, {"event": "future_kind", "time": 1.0, "x": 1})
    apply_event(state, {**start(), "new_field": [1, 2]})
    assert state.run == "demo"


def test_plain_lines_every_n_steps_and_every_event() -> None:
    events = normal_run(20) + [
        step(21, float("nan")),
        {
            "event": "stop",
            "time": 1020.0,
            "step": 21,
            "reason": "nan",
            "checkpoint": None,
            "resume_command": None,
        },
    ]
    state = DashboardState()
    lines: list[str] = []
    for e in events:
        seen = state.warnings_total
        apply_event(state, e)
        new = state.warnings[len(state.warnings) - (state.warnings_total - seen) :]
        lines += plain_lines(e, state, new, every=10)
    assert lines[0].startswith("start: run demo | model tiny-llama | method lora | cpu float32 | 2 rank(s)")
    step_lines = [ln for ln in lines if ln.startswith("step ")]
    assert [ln.split(" ")[1] for ln in step_lines] == ["1/200", "10/200", "20/200"]
    assert step_lines[-1].startswith("step 20/200 (10%) | epoch 1/2 | loss ")
    assert "mem 1.50 GiB of 2.00 GiB planned" in step_lines[-1]
    assert "warning: step 21: loss is nan at step 21" in lines
    assert lines[-1] == "stop: step 21: loss became NaN/inf; last good checkpoint: none"
    assert not any("\x1b" in ln for ln in lines)


def test_plain_console_has_no_escape_codes_even_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    console = make_console("plain")
    console.file = io.StringIO()
    state = fold_events(normal_run(50))
    console.print(render(state))
    print_summary(state, RunDir(Path("runs/demo")), console)
    out = console.file.getvalue()
    assert "tunewiz · demo" in out and "\x1b" not in out


def test_choose_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    # Under pytest stdout is captured, not a TTY.
    assert choose_mode(no_tui=False) == "plain"
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert choose_mode(no_tui=False) == "tui"
    assert choose_mode(no_tui=True) == "plain"
    monkeypatch.setenv("CI", "true")
    assert choose_mode(no_tui=False) == "plain"


def _summary(state: DashboardState, run_dir: RunDir) -> str:
    console = Console(record=True, width=120, file=io.StringIO(), color_system=None)
    print_summary(state, run_dir, console)
    return console.export_text()


def test_summary_of_a_finished_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    (run.adapter).mkdir(parents=True)
    events = normal_run(200) + [
        {
            "event": "end",
            "time": 1110.0,
            "step": 200,
            "elapsed": 110.0,
            "final_dir": str(run.final),
            "tokens_total": 819200,
        }
    ]
    text = _summary(fold_events(events), run)
    assert "✓ run demo finished: 200 steps" in text
    assert (
        f"validation loss: final {curve(200) + 0.05:.4f} (step 200), best {curve(200) + 0.05:.4f} (step 200)"
        in text
    )
    # Median tokens/s over steps 2..200 (step 1 is the warm-up): 800 + median(2..200) = 901.
    assert "time 1m 50s · 819,200 trained tokens · 901 input tokens/s" in text
    assert "peak memory 1.50 GiB per rank (planned 2.00 GiB)" in text
    assert f"adapter (PEFT format): {run.adapter}" in text
    assert f"tunewiz chat {run.path}" in text and f"tunewiz eval {run.path}" in text
    assert f"tunewiz push {run.path} --repo-id <your-user>/demo" in text


def test_summary_names_the_hub_repo_after_the_run_directory(tmp_path: Path) -> None:
    """A run of preset `tiny-lora` in `runs/my-story` suggests `<your-user>/my-story`."""
    run = RunDir(tmp_path / "runs" / "my-story")
    run.adapter.mkdir(parents=True)
    events = normal_run(20)
    events[0] = {**events[0], "run": "tiny-lora"}
    events.append({"event": "end", "time": 1110.0, "step": 20, "elapsed": 110.0, "tokens_total": 8192})
    state = fold_events(events)
    assert state.run == "tiny-lora"
    text = _summary(state, run)
    assert f"tunewiz push {run.path} --repo-id <your-user>/my-story" in text
    assert "<your-user>/tiny-lora" not in text
    assert "✓ run my-story finished" in text  # the run's name, as failures name it


def test_summary_of_a_stopped_and_a_failed_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo")
    ckpt = run.checkpoint(10)
    ckpt.mkdir(parents=True)
    (ckpt / CHECKPOINT_COMPLETE_MARKER).touch()
    run.checkpoint(12).mkdir()  # half-written: never offered
    stopped = normal_run(12) + [
        {
            "event": "stop",
            "time": 1012.0,
            "step": 12,
            "reason": "signal",
            "checkpoint": str(run.checkpoint(12)),
            "resume_command": None,
        }
    ]
    text = _summary(fold_events(stopped), run)
    assert "■ run demo stopped at step 12 on request" in text
    assert f"last good checkpoint: {ckpt}" in text
    assert f"resume with:\n  tunewiz resume {run.path}" in text

    failed = normal_run(3) + [
        {
            "event": "error",
            "time": 1003.0,
            "rank": 0,
            "message": "ValueError: bad batch",
            "traceback": None,
            "step": 3,
        }
    ]
    text = _summary(fold_events(failed), RunDir(tmp_path / "fresh"))
    assert "✗ rank 0 failed at step 3: ValueError: bad batch" in text
    assert (
        "no complete checkpoint was saved; start again with:\n  tunewiz train "
        f"{tmp_path / 'fresh' / 'config.yaml'}" in text
    )


def test_loss_plot_is_a_png(tmp_path: Path) -> None:
    events = normal_run(60) + [step(61, float("nan"))]
    out = write_loss_plot(events, tmp_path / "loss.png")
    assert out == tmp_path / "loss.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 450)
    assert write_loss_plot([start()], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_loss_chart_is_titled_scaled_past_the_first_steps_and_marks_validation() -> None:
    from tunewiz.ui.lossplot import loss_figure

    # Loss starts at 10 and settles near 2: the first steps must not flatten the rest of the curve.
    events = [start()] + [step(i, 2.0 + 8.0 * 0.5 ** (i - 1)) for i in range(1, 101)]
    events += [{"event": "eval", "time": 1000.0 + i, "step": i, "val_loss": 2.5 - i / 400} for i in (50, 100)]
    fig = loss_figure(events, "my-run")
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_title().startswith("Loss of run ")
    low, high = ax.get_ylim()
    assert high < 3.0 and low < 2.0, (low, high)  # the settled range, not 0..10
    labels = [line.get_label() for line in ax.get_lines()]
    assert "validation loss" in labels
    val_line = ax.get_lines()[labels.index("validation loss")]
    assert val_line.get_marker() == "o" and list(val_line.get_xdata()) == [50, 100]
    assert any(t.get_text() == "best 2.250" for t in ax.texts)


def test_loss_plot_from_a_written_log(tmp_path: Path) -> None:
    from tunewiz.run.events import EventWriter

    run = RunDir(tmp_path / "demo")
    with EventWriter(run.events) as writer:
        for e in normal_run(20):
            writer.write(e.pop("event"), **{k: v for k, v in e.items() if k != "time"})
    assert write_loss_plot(read_events(run.events), run.loss_plot) == run.loss_plot
    assert run.loss_plot.stat().st_size > 10_000


def test_importing_the_dashboard_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tunewiz.ui, tunewiz.cli.watch; print('matplotlib' in sys.modules, 'torch' "
        "in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_truncated_and_dropped_samples_show_in_dashboard_plain_lines_and_summary() -> None:
    from tunewiz.run.directory import RunDir
    from tunewiz.ui.render import plain_lines
    from tunewiz.ui.summary import print_summary

    events = normal_run(3)
    events[0] = {
        **events[0],
        "num_train_samples": 90,
        "num_val_samples": 4,
        "truncation": {
            "mode": "right",
            "max_seq_len": 128,
            "train": {"truncated": 3, "dropped_long": 2, "dropped_empty": 1},
            "validation": {"truncated": 0, "dropped_long": 1, "dropped_empty": 0},
        },
        "token_lengths": {"p50": 60, "p95": 140, "max": 512},
    }
    events.append({"event": "end", "time": 1100, "step": 3, "elapsed": 3.0, "final_dir": "runs/demo/final"})
    state = fold_events(events)
    note = (
        "6 of 98 samples are longer than max_seq_len 128: 3 truncated (right), 3 dropped "
        "(train 3 truncated / 2 dropped, validation 0 truncated / 1 dropped); "
        "token lengths p50 60, p95 140, max 512"
    )
    text, _ = capture(render(state), width=300)
    assert note in text
    lines = plain_lines(events[0], fold_events(events[:1]), [], every=1)
    assert f"warning: {note}" in lines
    assert any(line.startswith("hint: raise `data.max_seq_len`") for line in lines)
    console = Console(record=True, width=300, file=io.StringIO())
    print_summary(state, RunDir(Path("runs/demo")), console)
    summary = console.export_text()
    assert note in summary and "hint: raise `data.max_seq_len`" in summary
    # Nothing cut: nothing said.
    quiet = fold_events(normal_run(3))
    assert "max_seq_len" not in capture(render(quiet), width=300)[0]


def _seconds(text: str) -> int:
    """``1h 02m``, ``3m 12s``, ``12s`` (dashboard) or ``1 h 02 min``, ``3 min 12 s`` (card) in seconds."""
    units = {"h": 3600, "m": 60, "min": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+) ?(h|min|m|s)\b", text))


def test_one_run_every_surface_shows_the_same_numbers(tmp_path: Path, trained_run: Path) -> None:
    """Epoch, training time, trained tokens, throughput and peak memory of the session's trained run, as
    `tunewiz watch` (status line, summary), the dashboard, the model card and `tunewiz resume` show them."""
    from runs import cli

    from tunewiz.hub.modelcard import read_card_facts, render_model_card
    from tunewiz.train.resume import plan_resume

    copy = tmp_path / "golden"
    shutil.copytree(trained_run, copy)
    run = RunDir(copy)
    events = read_events(run.events)
    watched = cli("watch", str(copy), cwd=tmp_path)
    assert watched.returncode == 0, watched.stderr
    status = watched.stdout.splitlines()[0]
    dashboard, _ = capture(render(fold_events(events)), width=120, terminal=False)
    card, _ = render_model_card(read_card_facts(run), repo_id="alice/golden", kind="adapter")
    found = {
        "epoch": [
            re.search(r"\| epoch (\d+/\d+) \|", status).group(1),
            re.search(r"· epoch (\d+/\d+) ·", dashboard).group(1),
        ],
        "time": [
            _seconds(re.search(r"\| elapsed ([\dhms ]+)$", status).group(1)),
            _seconds(re.search(r"elapsed ([\dhms ]+?)(?: ·|\s*│)", dashboard).group(1)),
            _seconds(re.search(r" time ([\dhms ]+) ·", watched.stdout).group(1)),
            _seconds(re.search(r"\| Training time \| ([^|]+) \|", card).group(1)),
        ],
        "input tokens/s": [
            re.search(r"\| ([\d,]+) input tok/s \|", status).group(1),
            re.search(r"in tok/s +([\d,]+)", dashboard).group(1),
            re.search(r"· ([\d,]+) input tokens/s", watched.stdout).group(1),
            re.search(r"\| Throughput \| ([\d,]+) input tokens/s", card).group(1),
        ],
        "trained tokens": [
            re.search(r"trained +([\d,]+)", dashboard).group(1),
            re.search(r"· ([\d,]+) trained tokens", watched.stdout).group(1),
        ],
        "peak memory": [
            re.search(r"\| mem ([\d.]+ [KMG]iB)", status).group(1),
            re.search(r"rank 0 .*? ([\d.]+ [KMG]iB) of", dashboard).group(1),
            re.search(r"peak memory ([\d.]+ [KMG]iB) per rank", watched.stdout).group(1),
            re.search(r"\| Peak memory \| ([\d.]+ [KMG]iB)", card).group(1),
        ],
    }
    for quantity, shown in found.items():
        assert len(set(shown)) == 1, f"{quantity} differs between surfaces: {shown}"
    # Shown rounded to seconds (a quiet machine trains this run in under one); the time itself is there.
    assert fold_events(events).elapsed > 0
    # The card rounds trained tokens to thousands: the same count.
    count = int(found["trained tokens"][0].replace(",", ""))
    assert f"| Trained tokens | {fmt_count(count, thousand='k')} |" in card
    # The epoch of step 4 as the dashboard showed it then, and as resuming from step-4 names it.
    at_4 = fold_events([e for e in events if e.get("step", 0) <= 4 or e["event"] == "start"])
    shown_then = re.search(r"\| epoch (\d+)/\d+ \|", status_line(at_4)).group(1)
    plan = plan_resume(run, from_step="4", overrides=[])
    assert plan.total_hint == f"step 4, epoch {shown_then}"


def samples(s: int, outputs: list[str]) -> dict[str, Any]:
    prompts = [
        "Answer the question.\n\nTom has a red kite. What colour is the kite?",
        "Summarise [bold]this[/bold]: " + "a very long story " * 10 + "THE END?",
    ]
    return {
        "event": "samples",
        "time": 1005 + 0.5 * s,
        "step": s,
        "samples": [
            {"prompt": p, "reference": "red", "output": o} for p, o in zip(prompts, outputs, strict=True)
        ],
        "max_new_tokens": 64,
        "seconds": 1.25,
    }


def test_latest_samples_show_in_the_dashboard_and_plain_lines() -> None:
    events = normal_run(120)
    events.insert(101, samples(50, ["blue", "old reply"]))
    events.insert(-5, samples(100, ["red red", "\x19wG" + "x" * 200]))
    state = fold_events(events)
    assert state.samples is not None and state.samples["step"] == 100  # the latest
    text, _ = capture(render(state), width=120)
    assert "replies at step 100 (greedy, validation prompts)" in text
    # A prompt is one line ending with its question; markup in a prompt is text, not style.
    assert "… the question. Tom has a red kite. What colour is the kite?" in text
    assert "a very long story THE END?" in text and "[bold]" not in text  # cut before the markup
    assert "→ red red   reference: red" in text and "→ ·wGxxx" in text and "old reply" not in text
    assert max(len(line) for line in text.splitlines()) <= 120

    lines = plain_lines(events[-6], state, [], every=10)
    assert lines[:2] == [
        "samples: step 100: greedy replies to 2 validation prompts in 1.2s",
        "  … the question. Tom has a red kite. What colour is the kite? → red red  (reference: red)",
    ]
    prompt, reply = lines[2].removeprefix("  ").split(" → ")
    assert prompt == "…ery long story a very long story a very long story THE END?" and len(prompt) == 60
    assert reply == "·wG" + "x" * 76 + "…  (reference: red)"
    # A resume from before step 100 trains that step again: its replies are no longer the latest.
    resumed = fold_events([start(step=80, t=2000.0, resumed_from="runs/demo/checkpoints/step-80")], state)
    assert resumed.samples is None
    assert "→ (empty)" in capture(render(fold_events([start(), samples(2, ["", ""])])))[0]


def test_summary_of_a_run_that_failed_before_its_start_event_shows_the_error(tmp_path: Path) -> None:
    """A rank that failed before the start event (loading the model, reading data) left its error in the
    log: the summary shows it instead of saying the run wrote no events."""
    run = RunDir(tmp_path / "runs" / "bad")
    error = {"event": "error", "time": 1.0, "rank": 0, "message": "data.csv is not UTF-8", "step": None}
    text = _summary(fold_events([error]), run)
    assert "✗ run bad failed before training started: data.csv is not UTF-8" in text
    assert "wrote no events" not in text


def test_data_phase_draws_inside_the_dashboard_then_a_cache_hit_in_one_line(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runs import write_dataset, write_preset

    from tunewiz.preset.files import load_preset
    from tunewiz.ui.data_phase import prepare_data
    from tunewiz.ui.live import Screen

    monkeypatch.setenv("TUNEWIZ_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "rows.jsonl", 400)
    preset, _ = load_preset(str(write_preset(tmp_path / "demo.yaml", tiny_model_dir, data)), [])

    def frames() -> tuple[list[str], DashboardState]:
        """The dashboard's text at each redraw while the launcher finds or prepares the data."""
        screen = Screen("demo", console=Console(file=io.StringIO(), force_terminal=True, width=100))
        drawn: list[str] = []
        screen.draw = lambda: drawn.append(capture(render(screen.state))[0])  # type: ignore[method-assign]
        with screen:
            prepared = prepare_data(preset, mode="tui", screen=screen)
        assert prepared.stats.num_train + prepared.stats.num_val == 400
        return drawn, screen.state

    made, state = frames()
    preparing = [f for f in made if re.search(r"│ preparing data: \d+% · [\d,]+ rows/s · ETA \w+", f)]
    assert preparing and all(f.startswith("╭─ tunewiz · demo") for f in preparing)
    assert re.search(r"│ preparing data: 100% · 400 rows in [\d.]+ s · [\d,]+ rows/s", "".join(made))
    assert re.search(r"data: prepared entry \w{12} made \(360 train \+ 40 validation samples", made[-1])
    assert "preparing data" not in made[-1] and "waiting for the run to start…" in made[-1]
    # The training view that follows keeps the data line under the run's header.
    apply_event(state, start())
    text, _ = capture(render(state), width=200)
    assert re.search(r"tiny-llama · lora .*\n(.*\n)*.*data: prepared entry \w{12} made", text)
    assert "waiting for the run to start" not in text

    hit, _ = frames()
    assert not any("preparing data:" in f and "%" in f for f in hit)
    assert re.search(r"data: prepared entry \w{12} found \(360 train \+ 40 validation samples", hit[-1])
