"""lm-eval's ``LM`` interface over tunewiz's native model (``tunewiz eval`` uses it).

The adapter scores with the native model (base + adapter unmerged, or merged weights) and mirrors
lm-eval's own ``HFLM`` where numbers depend on it: context/continuation split, left truncation,
rolling windows. This module imports lm_eval and torch at the top; ``tunewiz.inference.evaluate``
imports it only when an evaluation runs, so the CLI stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from tunewiz.errors import TunewizError
from tunewiz.inference.generate import SamplingParams, generate
from tunewiz.text.prompt import PromptBuilder, new_prompt_format

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from tunewiz.inference.load import LoadedModel

# `--batch-size auto`: rows per forward so that one batch's fp32 logits [B, T, V] stay under this.
AUTO_BATCH_LOGITS_BYTES = 512 * 2**20


class TunewizLM(LM):
    """lm-eval's model interface over the native model.

    Args:
        loaded: from ``load_for_inference``; its adapter (if any) stays unmerged.
        batch_size: rows per forward, or ``"auto"`` (sized so a batch's logits fit
            ``AUTO_BATCH_LOGITS_BYTES``).
        max_length: longest sequence scored; default the model's ``max_position_embeddings``.
        prompts: the run's prompt builder (``tunewiz.inference.load.prompt_builder_for``): what tasks
            with ``metadata.chat_template: true`` render prompts with, and the bos rule every
            sequence follows; default: the loaded model's own template and bos rule.
        progress: called as ``progress(phase, done, total)`` after each batch of a request type, with
            phase ``TASKS: WHAT`` (``story_qa: generations``); ``total`` counts requests (scored windows
            for rolling log-likelihoods). Settable later, e.g. to name a second model.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        batch_size: int | str = "auto",
        max_length: int | None = None,
        prompts: PromptBuilder | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        super().__init__()
        self.loaded = loaded
        self.progress = progress
        self.tokenizer = loaded.tokenizer
        if prompts is None:
            prompts = PromptBuilder(
                self.tokenizer, new_prompt_format(self.tokenizer.chat_template, self.tokenizer)
            )
        self.prompts = prompts
        self.template = prompts.template
        self.batch_size = batch_size
        self.max_length = max_length or loaded.model.config.max_position_embeddings
        self._device = loaded.device

    # -- tokens --
    @property
    def prefix_token_id(self) -> int:
        """What an empty context conditions on: bos, else eos (as HFLM)."""
        return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id

    def tok_encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (plain, or rendered by the chat template) by the run's bos rule."""
        return self.prompts.encode_text(text)

    def encode_pair(
        self, context: str, continuation: str, *, request: str = "a request"
    ) -> tuple[list[int], list[int]]:
        """Context and continuation ids; the continuation is never empty.

        Trailing spaces of the context move to the continuation, then context+continuation is
        encoded whole and split after the context's tokens, as HFLM splits it: a SentencePiece
        word keeps its leading "▁" in the continuation instead of becoming a lone-space token.
        When the context's own tokens are not a prefix of the joint encoding (the last context
        token merges with the continuation: context "Ans", continuation "wer", one token
        "Answer"), that cut would score the wrong tokens, so the continuation is encoded on its
        own after the context's tokens instead.

        Args:
            context: the request's context.
            continuation: the text whose log-probability is asked.
            request: names the request in errors (task and document).

        Raises:
            TunewizError: the continuation has no tokens (it would score a perfect 0.0).
        """
        if not context:
            cont = self.tokenizer.encode(continuation)
            if cont and cont[0] == self.prefix_token_id:
                ctx, cont = cont[:1], cont[1:]
            else:
                ctx = [self.prefix_token_id]
        else:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            whole = self.tok_encode(context + continuation)
            ctx = self.tok_encode(context)
            if len(whole) > len(ctx) and whole[: len(ctx)] == ctx:
                cont = whole[len(ctx) :]
            else:
                cont = self.tokenizer.encode(continuation)
        if not cont:
            raise TunewizError(
                f"loglikelihood {request}: continuation {continuation!r} after context "
                f"{context[-60:]!r} has no tokens, so there is nothing to score",
                hint="check the task's `doc_to_target` and `target_delimiter` (the answer must not be empty)",
            )
        return ctx, cont

    # -- scoring --
    def _rows_per_batch(self, longest: int) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        per_row = longest * self.loaded.model.config.vocab_size * 4
        return max(1, AUTO_BATCH_LOGITS_BYTES // per_row)

    def _reporter(self, requests: list[Instance], what: str, total: int) -> Callable[[int, int], None]:
        """``report(done, total)`` for one call of a request type: ``progress`` with its tasks' names;
        ``report(0, total)`` is sent at once, so the phase shows while its first batch runs."""
        tasks = ", ".join(dict.fromkeys(str(req.task_name) for req in requests))

        def report(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(f"{tasks}: {what}", done, total)

        report(0, total)
        return report

    @torch.inference_mode()
    def score_tokens(
        self,
        pairs: list[tuple[list[int], list[int]]],
        report: Callable[[int, int], None] | None = None,
    ) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation given its context, and whether it is greedy.

        Sequences are sorted longest first, truncated from the left to ``max_length + 1`` tokens
        (the last one is only a target), right-padded and batched.

        Args:
            pairs: (context ids, continuation ids); the context is non-empty.
            report: called as ``report(pairs done, len(pairs))`` after each batch.
        """
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        pos = 0
        while pos < len(order):
            longest = min(len(pairs[order[pos]][0]) + len(pairs[order[pos]][1]), self.max_length + 1) - 1
            chunk = order[pos : pos + self._rows_per_batch(longest)]
            # Inputs: all but the last token of context+continuation, at most max_length of them.
            rows = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1) :][:-1] for i in chunk]
            width = len(rows[0])  # longest first
            ids = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
            # Right padding: causal attention keeps the real tokens blind to the pad after them.
            logits = self.loaded.model(ids.to(self._device))  # [B, width, V]
            for r, i in enumerate(chunk):
                cont = pairs[i][1]
                n = len(rows[r])
                logp = F.log_softmax(logits[r, n - len(cont) : n].float(), dim=-1)  # [C, V]
                target = torch.tensor(cont, device=logp.device)
                greedy = bool((logp.argmax(-1) == target).all())
                out[i] = (float(logp.gather(-1, target[:, None]).sum()), greedy)
            pos += len(chunk)
            if report is not None:
                report(pos, len(pairs))
        return out

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log-probability of the continuation, whether it is the greedy one) per request."""
        return self.score_tokens(
            [self.encode_pair(*req.args, request=_request_name(req)) for req in requests],
            self._reporter(requests, "log-likelihoods", len(requests)),
        )

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts, scored in disjoint windows of ``max_length`` tokens
        with one token of context (lm-eval's rolling windows, as HFLM uses them)."""
        windows: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []
        for n, (text,) in enumerate(req.args for req in requests):
            for window in get_rolling_token_windows(
                token_list=self.tokenizer.encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append(make_disjoint_window(window))
                owner.append(n)
        totals = [0.0] * len(requests)
        scores = self.score_tokens(
            windows, self._reporter(requests, "rolling log-likelihood windows", len(windows))
        )
        for n, (logprob, _) in zip(owner, scores, strict=True):
            totals[n] += logprob
        return totals

    # -- generation --
    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Batched generation per distinct gen_kwargs; each text is cut at its first stop string."""
        out: list[str] = [""] * len(requests)
        report, done = self._reporter(requests, "generations", len(requests)), 0
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.pop("until", None) or [
                self.tokenizer.decode([self.tokenizer.eos_id], skip_special=False)
            ]
            until = [until] if isinstance(until, str) else list(until)
            params = _sampling_params(kwargs)
            budget = max(1, self.max_length - params.max_new_tokens)
            prompts = {i: self.tok_encode(requests[i].args[0])[-budget:] for i in indices}
            order = sorted(indices, key=lambda i: -len(prompts[i]))
            size = self._rows_per_batch(len(prompts[order[0]]) + params.max_new_tokens)
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                new = generate(
                    self.loaded.model,
                    [prompts[i] for i in chunk],
                    params,
                    stop_ids=self.tokenizer.stop_ids,
                    pad_id=self.tokenizer.pad_id,
                )
                for i, tokens in zip(chunk, new, strict=True):
                    out[i] = _cut_at_stops(self.tokenizer.decode(tokens), until)
                done += len(chunk)
                report(done, len(requests))
        return out

    # -- chat --
    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The conversation rendered with the run's chat template, as training renders samples."""
        if self.template is None:
            raise TunewizError(
                f"{self.loaded.description} has no chat template, and a requested task "
                "formats prompts with one",
                hint="evaluate a model with a chat template, or "
                "remove `chat_template: true` from the task's metadata",
            )
        return self.prompts.render(chat_history, add_generation_prompt=add_generation_prompt)

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer's directory, which lm-eval uses as a cache key."""
        return str(self.tokenizer.source_dir)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The run's chat template source (lm-eval records it with the results)."""
        return self.template.template if self.template is not None else None


def _request_name(req: Instance) -> str:
    """``task `x`, doc 3, request 0`` for error messages."""
    return f"request of task `{req.task_name}`, doc {req.doc_id}, index {req.idx}"


def _sampling_params(kwargs: dict[str, Any]) -> SamplingParams:
    """lm-eval gen_kwargs -> SamplingParams: greedy unless ``do_sample`` (or a positive temperature
    without ``do_sample: false``) asks for sampling."""
    temperature = float(kwargs.get("temperature", 0.0) or 0.0)
    if not kwargs.get("do_sample", temperature > 0):
        temperature = 0.0
    return SamplingParams(
        max_new_tokens=int(kwargs.get("max_gen_toks", 256)),
        temperature=temperature,
        top_p=float(kwargs.get("top_p", 1.0) or 1.0),
        top_k=int(kwargs.get("top_k", 0) or 0),
        repetition_penalty=float(kwargs.get("repetition_penalty", 1.0)),
        seed=kwargs.get("seed"),
    )


def _cut_at_stops(text: str, until: list[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text
