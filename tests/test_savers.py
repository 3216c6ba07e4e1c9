"""The memory savers as preset fields, through the real CLI on the tiny model: the optimizer step in
backward makes the same update as the ordinary step; torchao's 8-bit AdamW trains; the schema refuses
the step in backward with accumulation or clipping. (Activation offloading only acts on CUDA; its
planner model is tested in tests/test_fit_story.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from runs import cli, step_losses, write_preset

from tunewiz.preset.schema import TrainSection

NO_CLIP = {"max_grad_norm": None}


def test_step_in_backward_needs_no_accumulation_and_no_clipping() -> None:
    with pytest.raises(ValueError, match="optimizer_in_backward needs grad_accum 1 and max_grad_norm null"):
        TrainSection(optimizer_in_backward=True)
    with pytest.raises(ValueError, match="got grad_accum 2"):
        TrainSection(optimizer_in_backward=True, max_grad_norm=None, grad_accum=2)
    assert TrainSection(optimizer_in_backward=True, max_grad_norm=None).optimizer_in_backward


@pytest.mark.slow
def test_step_in_backward_equals_the_ordinary_step(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    losses = {}
    for name, extra in (("plain", {}), ("inbwd", {"optimizer_in_backward": True})):
        preset = write_preset(
            tmp_path / f"{name}.yaml", tiny_model_dir, tiny_dataset, train={**NO_CLIP, **extra}
        )
        result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        losses[name] = step_losses(tmp_path / "runs" / name)
    assert len(losses["plain"]) == 6
    assert losses["inbwd"] == pytest.approx(losses["plain"], rel=1e-5)


@pytest.mark.slow
def test_adamw8bit_trains(tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path) -> None:
    preset = write_preset(
        tmp_path / "eight.yaml",
        tiny_model_dir,
        tiny_dataset,
        model={"dtype": "bf16"},
        train={"optimizer": "adamw8bit"},
    )
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    losses = list(step_losses(tmp_path / "runs" / "eight").values())
    assert len(losses) == 6 and all(loss == loss for loss in losses) and losses[-1] < losses[0]


@pytest.mark.slow
def test_step_in_backward_with_two_fsdp_ranks(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path
) -> None:
    # FSDP2 sets each sharded gradient after its reduce-scatter and runs the parameter's
    # post-accumulate-grad hooks: two ranks of micro-batch 2 make the update one rank of 4 makes.
    runs = {}
    for name, train, ranks in (
        ("one", {**NO_CLIP, "optimizer_in_backward": True}, "1"),
        ("two", {**NO_CLIP, "optimizer_in_backward": True, "micro_batch_size": 2}, "2"),
    ):
        preset = write_preset(tmp_path / f"{name}.yaml", tiny_model_dir, tiny_dataset, train=train)
        result = cli("train", str(preset), "--no-tui", "--nproc-per-node", ranks, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        runs[name] = step_losses(tmp_path / "runs" / name)
    assert runs["two"] == pytest.approx(runs["one"], rel=1e-5)
