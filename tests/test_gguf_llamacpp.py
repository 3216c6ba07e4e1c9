"""llama.cpp itself (through `llama-cpp-python`) reads tunewiz's GGUF exports: the same token ids as
tunewiz's tokenizer, logits within 2e-2 of tunewiz's fp32 model at f16, and the same greedy chat reply as
`tunewiz chat --temperature 0` (every token at f16; >= 90% of the tokens at q8_0, each predicted from the
same prefix) for the trained demo run.

`llama-cpp-python` is built from source by `.ci/run`. Without it these tests are skipped, except under
CI (`CI` or `TUNEWIZ_REQUIRE_LLAMA_CPP` set, as `.ci/run` does), where its absence is a failure: CI must
never pass them by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf_support import build_model, build_run
from runs import cli

try:
    import llama_cpp
except ImportError:
    if os.environ.get("CI") or os.environ.get("TUNEWIZ_REQUIRE_LLAMA_CPP"):
        raise ImportError(
            "llama-cpp-python is not installed, and CI must run the llama.cpp tests (see .ci/run)"
        ) from None
    pytest.skip("llama-cpp-python is not installed (`.ci/run` builds it)", allow_module_level=True)

# Every exported shape except llama-sp, which the trained demo run covers.
KINDS = ["mistral-sp", "llama3-bpe", "smollm-bpe", "qwen2-bpe", "qwen3-bpe", "gemma3-sp", "gemma2-sp"]
TEXTS = [
    "Mia has a red cup. What colour is it?",
    "Grüße aus Köln – naïve café, 日本語のテキスト 🚀 ok",
    "  two leading spaces\n\nand\ttabs   inside",
    "x = 12345 + 678; print(x)",
]
CONVERSATIONS = [
    [{"role": "user", "content": "Who has the red cup?"}],
    [
        {"role": "user", "content": "Grüße! Wer hat den Ball? 🚀"},
        {"role": "assistant", "content": "Tom hat ihn."},
        {"role": "user", "content": "Und die Farbe?"},
    ],
]


def _llama(path: Path, **kwargs: Any) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_batch=256, n_threads=2, verbose=False, **kwargs)


def _llama_ids(llm: llama_cpp.Llama, text: str, *, add_bos: bool = False) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)


def _llama_logits(llm: llama_cpp.Llama, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # [T, V]


def _llama_greedy(llm: llama_cpp.Llama, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def _tunewiz_logits(target: Path, ids: list[int]) -> np.ndarray:
    import torch

    from tunewiz.inference.load import load_for_inference

    loaded = load_for_inference(str(target), device="cpu", dtype="fp32")
    with torch.no_grad():
        return loaded.model(torch.tensor([ids]))[0].float().numpy()


def _prompts(run: Path):  # noqa: ANN202 (PromptBuilder)
    from tunewiz.inference.load import prompt_builder_for
    from tunewiz.text.tokenizer import load_tokenizer

    return prompt_builder_for(str(run), load_tokenizer(run / "final"))[0]


def _check_tokenizer(gguf_path: Path, run: Path) -> None:
    """llama.cpp's ids equal tunewiz's: chat prompts as llama.cpp's chat path builds them (a leading bos
    rendered by the template is stripped and added back as the BOS rule says), special tokens in text,
    plain text with and without bos."""
    prompts = _prompts(run)
    tokenizer = prompts.tokenizer
    llm = _llama(gguf_path, vocab_only=True)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token") == "true"
    spm_space_rule = llm.metadata.get("tokenizer.ggml.model") == "llama"
    if spm_space_rule:  # templates that start with bos: no space after specials, as tunewiz encodes
        assert llm.metadata.get("tokenizer.ggml.add_space_prefix") == "false"
    bos_text = tokenizer.special_tokens.get("bos_token", "")
    for messages in CONVERSATIONS:
        rendered = prompts.render(messages)
        if add_bos and bos_text and rendered.startswith(bos_text):
            rendered = rendered[len(bos_text) :]  # what llama.cpp's common/chat.cpp does before tokenizing
        assert _llama_ids(llm, rendered, add_bos=add_bos) == prompts.prompt_ids(messages), messages
    eos_text = tokenizer.decode([tokenizer.eos_id], skip_special=False)
    for text in TEXTS:
        with_specials = f"{eos_text}{text}{eos_text}"
        assert _llama_ids(llm, with_specials) == tokenizer.encode(with_specials), with_specials
        if spm_space_rule:
            # SentencePiece with add_space_prefix=false: no dummy-prefix space at the start, as tunewiz
            # (and transformers' non-legacy Llama tokenizer) encode text that follows a special token.
            want = tokenizer.encode(eos_text + text)[1:]
        else:
            want = tokenizer.encode(text)
        assert _llama_ids(llm, text) == want, text
        bos = [tokenizer.bos_id] if add_bos else []
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == bos + want, text


@pytest.fixture(scope="module")
def bpe_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for kind in KINDS:
        root = tmp_path_factory.mktemp(kind)
        run, _ = build_run(root / "run", build_model(root / "model", kind))
        done = cli("export", str(run), "--format", "gguf", "--quant", "f16", cwd=root)
        assert done.returncode == 0, done.stderr
        runs[kind] = run
    return runs


@pytest.mark.parametrize("kind", KINDS)
def test_llamacpp_tokenizes_and_computes_like_tunewiz(bpe_runs: dict[str, Path], kind: str) -> None:
    run = bpe_runs[kind]
    gguf_path = next((run / "export").glob("*.f16.gguf"))
    _check_tokenizer(gguf_path, run)
    ids = _prompts(run).prompt_ids(CONVERSATIONS[1])
    got = _llama_logits(_llama(gguf_path, logits_all=True), ids)
    want = _tunewiz_logits(run, ids)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 2e-2, f"{kind}: max |Δlogit| {np.abs(got - want).max():.3g}"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo: presets/tiny-lora.yaml (the shipped tiny model, SentencePiece) trained a few steps."""
    root = tmp_path_factory.mktemp("demo")
    preset = Path(__file__).resolve().parent.parent / "presets" / "tiny-lora.yaml"
    run = root / "run"
    done = cli(
        "train", str(preset), "--run-dir", str(run), "--no-tui",
        "--set", "train.max_steps=6", "--set", "train.eval_every_n_steps=100",
        "--set", "checkpoint.every_n_steps=100", cwd=root, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for quant in ("f16", "q8_0"):
        done = cli("export", str(run), "--format", "gguf", "--quant", quant, cwd=root)
        assert done.returncode == 0, done.stderr
    return run


@pytest.mark.slow
def test_demo_run_in_llamacpp_matches_tunewiz_chat(demo_run: Path) -> None:
    import torch

    from tunewiz.inference.generate import SamplingParams, stream
    from tunewiz.inference.load import load_for_inference

    f16 = next((demo_run / "export").glob("*.f16.gguf"))
    q8 = next((demo_run / "export").glob("*.q8_0.gguf"))
    _check_tokenizer(f16, demo_run)

    prompts = _prompts(demo_run)
    ids = prompts.prompt_ids([{"role": "user", "content": "Tom has a blue kite. What colour is the kite?"}])
    want_logits = _tunewiz_logits(demo_run, ids)
    got_logits = _llama_logits(_llama(f16, logits_all=True), ids)
    assert np.abs(got_logits - want_logits).max() < 2e-2

    # `tunewiz chat --temperature 0`: base + adapter, fp32, greedy; no stop, so 24 tokens are compared.
    loaded = load_for_inference(str(demo_run), device="cpu")
    with torch.no_grad():
        want = list(
            stream(loaded.model, ids, SamplingParams(max_new_tokens=24, temperature=0.0), stop_ids=())
        )
    assert len(want) == 24
    assert _llama_greedy(_llama(f16, logits_all=True), ids, 24) == want
    # q8_0: each of the 24 tokens predicted from the same prefix (teacher forcing). Free-running greedy
    # decoding is not compared position by position: after a 6-step fine-tune some top-2 logits differ by
    # 0.01, below Q8_0's rounding, and one flipped near-tie makes every later position a different text.
    q8_logits = _llama_logits(_llama(q8, logits_all=True), ids + want)
    same = int((q8_logits[len(ids) - 1 : -1].argmax(-1) == np.array(want)).sum())
    assert same >= 0.9 * 24, f"q8_0 agrees on {same}/24 tokens"

    # The real CLI's reply is the same text as llama.cpp's, up to the stop token.
    done = cli(
        "chat", str(demo_run), "--prompt", "Tom has a blue kite. What colour is the kite?",
        "--temperature", "0", "--max-new-tokens", "24", cwd=demo_run.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stop = next((i for i, t in enumerate(want) if t in prompts.tokenizer.stop_ids), len(want))
    assert done.stdout.strip() == prompts.tokenizer.decode(want[:stop]).strip()


@pytest.mark.slow
def test_q4_k_m_through_llamacpps_quantizer_loads(demo_run: Path) -> None:
    done = cli("export", str(demo_run), "--format", "gguf", "--quant", "q4_k_m", cwd=demo_run.parent)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert "quantized with llama-cpp-python" in done.stderr
    llm = _llama(path, logits_all=True)
    assert llm.metadata["general.file_type"] == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    ids = _prompts(demo_run).prompt_ids(CONVERSATIONS[0])
    logits = _llama_logits(llm, ids)
    want = _tunewiz_logits(demo_run, ids)
    # 4-bit weights: the logits move, but the model is the same one (same top token at most positions).
    agree = (logits.argmax(-1) == want.argmax(-1)).mean()
    assert agree >= 0.6, f"q4_k_m top-1 agreement {agree:.2f}"
    assert not (run_dir := path.parent).joinpath(f".{path.stem}.f16-for-quantize.gguf").exists(), run_dir
