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
