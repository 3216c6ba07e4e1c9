"""Test support: read back what each tracker stored, with the trackers' own readers where they have one.

TensorBoard: ``plugin_event_accumulator.EventAccumulator``, the accumulator TensorBoard's UI loads runs
with (it applies ``purge_step``'s session restarts to tensor scalars; the legacy accumulator does not).
MLflow: ``MlflowClient``. W&B has no Python reader for offline runs since 0.2x (the service is in Go):
``wandb_records`` parses the ``.wandb`` file itself, a LevelDB-style log (7-byte ``:W&B`` header, 32 KiB
blocks, records of ``crc32 | length | type`` + payload) of ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

Timeline = dict[str, dict[int, float]]  # metric name -> step -> value


def final_timeline(events: list[dict[str, Any]], float32: bool = False) -> Timeline:
    """What the trackers must show, built from the raw event fields: the last value of each step.

    Args:
        events: events.jsonl, parsed.
        float32: round each value to float32, as a TensorBoard scalar summary stores it.
    """
    import numpy as np

    out: Timeline = {}

    def put(name: str, step: int, value: Any) -> None:
        out.setdefault(name, {})[step] = float(np.float32(value)) if float32 else float(value)

    for e in events:
        step = e.get("step")
        if e["event"] == "step":
            for field in ("loss", "lr", "grad_norm", "tokens_per_s", "tokens", "tokens_total", "epoch"):
                put(f"train/{field}", step, e[field])
            for rank, peak in enumerate(e["peak_memory_bytes"]):
                put(f"memory/peak_bytes/rank_{rank}", step, peak)
        elif e["event"] == "eval":
            put("val/loss", step, e["val_loss"])
        elif e["event"] == "checkpoint":
            put("checkpoint/saved", step, 1.0)
        elif e["event"] == "oom_fallback":
            put("oom/micro_batch_size", step, e["micro_batch_size"])
            put("oom/grad_accum", step, e["grad_accum"])
    return out


def tensorboard_points(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for ``log_dir``: tag -> [(step, value)] in file order."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(log_dir), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    points = {}
    for tag in acc.Tags()["tensors"]:
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        if all(v.shape == () and v.dtype.kind == "f" for _, v in values):
            points[tag] = [(step, float(v)) for step, v in values]
    return points


def as_timeline(points: dict[str, list[tuple[int, float]]]) -> Timeline:
    """Points → timeline; fails when a step appears twice for one tag."""
    out: Timeline = {}
    for tag, pts in points.items():
        steps = [s for s, _ in pts]
        assert len(steps) == len(set(steps)), f"{tag}: a step appears twice: {steps}"
        out[tag] = dict(pts)
    return out


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of one ``run-ID.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, payload, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length:  # a log whose writer was killed mid-record ends here
            break
        pos += 7 + length
        payload = chunk if kind in (1, 2) else payload + chunk  # FULL/FIRST start, MIDDLE/LAST continue
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
    return records


def wandb_offline_runs(wandb_dir: Path) -> list[dict[str, Any]]:
    """Each offline run directory under ``wandb_dir``, oldest first: id, resume flag, history rows."""
    runs = []
    for folder in sorted(wandb_dir.glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        run: dict[str, Any] = {"dir": folder, "history": [], "config": {}, "summary": {}}
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["id"], run["resume"] = record.run.run_id, bool(record.run.resume)
                for item in record.run.config.update:
                    run["config"][item.key] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    run["config"][item.key] = json.loads(item.value_json)
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                run["history"].append(row)
            elif kind == "summary":
                for item in record.summary.update:
                    run["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        runs.append(run)
    return runs


def wandb_timeline(rows: list[dict[str, Any]]) -> Timeline:
    """History rows → timeline (W&B's own keys, starting with ``_``, left out)."""
    out: Timeline = {}
    for row in rows:
        for key, value in row.items():
            if not key.startswith("_") and isinstance(value, (int, float)):
                out.setdefault(key, {})[row["_step"]] = float(value)
    return out
