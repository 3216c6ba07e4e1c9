"""GGUF export read back with the `gguf` package's reader: every tensor (name, shape, type, values within the
type's error bound, llama.cpp's RoPE row order), the metadata keys llama.cpp needs, the tokenizer, the
trained chat template, the Modelfile; and the bad inputs (adapter-only runs merge on the fly, unknown quant,
no disk space, no k-quant tool). llama.cpp itself reads the files in tests/test_gguf_llamacpp.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_support import build_model, build_run
from runs import cli

KINDS = [
    "llama-sp",
    "mistral-sp",
    "llama3-bpe",
    "smollm-bpe",
    "qwen2-bpe",
    "qwen3-bpe",
    "gemma3-sp",
    "gemma2-sp",
]
ARCH = {
    "llama-sp": "llama",
    "mistral-sp": "llama",
    "llama3-bpe": "llama",
    "smollm-bpe": "llama",
    "qwen2-bpe": "qwen2",
    "qwen3-bpe": "qwen3",
    "gemma3-sp": "gemma3",
    "gemma2-sp": "gemma2",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {kind: build_model(tmp_path_factory.mktemp(kind), kind) for kind in KINDS}


def _reader(path: Path):  # noqa: ANN202 (gguf.GGUFReader)
    import gguf

    return gguf.GGUFReader(path)


def _field(reader, key: str):  # noqa: ANN001, ANN202
    field = reader.fields[key]
    return field.contents()


def _expected_layout(key: str, value: torch.Tensor, n_heads: int, n_kv: int, permuted: bool) -> torch.Tensor:
    """The tensor as llama.cpp stores it, written out row by row (independent of the exporter's reshape):
    within each head of width d, GGUF row 2i + j is Hugging Face row j·d/2 + i."""
    heads = n_heads if "q_proj" in key else n_kv if "k_proj" in key else 0
    if not permuted or not heads:
        return value
    d = value.shape[0] // heads
    order = [h * d + j * (d // 2) + i for h in range(heads) for i in range(d // 2) for j in range(2)]
    return value[order]


def _dequantized(tensor) -> np.ndarray:  # noqa: ANN001
    import gguf

    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape([int(n) for n in reversed(tensor.shape)])


def _check_values(name: str, got: np.ndarray, want: torch.Tensor, qtype: str) -> None:
    want32 = want.float().numpy()
    if qtype == "F32":
        np.testing.assert_array_equal(got, want32, err_msg=name)
    elif qtype == "F16":
        np.testing.assert_array_equal(got, want.half().float().numpy(), err_msg=name)
    elif qtype == "BF16":
        np.testing.assert_array_equal(got, want.bfloat16().float().numpy(), err_msg=name)
    elif qtype == "Q8_0":
        # Blocks of 32 share an fp16 scale amax/127; each value is off by at most half a step, plus the
        # scale's own fp16 rounding (2^-11 relative) times 127 steps.
        blocks = want32.reshape(-1, 32)
        amax = np.abs(blocks).max(axis=1, keepdims=True)
        bound = amax / 127 * 0.5 + amax * 2.0**-10 + 1e-12
        err = np.abs(got.reshape(-1, 32) - blocks)
        assert (err <= bound).all(), f"{name}: Q8_0 error {err.max():.3g} above the bound"
        assert err.max() > 0 or amax.max() == 0, f"{name}: Q8_0 values are exact, so they were not quantized"
    else:
        raise AssertionError(f"{name}: unexpected type {qtype}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_every_tensor_and_key_read_back(
    tmp_path: Path, models: dict[str, Path], kind: str, quant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunewiz.export.gguf import export_gguf
    from tunewiz.models.config import LlamaConfig
    from tunewiz.text.tokenizer import load_tokenizer

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    run, expected = build_run(tmp_path / "run", models[kind])
    result = export_gguf(run, quant=quant)
    assert result.path == run / "export" / f"{models[kind].name}-lora.{quant}.gguf"
    config = LlamaConfig.from_file(models[kind] / "config.json")
    reader = _reader(result.path)
    arch = ARCH[kind]

    # Tensors: exactly the model's (lm_head only when untied, rope_freqs only with Llama 3.1 scaling).
    tensors = {t.name: t for t in reader.tensors}
    n_blocks = config.num_hidden_layers
    per_block = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up"}
    per_block |= {"ffn_down"}
    want_names = {f"blk.{b}.{p}.weight" for b in range(n_blocks) for p in per_block}
    want_names |= {"token_embd.weight", "output_norm.weight"}
    want_names |= set() if config.tie_word_embeddings else {"output.weight"}
    want_names |= {"rope_freqs.weight"} if config.rope_scaling else set()
    want_names |= (
        {f"blk.{b}.attn_{p}.bias" for b in range(n_blocks) for p in "qkv"} if arch == "qwen2" else set()
    )
    extra = {"qwen3": ["attn_q_norm", "attn_k_norm"], "gemma3": ["attn_q_norm", "attn_k_norm"]}.get(arch, [])
    extra += ["post_attention_norm", "post_ffw_norm"] if arch.startswith("gemma") else []
    want_names |= {f"blk.{b}.{p}.weight" for b in range(n_blocks) for p in extra}
    assert set(tensors) == want_names

    import gguf

    hf_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_blocks)
    for key, value in expected.items():
        name = hf_names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name not in tensors:
            assert key == "lm_head.weight" and config.tie_word_embeddings
            continue
        tensor = tensors[name]
        qtype = tensor.tensor_type.name
        assert [int(n) for n in reversed(tensor.shape)] == list(value.shape), name
        assert qtype == ("F32" if value.dim() == 1 else quant.upper()), name
        if arch.startswith("gemma") and key.endswith("norm.weight"):
            value = value + 1  # Gemma's (1 + weight), stored as the factor llama.cpp multiplies by
        layout = _expected_layout(
            key, value, config.num_attention_heads, config.num_key_value_heads, arch == "llama"
        )
        _check_values(name, _dequantized(tensor), layout, qtype)
    if config.rope_scaling:
        factors = _dequantized(tensors["rope_freqs.weight"])
        assert factors.shape == (config.head_dim // 2,) and factors[0] == 1.0 and factors[-1] == 8.0

    # Metadata llama.cpp reads to build the model.
    assert _field(reader, "general.architecture") == arch
    want = {
        "context_length": config.max_position_embeddings,
        "embedding_length": config.hidden_size,
        "block_count": config.num_hidden_layers,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
        "rope.dimension_count": config.head_dim,
        "vocab_size": config.vocab_size,
    }
    for key, value in want.items():
        assert _field(reader, f"{arch}.{key}") == value, key
    assert _field(reader, f"{arch}.rope.freq_base") == pytest.approx(config.rope_theta)
    assert _field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps)
    assert _field(reader, "general.file_type") == {"f16": 1, "q8_0": 7}[quant]
    if arch == "gemma3":  # local/global layers: the window and which layers use it
        assert _field(reader, "gemma3.attention.sliding_window") == config.sliding_window == 6
        pattern = _field(reader, "gemma3.attention.sliding_window_pattern")
        assert pattern == [t == "sliding_attention" for t in config.layer_types] == [True, True, False]
        assert _field(reader, "gemma3.rope.freq_base_swa") == pytest.approx(config.rope_local_theta)
    if arch == "gemma2":
        assert _field(reader, "gemma2.attention.sliding_window_pattern") == [True, False]
        assert _field(reader, "gemma2.attn_logit_softcapping") == pytest.approx(config.attn_logit_softcapping)
        assert _field(reader, "gemma2.final_logit_softcapping") == pytest.approx(5.0)

    # Tokenizer: every token, its type, bos/eos and the BOS rule, the trained template.
    tokenizer = load_tokenizer(run / "final")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == config.vocab_size
    if kind.endswith("-sp"):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(run / "final" / "tokenizer.model"))
        assert _field(reader, "tokenizer.ggml.model") == "llama"
        assert tokens[: sp.GetPieceSize()] == [sp.IdToPiece(i) for i in range(sp.GetPieceSize())]
        scores = _field(reader, "tokenizer.ggml.scores")
        assert scores[5] == pytest.approx(sp.GetScore(5))
        assert types[0] == 2 and types[1] == 3 and types[2] == 3  # <unk> unknown, <s> </s> control
        assert types[sp.PieceToId("<0x41>")] == 6  # byte-fallback piece
    else:
        data = json.loads((run / "final" / "tokenizer.json").read_text())
        assert _field(reader, "tokenizer.ggml.model") == "gpt2"
        pre = {"llama3": "llama-bpe", "smollm": "smollm"}.get(kind.split("-")[0], "qwen2")
        assert _field(reader, "tokenizer.ggml.pre") == pre
        for token, i in data["model"]["vocab"].items():
            assert tokens[i] == token
        assert _field(reader, "tokenizer.ggml.merges") == [
            " ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]
        ]
        for added in data["added_tokens"]:
            assert tokens[added["id"]] == added["content"] and types[added["id"]] == 3
        assert tokens[-1] == f"[PAD{config.vocab_size - 1}]" and types[-1] == 5
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_id
    if tokenizer.bos_id is None:
        assert "tokenizer.ggml.bos_token_id" not in reader.fields
        assert _field(reader, "tokenizer.ggml.add_bos_token") is False
    else:
        assert _field(reader, "tokenizer.ggml.bos_token_id") == tokenizer.bos_id
        assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    from tunewiz.export.gguf import trained_prompts
    from tunewiz.text.prompt import exported_template

    prompts, _ = trained_prompts(run, tokenizer)
    assert _field(reader, "tokenizer.chat_template") == exported_template(prompts.format, tokenizer)


def test_modelfile_names_the_file_stop_tokens_and_defaults(tmp_path: Path, models: dict[str, Path]) -> None:
    run, _ = build_run(tmp_path / "run", models["qwen2-bpe"])
    name = f"{models['qwen2-bpe'].name}-lora"
    done = cli("export", str(run), "--format", "gguf", "--quant", "f16", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path == run / "export" / f"{name}.f16.gguf" and path.is_file()
    modelfile = (run / "export" / "Modelfile").read_text()
    lines = [line for line in modelfile.splitlines() if not line.startswith("#")]
    assert lines == [
        f"FROM ./{name}.f16.gguf",
        'PARAMETER stop "<|im_end|>"',
        "PARAMETER temperature 0",
        "PARAMETER num_ctx 256",
    ]
    assert "TEMPLATE" not in modelfile
    assert f"cd {run / 'export'} && ollama create {name} -f Modelfile" in done.stderr
    assert f"llama-cli -m {path}" in done.stderr


def test_adapter_only_run_is_merged_on_the_fly(tmp_path: Path, models: dict[str, Path]) -> None:
    from tunewiz.export.gguf import export_gguf

    merged_run, expected = build_run(tmp_path / "merged", models["llama-sp"])
    adapter_run, _ = build_run(tmp_path / "adapter", models["llama-sp"], merged=False)
    assert not (adapter_run / "final" / "model.safetensors").exists()
    a = export_gguf(merged_run, quant="f16")
    b = export_gguf(adapter_run, quant="f16")
    assert a.source == "final/model.safetensors" and b.source == "base + final/adapter, merged now"
    ta = {t.name: _dequantized(t) for t in _reader(a.path).tensors}
    tb = {t.name: _dequantized(t) for t in _reader(b.path).tensors}
    assert ta.keys() == tb.keys()
    for name in ta:  # the same merge (fp32 math), then the same f16 rounding: equal up to one f16 step
        np.testing.assert_allclose(tb[name], ta[name], rtol=2e-3, atol=1e-6, err_msg=name)
    from tunewiz.models.loading import load_state_dict_files

    base = load_state_dict_files(models["llama-sp"])["model.layers.0.self_attn.v_proj.weight"].float()
    merged = expected["model.layers.0.self_attn.v_proj.weight"]
    assert (merged - base).abs().max() > 1e-2  # the adapter really changed the weights written
    np.testing.assert_array_equal(tb["blk.0.attn_v.weight"], merged.half().float().numpy())


def test_qlora_adapter_only_run_merges_onto_the_nf4_base(tmp_path: Path, models: dict[str, Path]) -> None:
    pytest.importorskip("torchao")
    from tunewiz.export.gguf import export_gguf
    from tunewiz.models.loading import load_state_dict_files

    run, expected = build_run(tmp_path / "run", models["llama-sp"], method="qlora", merged=False)
    result = export_gguf(run, quant="f16")
    got = {t.name: _dequantized(t) for t in _reader(result.path).tensors}["blk.1.attn_v.weight"]
    want = expected["model.layers.1.self_attn.v_proj.weight"]
    np.testing.assert_array_equal(got, want.half().float().numpy())
    # Not the full-precision base: the adapter was trained against the 4-bit one.
    full = load_state_dict_files(models["llama-sp"])["model.layers.1.self_attn.v_proj.weight"].float()
    delta = want - full - (want - full).mean()
    assert delta.abs().max() > 1e-3


def test_bad_inputs_say_what_and_how(
    tmp_path: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunewiz.errors import TunewizError
    from tunewiz.export import gguf_file, llama_quantize
    from tunewiz.export.gguf import export_gguf

    run, _ = build_run(tmp_path / "run", models["llama-sp"])
    done = cli("export", str(run), "--quant", "q4_0", cwd=tmp_path)  # --format defaults to gguf
    assert done.returncode == 2
    assert (
        "error: --quant `q4_0` is not a GGUF type tunewiz writes" in done.stderr and "\nhint: " in done.stderr
    )
    done = cli("export", str(tmp_path), "--format", "gguf", cwd=tmp_path)
    assert done.returncode == 2 and "is not a run directory" in done.stderr and "hint:" in done.stderr
    done = cli("export", str(run), "--format", "onnx", cwd=tmp_path)
    assert done.returncode == 2 and "error: --format `onnx`" in done.stderr

    # Not enough disk space: refused before anything is written.
    class Usage:
        free = 1000

    monkeypatch.setattr(gguf_file.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(TunewizError, match="not enough disk space") as info:
        export_gguf(run, quant="q8_0")
    assert "--output" in (info.value.hint or "")
    assert not (run / "export").exists() or not list((run / "export").iterdir())
    monkeypatch.undo()

    # k-quants without llama.cpp's quantizer: say how to get it.
    monkeypatch.setattr(llama_quantize, "quantizer_available", lambda: None)
    with pytest.raises(TunewizError, match="needs llama.cpp's quantizer") as info:
        export_gguf(run, quant="q4_k_m")
    assert "pip install llama-cpp-python" in (info.value.hint or "")

    # An unfinished run (no final/) points at resume.
    (run / "final").rename(run / "final.away")
    with pytest.raises(TunewizError, match="no final weights"):
        export_gguf(run, quant="q8_0")


def test_push_gguf_uploads_it_beside_the_weights_and_the_card_says_how_to_run_it(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    run, _ = build_run(tmp_path / "run", models["llama-sp"])
    staged = tmp_path / "staged"
    # No GGUF yet: push exports the default q8_0 first and says so.
    done = cli(
        "push", str(run), "--repo-id", "you/tiny-gguf", "--gguf", "--dry-run-dir", str(staged), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "had no GGUF: wrote `" in done.stderr and "(q8_0) with `tunewiz export`" in done.stderr
    gguf_name = next((run / "export").glob("*.gguf")).name
    assert gguf_name.endswith(".q8_0.gguf")
    files = {p.name for p in staged.iterdir()}
    assert {gguf_name, "Modelfile", "adapter_model.safetensors", "README.md"} <= files
    card = (staged / "README.md").read_text()
    assert "- gguf" in card.split("---")[1]  # a Hub tag, so the Hub lists it with GGUF models
    assert f"hf download you/tiny-gguf {gguf_name} Modelfile --local-dir tiny-gguf" in card
    assert "ollama create tiny-gguf -f Modelfile && ollama run tiny-gguf" in card
    assert f"llama-cli -m {gguf_name} --jinja -cnv" in card


def test_a_sentencepiece_normalizer_llamacpp_lacks_is_named(tmp_path: Path) -> None:
    from runs import build_tiny_model

    from tunewiz.export.gguf import export_gguf

    # tests/runs.py's tokenizer keeps SentencePiece's defaults: NFKC and whitespace collapsing.
    run, _ = build_run(tmp_path / "run", build_tiny_model(tmp_path / "model"))
    result = export_gguf(run, quant="f16")
    assert any("`nmt_nfkc` normalization and removal of repeated whitespace" in w for w in result.warnings)
