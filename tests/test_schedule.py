"""The learning-rate schedule: warm-up, decay, and the warning for a warm-up the run never finishes."""

from __future__ import annotations

import pytest

from tunewiz.preset.schema import TrainSection
from tunewiz.train.optim import lr_factor, warmup_warning


def test_warm_up_rises_to_the_peak_then_cosine_decays_to_the_floor() -> None:
    cfg = TrainSection(lr=1e-3, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    factors = [lr_factor(step, total_steps=20, cfg=cfg) for step in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert factors[-1] > 0.1  # the floor is reached at step 20, one past the last
    assert lr_factor(20, total_steps=20, cfg=cfg) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_a_warm_up_as_long_as_the_run_is_a_warning_with_a_setting_that_fixes_it() -> None:
    cfg = TrainSection(lr=2e-3, warmup_steps=10)
    text = warmup_warning(8, cfg)
    assert text is not None
    assert "peaks at 0.0016" in text and "never reaches train.lr 0.002" in text
    fixed = TrainSection(lr=2e-3, warmup_steps=int(text.split("train.warmup_steps=")[1].split("`")[0]))
    assert warmup_warning(8, fixed) is None
    assert warmup_warning(100, cfg) is None
    assert warmup_warning(8, TrainSection(warmup_steps=0)) is None
