"""The chat templates of the new families, as their Hub repositories publish them (Qwen3's with the
thinking switch, Gemma 3's without a system role): rendered text and prompt ids equal transformers'
``apply_chat_template``, the exported ``final/`` template renders the same, and the training mask covers
exactly what the template says the assistant produced plus its end-of-turn token.

Templates: tests/model_templates/ (copied from Qwen/Qwen3-*'s and google/gemma-3-*-it's
tokenizer_config.json). The tokenizers are tiny BPEs with each family's special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewiz.data import IGNORE_INDEX, build_datasets
from tunewiz.errors import TunewizError
from tunewiz.preset.schema import DataSection
from tunewiz.text.prompt import PromptBuilder, new_prompt_format, save_tokenizer_with_prompt
from tunewiz.text.templates import resolve_template
from tunewiz.text.tokenizer import Tokenizer, load_tokenizer

TEMPLATES = Path(__file__).parent / "model_templates"
MULTI = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is a llama?"},
    # Reasoning in an earlier turn: Qwen3's template drops it from the history.
    {"role": "assistant", "content": "<think>\nan animal, from the Andes\n</think>\n\nan animal."},
    {"role": "user", "content": "and python?"},
    {"role": "assistant", "content": "<think>\na snake, or code\n</think>\n\na language to code in"},
]
PLAIN = [
    {"role": "user", "content": "what is a llama?"},
    {"role": "assistant", "content": "an animal."},
    {"role": "user", "content": "and python?"},
    {"role": "assistant", "content": "a language to code in"},
]
FAMILIES = {
    # name: (template file, special tokens, tokenizer_config.json entries, generation_config eos names)
    "qwen3": (
        "qwen3.jinja",
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        ["<|im_end|>", "<|endoftext|>"],
    ),
    "gemma3": (
        "gemma3.jinja",
        ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "add_bos_token": True},
        ["<eos>", "<end_of_turn>"],
    ),
}


def _tokenizer_dir(root: Path, family: str) -> Path:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    template_file, specials, config, stops = FAMILIES[family]
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [json.dumps(m) for m in MULTI + PLAIN] * 20 + ["<think>\n\n</think>\n\n model user system"] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    if config.get("add_bos_token"):
        bos = tok.token_to_id(config["bos_token"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{config['bos_token']} $A", special_tokens=[(config["bos_token"], bos)]
        )
    out = root / family
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    template = (TEMPLATES / template_file).read_text(encoding="utf-8")
    entries = {"tokenizer_class": "PreTrainedTokenizerFast", **config, "chat_template": template}
    (out / "tokenizer_config.json").write_text(json.dumps(entries))
    gen = {"eos_token_id": [tok.token_to_id(s) for s in stops]}
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, _tokenizer_dir(tmp_path_factory.mktemp("templates"), request.param)


def _hf(path: Path):  # noqa: ANN202 (transformers type)
    import transformers

    return transformers.AutoTokenizer.from_pretrained(path)


def _thinking_cases(name: str) -> list[bool | None]:
    return [None, True, False] if name == "qwen3" else [None]


# Gemma's template folds the system turn into the first user turn (it has no system role).
CONVERSATIONS = [MULTI, MULTI[:3], PLAIN, PLAIN[:2]]


def test_rendering_and_prompt_ids_equal_transformers(family: tuple[str, Path]) -> None:
    name, path = family
    tok, hf = load_tokenizer(path), _hf(path)
    for thinking in _thinking_cases(name):
        template = resolve_template("model", tok, "chat", thinking)
        builder = PromptBuilder(tok, new_prompt_format(template, tok))
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        for messages in CONVERSATIONS:
            for gen in (False, True):
                expected = hf.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=gen, **kwargs
                )
                assert template.render(messages, add_generation_prompt=gen) == expected
            prompt = messages[:-1]
            expected_ids = hf.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, **kwargs)
            expected_ids = expected_ids if isinstance(expected_ids, list) else expected_ids["input_ids"]
            assert builder.prompt_ids(prompt) == list(expected_ids)
    if name == "gemma3":  # the system turn folded into the first user turn, as the template does
        text = resolve_template("model", tok, "chat").render(MULTI[:2], add_generation_prompt=True)
        assert (
            text
            == "<bos><start_of_turn>user\nbe brief\n\nwhat is a llama?<end_of_turn>\n<start_of_turn>model\n"
        )


def _trained_texts(tok: Tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The trained stretches of a sample as text (labels are shifted: labels[t] is token t + 1)."""
    trained = [False, *[label != IGNORE_INDEX for label in labels[:-1]]]
    runs: list[list[int]] = []
    for i, (token, on) in enumerate(zip(ids, trained, strict=True)):
        if on:
            if i == 0 or not trained[i - 1]:
                runs.append([])
            runs[-1].append(token)
    return [tok.decode(run, skip_special=False) for run in runs]


def test_training_mask_is_the_assistant_text_plus_end_of_turn(
    family: tuple[str, Path], tmp_path: Path
) -> None:
    name, path = family
    tok = load_tokenizer(path)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": MULTI}) + "\n" + json.dumps({"messages": PLAIN}) + "\n")
    eot = "<|im_end|>" if name == "qwen3" else "<end_of_turn>"
    expected = {
        # Qwen3 drops the earlier turn's reasoning (the history the model later sees has none); the last
        # turn's reasoning block is what the model produces, so it is trained; with thinking off the prompt
        # already holds the empty block and the answer alone is trained.
        ("qwen3", None): [
            [f"an animal.{eot}", f"<think>\na snake, or code\n</think>\n\na language to code in{eot}"],
            [f"an animal.{eot}", f"<think>\n\n</think>\n\na language to code in{eot}"],
        ],
        ("qwen3", False): [
            [f"an animal.{eot}", f"<think>\na snake, or code\n</think>\n\na language to code in{eot}"],
            [f"an animal.{eot}", f"a language to code in{eot}"],
        ],
        ("gemma3", None): [
            [
                f"<think>\nan animal, from the Andes\n</think>\n\nan animal.{eot}",
                f"<think>\na snake, or code\n</think>\n\na language to code in{eot}",
            ],
            [f"an animal.{eot}", f"a language to code in{eot}"],
        ],
    }
    for thinking in [None, False] if name == "qwen3" else [None]:
        cfg = DataSection(
            path=str(data),
            format="chat",
            template="model",
            thinking=thinking,
            shuffle=False,
            val_fraction=0.0,
        )
        train, _, _ = build_datasets(cfg, tok, seed=0)
        got = [_trained_texts(tok, s.input_ids, s.labels) for s in train]
        assert got == expected[(name, thinking)]
        # The prompt part of each sample is the prompt ids of its conversation up to the last reply.
        template = resolve_template("model", tok, "chat", thinking)
        builder = PromptBuilder(tok, new_prompt_format(template, tok))
        for sample, messages in zip(train, [MULTI, PLAIN], strict=True):
            if thinking is False and "</think>" in messages[-1]["content"]:
                continue  # a reply with reasoning contradicts the prompt's empty think block
            prompt = builder.prompt_ids(messages[:-1])
            assert sample.input_ids[: len(prompt)] == prompt
            # ... and the last reply's first token is the first trained one after the assistant header.
            assert sample.labels[len(prompt) - 2] == IGNORE_INDEX != sample.labels[len(prompt) - 1]


def test_thinking_switch_is_baked_into_the_exported_template(tmp_path: Path) -> None:
    path = _tokenizer_dir(tmp_path, "qwen3")
    tok = load_tokenizer(path)
    template = resolve_template("model", tok, "chat", thinking=False)
    fmt = new_prompt_format(template, tok)
    save_tokenizer_with_prompt(tok, tmp_path / "final", fmt)
    # transformers on final/ with no enable_thinking argument renders what the run trained with.
    exported = _hf(tmp_path / "final").apply_chat_template(
        PLAIN[:1], tokenize=False, add_generation_prompt=True
    )
    assert exported.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert exported == PromptBuilder(tok, fmt).render(PLAIN[:1])
    with pytest.raises(TunewizError, match="data.thinking is set, but chat template `chatml`"):
        resolve_template("chatml", tok, "chat", thinking=False)


def test_template_from_a_multimodal_processor_file(tmp_path: Path) -> None:
    # Multimodal repositories may hold the template only in the processor's chat_template.json.
    path = _tokenizer_dir(tmp_path, "gemma3")
    config = json.loads((path / "tokenizer_config.json").read_text())
    template = config.pop("chat_template")
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    tok = load_tokenizer(path)
    assert tok.chat_template is not None and tok.chat_template.source == "chat_template.json"
    assert tok.chat_template.render(PLAIN[:1], add_generation_prompt=True).endswith("<start_of_turn>model\n")


@pytest.mark.parametrize("case", ["qwen3", "qwen3-no-thinking", "gemma3"])
def test_every_inference_path_prompts_with_the_trained_ids(case: str, tmp_path: Path) -> None:
    # tests/test_prompt.py's invariant for these families' own templates: the prompt part of a training
    # sample equals the prompt ids of `chat`, of `eval` (lm-eval's chat path) and of transformers'
    # apply_chat_template on final/ (which carries the recorded template, the thinking switch included).
    import transformers
    from test_prompt import _prompt_part, _tiny_loaded

    from tunewiz.inference.generate import SamplingParams
    from tunewiz.inference.lm_eval_adapter import TunewizLM
    from tunewiz.inference.load import ChatSession, prompt_builder_for
    from tunewiz.text.prompt import read_prompt_record, write_prompt_record

    family, thinking = case.split("-")[0], (False if case.endswith("no-thinking") else None)
    base = load_tokenizer(_tokenizer_dir(tmp_path, family))
    conversations = [PLAIN[:2], PLAIN] + ([] if thinking is False else [MULTI])
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    cfg = DataSection(
        path=str(data), template="model", thinking=thinking, max_seq_len=512, val_fraction=0.0, shuffle=False
    )
    samples, _, stats = build_datasets(cfg, base, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(json.dumps({"name": "run", "model": {"path": "x"}, "data": {}}))
    write_prompt_record(run, stats.prompt)
    assert read_prompt_record(run) == stats.prompt
    save_tokenizer_with_prompt(base, run / "final", stats.prompt)
    final = load_tokenizer(run / "final")
    hf = transformers.AutoTokenizer.from_pretrained(str(run / "final"))
    prompts, warning = prompt_builder_for(str(run), final)
    assert warning is None
    loaded = _tiny_loaded(final)
    lm = TunewizLM(loaded, prompts=prompts)
    for sample, conversation in zip(samples, conversations, strict=True):
        expected = _prompt_part(sample)
        history = conversation[:-1]
        system = history[0]["content"] if history[0]["role"] == "system" else None
        session = ChatSession(loaded, prompts, SamplingParams(), system=system)
        turns = [m for m in history if m["role"] != "system"]
        session.messages = turns[:-1]
        assert session.prompt_ids(turns[-1]["content"]) == expected, final.decode(
            expected, skip_special=False
        )
        assert lm.tok_encode(lm.apply_chat_template(history, add_generation_prompt=True)) == expected
        hf_ids = hf.apply_chat_template(history, add_generation_prompt=True, tokenize=True)
        assert list(hf_ids if isinstance(hf_ids, list) else hf_ids["input_ids"]) == expected
        assert final.decode(expected, skip_special=False).endswith(
            {"qwen3": "<|im_start|>assistant\n", "qwen3-no-thinking": "<think>\n\n</think>\n\n"}.get(
                case, "<start_of_turn>model\n"
            )
        )
