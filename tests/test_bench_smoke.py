"""Smoke test of bench/train_speed.py's harness pieces (no timing assertions, no model training)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import train_speed  # noqa: E402


def test_corpus_targets_are_the_inputs_shifted_by_one() -> None:
    batches = train_speed._corpus(torch)
    assert len(batches) == 8
    inputs, targets = batches[0]
    assert inputs.shape == targets.shape == (train_speed.BATCH, train_speed.SEQ)
    assert inputs.is_contiguous() and targets.is_contiguous()
    torch.testing.assert_close(inputs[:, 1:], targets[:, :-1])
    torch.testing.assert_close(train_speed._corpus(torch)[3][0], batches[3][0])  # fixed, not re-drawn


def test_flops_per_token_counts_lora_without_weight_gradients() -> None:
    d, i, v, layers, t = 512, 1408, 8000, 6, 256
    n = layers * (4 * d * d + 3 * d * i) + d * v
    assert train_speed.flops_per_token("full") == 6 * n + 12 * layers * d * t
    assert train_speed.flops_per_token("lora") == 4 * n + 8 * layers * d * t


def test_table_reports_tunewiz_ratio_to_each_framework() -> None:
    mib = 2**20
    results = {
        "bf16-lora-qv": {
            "tunewiz": train_speed.Result([1500.0, 1600.0, 1550.0], 300 * mib, 9.0974),
            "hf+peft": train_speed.Result([1000.0, 1100.0], 400 * mib, 9.0974),
        }
    }
    text = train_speed.table(results, {"fp32": 100.0, "bf16": 400.0})
    rows = [line for line in text.splitlines() if line.startswith("| bf16-lora-qv")]
    assert len(rows) == 2
    assert "| 1,550 | 1,500–1,600 | 300 MiB | — |" in rows[0]
    assert "| 1.48× |" in rows[1]  # median of 1500/1000 and 1600/1100 (the third round is unpaired)


def test_gpu_check_runs_on_cpu_with_tiny_shapes(tmp_path: Path) -> None:
    # bench/gpu_check.py (issue 22) end to end on ~1M-parameter shapes, without the recipe section (its six
    # `tunewiz train` runs are the recipe tests' job): peaks beside the planner, speed vs transformers + peft,
    # decode; the JSON and the Markdown are written.
    import json

    import gpu_check

    code = gpu_check.main(
        ["--out", str(tmp_path), "--device", "cpu", "--tiny", "--only", "peaks", "train_speed", "decode"]
    )
    assert code == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    peaks = report["sections"]["peaks"]
    assert len(peaks) == 8 and all("failed" not in r and r["planned_bytes"] > 0 for r in peaks), peaks
    speed = report["sections"]["train_speed"]
    assert speed["tunewiz_tokens_per_s"] > 0 and speed["hf_peft_tokens_per_s"] > 0, speed
    assert report["sections"]["decode"]["tunewiz_decode_tokens_per_s"] > 0
    assert "| 8b | qlora | 2 |" in (tmp_path / "gpu_check.md").read_text()
