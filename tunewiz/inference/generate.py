"""Token generation with a KV cache: prefill the prompt once, then decode one token per step.

``generate`` decodes a batch of prompts of different lengths together: prompts are left-padded to
the longest, every row gets its own RoPE positions (counting only its real tokens) and an attention
mask that hides its padding, and all rows share one preallocated KV cache. ``stream`` is the batch-1
form that yields each token as it is chosen, and ``StreamDecoder`` turns those tokens into text
pieces without splitting a multi-byte character or losing SentencePiece's word spaces.

Sampling follows transformers' order and definitions, so the same settings give the same choices:
repetition penalty, then (when sampling) temperature, top-k, top-p, softmax, multinomial draw.
Temperature 0 means greedy (argmax after the repetition penalty).

Shapes: B rows, P padded prompt length, S keys in the cache, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunewiz.errors import TunewizError

if TYPE_CHECKING:
    import torch

    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.text.tokenizer import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    """How to choose each new token.

    Args:
        max_new_tokens: most tokens generated per row (the stop token not counted).
        temperature: divides the logits before sampling; 0 means greedy decoding.
        top_p: nucleus sampling: keep the most likely tokens whose probabilities sum to at least this.
        top_k: keep only the k most likely tokens; 0 keeps all.
        repetition_penalty: > 1 makes tokens already in the prompt or output less likely (the CTRL
            rule transformers uses: positive logits divided by it, negative ones multiplied).
        seed: seeds the sampling generator, so the same seed gives the same output; None uses
            torch's global RNG.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_new_tokens >= 1, "--max-new-tokens", self.max_new_tokens, "at least 1"),
            (self.temperature >= 0, "--temperature", self.temperature, ">= 0 (0 = greedy)"),
            (0 < self.top_p <= 1, "--top-p", self.top_p, "in (0, 1] (1 = off)"),
            (self.top_k >= 0, "--top-k", self.top_k, ">= 0 (0 = off)"),
            (self.repetition_penalty > 0, "--repetition-penalty", self.repetition_penalty, "> 0 (1 = off)"),
        ]
        for ok, flag, value, expected in checks:
            if not ok:
                raise TunewizError(
                    f"{flag} is {value}; it must be {expected}", hint=f"pass {flag} with a value {expected}"
                )

    @property
    def greedy(self) -> bool:
        """True when tokens are chosen by argmax (temperature 0)."""
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on the tokens marked in ``seen``.

    Args:
        logits: ``[B, V]`` fp32.
        seen: ``[B, V]`` bool, True for tokens already in the row's prompt or output.
        penalty: the repetition penalty (1 = no change).
    """
    import torch

    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (k = 0: no change).

    Args:
        logits: ``[B, V]``.
        k: tokens kept per row (ties with the k-th are kept too, as in transformers).
    """
    import torch

    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability sums to at least ``p``.

    Args:
        logits: ``[B, V]``.
        p: the nucleus mass in (0, 1]; 1 keeps all.
    """
    import torch

    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach p; the top token is always kept.
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def choose_next(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick one token per row.

    Args:
        logits: ``[B, V]`` fp32 logits of the last position.
        params: the sampling settings.
        seen: ``[B, V]`` bool, tokens already in each row (for the repetition penalty).
        generator: RNG for the draw (None: torch's global RNG).

    Returns:
        ``[B]`` token ids.
    """
    import torch

    logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = filter_top_p(filter_top_k(logits / params.temperature, params.top_k), params.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def _token_steps(
    model: LlamaForCausalLM,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    stop_ids: Collection[int],
    pad_id: int,
    agree: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(tokens [B], live [B] bool)`` once per decoding step; ``live`` is False for a row whose
    token is a stop token or that stopped earlier. Ends when every row stopped or after
    ``max_new_tokens`` steps. Runs under no_grad (the callers' decorators cover the generator).

    The model is called through its root ``forward`` (``output_hidden=True``), never ``model.model``
    directly: under FSDP2 the root's pre-forward hook gathers the embeddings, final norm and lm_head,
    and keeps them gathered after forward, so ``model.logits`` can read lm_head right after.
    ``agree`` (see :func:`generate`) replaces each step's chosen tokens before they are used.
    """
    import torch

    if not prompts:
        return
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise TunewizError(
            f"prompt {empty[0]} has no tokens; generation needs at least one prompt token",
            hint="give a non-empty prompt",
        )
    device = model.model.embed_tokens.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # [B]
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, P - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long, device=device)
    # Key slots each row may attend: its real prompt tokens, then every generated slot.
    key_ok = torch.ones(B, P + params.max_new_tokens, dtype=torch.bool, device=device)
    key_ok[:, :P] = torch.arange(P, device=device) >= (P - lengths)[:, None]
    padded = bool((lengths != P).any())
    # Positions count real tokens only, so a padded row sees the same RoPE angles as alone.
    positions = (key_ok[:, :P].long().cumsum(-1) - 1).clamp(min=0)  # [B, P]
    mask = None
    if padded:
        causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()
        # A pad query attends to itself only: a fully masked row would give NaN keys/values downstream.
        mask = (causal & key_ok[:, None, :P]) | torch.eye(P, dtype=torch.bool, device=device)
        mask = mask[:, None]  # [B, 1, P, P]

    vocab = model.config.vocab_size
    seen = torch.zeros(B, vocab, dtype=torch.bool, device=device)
    # Real prompt tokens only: padding slots point at the row's last prompt token instead.
    seen.scatter_(1, torch.where(key_ok[:, :P], ids, ids[:, -1:]), True)
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    alive = torch.ones(B, dtype=torch.bool, device=device)

    cache = model.new_kv_cache(B, P + params.max_new_tokens)
    hidden = model(
        ids, position_ids=positions, attn_mask=mask, kv_cache=cache, output_hidden=True
    )  # [B, P, D]
    next_pos = lengths.clone()  # [B]: the position of each row's next token
    for step in range(params.max_new_tokens):
        logits = model.logits(hidden[:, -1]).float()  # [B, V]: only the last position is needed
        tokens = choose_next(logits, params, seen, generator)  # [B]
        if agree is not None:
            tokens = agree(tokens)
        alive = alive & ~torch.isin(tokens, stops)
        yield tokens, alive
        if not bool(alive.any()) or step == params.max_new_tokens - 1:
            return
        tokens = torch.where(alive, tokens, pad_id)  # rows that stopped are fed padding
        seen.scatter_(1, tokens[:, None], True)  # a stopped row's `seen` no longer matters
        S = cache.length + 1
        step_mask = key_ok[:, None, None, :S] if padded else None  # [B, 1, 1, S]
        hidden = model(
            tokens[:, None],
            position_ids=next_pos[:, None],
            attn_mask=step_mask,
            kv_cache=cache,
            output_hidden=True,
        )  # [B, 1, D]
        next_pos += 1


def generate(
    model: LlamaForCausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    *,
    stop_ids: Collection[int],
    pad_id: int,
    agree: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[list[int]]:
    """Generate a continuation for each prompt, all rows decoded together with one KV cache.

    The model should be in eval mode (LoRA dropout would otherwise make greedy output random).

    Args:
        model: the native model, on the device and dtype to run in.
        prompts: token ids of each prompt (any lengths, none empty).
        params: sampling settings; ``seed`` makes sampled output reproducible.
        stop_ids: a row ends at the first of these (eos, end-of-turn tokens).
        pad_id: the token used for left padding and fed for rows that already stopped.
        agree: called with each step's chosen tokens ``[B]``, returns the tokens to use instead.
            Processes that decode together under FSDP2 (every rank runs every forward pass) pass a
            broadcast of rank 0's choice, so all ranks stop after the same number of steps.

    Returns:
        Each row's new tokens, the stop token excluded.
    """
    import torch

    outputs: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad():
        for tokens, live in _token_steps(model, prompts, params, stop_ids, pad_id, agree):
            for row, (token, ok) in enumerate(zip(tokens.tolist(), live.tolist(), strict=True)):
                if ok:
                    outputs[row].append(token)
    return outputs


def stream(
    model: LlamaForCausalLM, prompt: list[int], params: SamplingParams, *, stop_ids: Collection[int]
) -> Iterator[int]:
    """Yield the new tokens of one prompt as they are chosen; the stop token is not yielded.

    Args:
        model: the native model, in eval mode.
        prompt: the prompt's token ids (not empty).
        params: sampling settings.
        stop_ids: generation ends at the first of these.
    """
    import torch

    with torch.no_grad():
        for tokens, live in _token_steps(model, [prompt], params, stop_ids, pad_id=0):
            if not bool(live[0]):
                return
            yield int(tokens[0])


class StreamDecoder:
    """Turn a stream of token ids into text pieces whose concatenation is ``decode(all ids)``.

    Each piece is the difference between decoding a short window of recent tokens with and without
    the new ones, so a piece never ends inside a multi-byte character (held back while the text ends
    in U+FFFD) and a SentencePiece word keeps its leading space. The window keeps the work per token
    constant (the approach of text-generation-inference's incremental decoding).

    Args:
        tokenizer: the model's tokenizer.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # window start: tokens before it are already final text
        self._read = 0  # tokens up to here have been emitted

    def push(self, token: int) -> str:
        """Add one token; return the text it completes ("" while a character is incomplete)."""
        self._ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """The text still held back at the end of generation."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        before = self._tokenizer.decode(self._ids[self._prefix : self._read])
        after = self._tokenizer.decode(self._ids[self._prefix :])
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]
