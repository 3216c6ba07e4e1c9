"""What the model says while it trains: greedy replies to a few fixed validation prompts at each validation.

The prompts are the first ``train.sample_generations`` validation conversations (the validation split is
fixed by the run's seed, so they are the same at every validation and after a resume; the rows are
read again with ``tunewiz.data.plan_samples``, as training's samples were planned). Each prompt is the
conversation up to its first assistant turn, turned into ids by THE prompt builder with the run's prompt
format (``tunewiz.text.prompt.PromptBuilder.prompt_ids``): the ids ``tunewiz chat`` sends for the same
messages. The reference is that assistant turn's text, kept for display.

Decoding is greedy (argmax, no random number drawn), one prompt at a time with the KV cache of
``tunewiz.inference.generate`` (the same ids as chat, no padding effects), in eval mode (LoRA dropout
off) under no_grad; train mode is restored after. Under FSDP2 every rank runs the same forward passes
(each gathers the sharded blocks): every rank decodes the same prompts, and each step's token is rank
0's, broadcast, so every rank stops after the same number of steps. Training's random state is not
touched, so losses and resumed runs stay bitwise the same with or without generations.

Cost: per validation, at most ``len(prompts) × (1 + max_new_tokens)`` forward passes of one row (one
prefill, then one token each); under FSDP2 each pass all-gathers every block, as a validation batch does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tunewiz.data import plan_samples
from tunewiz.data.formats import row_to_messages
from tunewiz.inference.generate import SamplingParams, generate

if TYPE_CHECKING:
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.prompt import PromptBuilder, PromptFormat
    from tunewiz.text.tokenizer import Tokenizer
    from tunewiz.train.distributed import DistEnv


@dataclass(frozen=True)
class SamplePrompt:
    """One fixed validation prompt.

    Args:
        prompt: the text of the prompt's last message (what the dashboard shows).
        reference: the validation reply to it.
        ids: the prompt's token ids from the run's prompt builder.
    """

    prompt: str
    reference: str
    ids: list[int]


def sample_prompts(
    conversations: Iterable[list[dict[str, str]]], builder: PromptBuilder, *, max_len: int, count: int
) -> list[SamplePrompt]:
    """The prompts of the first ``count`` usable ``conversations``: each up to its first assistant turn.

    A conversation that opens with the assistant (nothing to prompt with), has no assistant turn or an
    empty one (training drops it too), or whose prompt has ``max_len`` tokens or more (longer than
    training ever saw) is passed over.

    Args:
        conversations: validation conversations, in order (read lazily: it stops after ``count``).
        builder: the run's prompt builder.
        max_len: ``data.max_seq_len``.
        count: how many prompts to return at most.
    """
    prompts: list[SamplePrompt] = []
    for messages in conversations:
        if len(prompts) == count:
            break
        first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
        if not first or not messages[first]["content"]:  # None: no reply; 0: no prompt
            continue
        ids = builder.prompt_ids(messages[:first])
        if len(ids) < max_len:
            prompts.append(SamplePrompt(messages[first - 1]["content"], messages[first]["content"], ids))
    return prompts


def validation_prompts(
    cfg: DataSection,
    tokenizer: Tokenizer,
    prompt: PromptFormat,
    *,
    seed: int,
    count: int,
    conversations: Iterable[list[dict[str, str]]] | None = None,
) -> list[SamplePrompt]:
    """The prompts of the run's first ``count`` usable validation conversations (none for plain text).

    A training rank passes ``conversations``, the ones its prepared entry keeps
    (``Prepared.validation_conversations``); without them the datasets are read again
    (``tunewiz.data.plan_samples``: the same rows, weights and split as the samples trained on), but
    not tokenized beyond these prompts.

    Args:
        cfg: the preset's data section.
        tokenizer: the run's tokenizer.
        prompt: the run's prompt format (``prompt.json``).
        seed: ``train.seed`` (it picks the validation rows).
        count: ``train.sample_generations``.
        conversations: the validation conversations in split order, if already at hand.
    """
    if count == 0:
        return []
    if conversations is not None:
        from tunewiz.text.prompt import PromptBuilder

        builder = PromptBuilder(tokenizer, prompt)
        return sample_prompts(conversations, builder, max_len=cfg.max_seq_len, count=count)
    plan = plan_samples(cfg, tokenizer, seed=seed, prompt=prompt)
    conversations = (
        row_to_messages(row, src.format, index, src.name)
        for index, row, src in plan.val_rows
        if src.format != "text"
    )
    return sample_prompts(conversations, plan.builder, max_len=cfg.max_seq_len, count=count)


def _rank0_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Rank 0's tokens on every rank (a collective: all ranks call it at the same step)."""
    torch.distributed.broadcast(tokens, src=0)
    return tokens


class SampleGenerations:
    """Greedy replies to fixed prompts, produced at each validation.

    Args:
        prompts: the fixed prompts (none: :meth:`generate` does nothing).
        tokenizer: the run's tokenizer (stop tokens, padding id, decoding).
        max_new_tokens: the longest reply, in tokens.
        env: this process's place in the job.
    """

    def __init__(
        self, prompts: list[SamplePrompt], tokenizer: Tokenizer, *, max_new_tokens: int, env: DistEnv
    ) -> None:
        self.prompts, self.tokenizer, self.env = prompts, tokenizer, env
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)

    @torch.no_grad()
    def generate(self, model: LlamaForCausalLM) -> dict[str, Any] | None:
        """Generate a reply to each prompt (a collective under FSDP2: every rank calls it).

        Args:
            model: the training model (plain, or FSDP2-sharded); left in train mode.

        Returns:
            The ``samples`` event's fields (``samples``: prompt, reference, output each;
            ``max_new_tokens``; ``seconds`` spent), or None without prompts.
        """
        if not self.prompts:
            return None
        start = time.perf_counter()
        tok = self.tokenizer
        agree = _rank0_tokens if self.env.world_size > 1 else None
        model.eval()
        try:
            outputs = [
                generate(model, [p.ids], self.params, stop_ids=tok.stop_ids, pad_id=tok.pad_id, agree=agree)[
                    0
                ]
                for p in self.prompts
            ]
        finally:
            model.train()
        samples = [
            {"prompt": p.prompt, "reference": p.reference, "output": tok.decode(ids)}
            for p, ids in zip(self.prompts, outputs, strict=True)
        ]
        return {
            "samples": samples,
            "max_new_tokens": self.params.max_new_tokens,
            "seconds": time.perf_counter() - start,
        }
