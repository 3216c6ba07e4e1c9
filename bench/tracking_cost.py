"""What experiment tracking costs rank 0 per logged step (target < 2 ms for TensorBoard and MLflow's
local stores), and how much CPU W&B's background service process takes.

Each tracker runs in its own fresh process, fed through the real ``EventWriter`` → ``TrackingSink`` path
with the events the recipe writes (a ``step`` event per step with two ranks' peak memory, ``eval`` and
``checkpoint`` every ``--checkpoint-every`` steps). Measured per tracker:

* start: ``open_tracking`` + the ``start`` event (library import, store/run creation), seconds;
* per step (foreground): the time the sink spends on each ``step`` event — what the training loop
  waits for on top of writing events.jsonl — mean / p50 / p95 over ``--steps`` steps;
* per step (process CPU): CPU time of the whole process (every thread: TensorBoard's writer thread,
  MLflow's async logging thread) per step, minus the same without a sink;
* checkpoint flush: the time the sink spends on a ``checkpoint`` event (it makes the data durable);
* W&B service CPU: CPU seconds of W&B's service process (a child process) over the paced part of the
  run, as a share of one core, while steps arrive at ``--rate`` per second.

    python bench/tracking_cost.py [--steps 500] [--rate 10] [--paced-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "tensorboard": ({}, "tensorboard"),
    "mlflow (sqlite)": ({"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/mlflow.db"}, "mlflow"),
    "mlflow (file store)": (
        {"MLFLOW_TRACKING_URI": "file:{tmp}/mlruns", "MLFLOW_ALLOW_FILE_STORE": "true"},
        "mlflow",
    ),
    "wandb (offline)": ({"WANDB_MODE": "offline"}, "wandb"),
}


def _step_event(step: int) -> dict[str, object]:
    return dict(
        step=step,
        epoch=0,
        loss=2.0 / (1 + step * 1e-3),
        lr=3e-4,
        grad_norm=0.7,
        tokens=4096,
        tokens_total=4096 * step,
        tokens_per_s=12345.6,
        peak_memory_bytes=[21 * 2**30, 21 * 2**30 + 7],
        elapsed=0.1 * step,
    )


class _Timed:
    """Wraps the tracking sink and keeps the seconds it spends on each event, by kind."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.seconds: dict[str, list[float]] = {}

    def __call__(self, event: dict[str, object]) -> None:
        t0 = time.perf_counter()
        self.inner(event)
        self.seconds.setdefault(str(event["event"]), []).append(time.perf_counter() - t0)

    def close(self) -> None:
        self.inner.close()


def _writes(writer: object, steps: int, every: int, pace: float | None) -> None:
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        writer.write("step", **_step_event(step))
        if step % every == 0:
            writer.write("eval", step=step, val_loss=1.9)
            writer.write("checkpoint", step=step, path=f"checkpoints/step-{step}")
        if pace:
            time.sleep(max(0.0, pace - (time.perf_counter() - t0)))


def measure_one(tracker: str, steps: int, every: int, rate: float, paced_seconds: float) -> dict[str, object]:
    """Run one tracker in this process; return its numbers (seconds)."""
    import psutil
    import yaml

    from tunewiz.preset.schema import Preset
    from tunewiz.run.directory import RunDir
    from tunewiz.run.events import EventWriter
    from tunewiz.tracking import open_tracking

    tmp = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    run = RunDir(tmp / "runs" / "bench")
    run.path.mkdir(parents=True)
    preset = Preset.model_validate(
        {
            "name": "bench",
            "model": {"path": "tunewiz:tiny"},
            "data": {"path": "tunewiz:story-qa"},
            "output": {"report_to": [tracker] if tracker != "none" else []},
        }
    )
    run.config.write_text(yaml.safe_dump(preset.model_dump(mode="json")))
    run.plan.write_text(json.dumps({"peak_bytes": 123, "breakdown_bytes": {"weights": 1}}))
    writer = EventWriter(run.events)
    t0 = time.perf_counter()
    sink = open_tracking(run, preset, warn=lambda m: writer.write("warning", message=m, step=None))
    timed = _Timed(sink)
    if sink is not None:
        writer.add_sink(timed)
    writer.write("start", step=0, resumed_from=None, run="bench")
    start_s = time.perf_counter() - t0
    me = psutil.Process()
    cpu0 = time.process_time()
    _writes(writer, steps, every, None)
    cpu_per_step = (time.process_time() - cpu0) / steps
    step_s = timed.seconds.get("step", [0.0])[:steps]
    ckpt_s = timed.seconds.get("checkpoint", [0.0])
    service_share = None
    if tracker == "wandb":
        children = me.children(recursive=True)
        before = sum(c.cpu_times().user + c.cpu_times().system for c in children)
        paced_steps = int(paced_seconds * rate)
        t1 = time.perf_counter()
        _writes(writer, paced_steps, every, 1.0 / rate)
        wall = time.perf_counter() - t1
        after = sum(c.cpu_times().user + c.cpu_times().system for c in children if c.is_running())
        service_share = (after - before) / wall
    t0 = time.perf_counter()
    writer.close()
    close_s = time.perf_counter() - t0
    warnings = [
        json.loads(line)["message"] for line in run.events.read_text().splitlines() if '"warning"' in line
    ]
    return {
        "start_s": start_s,
        "step_ms": [s * 1e3 for s in step_s],
        "ckpt_ms": [s * 1e3 for s in ckpt_s],
        "cpu_per_step_ms": cpu_per_step * 1e3,
        "service_cpu_share": service_share,
        "close_s": close_s,
        "warnings": warnings,
    }


def _run_child(name: str, args: argparse.Namespace) -> dict[str, object]:
    env_extra, tracker = CONFIGS.get(name, ({}, "none"))
    with tempfile.TemporaryDirectory(prefix="tracking-bench-env-") as tmp:
        env = {**os.environ, **{k: v.format(tmp=tmp) for k, v in env_extra.items()}}
        for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            env.setdefault(key, str(Path(tmp) / key.lower()))
        argv = [sys.executable, __file__, "--one", tracker, "--steps", str(args.steps)]
        argv += ["--checkpoint-every", str(args.checkpoint_every), "--rate", str(args.rate)]
        argv += ["--paced-seconds", str(args.paced_seconds)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument(
        "--rate", type=float, default=10.0, help="steps/s while W&B's service CPU is measured"
    )
    parser.add_argument("--paced-seconds", type=float, default=20.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(
            json.dumps(
                measure_one(args.one, args.steps, args.checkpoint_every, args.rate, args.paced_seconds)
            )
        )
        return
    base = _run_child("none", args)
    base_cpu = base["cpu_per_step_ms"]
    load = os.getloadavg()[0]
    print(f"{args.steps} steps, a checkpoint every {args.checkpoint_every}; load average {load:.1f}")
    print(f"baseline (events.jsonl only, no tracker): {base_cpu:.3f} ms process CPU per step\n")
    header = ["tracker", "start", "per step, foreground (mean / p50 / p95)", "per step, process CPU"]
    header += ["checkpoint flush", "close", "W&B service CPU"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for name in CONFIGS:
        r = _run_child(name, args)
        steps = r["step_ms"]
        p95 = statistics.quantiles(steps, n=20)[-1]
        share = r["service_cpu_share"]
        cells = [
            name,
            f"{r['start_s']:.1f} s",
            f"{statistics.mean(steps):.3f} / {statistics.median(steps):.3f} / {p95:.3f} ms",
            f"{r['cpu_per_step_ms'] - base_cpu:.3f} ms",
            f"{statistics.mean(r['ckpt_ms']):.1f} ms",
            f"{r['close_s']:.1f} s",
            "—" if share is None else f"{share:.1%} of a core at {args.rate:g} steps/s",
        ]
        print("| " + " | ".join(cells) + " |")
        if r["warnings"]:
            print(f"  warnings: {r['warnings']}")


if __name__ == "__main__":
    main()
