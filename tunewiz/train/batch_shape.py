"""Which samples each rank trains on in each optimizer step, and how far the run has come.

The data position is counted in samples: optimizer step k of an epoch takes the samples
``order[k*G : (k+1)*G]`` of that epoch's order, with G = micro_batch × accumulation × world size
(the global batch). Rank r takes the r-th contiguous slice of G/world samples and splits it into
`accumulation` micro-batches. The set of samples in an optimizer step depends only on G, so
micro-batch 4 × accumulation 1 and micro-batch 1 × accumulation 4 train on the same samples, and a
resume with another split of the same G continues the same order.

:class:`StepBatches` is the one owner of the batch shape during a launch; :class:`Progress` is the
position that checkpoints save. Neither imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


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


def check_one_global_batch(num_samples: int, shape: BatchShape) -> None:
    """Refuse a training set too small for one optimizer step. The launcher asks right after the data
    phase (before a run directory is made or emptied), the recipe again with the shape it trains with.

    Args:
        num_samples: training samples (packed rows when packing).
        shape: the batch shape.

    Raises:
        TunewizError: ``num_samples`` < the global batch; the hint is a micro-batch that fits.
    """
    from tunewiz.errors import TunewizError

    if steps_per_epoch(num_samples, shape.global_batch) > 0:
        return
    fitting = num_samples // shape.world_size
    hint = (
        f"`--set train.micro_batch_size={fitting} --set train.grad_accum=1` takes "
        f"{fitting * shape.world_size} samples per step; or add data"
        if fitting
        else f"add data: every one of the {shape.world_size} ranks needs at least one sample per step"
    )
    raise TunewizError(
        f"the training set has {num_samples} samples, fewer than one global batch ({shape.global_batch} = "
        f"micro_batch_size {shape.micro_batch_size} × grad_accum {shape.grad_accum} × {shape.world_size} "
        "rank(s))",
        hint=hint,
    )


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


@dataclass
class Progress:
    """How far a run has come. The data position is counted in samples, so a resume with another
    micro-batch or accumulation (same global batch) continues the same data order.

    ``progress.json`` stores these fields plus the split in use (``micro_batch_size``, ``grad_accum``:
    see :meth:`as_json`), which :meth:`from_json` reads back as ``saved_split``.
    """

    step: int = 0  # optimizer steps done
    # The data position: index of the epoch whose order is read (0-based); after an epoch's last step it is
    # already the next one. Surfaces show tunewiz.run.events.epoch_of_step instead.
    epoch: int = 0
    sample_offset: int = 0  # samples of this epoch's order already consumed, all ranks together
    tokens_total: int = 0  # trained (non-masked) tokens so far
    elapsed: float = 0.0  # training seconds so far, summed over launches
    # (micro_batch_size, grad_accum) in use when the checkpoint was saved: it may differ from the
    # preset's after an OOM fallback. None for a run that was never saved.
    saved_split: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def trained_epoch(self) -> int:
        """The 1-based epoch of the last step trained (0 before the first): what every surface shows
        (the ``epoch`` of ``step`` events, see :func:`tunewiz.run.events.epoch_of_step`).

        A position at sample 0 of an epoch after some steps means the previous epoch just ended.
        """
        if self.step == 0:
            return 0
        return self.epoch if self.sample_offset == 0 else self.epoch + 1

    def advance(
        self, *, tokens: int, seconds: float, global_batch: int, num_samples: int, total_steps: int
    ) -> bool:
        """Count one finished optimizer step; return whether it ended an epoch.

        At the end of an epoch (the next global batch would not fit) the position moves to the start
        of the next epoch, unless this was the run's last step.

        Args:
            tokens: trained tokens of the step, all ranks.
            seconds: the step's wall time.
            global_batch: samples the step consumed, all ranks.
            num_samples: training samples in one epoch.
            total_steps: the run's step budget.
        """
        self.step += 1
        self.tokens_total += tokens
        self.elapsed += seconds
        self.sample_offset += global_batch
        epoch_ended = self.sample_offset + global_batch > num_samples
        if epoch_ended and self.step < total_steps:
            self.epoch, self.sample_offset = self.epoch + 1, 0
        return epoch_ended

    def as_json(self, shape: BatchShape) -> dict[str, Any]:
        """The ``progress`` object of ``progress.json``, with the split ``shape`` in use.

        Args:
            shape: the batch shape the run trains with now.
        """
        fields = asdict(self)
        del fields["saved_split"]
        return {**fields, "micro_batch_size": shape.micro_batch_size, "grad_accum": shape.grad_accum}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        """Read the ``progress`` object of ``progress.json`` back (see :meth:`as_json`).

        Args:
            data: the object as loaded from JSON.
        """
        data = dict(data)
        split = data.pop("micro_batch_size", 0), data.pop("grad_accum", 0)
        return cls(**data, saved_split=split if all(split) else None)


class StepBatches:
    """The one owner of the batch shape during a launch, and of which samples each step takes.

    It starts with the preset's split, takes the saved split when a checkpoint is restored (an OOM
    fallback carries over a resume), and halves the micro-batch on OOM; the global batch never
    changes, so neither does the data order.

    Args:
        shape: the preset's split.
        num_samples: training samples in one epoch.
        epoch_order: the sample order of an epoch (all samples), given its 0-based index.
    """

    def __init__(self, shape: BatchShape, num_samples: int, epoch_order: Callable[[int], list[int]]) -> None:
        self._shape = shape
        self.num_samples = num_samples
        self._epoch_order = epoch_order
        self._order: tuple[int, list[int]] | None = None  # (epoch, its order), computed when first asked

    @property
    def shape(self) -> BatchShape:
        """The split in use now."""
        return self._shape

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return steps_per_epoch(self.num_samples, self._shape.global_batch)

    def restore(self, saved_split: tuple[int, int] | None) -> None:
        """Continue with the split a checkpoint was saved with (None: keep the preset's).

        Args:
            saved_split: ``Progress.saved_split`` of the restored checkpoint.
        """
        if saved_split is not None:
            self._shape = BatchShape(*saved_split, self._shape.world_size)

    def halve(self) -> BatchShape:
        """The OOM fallback (see :meth:`BatchShape.halved`); returns the new shape."""
        self._shape = self._shape.halved()
        return self._shape

    def micro_batches(self, progress: Progress, rank: int) -> list[list[int]]:
        """This rank's micro-batches (sample indices) for the step after ``progress``.

        Args:
            progress: the run's position (epoch and sample offset).
            rank: this process's rank.
        """
        if progress.sample_offset + self._shape.global_batch > self.num_samples:
            # A run's last step leaves the position at its epoch's end (Progress.advance); a resume that
            # trains further (more max_steps or epochs) starts the next epoch here.
            progress.epoch, progress.sample_offset = progress.epoch + 1, 0
        if self._order is None or self._order[0] != progress.epoch:
            self._order = progress.epoch, self._epoch_order(progress.epoch)
        return rank_micro_batches(self._order[1], progress.sample_offset, self._shape, rank)
