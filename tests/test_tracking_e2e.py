"""Experiment tracking through the real CLI and recipe (torchrun, the tiny model): what TensorBoard,
MLflow (SQLite store) and W&B (offline) hold equals events.jsonl, before and after a crash and a resume;
`tunewiz eval` adds its results; a tracker that cannot start is one warning and the run goes on."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from runs import cli, events, write_preset
from tracking_readers import (
    as_timeline,
    final_timeline,
    tensorboard_points,
    wandb_offline_runs,
    wandb_timeline,
)

pytestmark = pytest.mark.slow
ALL = "tensorboard,mlflow,wandb"


def _env(work: Path, **extra: str) -> dict[str, str]:
    """W&B offline with its folders in `work`, MLflow in a SQLite file there; no real credentials."""
    env = {
        "WANDB_MODE": "offline",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "HOME": str(work),
        **{
            n: str(work / "wandb-home" / n.lower())
            for n in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")
        },
        **extra,
    }
    return env


def _mlflow_points(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _every_logged_point(evts: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Every (step, value) events.jsonl holds per metric, replayed steps included."""
    points: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for e in evts:
        for name, by_step in final_timeline([e]).items():
            points[name] += list(by_step.items())
    return {k: sorted(v) for k, v in points.items()}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_dataset: Path) -> Path:
    work = tmp_path_factory.mktemp("tracked")
    preset = write_preset(work / "tracked.yaml", tiny_model_dir, tiny_dataset)
    result = cli("train", str(preset), "--no-tui", "--report-to", ALL, cwd=work, env=_env(work))
    assert result.returncode == 0, result.stdout + result.stderr
    return work


def test_every_tracker_holds_exactly_the_events(tracked: Path) -> None:
    run = tracked / "runs" / "tracked"
    evts = events(run)
    assert not [e for e in evts if e["event"] in ("warning", "error")]
    expected = final_timeline(evts)
    assert set(expected) >= {
        "train/loss",
        "train/lr",
        "val/loss",
        "memory/peak_bytes/rank_0",
        "checkpoint/saved",
    }
    assert as_timeline(tensorboard_points(run / "tensorboard")) == final_timeline(evts, float32=True)
    record = json.loads((run / "trackers.json").read_text())
    assert _mlflow_points(
        record["mlflow"]["tracking_uri"], record["mlflow"]["run_id"]
    ) == _every_logged_point(evts)
    (wandb_run,) = wandb_offline_runs(run / "wandb")
    assert wandb_run["id"] == record["wandb"]["id"] and wandb_timeline(wandb_run["history"]) == expected
    assert wandb_run["config"]["lora.rank"] == 4 and wandb_run["config"]["train.lr"] == 0.01
    assert yaml.safe_load((run / "config.yaml").read_text())["output"]["report_to"] == ALL.split(",")


def test_eval_results_reach_the_trackers(tracked: Path) -> None:
    from mlflow import MlflowClient

    run = tracked / "runs" / "tracked"
    tasks = tracked / "tasks"
    tasks.mkdir()
    rows = [{"q": f"Mia has a {c} cup. What colour is it?", "c": c} for c in ("red", "blue", "green", "red")]
    (tasks / "colours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {
        "task": "tw_colour",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(tasks / "colours.jsonl")}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{q}}",
        "doc_to_choice": ["red", "blue", "green"],
        "doc_to_target": "{{['red', 'blue', 'green'].index(c)}}",
        "metric_list": [{"metric": "acc"}],
        "metadata": {"version": 1.0},
    }
    (tasks / "tw_colour.yaml").write_text(yaml.safe_dump(task))
    result = cli(
        "eval", str(run), "--tasks", "tw_colour", "--include-path", str(tasks), "--device", "cpu",
        cwd=tracked, env=_env(tracked),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr
    acc = json.loads((run / "eval" / "results.json").read_text())["tasks"]["tw_colour"]["acc"]
    last = max(e["step"] for e in events(run) if e["event"] == "step")
    assert tensorboard_points(run / "tensorboard")["eval/tw_colour/acc"] == [(last, float(np.float32(acc)))]
    record = json.loads((run / "trackers.json").read_text())
    client = MlflowClient(record["mlflow"]["tracking_uri"])
    history = client.get_metric_history(record["mlflow"]["run_id"], "eval/tw_colour/acc")
    assert [(m.step, m.value) for m in history] == [(last, acc)]
    *_, evaluated = wandb_offline_runs(run / "wandb")
    assert evaluated["id"] == record["wandb"]["id"] and evaluated["summary"]["eval/tw_colour/acc"] == acc


def test_a_crash_and_resume_continue_the_same_tracker_runs(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    preset = write_preset(
        tmp_path / "crash.yaml", tiny_model_dir, tiny_dataset, output={"report_to": ALL.split(",")}
    )
    run = tmp_path / "runs" / "crash"
    env = _env(tmp_path)
    killed = cli(
        "train", str(preset), "--no-tui", cwd=tmp_path, env={**env, "TUNEWIZ_FAULT_KILL": "checkpoint@4"}
    )
    assert killed.returncode != 0
    first = json.loads((run / "trackers.json").read_text())
    resumed = cli("resume", str(run), "--no-tui", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    evts = events(run)
    starts = [i for i, e in enumerate(evts) if e["event"] == "start"]
    assert len(starts) == 2 and evts[starts[1]]["step"] == 2  # steps 3 and 4 are replayed
    assert {e["step"] for e in evts[: starts[1]] if e["event"] == "step"} == {1, 2, 3, 4}
    record = json.loads((run / "trackers.json").read_text())
    assert record == first, "resume must continue the recorded tracker runs"

    # TensorBoard purges what the crashed launch wrote after step 2: the timeline as it finally happened.
    assert as_timeline(tensorboard_points(run / "tensorboard")) == final_timeline(evts, float32=True)

    # MLflow keeps what it received: steps 3-4 of the crashed launch (those that reached it before the
    # kill) and again from the resumed launch; every point is an events.jsonl value of its step.
    mlflow = _mlflow_points(record["mlflow"]["tracking_uri"], record["mlflow"]["run_id"])
    logged = _every_logged_point(evts)
    resumed_only = _every_logged_point(evts[starts[1] :])
    crashed_durable = _every_logged_point([e for e in evts[: starts[1]] if (e.get("step") or 0) <= 2])
    for name, points in logged.items():
        assert set(mlflow[name]) <= set(points), name
        assert set(resumed_only.get(name, [])) | set(crashed_durable.get(name, [])) <= set(mlflow[name]), name

    # W&B offline: a second offline run directory, same id, `resume` set, holding steps 3..6.
    # The crashed launch's log may be incomplete or empty: W&B's service buffers it and has no flush.
    first_wb, second_wb = wandb_offline_runs(run / "wandb")
    assert first_wb.get("id", record["wandb"]["id"]) == record["wandb"]["id"]
    assert second_wb["id"] == record["wandb"]["id"] and second_wb["resume"]
    assert wandb_timeline(second_wb["history"]) == final_timeline(evts[starts[1] :])
    assert min(wandb_timeline(second_wb["history"])["train/loss"]) == 3


def test_unreachable_trackers_are_one_warning_each_and_leak_no_secret(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    key = "0123456789abcdef" * 2 + "01234567"  # 40 characters, shaped like a W&B key
    env = _env(
        tmp_path,
        WANDB_MODE="online",
        WANDB_API_KEY=key,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens: connection refused
        WANDB_INIT_TIMEOUT="5",
        MLFLOW_TRACKING_URI="http://tunewiz:pa55word-xyz@127.0.0.1:9",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",  # the same refused retries, without backoff sleeps (4+ s)
    )
    preset = write_preset(
        tmp_path / "offline.yaml", tiny_model_dir, tiny_dataset, train={"max_steps": 2, "warmup_steps": 0}
    )
    result = cli("train", str(preset), "--no-tui", "--report-to", "mlflow,wandb", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "runs" / "offline"
    assert (run / "final").is_dir()
    warnings = [e["message"] for e in events(run) if e["event"] == "warning"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("tracking: mlflow could not reach `http://***@127.0.0.1:9`")
    assert warnings[1].startswith("tracking: wandb could not reach its server")
    assert "`WANDB_MODE=offline`" in warnings[1] and "training goes on without wandb" in warnings[1]
    shown = [line for line in result.stdout.splitlines() if line.startswith("warning: tracking:")]
    assert len(shown) == 2
    assert "Traceback" not in result.stdout + result.stderr
    everything = (
        result.stdout
        + result.stderr
        + "".join(
            p.read_text(errors="replace")
            for p in run.rglob("*")
            if p.is_file() and p.suffix in (".jsonl", ".log", ".json", ".txt", ".yaml")
        )
    )
    assert key not in everything and "pa55word-xyz" not in everything
    assert os.environ.get("WANDB_API_KEY") != key  # the test process itself was not changed
