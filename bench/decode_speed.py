"""Decode speed: tunewiz's `generate` against transformers' `generate` on the same random ~25M-param
Llama, greedy, batch 1 and 8, same prompts, same number of new tokens, no stop token.

Decode tokens/s excludes the prefill: each side is timed generating N and 1 new tokens, and
``rows * (N - 1) / (t_N - t_1)`` is reported (best of ``--repeats`` runs each). The two sides take
turns within each repeat, so a busy machine slows both alike. Both sides must produce the same
tokens, so the comparison is like for like.

Run: ``python bench/decode_speed.py`` (about two minutes on two CPU cores).
"""

from __future__ import annotations

import argparse
import time

import torch

from tunewiz.inference.generate import SamplingParams, generate
from tunewiz.models.config import LlamaConfig
from tunewiz.models.llama import LlamaForCausalLM

# ~25M parameters: 8192 * 512 * 2 embeddings + 6 blocks of 3.2M.
HF_CONFIG = dict(
    vocab_size=8192,
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=1024,
)


def bench_batch(
    ours: LlamaForCausalLM, hf: torch.nn.Module, batch: int, args: argparse.Namespace
) -> tuple[dict[str, float], bool]:
    """Decode tokens/s of both sides on ``batch`` random prompts, and whether their tokens agree."""
    ids = torch.randint(
        1, HF_CONFIG["vocab_size"], (batch, args.prompt_len), generator=torch.Generator().manual_seed(batch)
    )  # [B, prompt_len]
    rows = ids.tolist()

    def run_ours(n: int) -> list[list[int]]:
        return generate(ours, rows, SamplingParams(max_new_tokens=n), stop_ids=(), pad_id=0)

    def run_hf(n: int) -> list[list[int]]:
        with torch.no_grad():
            out = hf.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
                eos_token_id=None,
            )
        return out[:, args.prompt_len :].tolist()

    runs = {"tunewiz": run_ours, "transformers": run_hf}
    same = run_ours(args.new_tokens) == run_hf(args.new_tokens)
    best = dict.fromkeys([(name, n) for name in runs for n in (1, args.new_tokens)], float("inf"))
    for _ in range(args.repeats):
        for name, n in list(best):
            start = time.perf_counter()
            runs[name](n)
            best[name, n] = min(best[name, n], time.perf_counter() - start)
    rates = {
        name: batch * (args.new_tokens - 1) / (best[name, args.new_tokens] - best[name, 1]) for name in runs
    }
    return rates, same


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers

    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(**HF_CONFIG)
    hf = transformers.LlamaForCausalLM(hf_config).to(dtype).eval()
    ours = LlamaForCausalLM(LlamaConfig.from_hf(hf_config.to_dict())).to(dtype).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    n_params = sum(p.numel() for p in ours.parameters())
    print(
        f"model: {n_params / 1e6:.1f}M params, {args.dtype}, {torch.get_num_threads()} threads; "
        f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens, greedy"
    )

    for batch in (1, 8):
        rates, same = bench_batch(ours, hf, batch, args)
        print(
            f"batch {batch}: tunewiz {rates['tunewiz']:.0f} tok/s, transformers "
            f"{rates['transformers']:.0f} tok/s, "
            f"ratio {rates['tunewiz'] / rates['transformers']:.2f}x (same tokens: {same})"
        )


if __name__ == "__main__":
    main()
