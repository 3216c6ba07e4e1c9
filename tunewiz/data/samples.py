"""Token samples: truncation to ``max_seq_len`` (right, left or drop) and shifted labels.

The tokens of a row come from the prompt builder (``tunewiz.text.prompt.PromptBuilder``), the same
code that builds prompts at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

IGNORE_INDEX = -100  # label of positions that carry no loss (prompt, padding); torch cross_entropy's default
TruncationMode = Literal["right", "left", "drop"]


@dataclass(frozen=True)
class Sample:
    """One training row.

    ``labels`` are already shifted: ``labels[t]`` is the target predicted at position ``t``
    (``input_ids[t + 1]``) when that token is trained, else IGNORE_INDEX (-100); the last position
    is IGNORE_INDEX.
    Packed rows also carry ``position_ids`` (restarting per sample) and ``document_ids`` (which
    sample of the row each position belongs to, for the block-diagonal attention mask).
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None
    document_ids: list[int] | None = None


def truncate(
    tokens: np.ndarray, trained: np.ndarray, max_seq_len: int, mode: TruncationMode, bos_id: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Fit a sample into ``max_seq_len`` tokens, or None when ``mode`` is ``drop`` and it is longer.

    ``right`` keeps the first ``max_seq_len`` tokens (the prompt; a long reply loses its end).
    ``left`` keeps the last ones (the reply; a long prompt loses its beginning), after the bos token
    when the sample starts with one, so the model still sees a sequence start.

    Args:
        tokens: token ids, an ``(n,)`` int array.
        trained: per token, whether it is a loss target, an ``(n,)`` bool array.
        max_seq_len: longest allowed sample.
        mode: ``right``, ``left`` or ``drop``.
        bos_id: the tokenizer's bos id (kept first by ``left``), or None.
    """
    import numpy as np

    if len(tokens) <= max_seq_len:
        return tokens, trained
    if mode == "drop":
        return None
    if mode == "right":
        return tokens[:max_seq_len], trained[:max_seq_len]
    keep_bos = bos_id is not None and tokens[0] == bos_id and max_seq_len > 1
    if keep_bos:
        tail = max_seq_len - 1
        return np.concatenate((tokens[:1], tokens[-tail:])), np.concatenate((trained[:1], trained[-tail:]))
    return tokens[-max_seq_len:], trained[-max_seq_len:]


@dataclass(frozen=True)
class SampleColumns:
    """Samples end to end, as flat arrays (what a prepared entry stores, tunewiz.data.prepared).

    Attributes:
        tokens: ``(T,)`` int32, every sample's input ids, one after the other.
        labels: ``(T,)`` int32, the shifted labels (see :class:`Sample`).
        sizes: ``(n,)`` int64, each sample's length; they add up to T.
        sources: ``(n,)`` int32, each sample's dataset (its index in ``data.path``).
    """

    tokens: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    sources: np.ndarray

    @classmethod
    def join(cls, tokens: list[np.ndarray], trained: list[np.ndarray], sources: list[int]) -> SampleColumns:
        """Samples from their tokens and trained masks (each at most ``max_seq_len`` long), with shifted
        labels: ``labels[t] = tokens[t + 1]`` where that token is trained, else IGNORE_INDEX; a sample's
        last position has no next token in it and is IGNORE_INDEX.

        Args:
            tokens: per sample, its ids (int array).
            trained: per sample, whether each token is a loss target (bool array of the same length).
            sources: per sample, its dataset's index.
        """
        import numpy as np

        sizes = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flat = np.concatenate(tokens).astype(np.int32) if tokens else np.zeros(0, np.int32)
        labels = np.full(len(flat), IGNORE_INDEX, dtype=np.int32)
        if len(flat):
            targets = np.concatenate(trained)[1:]
            labels[:-1] = np.where(targets, flat[1:], IGNORE_INDEX)
            labels[np.cumsum(sizes) - 1] = IGNORE_INDEX  # each sample's last position
        return cls(flat, labels, sizes, np.asarray(sources, dtype=np.int32))

    def samples(self) -> list[Sample]:
        """The samples as :class:`Sample` lists."""
        import numpy as np

        bounds = [0, *np.cumsum(self.sizes).tolist()]
        tokens, labels = self.tokens.tolist(), self.labels.tolist()
        return [Sample(tokens[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
