"""The training loop's bookkeeping without torch: which samples a step takes, the run's position, the
batch split's one owner, and when the loop validates and checkpoints."""

from __future__ import annotations

import json

from tunewiz.run.events import epoch_of_step, total_epochs
from tunewiz.train.batch_shape import BatchShape, Progress, StepBatches, rank_micro_batches


def _order(epoch: int) -> list[int]:
    """A different order per epoch, as shuffling gives: 10 samples rotated by the epoch."""
    return [(i + epoch) % 10 for i in range(10)]


def test_same_global_batch_takes_the_same_samples_in_every_split() -> None:
    order = _order(0)
    whole = rank_micro_batches(order, 4, BatchShape(4, 1, 1), rank=0)
    split = rank_micro_batches(order, 4, BatchShape(1, 4, 1), rank=0)
    ranks = [rank_micro_batches(order, 4, BatchShape(1, 2, 2), rank=r) for r in (0, 1)]
    assert whole == [[4, 5, 6, 7]]
    assert split == [[4], [5], [6], [7]]
    assert ranks == [[[4], [5]], [[6], [7]]]


def test_progress_advance_reports_the_end_of_each_epoch_and_moves_on() -> None:
    p = Progress()
    ended = [
        p.advance(tokens=3, seconds=0.5, global_batch=4, num_samples=10, total_steps=5) for _ in range(5)
    ]
    # 10 samples, 4 per step: steps 2 and 4 end an epoch (the 2-sample tail is dropped).
    assert ended == [False, True, False, True, False]
    assert (p.step, p.epoch, p.sample_offset, p.tokens_total, p.elapsed) == (5, 2, 4, 15, 2.5)


def test_trained_epoch_is_the_one_based_epoch_of_the_step_just_trained() -> None:
    # 10 samples, 4 per step: 2 steps per epoch; a 5-step budget (max_steps) touches 3 epochs.
    p, shown = Progress(), []
    for _ in range(5):
        p.advance(tokens=1, seconds=0.1, global_batch=4, num_samples=10, total_steps=5)
        shown.append((p.trained_epoch, epoch_of_step(p.step, steps_per_epoch=2)))
    assert shown == [(1, 1), (1, 1), (2, 2), (2, 2), (3, 3)]
    assert Progress().trained_epoch == 0 and total_epochs(5, steps_per_epoch=2) == 3
    # Bounded by epochs, the last step does not move on: still the last epoch.
    p = Progress()
    for _ in range(4):
        p.advance(tokens=1, seconds=0.1, global_batch=4, num_samples=10, total_steps=4)
    assert (p.epoch, p.trained_epoch, total_epochs(4, steps_per_epoch=2)) == (1, 2, 2)


def test_progress_stays_at_the_end_of_the_last_epoch() -> None:
    p = Progress()
    for _ in range(2):
        ended = p.advance(tokens=1, seconds=1.0, global_batch=4, num_samples=10, total_steps=2)
    assert ended and (p.epoch, p.sample_offset) == (0, 8)  # the run is done: no next epoch


def test_a_run_resumed_past_its_last_step_starts_the_next_epoch() -> None:
    # `tunewiz resume RUN --set train.max_steps=N` on a finished run: its last step left the position at
    # the end of an epoch; the next step takes a full batch of the next epoch, not an empty one.
    p = Progress()
    for _ in range(2):
        p.advance(tokens=1, seconds=1.0, global_batch=4, num_samples=10, total_steps=2)
    batches = StepBatches(BatchShape(4, 1, 1), num_samples=10, epoch_order=_order)
    assert batches.micro_batches(p, rank=0) == [[1, 2, 3, 4]]  # epoch 1's order starts at 1
    assert (p.epoch, p.sample_offset) == (1, 0)


def test_progress_json_keeps_the_split_in_use_and_reads_it_back() -> None:
    p = Progress(step=3, epoch=1, sample_offset=8, tokens_total=40, elapsed=2.0)
    saved = json.loads(json.dumps(p.as_json(BatchShape(2, 2, 1))))
    assert saved == {
        "step": 3,
        "epoch": 1,
        "sample_offset": 8,
        "tokens_total": 40,
        "elapsed": 2.0,
        "micro_batch_size": 2,
        "grad_accum": 2,
    }
    back = Progress.from_json(saved)
    assert back == p and back.saved_split == (2, 2)
    assert Progress.from_json({"step": 0, "micro_batch_size": 0, "grad_accum": 0}).saved_split is None


def test_step_batches_own_the_shape_through_restore_and_oom_halving() -> None:
    asked: list[int] = []

    def order(epoch: int) -> list[int]:
        asked.append(epoch)
        return _order(epoch)

    batches = StepBatches(BatchShape(4, 1, 1), num_samples=10, epoch_order=order)
    assert batches.steps_per_epoch == 2
    p = Progress()
    assert batches.micro_batches(p, rank=0) == [[0, 1, 2, 3]]
    batches.restore(None)  # a checkpoint of a run never saved with another split
    assert batches.shape == BatchShape(4, 1, 1)
    batches.restore((2, 2))  # a checkpoint saved after an OOM fallback
    assert batches.shape == BatchShape(2, 2, 1)
    assert batches.halve() == BatchShape(1, 4, 1) == batches.shape
    assert batches.steps_per_epoch == 2  # the global batch never changes
    p.advance(tokens=1, seconds=0.1, global_batch=4, num_samples=10, total_steps=9)
    assert batches.micro_batches(p, rank=0) == [[4], [5], [6], [7]]
    p.advance(tokens=1, seconds=0.1, global_batch=4, num_samples=10, total_steps=9)  # epoch 0 ends
    assert batches.micro_batches(p, rank=0) == [[1], [2], [3], [4]]  # epoch 1's order
    assert asked == [0, 1]  # each epoch's order is computed once
