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


@pytest.fixture(scope="module")
def in_backward(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_dataset: Path) -> Path:
    """One rank, no clipping, the optimizer step in backward: both tests below compare a run with it."""
    work = tmp_path_factory.mktemp("in_backward")
    train = {**NO_CLIP, "optimizer_in_backward": True}
    preset = write_preset(work / "inbwd.yaml", tiny_model_dir, tiny_dataset, train=train)
    result = cli("train", str(preset), "--no-tui", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "runs" / "inbwd"


@pytest.mark.slow
def test_step_in_backward_equals_the_ordinary_step(
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, in_backward: Path
) -> None:
    preset = write_preset(tmp_path / "plain.yaml", tiny_model_dir, tiny_dataset, train=NO_CLIP)
    result = cli("train", str(preset), "--no-tui", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    plain = step_losses(tmp_path / "runs" / "plain")
    assert len(plain) == 6
    assert step_losses(in_backward) == pytest.approx(plain, rel=1e-5)


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
    tmp_path: Path, tiny_model_dir: Path, tiny_dataset: Path, in_backward: Path
) -> None:
    # FSDP2 sets each sharded gradient after its reduce-scatter and runs the parameter's
    # post-accumulate-grad hooks: two ranks of micro-batch 2 make the update one rank of 4 makes.
    train = {**NO_CLIP, "optimizer_in_backward": True, "micro_batch_size": 2}
    preset = write_preset(tmp_path / "two.yaml", tiny_model_dir, tiny_dataset, train=train)
    result = cli("train", str(preset), "--no-tui", "--nproc-per-node", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert step_losses(tmp_path / "runs" / "two") == pytest.approx(step_losses(in_backward), rel=1e-5)
