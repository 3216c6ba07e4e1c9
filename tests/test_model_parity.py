"""The native model against transformers on tiny random configs of every supported shape: logits,
loss and gradients with weights copied across BY NAME, KV-cache decoding, packed sequences and
left-padded batches."""

from __future__ import annotations

import pytest
import torch
from hf_pairs import random_pair

from tunewiz.models import loss
from tunewiz.models.config import LlamaConfig
from tunewiz.models.llama import LlamaForCausalLM
from tunewiz.models.loss import IGNORE_INDEX

SMALL = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4)
# name -> (transformers config class name, kwargs); each well under 1M parameters.
CASES = {
    "llama2-mha": ("LlamaConfig", dict(SMALL, num_key_value_heads=4, max_position_embeddings=64)),
    "llama-biases": (
        "LlamaConfig",
        dict(SMALL, num_key_value_heads=4, max_position_embeddings=64, attention_bias=True, mlp_bias=True),
    ),
    "llama3-gqa-rope-scaling": (
        "LlamaConfig",
        dict(
            SMALL,
            num_key_value_heads=2,
            max_position_embeddings=256,
            rope_theta=500000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
    ),
    # Explicit head_dim (not hidden/heads) and a sliding window shorter than the test sequences.
    "mistral-window": (
        "MistralConfig",
        dict(SMALL, num_key_value_heads=2, head_dim=24, max_position_embeddings=64, sliding_window=8),
    ),
    "qwen2-qkv-bias": ("Qwen2Config", dict(SMALL, num_key_value_heads=2, max_position_embeddings=64)),
    "llama-tied-pad": (
        "LlamaConfig",
        dict(
            SMALL, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=0
        ),
    ),
    # Qwen3: per-head q/k RMSNorm, head_dim independent of hidden/heads, tied and untied, attention bias.
    "qwen3-gqa-tied": (
        "Qwen3Config",
        dict(SMALL, num_key_value_heads=2, head_dim=24, max_position_embeddings=64, tie_word_embeddings=True),
    ),
    "qwen3-untied-bias": (
        "Qwen3Config",
        dict(SMALL, num_key_value_heads=4, head_dim=16, max_position_embeddings=64, attention_bias=True),
    ),
    # Gemma 3: local/global layers (window shorter than the sequences) with their own RoPE bases, linear
    # RoPE scaling on the global ones, query_pre_attn_scalar, sandwich norms, GeGLU, scaled embeddings.
    "gemma3-pattern-2": (
        "Gemma3TextConfig",
        dict(
            SMALL,
            num_hidden_layers=3,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=64,
            sliding_window=5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            query_pre_attn_scalar=24,
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        ),
    ),
    "gemma3-pattern-6-untied-pad": (
        "Gemma3TextConfig",
        dict(
            SMALL,
            num_hidden_layers=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            sliding_window=8,
            sliding_window_pattern=3,
            tie_word_embeddings=False,
            pad_token_id=0,
        ),
    ),
    # SmolLM3: every 2nd layer without RoPE (NoPE), biases on all four attention projections and the MLP.
    "smollm3-nope-bias": (
        "SmolLM3Config",
        dict(
            SMALL,
            num_hidden_layers=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            no_rope_layer_interval=2,
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=True,
            pad_token_id=None,  # the default, 128004, lies outside this vocabulary
        ),
    ),
    # Gemma 2: alternating local/global layers, attention and final-logit soft-capping.
    "gemma2-softcap": (
        "Gemma2Config",
        dict(
            SMALL,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            sliding_window=6,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, LlamaForCausalLM]:
    """A random transformers model and ours holding the same weights, copied by name."""
    class_name, kwargs = CASES[request.param]
    hf, ours = random_pair(class_name, kwargs, perturb=True)
    config = ours.config
    assert set(ours.state_dict()) == set(hf.state_dict())
    assert config.num_parameters() == sum(p.numel() for p in hf.parameters())
    assert LlamaConfig.from_hf(config.to_hf()) == config
    return hf, ours


def test_logits_loss_and_grads_match_transformers(
    pair: tuple[torch.nn.Module, LlamaForCausalLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    hf, ours = pair
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, ours.config.vocab_size, (2, 16), generator=gen)
    ids[1, 3] = 0  # exercise the padding row of the embedding when pad_token_id=0
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=0)

    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX  # a masked prompt
    # transformers shifts internally (logits[t] predicts labels[t+1]); ours takes labels pre-shifted.
    shifted = torch.cat([labels[:, 1:], torch.full((2, 1), IGNORE_INDEX)], dim=1)
    monkeypatch.setattr(loss, "LOSS_CHUNK_TOKENS", 5)  # several chunks, the last one partial
    ours.zero_grad()
    hf.zero_grad()
    hidden = ours(ids, output_hidden=True)  # [B, T, D]
    cap = ours.config.final_logit_softcapping
    loss_sum, num_tokens = loss.chunked_cross_entropy(hidden, ours.lm_head, shifted, softcap=cap)
    hf_loss = hf(ids, labels=labels).loss
    assert num_tokens.item() == (shifted != IGNORE_INDEX).sum().item() == 26  # 2 x 15 - 4
    assert loss_sum.dtype == torch.float32
    torch.testing.assert_close(loss_sum / num_tokens, hf_loss, atol=1e-5, rtol=0)
    (loss_sum / num_tokens).backward()
    hf_loss.backward()
    hf_grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, hf_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


@torch.no_grad()
def test_kv_cache_decode_equals_full_recompute(pair: tuple[torch.nn.Module, LlamaForCausalLM]) -> None:
    _, ours = pair
    ids = torch.randint(1, ours.config.vocab_size, (2, 14), generator=torch.Generator().manual_seed(2))
    full = ours(ids)  # [2, 14, V]
    cache = ours.new_kv_cache(batch=2, max_len=16)
    steps = [ours(ids[:, :9], kv_cache=cache)]  # prefill
    steps += [ours(ids[:, t : t + 1], kv_cache=cache) for t in range(9, 14)]  # one token at a time
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_packed_documents_equal_separate_runs(pair: tuple[torch.nn.Module, LlamaForCausalLM]) -> None:
    _, ours = pair
    ids = torch.randint(1, ours.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(3))
    doc = torch.tensor([0] * 7 + [1] * 9)
    causal = torch.tril(torch.ones(16, 16, dtype=torch.bool))
    mask = (causal & (doc[:, None] == doc[None, :]))[None, None]  # [1, 1, 16, 16] block-diagonal causal
    positions = torch.cat([torch.arange(7), torch.arange(9)])[None]
    packed = ours(ids, attn_mask=mask, position_ids=positions)
    separate = torch.cat([ours(ids[:, :7]), ours(ids[:, 7:])], dim=1)
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=0)


@torch.no_grad()
def test_left_padded_batch_generation_equals_single_runs(
    pair: tuple[torch.nn.Module, LlamaForCausalLM],
) -> None:
    _, ours = pair
    gen = torch.Generator().manual_seed(4)
    short, long = torch.randint(1, 96, (1, 5), generator=gen), torch.randint(1, 96, (1, 8), generator=gen)
    new = torch.randint(1, 96, (2, 3), generator=gen)  # tokens "generated" next, fed one at a time
    ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])  # [2, 8]
    valid = torch.ones(2, 11, dtype=torch.bool)
    valid[0, :3] = False  # left padding of the short prompt
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)  # [2, 11]: each prompt starts at 0
    causal = torch.tril(torch.ones(11, 11, dtype=torch.bool))
    # Real keys only, but let padding rows see themselves so that no row is fully masked.
    mask = (causal & valid[:, None, :]) | torch.eye(11, dtype=torch.bool)  # [2, 11, 11]
    cache = ours.new_kv_cache(batch=2, max_len=11)
    out = [ours(ids, attn_mask=mask[:, None, :8, :8], position_ids=positions[:, :8], kv_cache=cache)[:, -1:]]
    for t in range(3):
        s = 8 + t
        out.append(
            ours(
                new[:, t : t + 1],
                attn_mask=mask[:, None, s : s + 1, : s + 1],
                position_ids=positions[:, s : s + 1],
                kv_cache=cache,
            )
        )
    batched = torch.cat(out, dim=1)  # [2, 4, V]: logits after the prompt and after each new token
    for row, prompt in enumerate([short, long]):
        alone = ours(torch.cat([prompt, new[row : row + 1]], dim=1))[:, prompt.shape[1] - 1 :]
        torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("packed", [False, True])
def test_matmul_attention_equals_sdpa(packed: bool) -> None:
    # bf16 CPU training takes `matmul_attention` instead of SDPA (models/llama.py); in fp32 both must agree,
    # outputs and gradients, for the causal mask and a packed block-diagonal one.
    import torch.nn.functional as F

    from tunewiz.models.llama import matmul_attention

    torch.manual_seed(0)
    B, H, T, hd = 2, 4, 12, 16
    q, k, v = (torch.randn(B, H, T, hd, requires_grad=True) for _ in range(3))
    mask = None
    if packed:
        doc = torch.tensor([0] * 5 + [1] * 7)
        mask = (doc[:, None] == doc[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    ours = matmul_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    g_ours = torch.autograd.grad(ours.square().sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_gemma_bf16_embedding_scale_and_norms_round_like_transformers() -> None:
    # Gemma scales embeddings by sqrt(D) rounded to the model dtype (sqrt(48) is 6.928 in fp32, 6.9375 in
    # bf16) and its (1 + weight) norm multiplies in fp32 before rounding: bit-for-bit in bf16.
    kwargs = dict(SMALL, hidden_size=48, head_dim=16, num_key_value_heads=2, max_position_embeddings=64)
    hf, ours = random_pair("Gemma3TextConfig", kwargs, perturb=True)
    hf, ours = hf.to(torch.bfloat16), ours.to(torch.bfloat16)
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str):  # noqa: ANN202
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            seen[key] = args[0] if args else kwargs["hidden_states"]

        return hook

    hf.model.layers[0].register_forward_pre_hook(keep("hf"), with_kwargs=True)
    ours.model.layers[0].register_forward_pre_hook(keep("ours"), with_kwargs=True)
    ids = torch.randint(1, 96, (2, 10), generator=torch.Generator().manual_seed(5))
    hf(ids)
    ours(ids)
    assert seen["ours"].dtype == torch.bfloat16 and torch.equal(seen["ours"], seen["hf"])
    x = seen["hf"]
    for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm"):
        assert torch.equal(getattr(ours.model.layers[0], name)(x), getattr(hf.model.layers[0], name)(x)), name
