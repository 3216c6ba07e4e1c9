"""The generation engine against transformers on tiny random models: greedy decoding, the repetition
penalty and the sampling filters; KV-cache logits against full recomputation; batched left-padded
generation against one row at a time; seeded sampling; streaming text decoding."""

from __future__ import annotations

import pytest
import torch
from hf_pairs import random_pair

import tunewiz.inference.generate as gen
from tunewiz.errors import TunewizError
from tunewiz.inference.generate import SamplingParams, StreamDecoder, generate, stream
from tunewiz.models.llama import LlamaForCausalLM

SMALL = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    initializer_range=0.1,
)
GEMMA = dict(SMALL, head_dim=16, tie_word_embeddings=False)
CASES = {
    "llama-gqa": ("LlamaConfig", dict(SMALL, num_key_value_heads=2)),
    # A window shorter than prompt + output, so decoding crosses it.
    "mistral-window": ("MistralConfig", dict(SMALL, num_key_value_heads=2, sliding_window=8)),
    "qwen2-bias": ("Qwen2Config", dict(SMALL, num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", dict(SMALL, num_key_value_heads=2, head_dim=16)),
    # Local layers whose window is shorter than prompt + output, beside global ones with another RoPE base.
    # Untied: with tied, √D-scaled embeddings a random tiny Gemma only repeats its last input token.
    "gemma3-local-global": (
        "Gemma3TextConfig",
        dict(GEMMA, num_key_value_heads=1, sliding_window=6, sliding_window_pattern=2),
    ),
    "smollm3-nope": (
        "SmolLM3Config",
        dict(
            SMALL,
            num_hidden_layers=4,
            num_key_value_heads=2,
            no_rope_layer_interval=2,
            pad_token_id=None,
            tie_word_embeddings=False,
        ),
    ),
    "gemma2-softcap": (
        "Gemma2Config",
        dict(GEMMA, num_key_value_heads=2, sliding_window=6, final_logit_softcapping=5.0),
    ),
}
NO_STOP: tuple[int, ...] = ()


@pytest.fixture(scope="module", params=list(CASES))
def pair(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, LlamaForCausalLM]:
    """A random transformers model and ours with the same weights (state dict names are identical)."""
    class_name, kwargs = CASES[request.param]
    return random_pair(class_name, kwargs)


@pytest.fixture(scope="module")
def model(pair: tuple[torch.nn.Module, LlamaForCausalLM]) -> LlamaForCausalLM:
    return pair[1]


def prompts(lengths: list[int], seed: int = 1, vocab: int = 96) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


def hf_generate(
    hf: torch.nn.Module, rows: list[list[int]], max_new: int, **kwargs: object
) -> list[list[int]]:
    """transformers' generate on left-padded rows (pad id 0), returning each row's new tokens."""
    P = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (P - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows])
    out = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new,
        min_new_tokens=max_new,
        pad_token_id=0,
        eos_token_id=None,
        **kwargs,
    )
    return out[:, P:].tolist()


def test_greedy_equals_transformers_generate(pair: tuple[torch.nn.Module, LlamaForCausalLM]) -> None:
    hf, ours = pair
    [prompt] = prompts([7])
    expected = hf_generate(hf, [prompt], 24, do_sample=False)
    assert generate(ours, [prompt], SamplingParams(max_new_tokens=24), stop_ids=NO_STOP, pad_id=0) == expected
    assert len(set(expected[0])) > 3  # a real sequence, not one repeated token


def test_batched_left_padded_greedy_equals_transformers(
    pair: tuple[torch.nn.Module, LlamaForCausalLM],
) -> None:
    hf, ours = pair
    rows = prompts([3, 11, 6])
    expected = hf_generate(hf, rows, 16, do_sample=False)
    assert generate(ours, rows, SamplingParams(max_new_tokens=16), stop_ids=NO_STOP, pad_id=0) == expected


def test_repetition_penalty_equals_transformers(pair: tuple[torch.nn.Module, LlamaForCausalLM]) -> None:
    hf, ours = pair
    [prompt] = prompts([9], seed=3)
    params = SamplingParams(max_new_tokens=30, repetition_penalty=1.8)
    expected = hf_generate(hf, [prompt], 30, do_sample=False, repetition_penalty=1.8)
    got = generate(ours, [prompt], params, stop_ids=NO_STOP, pad_id=0)
    assert got == expected
    assert got != generate(ours, [prompt], SamplingParams(max_new_tokens=30), stop_ids=NO_STOP, pad_id=0)


def test_kv_cache_decode_logits_equal_full_recompute(
    model: LlamaForCausalLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The logits each decode step sees (left-padded batch, cache) equal a full forward of the row alone."""
    seen: list[torch.Tensor] = []
    choose = gen.choose_next

    def recording(logits: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(logits.clone())
        return choose(logits, *args)

    monkeypatch.setattr(gen, "choose_next", recording)
    rows = prompts([4, 10])
    outputs = generate(model, rows, SamplingParams(max_new_tokens=12), stop_ids=NO_STOP, pad_id=0)
    assert len(seen) == 12
    for r, (prompt, out) in enumerate(zip(rows, outputs, strict=True)):
        with torch.no_grad():
            full = model(torch.tensor([prompt + out]))[0].float()  # [T, V], no cache, no padding
        for i, step_logits in enumerate(seen):
            torch.testing.assert_close(step_logits[r], full[len(prompt) - 1 + i], rtol=1e-4, atol=1e-5)


def test_batched_generate_equals_per_row_with_early_stops(model: LlamaForCausalLM) -> None:
    rows = prompts([3, 9, 5, 1], seed=5)
    params = SamplingParams(max_new_tokens=14)
    alone = [generate(model, [r], params, stop_ids=NO_STOP, pad_id=0)[0] for r in rows]
    # Row 0 stops at the first token from its 3rd on that it has not generated before (so, early);
    # the other rows stop wherever this token occurs.
    at = next(i for i in range(2, len(alone[0])) if alone[0][i] not in alone[0][:i])
    stop = alone[0][at]
    cut = [out[: out.index(stop)] if stop in out else out for out in alone]
    assert cut[0] == alone[0][:at] and at < 10
    assert generate(model, rows, params, stop_ids={stop}, pad_id=0) == cut
    assert [generate(model, [r], params, stop_ids={stop}, pad_id=0)[0] for r in rows] == cut


def test_stream_yields_the_generated_tokens_without_the_stop(model: LlamaForCausalLM) -> None:
    [prompt] = prompts([6], seed=7)
    params = SamplingParams(max_new_tokens=10)
    full = generate(model, [prompt], params, stop_ids=NO_STOP, pad_id=0)[0]
    assert list(stream(model, prompt, params, stop_ids=NO_STOP)) == full
    assert list(stream(model, prompt, params, stop_ids={full[3]})) == full[: full.index(full[3])]


def test_sampling_is_reproducible_with_a_seed(model: LlamaForCausalLM) -> None:
    rows = prompts([5, 8])

    def sample(seed: int) -> list[list[int]]:
        params = SamplingParams(max_new_tokens=20, temperature=1.5, top_p=0.95, top_k=40, seed=seed)
        return generate(model, rows, params, stop_ids=NO_STOP, pad_id=0)

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    greedy = generate(model, rows, SamplingParams(max_new_tokens=20), stop_ids=NO_STOP, pad_id=0)
    assert sample(1) != greedy


def test_top_k_one_equals_greedy(model: LlamaForCausalLM) -> None:
    rows = prompts([5, 8])
    greedy = generate(model, rows, SamplingParams(max_new_tokens=16), stop_ids=NO_STOP, pad_id=0)
    top1 = generate(
        model,
        rows,
        SamplingParams(max_new_tokens=16, temperature=2.0, top_k=1, seed=0),
        stop_ids=NO_STOP,
        pad_id=0,
    )
    assert top1 == greedy


def test_filters_and_penalty_equal_transformers_processors() -> None:
    from transformers import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=g) * 3
    history = torch.randint(0, 50, (3, 12), generator=g)
    for k in (1, 5, 49):
        torch.testing.assert_close(gen.filter_top_k(logits, k), TopKLogitsWarper(k)(history, logits.clone()))
    for p in (0.05, 0.5, 0.9):
        torch.testing.assert_close(gen.filter_top_p(logits, p), TopPLogitsWarper(p)(history, logits.clone()))
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, history, True)
    torch.testing.assert_close(
        gen.apply_repetition_penalty(logits, seen, 1.3),
        RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone()),
    )


def test_top_p_keeps_only_the_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = gen.filter_top_p(probs.log(), 0.75).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 is the smallest set reaching 0.75


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("temperature", -0.1, "--temperature"),
        ("top_p", 0.0, "--top-p"),
        ("top_p", 1.5, "--top-p"),
        ("top_k", -1, "--top-k"),
        ("max_new_tokens", 0, "--max-new-tokens"),
        ("repetition_penalty", 0.0, "--repetition-penalty"),
    ],
)
def test_bad_sampling_params_name_the_flag(field: str, value: float, flag: str) -> None:
    with pytest.raises(TunewizError) as err:
        SamplingParams(**{field: value})
    assert err.value.message.startswith(f"{flag} is {value}")
    assert err.value.hint


def test_an_empty_prompt_is_an_error(model: LlamaForCausalLM) -> None:
    with pytest.raises(TunewizError, match="prompt 1 has no tokens"):
        generate(model, [[1, 2], []], SamplingParams(max_new_tokens=2), stop_ids=NO_STOP, pad_id=0)


@pytest.mark.parametrize("fixture", ["sp_tokenizer_dir", "bpe_tokenizer_dir"])
def test_stream_decoder_pieces_join_to_the_full_decode(fixture: str, request: pytest.FixtureRequest) -> None:
    from tunewiz.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(request.getfixturevalue(fixture))
    text = "the quick fox is über-lazy 🦙 and 日本 words"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.split())  # multi-byte characters are split over several tokens
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert any(piece.startswith(" ") for piece in pieces)  # word spaces survive piecewise decoding
