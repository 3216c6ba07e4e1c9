"""Greedy replies at each validation: the prompts are chat's, decoding draws no random number and
leaves the model training, and the replies in the events are what `tunewiz chat --from step-N` says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runs import cli, samples_by_step

from tunewiz.data import build_datasets
from tunewiz.inference.generate import SamplingParams, generate
from tunewiz.inference.load import load_for_inference, prompt_builder_for, resolve_from
from tunewiz.inference.own_data import reference_split
from tunewiz.lora.layer import apply_lora
from tunewiz.models.loading import load_model
from tunewiz.preset.schema import DataSection
from tunewiz.text.prompt import PromptBuilder
from tunewiz.text.tokenizer import load_tokenizer
from tunewiz.train.distributed import DistEnv, apply_activation_checkpointing
from tunewiz.train.sample_generations import SampleGenerations, sample_prompts, validation_prompts

ONE_RANK = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def test_replies_to_chat_prompts_draw_no_random_number_and_keep_train_mode(
    tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    tok = load_tokenizer(tiny_model_dir)
    cfg = DataSection(path=str(tiny_dataset), max_seq_len=128, val_fraction=0.1)
    _, val, stats = build_datasets(cfg, tok, seed=0)
    prompts = validation_prompts(cfg, tok, stats.prompt, seed=0, count=3)
    builder = PromptBuilder(tok, stats.prompt)
    assert len(prompts) == 3
    for prompt, sample in zip(prompts, val[:3], strict=True):  # the first three validation samples
        assert prompt.ids == builder.prompt_ids([{"role": "user", "content": prompt.prompt}])  # chat's
        ids, reference = reference_split(sample, set(tok.stop_ids))
        assert prompt.ids == ids and prompt.reference == tok.decode(reference)
    unusable = [
        [{"role": "assistant", "content": "no prompt before me"}],
        [{"role": "user", "content": "no reply"}],
        [{"role": "user", "content": "an empty reply"}, {"role": "assistant", "content": ""}],
        [
            {"role": "user", "content": "red " * 200},
            {"role": "assistant", "content": "longer than max_seq_len"},
        ],
    ]
    usable = [
        [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": p.reference}]
        for p in prompts
    ]
    assert sample_prompts([*unusable, *usable], builder, max_len=128, count=2) == prompts[:2]
    assert validation_prompts(cfg, tok, stats.prompt, seed=0, count=0) == []
    text = tmp_path / "stories.jsonl"  # plain text has no prompts
    text.write_text("".join(json.dumps({"text": f"story number {i}"}) + "\n" for i in range(10)))
    text_cfg = DataSection(path=str(text), max_seq_len=128, val_fraction=0.2)
    text_format = build_datasets(text_cfg, tok, seed=0)[2].prompt
    assert validation_prompts(text_cfg, tok, text_format, seed=0, count=3) == []

    # LoRA with dropout 0.5 and non-zero B: a forward in train mode would draw random numbers and
    # change the replies. Activation checkpointing wraps the blocks as in training.
    model = load_model(tiny_model_dir)
    apply_lora(model, targets=["q_proj", "v_proj"], rank=4, alpha=8, dropout=0.5, seed=0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    apply_activation_checkpointing(model)
    model.train()
    gens = SampleGenerations(prompts, tok, max_new_tokens=4, env=ONE_RANK)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fields = gens.generate(model)
    assert fields is not None and torch.equal(torch.get_rng_state(), before) and model.training

    params = SamplingParams(max_new_tokens=4)

    def replies() -> list[str]:
        return [
            tok.decode(generate(model, [p.ids], params, stop_ids=tok.stop_ids, pad_id=tok.pad_id)[0])
            for p in prompts
        ]

    model.eval()
    expected = replies()
    assert [s["output"] for s in fields["samples"]] == expected and all(expected)
    assert [(s["prompt"], s["reference"]) for s in fields["samples"]] == [
        (p.prompt, p.reference) for p in prompts
    ]
    model.train()
    assert replies() != expected  # what a forward with dropout on would have said
    assert SampleGenerations([], tok, max_new_tokens=4, env=ONE_RANK).generate(model) is None


@pytest.mark.slow
def test_replies_in_the_events_are_what_chat_says_at_that_step(trained_run: Path, tmp_path: Path) -> None:
    found = samples_by_step(trained_run)
    assert sorted(found) == [2, 4, 6] and all(len(samples) == 3 for samples in found.values())
    assert any(s["output"] for s in found[2])  # step 2 still rambles; later steps answer with eos at once
    params = SamplingParams(max_new_tokens=16)
    for step, samples in found.items():
        checkpoint = resolve_from(trained_run, f"step-{step}", command="chat")
        loaded = load_for_inference(str(trained_run), device="cpu", checkpoint=checkpoint)
        builder, _ = prompt_builder_for(str(trained_run), loaded.tokenizer)
        tok = loaded.tokenizer
        for sample in samples:
            ids = builder.prompt_ids([{"role": "user", "content": sample["prompt"]}])
            out = generate(loaded.model, [ids], params, stop_ids=tok.stop_ids, pad_id=tok.pad_id)[0]
            assert tok.decode(out) == sample["output"], (step, sample)
    first = found[2][0]
    chat = cli(
        "chat",
        str(trained_run),
        "--from",
        "step-2",
        "--prompt",
        first["prompt"],
        "--max-new-tokens",
        "16",
        cwd=tmp_path,
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == first["output"] + "\n"


def test_a_rank_takes_the_prompts_from_the_prepared_entry(
    tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    """The entry keeps the first validation conversations, so a rank does not read and split the
    datasets again: the prompts are the same."""
    from tunewiz.data.prepared import prepare

    tok = load_tokenizer(tiny_model_dir)
    cfg = DataSection(path=str(tiny_dataset), max_seq_len=128, val_fraction=0.1, cache_dir=str(tmp_path))
    entry = prepare(cfg, tok, seed=0, workers=1)
    kept = entry.validation_conversations()
    assert 0 < len(kept) <= 32
    reread = validation_prompts(cfg, tok, entry.stats.prompt, seed=0, count=3)
    from_entry = validation_prompts(cfg, tok, entry.stats.prompt, seed=0, count=3, conversations=kept)
    assert from_entry == reread and len(from_entry) == 3
