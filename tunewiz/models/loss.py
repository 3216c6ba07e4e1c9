"""The training loss: cross-entropy of ``lm_head(hidden)`` against shifted labels, chunked so that
[B*T, V] logits never exist at once.

``chunked_cross_entropy(hidden, lm_head, labels)`` is what the recipe calls after the model's
``forward(..., output_hidden=True)``. A plain ``nn.Linear`` head takes the fused path
(:class:`LinearCrossEntropy`: the gradients are computed chunk by chunk in the forward pass, no
recompute); a wrapped head (LoRA on ``lm_head``, NF4) runs each chunk under activation checkpointing.
The memory model (``tunewiz/plan/memory.py``) counts this loss's tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tunewiz.data.samples import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "LOSS_CHUNK_LOGITS",
    "LOSS_CHUNK_TOKENS",
    "LinearCrossEntropy",
    "chunked_cross_entropy",
    "loss_chunk_tokens",
]

LOSS_CHUNK_TOKENS = 1024  # most tokens whose [chunk, V] fp32 logits exist at once in the loss
# ... and at most this many logits per chunk (512 MiB fp32): Gemma's 262k vocabulary gets 512-token chunks,
# so the loss chunk does not outgrow the rest of a 12 GB card's activations. The planner uses the same rule.
LOSS_CHUNK_LOGITS = 2**27


def loss_chunk_tokens(vocab_size: int) -> int:
    """Tokens per loss chunk: LOSS_CHUNK_TOKENS, fewer when a chunk's logits would exceed LOSS_CHUNK_LOGITS
    (1024 for Llama 3's 128k vocabulary, 883 for Qwen's 152k, 511 for Gemma's 262k), never below 128.

    Args:
        vocab_size: V, the logits per token.
    """
    return min(LOSS_CHUNK_TOKENS, max(128, LOSS_CHUNK_LOGITS // vocab_size))


def chunked_cross_entropy(
    hidden: Tensor, lm_head: nn.Module, labels: Tensor, *, softcap: float | None = None
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of ``lm_head(hidden)`` over chunks of :func:`loss_chunk_tokens` tokens.

    A plain ``nn.Linear`` head takes the fused path (:class:`LinearCrossEntropy`). A wrapped one (LoRA
    on ``lm_head``, NF4) runs each chunk under activation checkpointing instead, and so do soft-capped
    logits (Gemma 2): backward recomputes one chunk's logits at a time, one extra ``lm_head`` matmul
    per chunk. Under FSDP2 call it right after the root module's forward: the root does not reshard
    after forward, so ``lm_head.weight`` is the unsharded weight here, and its gradient is reduced
    when backward finishes.

    Args:
        hidden: final hidden states ``[B, T, D]`` (after the final norm), in the model dtype.
        lm_head: the output projection D -> V (``nn.Linear`` or ``LoRALinear``: its ``out_features``
            is V).
        labels: targets ``[B, T]`` ALREADY SHIFTED: ``labels[b, t]`` is the token the prediction at
            position t should give; IGNORE_INDEX = no loss there.
        softcap: the model's final logit soft-cap (``config.final_logit_softcapping``, Gemma 2): the
            logits are ``softcap * tanh(logits / softcap)``, as ``LlamaForCausalLM.logits`` computes them.

    Returns:
        ``(loss_sum, num_tokens)``: the fp32 sum of token cross-entropies over non-ignored positions
        and their count (a 0-dim int64 tensor), so the caller can normalise across micro-batches and
        ranks. The logits are upcast to fp32 per chunk, as transformers upcasts them.
    """
    h = hidden.reshape(-1, hidden.shape[-1])  # [B*T, D]
    y = labels.reshape(-1)  # [B*T]
    chunk = loss_chunk_tokens(lm_head.out_features)
    num_tokens = (y != IGNORE_INDEX).sum()
    if torch.is_grad_enabled() and type(lm_head) is nn.Linear and softcap is None:
        return LinearCrossEntropy.apply(h, lm_head.weight, y, chunk), num_tokens
    loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, h.shape[0], chunk):
        h_chunk, y_chunk = h[start : start + chunk], y[start : start + chunk]
        if torch.is_grad_enabled():
            chunk_loss = checkpoint(_chunk_loss, lm_head, softcap, h_chunk, y_chunk, use_reentrant=False)
        else:
            chunk_loss = _chunk_loss(lm_head, softcap, h_chunk, y_chunk)
        loss_sum = loss_sum + chunk_loss
    return loss_sum, num_tokens


def _chunk_loss(lm_head: nn.Module, softcap: float | None, h: Tensor, y: Tensor) -> Tensor:
    logits = lm_head(h)  # [chunk, V] in the model dtype
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    # Upcast per chunk, as transformers upcasts logits (after its soft-cap).
    logits = logits.float()
    return F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")


class LinearCrossEntropy(torch.autograd.Function):
    """``sum(cross_entropy(h Wᵀ, y))`` whose forward also computes the gradients, chunk by chunk.

    Per chunk of C tokens: logits [C, V] in W's dtype, upcast to fp32 (as transformers does), the
    loss from their log-sum-exp, then in place ``softmax - onehot`` (zero on ignored rows) = d loss /
    d logits, cast back to W's dtype for ``d h = G W`` [C, D] and ``d W += Gᵀ h`` [V, D]. Backward only
    scales the saved gradients by the incoming one. Compared with checkpointing each chunk this saves
    the recomputed ``lm_head`` matmul, and no logits outlive their chunk.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, y: Tensor, chunk: int) -> Tensor:  # noqa: ANN001 (ctx)
        """h [N, D], weight [V, D], y [N] (IGNORE_INDEX = no loss), tokens per chunk -> fp32 loss sum."""
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None  # [N, D]
        grad_w = torch.zeros_like(weight) if need_w else None  # [V, D]
        loss_sum = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            stop = start + chunk
            loss_sum += _chunk_loss_and_grads(
                h[start:stop], weight, y[start:stop], grad_h[start:stop] if need_h else None, grad_w
            )
        # On ctx rather than save_for_backward: backward drops ctx's references, so autograd can
        # take the returned tensors as the .grad instead of copying them (a [V, D] copy in full FT).
        ctx.grads = grad_h, grad_w
        return loss_sum

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # noqa: ANN001 (ctx)
        (grad_h, grad_w), ctx.grads = ctx.grads, None
        scale = grad_out.to(grad_h.dtype if grad_h is not None else grad_w.dtype)
        # In place: the saved gradients are ours alone, and a [V, D] copy would raise the peak.
        return (
            grad_h.mul_(scale) if grad_h is not None else None,
            grad_w.mul_(scale) if grad_w is not None else None,
            None,
            None,
        )


def _chunk_loss_and_grads(
    h_c: Tensor, weight: Tensor, y_c: Tensor, grad_h_c: Tensor | None, grad_w: Tensor | None
) -> Tensor:
    """One chunk of :class:`LinearCrossEntropy`'s forward: its fp32 loss sum; writes ``d h`` into
    ``grad_h_c`` [C, D] and adds ``d W`` into ``grad_w`` [V, D] (None: not needed).

    A function of its own so that the chunk's [C, V] tensors (fp32 logits, their ``W``-dtype gradient)
    are freed when it returns: in a loop body they stayed bound until the next chunk had allocated its
    own, and the loss held two chunks at its peak (the planner counts one).
    """
    logits = F.linear(h_c, weight).float()  # [C, V] fp32 (a copy unless W is fp32)
    trained = (y_c != IGNORE_INDEX).float()  # [C]: 1 where the token carries loss
    target = y_c.clamp(min=0)[:, None]  # [C, 1]: any valid index on ignored rows
    target_logit = logits.gather(1, target).squeeze(1)  # [C], before the logits are overwritten
    # torch.logsumexp's own steps, written out so that the one exp over [C, V] also gives the
    # softmax (logsumexp + exp(logits - lse) took two exps and an out-of-place [C, V] copy):
    # the loss is bitwise the same, the gradient differs by rounding.
    row_max = logits.amax(dim=-1, keepdim=True)  # [C, 1]
    row_max.masked_fill_(row_max.isinf(), 0.0)
    exp = logits.sub_(row_max).exp_()  # [C, V] in place of the logits
    total = exp.sum(dim=-1)  # [C]
    lse = total.log().add_(row_max.squeeze(1))  # [C]
    loss = ((lse - target_logit) * trained).sum()
    if grad_h_c is None and grad_w is None:
        return loss
    probs = exp.mul_((trained / total)[:, None])  # [C, V] softmax, zero on ignored rows
    probs.scatter_add_(1, target, -trained[:, None])  # - onehot on trained rows
    grad = probs.to(weight.dtype)  # [C, V] d loss / d logits
    del logits, exp, probs  # one storage: with a W in bf16, the fp32 one goes before the matmuls
    if grad_h_c is not None:
        torch.mm(grad, weight, out=grad_h_c)
    if grad_w is not None:
        grad_w.addmm_(grad.t(), h_c)
    return loss
