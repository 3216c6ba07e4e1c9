"""Which samples each rank trains on in each optimizer step.

The data position is counted in samples: optimizer step k of an epoch takes the samples
``order[k*G : (k+1)*G]`` of that epoch's order, with G = micro_batch × accumulation × world size
(the global batch). Rank r takes the r-th contiguous slice of G/world samples and splits it into
`accumulation` micro-batches. The set of samples in an optimizer step depends only on G, so
micro-batch 4 × accumulation 1 and micro-batch 1 × accumulation 4 train on the same samples, and a
resume with another split of the same G continues the same order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchShape:
    """How a global batch is split: per-rank micro-batch, accumulation steps, ranks."""

    micro_batch_size: int
    grad_accum: int
    world_size: int

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step, over all ranks."""
        return self.micro_batch_size * self.grad_accum * self.world_size

    def halved(self) -> BatchShape:
        """The OOM fallback: half the micro-batch, twice the accumulation, same global batch."""
        return BatchShape(self.micro_batch_size // 2, self.grad_accum * 2, self.world_size)


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    """Full global batches in one epoch (the incomplete tail is dropped, as every rank must take part
    in every step)."""
    return num_samples // global_batch


def rank_micro_batches(order: list[int], offset: int, shape: BatchShape, rank: int) -> list[list[int]]:
    """Sample indices of this rank's micro-batches for the optimizer step starting at `offset`.

    Args:
        order: this epoch's sample order (all samples).
        offset: samples of the epoch already consumed (all ranks together).
        shape: the batch split.
        rank: this process's rank.
    """
    per_rank = shape.micro_batch_size * shape.grad_accum
    start = offset + rank * per_rank
    mine = order[start : start + per_rank]
    mb = shape.micro_batch_size
    return [mine[i : i + mb] for i in range(0, per_rank, mb)]
