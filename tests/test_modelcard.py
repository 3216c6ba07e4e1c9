"""The model card: metadata that huggingface_hub's ModelCard parses back (model-index included), and a
body built from the run's preset, events and eval results."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tunewiz.hub.modelcard import (
    CardFacts,
    hub_dataset_id,
    hub_model_id,
    read_training_stats,
    render_model_card,
)
from tunewiz.preset.schema import Preset

GIB = 2**30


def _preset(**changes: object) -> Preset:
    data = {
        "name": "smol-alpaca",
        "method": "lora",
        "model": {"path": "HuggingFaceTB/SmolLM2-135M", "dtype": "bf16"},
        "lora": {"rank": 16, "alpha": 32, "targets": ["q_proj", "v_proj"]},
        "data": {"path": "tatsu-lab/alpaca", "max_seq_len": 1024, "packing": True},
        "train": {"lr": 2e-4, "epochs": 2, "micro_batch_size": 4, "grad_accum": 8, "warmup_steps": 10},
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            data[section] = {**data[section], field: value}  # type: ignore[dict-item]
        else:
            data[section] = value
    return Preset.model_validate(data)


# Two launches (a resume): the card reports the last start's hardware and the summed training time
# (30 min in the first launch, 32 min 05 s in the second; the hour between them does not count).
EVENTS = [
    {
        "event": "start",
        "time": 0,
        "hardware": "1 × NVIDIA GeForce RTX 4090",
        "device": "cuda",
        "world_size": 1,
        "num_train_samples": 49402,
        "trainable_params": 921_600,
        "total_params": 135_436_416,
        "step": 0,
    },
    {
        "event": "step",
        "time": 1800,
        "step": 1,
        "loss": 2.1,
        "tokens_per_s": 9000.0,
        "peak_memory_bytes": [6 * GIB],
        "tokens_total": 30000,
        "elapsed": 3.0,
    },
    {
        "event": "start",
        "time": 5400,
        "hardware": "1 × NVIDIA GeForce RTX 4090",
        "device": "cuda",
        "world_size": 1,
        "num_train_samples": 49402,
        "trainable_params": 921_600,
        "total_params": 135_436_416,
        "step": 1,
    },
    {
        "event": "step",
        "time": 5500,
        "step": 2,
        "loss": 1.5,
        "tokens_per_s": 12000.0,
        "peak_memory_bytes": [7 * GIB],
        "tokens_total": 60000,
        "elapsed": 3.0,
    },
    {
        "event": "step",
        "time": 6000,
        "step": 3,
        "loss": 1.25,
        "tokens_per_s": 11000.0,
        "peak_memory_bytes": [int(6.5 * GIB)],
        "tokens_total": 90000,
        "elapsed": 6.0,
    },
    {"event": "eval", "time": 7000, "step": 3, "val_loss": 1.4375},
    {"event": "end", "time": 7325, "step": 3, "elapsed": 3600.0, "tokens_total": 90000, "final_dir": "final"},
    {"event": "future_kind", "time": 7325},
]

RESULTS = {
    "model": "runs/smol-alpaca/final",
    "adapter": "runs/smol-alpaca/final/adapter",
    "tasks": {
        "hellaswag": {
            "acc,none": 0.4125,
            "acc_stderr,none": 0.0049,
            "acc_norm,none": 0.5,
            "alias": "hellaswag",
        },
        "arc_easy": {"acc": 0.625, "acc_stderr": 0.01},
    },
    "base": {
        "tasks": {
            "hellaswag": {"acc,none": 0.4, "acc_stderr,none": 0.0049, "acc_norm,none": 0.49},
            "arc_easy": {"acc": 0.6, "acc_stderr": 0.01},
        }
    },
    "limit": 100,
    "num_fewshot": 0,
    "lm_eval_version": "0.4.13",
    "date": "2026-01-02",
}


def _facts(preset: Preset | None = None, results: dict | None = RESULTS) -> CardFacts:
    return CardFacts(preset or _preset(), read_training_stats(EVENTS), results, "llama", True)


def _load(text: str, tmp_path: Path) -> ModelCard:
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    return ModelCard.load(tmp_path / "README.md")


def test_training_stats_fold_all_launches() -> None:
    stats = read_training_stats(EVENTS)
    assert stats.steps == 3 and stats.tokens_total == 90000 and stats.launches == 2
    assert stats.wall_s == 1800 + 1925  # each launch from its start to its last event
    assert stats.tokens_per_s == 11000.0  # the launches' first steps (9000, 12000) left out
    assert stats.peak_memory_bytes == 7 * GIB
    assert (stats.final_loss, stats.val_loss) == (1.25, 1.4375)
    assert stats.hardware == "1 × NVIDIA GeForce RTX 4090" and stats.trainable_params == 921_600
    assert read_training_stats([]).steps is None


def test_adapter_card_metadata_round_trips(tmp_path: Path) -> None:
    text, warnings = render_model_card(
        _facts(),
        repo_id="alice/smol-alpaca-lora",
        kind="adapter",
        badge="tunewiz-badge.svg",
        loss_plot="loss.png",
    )
    assert warnings == []
    card = _load(text, tmp_path)
    meta = card.data.to_dict()
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M"
    assert meta["base_model_relation"] == "adapter"
    assert meta["datasets"] == ["tatsu-lab/alpaca"]
    assert meta["license"] == "apache-2.0"  # the base model's, from the catalog
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert meta["tags"] == ["tunewiz", "lora", "llama", "peft"]
    results = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("arc_easy", "acc"): 0.625,
        ("hellaswag", "acc"): 0.4125,
        ("hellaswag", "acc_norm"): 0.5,
    }
    assert card.data.model_name == "smol-alpaca-lora"
    assert "model-index" in text.split("---")[1]


def test_card_body_reads_like_a_page(tmp_path: Path) -> None:
    text, _ = render_model_card(
        _facts(),
        repo_id="alice/smol-alpaca-lora",
        kind="adapter",
        badge="tunewiz-badge.svg",
        loss_plot="loss.png",
    )
    body = _load(text, tmp_path).text
    assert body.startswith("\n# smol-alpaca-lora\n\n![Trained with tunewiz](tunewiz-badge.svg)")
    assert (
        "A LoRA adapter for [HuggingFaceTB/SmolLM2-135M](https://huggingface.co/HuggingFaceTB/SmolLM2-135M), "
        "fine-tuned on [tatsu-lab/alpaca](https://huggingface.co/datasets/tatsu-lab/alpaca)"
    ) in body
    assert "3 optimizer steps, 90.0k trained tokens, 1 h 02 min, on 1 × NVIDIA GeForce RTX 4090." in body
    # Eval table with the base model and the change; the limit caveat.
    assert "| hellaswag | acc | 0.4125 ± 0.0049 | 0.4000 ± 0.0049 | +0.0125 |" in body
    assert "| arc_easy | acc | 0.6250 ± 0.0100 | 0.6000 ± 0.0100 | +0.0250 |" in body
    assert "first 100 examples per task only" in body and "lm-evaluation-harness 0.4.13" in body
    # Training facts from events.jsonl.
    assert "| Peak memory | 7.00 GiB (max allocated per GPU) |" in body
    assert "| Throughput | 11,000 input tokens/s (median over steps, all ranks) |" in body
    assert "| Training time | 1 h 02 min over 2 launches (resumed) |" in body
    assert "| Trainable parameters | 921.6k of 135.4M (0.68%) |" in body
    assert "| Final validation loss | 1.4375 |" in body
    assert "![Training and validation loss](loss.png)" in body
    # Hyperparameters from config.yaml.
    assert "| LoRA rank / alpha / dropout | 16 / 32 / 0 |" in body
    assert "| Batch size (samples) | 4 per rank × 8 accumulation × 1 rank(s) = 32 |" in body
    assert "| Learning rate | 0.0002, cosine schedule, 10 warm-up steps |" in body
    assert "| Sequence length | 1024, packed |" in body
    # Usage: peft auto class (base on the Hub), chat template, and the tunewiz commands.
    assert 'AutoPeftModelForCausalLM.from_pretrained("alice/smol-alpaca-lora")' in body
    assert "apply_chat_template" in body
    assert "tunewiz chat HuggingFaceTB/SmolLM2-135M --adapter smol-alpaca-lora" in body


def test_merged_card_without_eval(tmp_path: Path) -> None:
    text, _ = render_model_card(
        _facts(_preset(method="full"), results=None), repo_id="alice/smol-full", kind="merged", license="mit"
    )
    card = _load(text, tmp_path)
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["license"] == "mit"
    assert meta["base_model_relation"] == "finetune" and "full" in meta["tags"]
    assert card.data.eval_results is None and "model-index" not in text
    assert "## Evaluation" not in card.text and "LoRA rank" not in card.text
    assert 'AutoModelForCausalLM.from_pretrained("alice/smol-full")' in card.text
    assert "tunewiz download alice/smol-full\ntunewiz chat alice/smol-full" in card.text


def test_license_and_local_base_model(tmp_path: Path) -> None:
    qwen = _preset(**{"model.path": "Qwen/Qwen2.5-3B"})
    meta = _load(render_model_card(_facts(qwen), repo_id="a/b", kind="adapter")[0], tmp_path).data.to_dict()
    # A license the Hub has no id for becomes `other` with its name and a link.
    assert (meta["license"], meta["license_name"]) == ("other", "qwen-research")
    assert meta["license_link"] == "https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/LICENSE"

    local = _preset(**{"model.path": str(tmp_path), "data.path": "data/train.jsonl"})
    text, warnings = render_model_card(_facts(local), repo_id="a/b", kind="adapter")
    meta = _load(text, tmp_path).data.to_dict()
    assert "base_model" not in meta and "datasets" not in meta and "license" not in meta
    assert any("--license" in w for w in warnings) and any("not on the Hub" in w for w in warnings)
    assert 'PeftModel.from_pretrained(base, "a/b")' in text


@pytest.mark.parametrize(
    ("path", "model", "dataset"),
    [
        ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B"),
        ("tunewiz:tiny", None, None),
        ("./data/qa.jsonl", None, None),
        ("qa.parquet", None, None),
        ("squad", None, "squad"),
        ("/abs/dir", None, None),
    ],
)
def test_hub_ids(path: str, model: str | None, dataset: str | None) -> None:
    assert hub_model_id(path) == model
    assert hub_dataset_id(path) == dataset


@pytest.mark.parametrize(
    ("record_template", "data_template", "chat_snippet"),
    [
        ("{{ bos_token }}<chatml template>", "chatml", True),  # final/ holds the trained ChatML
        (None, "auto", False),  # plain-text run: no template was trained
    ],
)
def test_card_prompts_with_the_template_the_run_recorded(
    tmp_path: Path, record_template: str | None, data_template: str, chat_snippet: bool
) -> None:
    import json

    from tunewiz.hub.modelcard import read_card_facts
    from tunewiz.preset.files import dump_preset
    from tunewiz.run.directory import RunDir
    from tunewiz.text.prompt import PromptFormat, write_prompt_record

    run = RunDir(tmp_path / "run")
    (run.final).mkdir(parents=True)
    run.config.write_text(dump_preset(_preset(**{"data.template": data_template})))
    run.events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    (run.final / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    bos = "in_template" if record_template else "prepended"
    write_prompt_record(run.path, PromptFormat(record_template, "chatml", "builtin:chatml", bos))
    facts = read_card_facts(run)
    assert facts.has_chat_template is chat_snippet
    text, _ = render_model_card(facts, repo_id="alice/x", kind="merged")
    assert ("apply_chat_template" in text) is chat_snippet


def test_own_data_scores_and_a_mixed_data_list_in_the_card(tmp_path: Path) -> None:
    own = {
        "data": "the validation split",
        "samples": 10,
        "max_new_tokens": 64,
        "base": {"loss": 2.5, "perplexity": 12.18, "exact_match": 0.0, "chrf": 10.0},
        "tuned": {"loss": 1.25, "perplexity": 3.49, "exact_match": 0.5, "chrf": 60.0},
    }
    mixed = _preset(**{"data.path": ["tatsu-lab/alpaca", {"path": "data/mine.jsonl", "weight": 2}]})
    text, _ = render_model_card(_facts(mixed, results={"own_data": own}), repo_id="a/b", kind="adapter")
    card = _load(text, tmp_path)
    assert "## On its own data" in card.text and "## Evaluation" not in card.text
    assert "| Loss on trained tokens | 2.5000 | 1.2500 | -1.2500 |" in card.text
    assert "| chrF | 10.0000 | 60.0000 | +50.0000 |" in card.text
    assert "`tatsu-lab/alpaca + data/mine.jsonl`" in card.text
    assert card.data.to_dict()["datasets"] == ["tatsu-lab/alpaca"]
    with_tasks = {**RESULTS, "own_data": own}
    both = render_model_card(_facts(results=with_tasks), repo_id="a/b", kind="adapter")[0]
    assert "## Evaluation" in both and "## On its own data" in both
