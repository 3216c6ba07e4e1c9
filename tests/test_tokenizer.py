"""Tokenizer and chat template parity with transformers, on tokenizers built locally."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunewiz.errors import TunewizError
from tunewiz.text.templates import builtin_template, resolve_template
from tunewiz.text.tokenizer import load_tokenizer

TINY = Path(__file__).resolve().parent.parent / "tunewiz" / "assets" / "tiny"  # the shipped model

TEXTS = [
    "hello world",
    " hello  world\n\nthe",
    "<s>hello</s> world",
    "Ünïcode 字 emoji 🙂",
    "[INST] hi [/INST] ok",
    "<|im_start|>user\nhi<|im_end|>\n",
    "  leading",
    "trailing  ",
    "",
    "<|begin_of_text|>the dog<|end_of_text|>",
]
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is a llama?"},
    {"role": "assistant", "content": "an animal."},
    {"role": "user", "content": "and python?"},
    {"role": "assistant", "content": "a language."},
]


def _hf(path: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("fixture", ["sp_tokenizer_dir", "bpe_tokenizer_dir"])
def test_encode_decode_match_transformers(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    ours, hf = load_tokenizer(path), _hf(path)
    assert (ours.vocab_size, ours.bos_id, ours.eos_id) == (len(hf), hf.bos_token_id, hf.eos_token_id)
    for text in TEXTS:
        # transformers' add_special_tokens=False is our plain encode; its default adds bos (both fixtures).
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False), text
        with_bos = ours.encode(text, add_bos=True)
        assert with_bos == hf.encode(text), text
        assert ours.decode(with_bos) == hf.decode(with_bos, skip_special_tokens=True), text
        assert ours.decode(with_bos, skip_special=False) == hf.decode(with_bos, skip_special_tokens=False), (
            text
        )


def test_sentencepiece_specials_and_offsets(sp_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(sp_tokenizer_dir)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_ids) == (1, 2, 2, frozenset({2}))
    ids, offsets = tok.encode_with_offsets("<s>hello</s> world")
    assert ids[0] == 1 and ids[2] == 2 and offsets[0].tolist() == [0, 3] and offsets[2].tolist() == [8, 12]
    assert tok.encode("hi", add_eos=True)[-1] == 2
    assert tok.chat_template is None


def test_json_tokenizer_special_tokens_and_stops(bpe_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(bpe_tokenizer_dir)
    im_start, im_end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    assert tok.encode("<|im_start|>user")[0] == im_start
    assert tok.stop_ids == frozenset({tok.eos_id, im_end})
    assert tok.pad_id == tok.eos_id  # no pad token: falls back to eos
    assert tok.special_tokens == {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}


def test_generation_config_adds_stop_ids_and_null_bos(bpe_tokenizer_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(bpe_tokenizer_dir, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    config["bos_token"] = None  # Qwen2 style: no bos even though config.json names one
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "m" / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    (tmp_path / "m" / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    tok = load_tokenizer(tmp_path / "m")
    assert tok.bos_id is None and tok.encode("hi", add_bos=True) == tok.encode("hi")
    assert tok.stop_ids == frozenset({1, 2, 3})


def test_save_pretrained_copies_files(
    bpe_tokenizer_dir: Path, sp_tokenizer_dir: Path, tmp_path: Path
) -> None:
    load_tokenizer(bpe_tokenizer_dir).save_pretrained(tmp_path / "a")
    load_tokenizer(sp_tokenizer_dir).save_pretrained(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["tokenizer.model", "tokenizer_config.json"]
    assert load_tokenizer(tmp_path / "b").encode("the dog") == load_tokenizer(sp_tokenizer_dir).encode(
        "the dog"
    )


def test_missing_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(TunewizError, match="has no tokenizer.json or tokenizer.model"):
        load_tokenizer(tmp_path)


# A Llama-3-style model template: system handling, trim, bos, strftime_now, raise_exception, loop controls.
LLAMA3_LIKE = (
    "{{ bos_token }}{% set date = strftime_now('%Y') %}"
    "{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role') }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | "
    "trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MULTILINE = """{% for message in messages %}
    {% if message['role'] == 'user' %}
        {{ 'USER: ' + message['content'] | tojson }}
    {% else %}
        {% generation %}{{ 'BOT: ' + message['content'] + eos_token }}{% endgeneration %}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}BOT:{% endif %}"""


@pytest.mark.parametrize("where", ["config_string", "config_list", "jinja_file"])
@pytest.mark.parametrize("template", [LLAMA3_LIKE, MULTILINE])
def test_model_template_renders_like_transformers(
    bpe_tokenizer_dir: Path, tmp_path: Path, where: str, template: str
) -> None:
    model = tmp_path / "m"
    shutil.copytree(bpe_tokenizer_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    if where == "jinja_file":
        del config["chat_template"]
        (model / "chat_template.jinja").write_text(template)
    else:
        config["chat_template"] = (
            template
            if where == "config_string"
            else [{"name": "tool_use", "template": "unused"}, {"name": "default", "template": template}]
        )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    tok, hf = load_tokenizer(model), _hf(model)
    assert tok.chat_template is not None
    assert tok.chat_template.source == (
        "chat_template.jinja" if where == "jinja_file" else "tokenizer_config.json"
    )
    for messages in (CONVERSATION, CONVERSATION[:2]):
        for gen in (False, True):
            assert tok.chat_template.render(messages, add_generation_prompt=gen) == hf.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen
            )


@pytest.mark.parametrize("name", ["alpaca", "llama2", "llama3", "chatml"])
def test_builtin_templates_segments(name: str) -> None:
    template = builtin_template(name, special_tokens={"bos_token": "<s>", "eos_token": "</s>"})
    messages = CONVERSATION if name != "alpaca" else CONVERSATION[1:]
    pieces = template.segments(messages)
    assert "".join(text for text, _ in pieces) == template.render(messages)
    assistant = [text for text, is_assistant in pieces if is_assistant]
    assert len(assistant) == 2
    assert "an animal." in assistant[0] and "a language." in assistant[1]
    assert "llama" not in "".join(assistant)  # no prompt text is trained
    # The end-of-turn marker belongs to the reply, so the model learns to stop.
    end = {"alpaca": "</s>", "llama2": "</s>", "llama3": "<|eot_id|>", "chatml": "<|im_end|>"}[name]
    assert all(end in text for text in assistant)


def test_builtin_render_exact() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert builtin_template("chatml").render(messages, add_generation_prompt=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n"
    )
    assert builtin_template("llama2").render(messages) == "<s>[INST] Hi [/INST] Yo </s>"
    assert builtin_template("llama3", special_tokens={"bos_token": "<|begin_of_text|>"}).render(
        messages[:1], add_generation_prompt=True
    ) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert builtin_template("alpaca").render(messages) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nHi\n\n### Response:\nYo</s>"
    )
    assert builtin_template("chatml").segments(messages) == [
        ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Yo<|im_end|>", True),  # the reply ends with its end-of-turn token, not the newline after it
        ("\n", False),
    ]


def test_segments_fallback_for_template_that_is_not_prefix_stable() -> None:
    from tunewiz.text.templates import ChatTemplate

    # A trailer after the whole conversation: no prefix rendering is a prefix of the full one, so the
    # reply is found by its content, and keeps the end-of-turn token that follows it.
    trailer = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endfor %}[END]"
    template = ChatTemplate("model", "tokenizer_config.json", trailer, {"eos_token": "</s>"})
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "reply here"}]
    assert template.segments(messages) == [
        ("<user>q<|im_end|><assistant>", False),
        ("reply here<|im_end|>", True),
        ("[END]", False),
    ]

    # Earlier replies rewritten (as reasoning templates do): an old reply that is not in the rendering is
    # left untrained; the last one is found by prefixes.
    rewrite = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[old]"
        "{% else %}<{{ m['role'] }}>{{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
    )
    template = ChatTemplate("model", "tokenizer_config.json", rewrite, {"eos_token": "</s>"})
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert template.segments(messages) == [
        ("<user>q<|im_end|>[old]<user>q2<|im_end|>", False),
        ("<assistant>a2<|im_end|>", True),
    ]


def test_resolve_template(sp_tokenizer_dir: Path, bpe_tokenizer_dir: Path) -> None:
    sp, bpe = load_tokenizer(sp_tokenizer_dir), load_tokenizer(bpe_tokenizer_dir)
    assert resolve_template("auto", bpe, "alpaca") is bpe.chat_template
    assert resolve_template("model", bpe, "chat") is bpe.chat_template
    assert resolve_template("auto", sp, "alpaca").source == "builtin:alpaca"
    assert resolve_template("auto", sp, "chat").source == "builtin:chatml"
    llama2 = resolve_template("llama2", sp, "chat")
    assert llama2.source == "builtin:llama2" and llama2.special_tokens["eos_token"] == "</s>"
    with pytest.raises(TunewizError, match="data.template is `model` but .* has no chat template"):
        resolve_template("model", sp, "chat")


def test_template_error_names_template() -> None:
    with pytest.raises(TunewizError, match="chat template `llama2` .*alternating"):
        builtin_template("llama2").render([{"role": "assistant", "content": "x"}])


# Real-world text: whitespace runs, tabs, newlines (\r\n too), non-ASCII, text right after special tokens.
REAL_WORLD = [
    "the  quick   brown\tfox",
    "line one\n\nline two\r\nthree\n",
    "naïve café 東京 — Ünïcode 🙂 x²",
    "<s>hello world</s> and <s> after a space",
    "word<s>word</s>\nnext",
    "   three leading spaces",
    "<|im_start|>user\n  hi<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|>hello<|end_of_text|>world",
]


@pytest.mark.parametrize(
    ("fixture", "settings"),
    [
        ("sp_tokenizer_dir", {}),
        ("sp_tokenizer_dir", {"add_bos_token": False}),
        ("sp_tokenizer_dir", {"add_eos_token": True}),
        ("sp_tokenizer_dir", {"legacy": True}),
        ("sp_tokenizer_dir", {"add_prefix_space": False}),
        ("bpe_tokenizer_dir", {}),
        ("bpe_tokenizer_dir", {"add_bos_token": False}),
        ("bpe_tokenizer_dir", {"add_bos_token": True, "add_eos_token": True}),
    ],
)
def test_tokenizer_config_settings_match_transformers_on_real_text(
    fixture: str, settings: dict, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every tokenizer_config.json setting that changes tokenization, on both back-ends, against
    transformers' fast tokenizer built from the same files."""
    path = shutil.copytree(request.getfixturevalue(fixture), tmp_path / "tok")
    if fixture == "sp_tokenizer_dir":  # a SentencePiece-only directory, as Llama 1/2 shipped
        assert not (path / "tokenizer.json").exists()
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**config, **settings}))
    ours, hf = load_tokenizer(path), _hf(path)
    assert (ours.adds_bos, ours.adds_eos) == (
        hf.encode("a")[0] == hf.bos_token_id,
        hf.encode("a")[-1] == hf.eos_token_id,
    )
    for text in REAL_WORLD:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False), text
        assert ours.encode(text, add_bos=ours.adds_bos, add_eos=ours.adds_eos) == hf.encode(text), text


# --- SentencePiece spans from ids (tunewiz.text.tokenizer._PieceWidths) --------------------------------

SP_ALPHABET = [
    *"abcdefghij klmnop.,!?\n\t",
    "  ",
    "\r\n",
    "é",
    "日",
    "本",
    "🙂",
    "\u0301",
    "▁",
    "ß",
    "\u00a0",
    "\x00",
]
SP_ALPHABET += ["Ａ", "ﬁ", "<s>", "</s>", "[INST]", "<|im_start|>"]


def _train_sp(out: Path, **options: object) -> Path:
    """A tiny SentencePiece model with ``options``, and the shipped model's tokenizer_config.json."""
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    words = ["hello", "world", "café", "日本", "naïve", "the", "and", "ok", "x", "  "]
    corpus = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000)]
    out.mkdir(parents=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=300,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
        **options,
    )
    shutil.copy(TINY / "tokenizer_config.json", out)
    return out


IDENTITY = {"normalization_rule_name": "identity", "remove_extra_whitespaces": False}
SP_MODELS = {
    # name: (training options, whether spans come from the ids)
    "shipped": (None, True),
    "unigram, unknown pieces (no byte fallback)": ({**IDENTITY, "model_type": "unigram"}, True),
    "bpe, no dummy prefix": ({**IDENTITY, "byte_fallback": True, "add_dummy_prefix": False}, True),
    "nmt_nfkc, extra whitespace removed (the trainer's default)": ({"byte_fallback": True}, False),
    "whitespace as suffix": ({**IDENTITY, "byte_fallback": True, "treat_whitespace_as_suffix": True}, False),
}


@pytest.mark.parametrize("name", list(SP_MODELS))
def test_sentencepiece_spans_from_ids_are_its_own_offsets(name: str, tmp_path: Path) -> None:
    """Spans computed from piece widths equal SentencePiece's offset_mapping on random text of every kind
    (byte fallback, unknown pieces, combining marks, literal ▁, whitespace runs, special tokens), and
    models whose normalizer changes text take SentencePiece's offsets."""
    import random

    options, from_ids = SP_MODELS[name]
    tok = load_tokenizer(TINY if options is None else _train_sp(tmp_path / "sp", **options))
    backend = tok._backend
    assert backend._plain is from_ids
    reference = load_tokenizer(tok.source_dir)._backend
    reference._plain = False  # SentencePiece's own offsets for every chunk
    rng = random.Random(name)
    for _ in range(3000):
        text = "".join(rng.choice(SP_ALPHABET) for _ in range(rng.randint(0, 40)))
        ids, spans = tok.encode_with_offsets(text)
        want_ids, want_spans = reference.encode(text)
        assert ids.tolist() == want_ids.tolist() == tok.encode(text), (name, text)
        assert spans.tolist() == want_spans.tolist(), (name, text)
    if from_ids:  # the widths did the work (an unknown piece falls back, and not every text has one)
        assert backend._widths is not None


# --- byte-level BPE spans from ids (tunewiz.text.tokenizer._ByteWidths) -------------------------------

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _byte_level(out: Path, kind: str) -> Path:
    """A tiny byte-level BPE tokenizer.json of one family's make-up (``kind``), trained here."""
    import random

    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    if kind in ("llama3", "qwen2 (NFC)", "NFKC"):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=kind == "prefix space")
    if kind in ("qwen2 (NFC)", "NFKC"):
        tok.normalizer = normalizers.NFC() if kind == "qwen2 (NFC)" else normalizers.NFKC()
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    words = ["hello", "world", "café", "日本語", "naïve", "the", "  ", "\n", "🙂", "ok", "123", "don't"]
    corpus = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)]
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if kind == "stripping added token":
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])
    template = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    trim = kind == "gpt2 (offsets trimmed)"
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=trim), template])
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))
    return out


BYTE_LEVEL = {
    # name: whether spans come from the ids
    "llama3": True,
    "qwen2 (NFC)": True,
    "NFKC": True,
    "plain ByteLevel": True,
    "stripping added token": True,
    "gpt2 (offsets trimmed)": False,
    "prefix space": False,
}
BYTE_ALPHABET = [a for a in SP_ALPHABET if a != "[INST]"] + ["<mask>", "don't", "12345", "日本語", "  \n"]


@pytest.mark.parametrize("name", list(BYTE_LEVEL))
def test_byte_level_spans_from_ids_are_the_library_offsets(name: str, tmp_path: Path) -> None:
    """Spans computed from byte-level token widths equal the library's offsets on random text of every
    kind (characters split between tokens, combining marks, emoji, CRLF, special tokens, an added token
    that strips spaces, text the normalizer changes), and tokenizers whose offsets are not the tokens'
    bytes take the library's offsets."""
    import random

    tok = load_tokenizer(_byte_level(tmp_path / "tok", name))
    backend = tok._backend
    assert (backend._forms is not None) is BYTE_LEVEL[name]
    rng = random.Random(name)
    for _ in range(3000):
        text = "".join(rng.choice(BYTE_ALPHABET) for _ in range(rng.randint(0, 40)))
        ids, spans = tok.encode_with_offsets(text)
        enc = backend._tk.encode(text, add_special_tokens=False)
        assert ids.tolist() == enc.ids == tok.encode(text), (name, text)
        assert spans.tolist() == [list(o) for o in enc.offsets], (name, text)
    assert (backend._widths is not None) is BYTE_LEVEL[name]
