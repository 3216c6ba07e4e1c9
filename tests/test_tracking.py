"""Experiment tracking (issue 19), at the level of the event sink: real TensorBoard, MLflow (SQLite store)
and W&B (offline) libraries, fed by the real EventWriter with the events a recipe writes. The
end-to-end runs through the CLI are in tests/test_tracking_e2e.py."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tracking_readers import (
    as_timeline,
    final_timeline,
    tensorboard_points,
    wandb_offline_runs,
    wandb_timeline,
)

from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.run.events import EventWriter, read_events
from tunewiz.tracking import open_tracking, report_eval
from tunewiz.tracking.base import StartContext, redact
from tunewiz.tracking.metrics import eval_metrics, flat_params, metrics_of
from tunewiz.tracking.wandb_tracker import init_kwargs


@pytest.fixture(autouse=True)
def _hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No tracker may reach the network or the user's home: W&B offline, its folders in tmp; W&B's
    process-wide settings (it reads the environment once) are reset between tests."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts in ./mlruns
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    yield
    _exit_wandb()


def _run_dir(tmp_path: Path, report_to: list[str], **train: Any) -> tuple[RunDir, Preset]:
    run = RunDir(tmp_path / "runs" / "sink-test")
    run.path.mkdir(parents=True)
    preset = Preset.model_validate(
        {
            "name": "sink-test",
            "device": "cpu",
            "model": {"path": "tunewiz:tiny", "dtype": "fp32"},
            "data": {"path": "tunewiz:story-qa"},
            "train": {"lr": 1e-3, **train},
            "output": {"report_to": report_to},
        }
    )
    run.config.write_text(yaml.safe_dump(preset.model_dump(mode="json")))
    run.plan.write_text(json.dumps({"peak_bytes": 123456789, "breakdown_bytes": {"weights": 1000}}))
    return run, preset


def _step(step: int, loss: float) -> dict[str, Any]:
    return {
        "event": "step",
        "step": step,
        "epoch": 0,
        "loss": loss,
        "lr": 1e-3 * step / 7,
        "grad_norm": 0.1 + step / 3,
        "tokens": 100 + step,
        "tokens_total": 100 * step,
        "tokens_per_s": 1234.5678 / step,
        "peak_memory_bytes": [2**30 + step, 2**30 + 2 * step],
        "elapsed": 0.5 * step,
    }


def _launch(run: RunDir, preset: Preset, start_step: int, events: list[dict[str, Any]]) -> None:
    """One launch as rank 0 writes it: start, the events, then the log is closed."""
    writer = EventWriter(run.events)
    sink = open_tracking(run, preset, warn=lambda m: writer.write("warning", message=m, step=None))
    assert sink is not None
    writer.add_sink(sink)
    resumed = str(run.checkpoint(start_step)) if start_step else None
    writer.write("start", run=preset.name, step=start_step, resumed_from=resumed)
    for event in events:
        writer.write(event["event"], **{k: v for k, v in event.items() if k != "event"})
    writer.close()
    _exit_wandb()


def _exit_wandb() -> None:
    """What the end of rank 0's process does to W&B: stop its service process, which closes the
    offline run's transaction log (`run.finish()` returns before the file is complete)."""
    if sys.modules.get("wandb") is not None:
        sys.modules["wandb"].teardown()


FIRST = [  # a launch that dies after step 5; its last complete checkpoint is step 4
    _step(1, 2.5),
    _step(2, 2.25),
    {"event": "eval", "step": 2, "val_loss": 2.4},
    {"event": "checkpoint", "step": 2, "path": "ckpt/step-2"},
    {"event": "oom_fallback", "step": 3, "micro_batch_size": 2, "grad_accum": 2, "reason": "test"},
    _step(3, 2.125),
    _step(4, 2.0625),
    {"event": "checkpoint", "step": 4, "path": "ckpt/step-4"},
    _step(5, 9.0),  # replayed by the second launch (with another value, so the test can tell)
]
SECOND = [
    _step(5, 1.875),
    _step(6, 1.75),
    {"event": "eval", "step": 6, "val_loss": 1.9},
    {"event": "checkpoint", "step": 6, "path": "ckpt/step-6"},
    {"event": "end", "step": 6, "elapsed": 3.0, "final_dir": "final", "tokens_total": 600},
]


def test_metrics_table_and_params() -> None:
    step, values = metrics_of(_step(3, 2.0))
    assert step == 3 and values["train/loss"] == 2.0 and values["memory/peak_bytes/rank_1"] == 2**30 + 6
    assert metrics_of({"event": "eval", "step": 4, "val_loss": 1.5}) == (4, {"val/loss": 1.5})
    assert metrics_of({"event": "checkpoint", "step": 4, "path": "x"}) == (4, {"checkpoint/saved": 1.0})
    assert metrics_of({"event": "warning", "step": None, "message": "x"}) is None
    assert metrics_of({"event": "start", "step": 0}) is None
    flat = flat_params({"train": {"lr": 1e-3, "betas": [0.9, 0.99]}, "model": {"revision": None}}, {"a": 1})
    assert flat == {"train.lr": 1e-3, "train.betas": "0.9,0.99", "model.revision": "null", "plan.a": 1}
    tasks = {"qa": {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.1, "acc": None}}
    assert eval_metrics(tasks) == {"eval/qa/exact_match_strict-match": 0.5}


def test_event_writer_hands_sinks_every_event_in_file_order(tmp_path: Path) -> None:
    seen: list[str] = []

    class Sink:
        def __call__(self, event: dict[str, Any]) -> None:
            seen.append(event["event"])
            if event["event"] == "start":  # a sink that warns while it handles an event
                writer.write("warning", message="from the sink", step=None)

        def close(self) -> None:
            writer.write("warning", message="closing", step=None)

    writer = EventWriter(tmp_path / "events.jsonl")
    writer.add_sink(Sink())
    writer.write("start", step=0)
    writer.write("step", step=1, loss=1.0)
    writer.close()
    in_file = [e["event"] for e in read_events(tmp_path / "events.jsonl")]
    assert in_file == ["start", "warning", "step", "warning"]
    assert seen == ["start", "warning", "step"]  # the sink is closed before its last words


def test_tensorboard_shows_the_final_timeline_before_and_after_a_resume(tmp_path: Path) -> None:
    run, preset = _run_dir(tmp_path, ["tensorboard"])
    _launch(run, preset, 0, FIRST)
    before = read_events(run.events)
    assert as_timeline(tensorboard_points(run.tensorboard)) == final_timeline(before, float32=True)
    _launch(run, preset, 4, SECOND)
    after = read_events(run.events)
    shown = as_timeline(tensorboard_points(run.tensorboard))  # fails if step 5 shows twice
    assert shown == final_timeline(after, float32=True)
    assert shown["train/loss"][5] == 1.875  # the replayed step's new value, not the first launch's 9.0
    assert json.loads(run.trackers.read_text())["tensorboard"]["log_dir"] == str(run.tensorboard.resolve())


def test_tensorboard_default_loader_serves_the_scalars(tmp_path: Path) -> None:
    """`tensorboard --logdir` with its default (Rust) data server lists the run's scalars: it ignores
    double-precision tensor scalars, so this guards the summary format."""
    import socket
    import subprocess
    import time
    import urllib.request

    run, preset = _run_dir(tmp_path, ["tensorboard"])
    _launch(run, preset, 0, FIRST)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run.path.parent), "--port", str(port)]
    argv += ["--host", "127.0.0.1", "--load_fast", "true"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tags: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while not tags and time.monotonic() < deadline:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags") as r:
                    tags = json.loads(r.read())
            except OSError:
                continue
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert {"train/loss", "val/loss", "memory/peak_bytes/rank_1"} <= set(tags["sink-test/tensorboard"])


def test_mlflow_history_holds_every_logged_value_and_params_hold_the_preset(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    run, preset = _run_dir(tmp_path, ["mlflow"], micro_batch_size=4)
    _launch(run, preset, 0, FIRST)
    run_id = json.loads(run.trackers.read_text())["mlflow"]["run_id"]
    resumed = preset.model_copy(update={"train": preset.train.model_copy(update={"micro_batch_size": 2})})
    _launch(run, resumed, 4, SECOND)
    record = json.loads(run.trackers.read_text())["mlflow"]
    assert record["run_id"] == run_id, "the resumed launch must continue the same MLflow run"
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    events = read_events(run.events)
    logged = [(e["step"], e["loss"]) for e in events if e["event"] == "step"]
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(history) == sorted(logged)  # step 5 twice: MLflow cannot drop the replayed point
    assert [m.value for m in client.get_metric_history(run_id, "val/loss")] == [2.4, 1.9]
    mlrun = client.get_run(run_id)
    params = mlrun.data.params
    assert params["train.lr"] == "0.001" and params["model.path"] == "tunewiz:tiny"
    assert params["output.report_to"] == "mlflow" and params["plan.peak_bytes"] == "123456789"
    assert params["train.micro_batch_size"] == "4"  # immutable; the change is a tag
    assert mlrun.data.tags["tunewiz.changed_on_resume.train.micro_batch_size"] == "4 -> 2"
    assert mlrun.data.tags["tunewiz.run_dir"] == str(run.path.resolve())
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "sink-test"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"loss.png", "config.yaml", "plan.json"} <= artifacts


def test_wandb_offline_run_holds_the_history_and_a_resume_keeps_the_run_id(tmp_path: Path) -> None:
    run, preset = _run_dir(tmp_path, ["wandb"])
    _launch(run, preset, 0, FIRST)
    _launch(run, preset, 4, SECOND)
    events = read_events(run.events)
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    first, second = wandb_offline_runs(run.path / "wandb")
    record = json.loads(run.trackers.read_text())["wandb"]
    assert first["id"] == second["id"] == record["id"] and record["mode"] == "offline"
    assert not first["resume"] and second["resume"]  # `wandb sync` continues the same run
    assert wandb_timeline(first["history"]) == final_timeline(events[: starts[1]])
    assert wandb_timeline(second["history"]) == final_timeline(events[starts[1] :])
    assert first["config"]["train.lr"] == 0.001 and first["config"]["plan.peak_bytes"] == 123456789
    assert second["summary"]["outcome"] == "finished"
    assert second["summary"]["run_dir"] == str(run.path.resolve())
    assert second["summary"]["loss_curve"]["_type"] == "image-file"


def test_eval_results_reach_every_recorded_tracker(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    run, preset = _run_dir(tmp_path, ["tensorboard", "mlflow", "wandb"])
    _launch(run, preset, 0, FIRST[:4] + [{"event": "end", "step": 2}])
    warnings = report_eval(run, {"story_qa": {"exact_match,none": 0.25, "exact_match_stderr,none": 0.1}})
    _exit_wandb()
    assert warnings == []
    name = "eval/story_qa/exact_match_none"
    assert tensorboard_points(run.tensorboard)[name] == [(2, 0.25)]
    record = json.loads(run.trackers.read_text())
    history = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_metric_history(
        record["mlflow"]["run_id"], name
    )
    assert [(m.step, m.value) for m in history] == [(2, 0.25)]
    *_, evaluated = wandb_offline_runs(run.path / "wandb")
    assert evaluated["id"] == record["wandb"]["id"] and evaluated["summary"][name] == 0.25


def test_a_tracker_that_cannot_start_is_one_warning_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: find_spec() says None
    monkeypatch.delenv("WANDB_MODE")  # online, and nobody is logged in
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    run, preset = _run_dir(tmp_path, ["mlflow", "wandb", "tensorboard"])
    _launch(run, preset, 0, FIRST[:2])
    warnings = [e["message"] for e in read_events(run.events) if e["event"] == "warning"]
    assert warnings == [
        "tracking: mlflow is not installed; `pip install 'tunewiz[tracking]'` "
        "(training goes on without mlflow)",
        "tracking: wandb is not logged in; run `wandb login`, or set `WANDB_MODE=offline` to keep the run "
        "on disk and `wandb sync` it later (training goes on without wandb)",
    ]
    assert list(json.loads(run.trackers.read_text())) == ["tensorboard"]
    assert as_timeline(tensorboard_points(run.tensorboard))["train/loss"] == {1: 2.5, 2: 2.25}


def test_redact_removes_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", key)
    text = f"POST https://user:s3cret@mlflow.example.com/api failed\nkey={key}"
    assert redact(text) == "POST https://***@mlflow.example.com/api failed key=***"


def test_wandb_rewinds_online_replays_and_resumes_otherwise(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    new = StartContext(run=run, name="r", params={})
    assert [set(k) - {"project", "entity", "name", "dir", "mode"} for k in init_kwargs(new, None)] == [set()]
    record = {"id": "abc123", "project": "p", "mode": "online"}
    replay = StartContext(run=run, name="r", params={}, resume_step=4, last_logged_step=5, record=record)
    rewind, allow = init_kwargs(replay, "online")
    assert rewind["resume_from"] == "abc123?_step=5" and "id" not in rewind and "resume" not in rewind
    assert allow["id"] == "abc123" and allow["resume"] == "allow" and allow["project"] == "p"
    (offline,) = init_kwargs(replay, "offline")  # W&B cannot rewind an offline run
    assert offline["resume"] == "allow"
    no_replay = StartContext(run=run, name="r", params={}, resume_step=4, last_logged_step=4, record=record)
    assert [k.get("resume") for k in init_kwargs(no_replay, "online")] == ["allow"]
