"""One prompt builder: every inference path prompts with the ids the run trained on.

The matrix: each built-in template and the model's own × a SentencePiece tokenizer with bos, a
tokenizer.json with bos (Llama-3 style) and a tokenizer.json without bos (Qwen style) × a single turn
and a multi-turn conversation with a system prompt. For each, the prompt part of the training sample
(the tokens before the last reply's first trained token) must equal, token for token, the prompt ids
of `chat`, of `eval` (lm-eval's chat path), and of transformers' `apply_chat_template` on `final/`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tunewiz.data import IGNORE_INDEX, Sample, build_datasets
from tunewiz.preset.schema import DataSection
from tunewiz.text.prompt import (
    PromptFormat,
    read_prompt_record,
    save_tokenizer_with_prompt,
    write_prompt_record,
)
from tunewiz.text.tokenizer import Tokenizer, load_tokenizer

SINGLE = [
    {"role": "user", "content": "what is a llama?"},
    {"role": "assistant", "content": "an animal."},
]
MULTI = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is a llama?"},
    {"role": "assistant", "content": "an animal."},
    {"role": "user", "content": "and python?"},
    {"role": "assistant", "content": "a language to code in"},
]
# Model templates of each tokenizer kind; none renders bos itself, so the bos rule decides.
INSTRUCTION_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction: ' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response: ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:' }}{% endif %}"
)
# A model template that rewrites earlier turns, as reasoning models' do: an assistant turn before the
# last one loses its `<think>...</think>` part. Compared turn by turn (each conversation's last reply).
REWRITING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% set c = m['content'] %}"
    "{% if not loop.last %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>assistant\n' + c + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = ["alpaca", "llama2", "llama3", "chatml", "model", "model-rewriting"]
TOKENIZERS = ["sentencepiece_bos", "json_bos", "json_no_bos"]


@pytest.fixture(scope="module")
def tokenizer_dirs(
    sp_tokenizer_dir: Path, bpe_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    root = tmp_path_factory.mktemp("prompt_tokenizers")
    sp = shutil.copytree(sp_tokenizer_dir, root / "sentencepiece_bos")
    config = json.loads((sp / "tokenizer_config.json").read_text())
    (sp / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": INSTRUCTION_TEMPLATE}))
    llama3 = shutil.copytree(bpe_tokenizer_dir, root / "json_bos")  # bos from the post-processor
    qwen = shutil.copytree(bpe_tokenizer_dir, root / "json_no_bos")
    tok = HFTokenizer.from_file(str(qwen / "tokenizer.json"))
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(qwen / "tokenizer.json"))
    config = json.loads((qwen / "tokenizer_config.json").read_text())
    config.update(bos_token=None, eos_token="<|im_end|>")
    (qwen / "tokenizer_config.json").write_text(json.dumps(config))
    return {"sentencepiece_bos": sp, "json_bos": llama3, "json_no_bos": qwen}


def _prompt_part(sample: Sample) -> list[int]:
    """The tokens before the last reply: up to the start of the last run of trained tokens."""
    trained = [False] + [label != IGNORE_INDEX for label in sample.labels[:-1]]  # per input position
    start = len(trained)
    while start > 0 and not trained[start - 1]:
        start -= 1
    while start > 0 and trained[start - 1]:
        start -= 1
    return sample.input_ids[:start]


def _tiny_loaded(tokenizer: Tokenizer):
    import torch

    from tunewiz.inference.load import LoadedModel
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM

    config = LlamaConfig.from_hf(
        {
            "model_type": "llama",
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 256,
        }
    )
    model = LlamaForCausalLM(config)
    model.init_weights()
    return LoadedModel(model, tokenizer, torch.device("cpu"), torch.float32, "tiny", False, "tiny")


@pytest.mark.parametrize("kind", TOKENIZERS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_inference_path_prompts_with_the_trained_ids(
    kind: str, template: str, tokenizer_dirs: dict[str, Path], tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    from tunewiz.inference.generate import SamplingParams
    from tunewiz.inference.lm_eval_adapter import TunewizLM
    from tunewiz.inference.load import ChatSession, prompt_builder_for

    tokenizer_dir, choice, conversations = tokenizer_dirs[kind], template, (SINGLE, MULTI)
    if template == "model-rewriting":
        tokenizer_dir = shutil.copytree(tokenizer_dir, tmp_path / "tokenizer")
        config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
        config["chat_template"] = REWRITING_TEMPLATE
        (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(config))
        choice = "model"
        conversations = tuple(
            [
                {**m, "content": f"<think>the user asks {i}</think>{m['content']}"}
                if m["role"] == "assistant"
                else m
                for i, m in enumerate(c)
            ]
            for c in conversations
        )
    base = load_tokenizer(tokenizer_dir)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    cfg = DataSection(path=str(data), template=choice, max_seq_len=512, val_fraction=0.0, shuffle=False)
    samples, _, stats = build_datasets(cfg, base, seed=0)

    # The run directory as training leaves it: config.yaml, prompt.json, final/ with the tokenizer.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "run", "model": {"path": "x"}, "data": {}}))
    write_prompt_record(run, stats.prompt)
    assert read_prompt_record(run) == stats.prompt
    save_tokenizer_with_prompt(base, run / "final", stats.prompt)
    final = load_tokenizer(run / "final")
    hf = transformers.AutoTokenizer.from_pretrained(str(run / "final"))
    prompts, warning = prompt_builder_for(str(run), final)
    assert warning is None
    loaded = _tiny_loaded(final)
    lm = TunewizLM(loaded, prompts=prompts)

    bos_rendered = stats.prompt.bos == "in_template"
    assert bos_rendered == (kind != "json_no_bos")
    for sample, conversation in zip(samples, conversations, strict=True):
        expected = _prompt_part(sample)
        history = conversation[:-1]
        system = history[0]["content"] if history[0]["role"] == "system" else None
        session = ChatSession(loaded, prompts, SamplingParams(), system=system)
        turns = [m for m in history if m["role"] != "system"]
        session.messages = turns[:-1]
        chat_ids = session.prompt_ids(turns[-1]["content"])
        eval_ids = lm.tok_encode(lm.apply_chat_template(history, add_generation_prompt=True))
        hf_ids = hf.apply_chat_template(history, add_generation_prompt=True, tokenize=True)
        hf_ids = list(hf_ids["input_ids"] if not isinstance(hf_ids, list) else hf_ids)
        assert chat_ids == expected, (kind, template, final.decode(chat_ids, skip_special=False))
        if template == "model-rewriting":  # the earlier reply was rewritten in both
            assert "<think>" not in final.decode(expected, skip_special=False)
            assert "<think>" in final.decode(sample.input_ids, skip_special=False)
        assert eval_ids == expected
        assert hf_ids == expected
        # bos exactly where the tokenizer wants it: first (once, except llama2's per-turn `<s>[INST]`).
        assert (expected[0] == base.bos_id) == (kind != "json_no_bos")
        if template != "llama2" and base.bos_id is not None:
            assert expected.count(base.bos_id) == (kind != "json_no_bos")


def test_chatml_run_on_a_model_with_its_own_template_exports_chatml(
    tokenizer_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """Found in issue 15: `data.template: chatml` on a model with its own template exported the model's."""
    base = load_tokenizer(tokenizer_dirs["sentencepiece_bos"])
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": SINGLE}) + "\n")
    cfg = DataSection(path=str(data), template="chatml", val_fraction=0.0)
    (sample,), _, stats = build_datasets(cfg, base, seed=0)
    save_tokenizer_with_prompt(base, tmp_path / "final", stats.prompt)
    final = load_tokenizer(tmp_path / "final")
    assert final.chat_template is not None and "<|im_start|>" in final.chat_template.template
    config = json.loads((tmp_path / "final" / "tokenizer_config.json").read_text())
    assert config["chat_template"] == final.chat_template.template  # both places say the same
    assert "### Instruction" not in final.chat_template.render(SINGLE)


def test_runs_without_a_record_fall_back_to_the_old_rule_and_say_so(
    tokenizer_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from tunewiz.inference.load import prompt_builder_for

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    model_dir = tmp_path / "plain"
    shutil.copytree(tokenizer_dirs["json_bos"], model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    preset = {
        "name": "old",
        "model": {"path": str(model_dir)},
        "data": {"path": "x.jsonl", "format": "chat", "template": "auto"},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(preset))
    tokenizer = load_tokenizer(model_dir)
    prompts, warning = prompt_builder_for(str(run), tokenizer)
    assert warning is not None and "no prompt.json" in warning and "chatml" in warning
    assert prompts.format == PromptFormat(
        prompts.format.template, "chatml", "builtin:chatml", "prepended", "every_reply", recorded=False
    )
    # The old rule: bos id before the rendering (the builtin chatml renders none).
    ids = prompts.prompt_ids(SINGLE[:1])
    assert ids == [tokenizer.bos_id, *tokenizer.encode(prompts.render(SINGLE[:1]))]
    # Old runs trained with this rule, so a sample built by it starts with the same ids.
    tokens, _ = prompts.chat_sample(SINGLE, train_on_inputs=False)
    assert tokens[: len(ids)].tolist() == ids
