"""Packing samples into rows, the resumable per-epoch order, and padding a batch into tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tunewiz.data.samples import IGNORE_INDEX, Sample

if TYPE_CHECKING:
    import torch


def pack(samples: list[Sample], max_seq_len: int) -> list[Sample]:
    """Greedily pack consecutive samples into rows of at most ``max_seq_len`` tokens.

    Positions restart at 0 for each sample and ``document_ids`` number the samples within the row, so
    attention stays inside a sample. Labels never cross samples: each sample's last label is IGNORE_INDEX.
    Which samples share a row is :func:`pack_bounds`.

    Args:
        samples: unpacked samples, each at most ``max_seq_len`` long.
        max_seq_len: row length limit.
    """
    bounds = pack_bounds([len(s.input_ids) for s in samples], max_seq_len)
    rows: list[Sample] = []
    for first, end in zip(bounds[:-1], bounds[1:], strict=True):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        docs: list[int] = []
        for doc, sample in enumerate(samples[first:end]):
            ids.extend(sample.input_ids)
            labels.extend(sample.labels)
            positions.extend(range(len(sample.input_ids)))
            docs.extend([doc] * len(sample.input_ids))
        rows.append(Sample(ids, labels, positions, docs))
    return rows


def pack_bounds(lengths: Sequence[int], max_seq_len: int) -> list[int]:
    """Where packed rows start: row ``r`` holds samples ``bounds[r]`` to ``bounds[r + 1] - 1``.

    Greedy, in order: a sample starts a new row when it would not fit in the current one.

    Args:
        lengths: sample lengths in tokens, each at most ``max_seq_len``.
        max_seq_len: row length limit.

    Returns:
        ``len(rows) + 1`` sample indices, from 0 to ``len(lengths)`` ([0] when there is no sample).
    """
    bounds = [0]
    used = 0
    for i, length in enumerate(lengths):
        if used and used + length > max_seq_len:
            bounds.append(i)
            used = 0
        used += length
    if used:
        bounds.append(len(lengths))
    return bounds


def epoch_order(num_samples: int, *, epoch: int, seed: int, shuffle: bool) -> list[int]:
    """The order of sample indices in an epoch; the same arguments always give the same order.

    Resume relies on this: the data position is (epoch, index into this order).

    Args:
        num_samples: dataset size.
        epoch: 0-based epoch.
        seed: run seed.
        shuffle: False keeps the dataset order.
    """
    if not shuffle:
        return list(range(num_samples))
    import torch

    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_samples, generator=generator).tolist()


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad samples to the longest one and stack them.

    Returns ``input_ids`` [B, T] (pad_id on padding) and ``labels`` [B, T] (IGNORE_INDEX on padding). Packed
    rows add ``position_ids`` [B, T] and ``attn_mask`` [B, 1, T, T] (bool, True = may attend): causal
    within each document; padding forms a document of its own so no attention row is empty.

    Args:
        samples: the batch.
        pad_id: the tokenizer's pad id.
    """
    import torch

    longest = max(len(s.input_ids) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, longest), pad_id, dtype=torch.long)
    labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(samples):
        input_ids[row, : len(s.input_ids)] = torch.tensor(s.input_ids, dtype=torch.long)
        labels[row, : len(s.labels)] = torch.tensor(s.labels, dtype=torch.long)
    out = {"input_ids": input_ids, "labels": labels}
    if samples[0].position_ids is None:
        return out
    positions = torch.zeros((batch, longest), dtype=torch.long)
    docs = torch.full((batch, longest), -1, dtype=torch.long)  # -1: padding's own document
    for row, s in enumerate(samples):
        positions[row, : len(s.input_ids)] = torch.tensor(s.position_ids, dtype=torch.long)
        docs[row, : len(s.input_ids)] = torch.tensor(s.document_ids, dtype=torch.long)
    causal = torch.ones((longest, longest), dtype=torch.bool).tril()  # [T, T]
    same_doc = docs[:, :, None] == docs[:, None, :]  # [B, T, T]
    out["position_ids"] = positions
    out["attn_mask"] = (same_doc & causal)[:, None]  # [B, 1, T, T]
    return out
