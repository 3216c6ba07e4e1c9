"""QLoRA: NF4 base weights (tunewiz.models.nf4), training through the real CLI on 1 and 2 ranks,
and the final export loaded back by peft and transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.runs import cli, events, step_losses, write_dataset, write_preset
from tunewiz.models.nf4 import (
    NF4_BLOCK_SIZE,
    NF4_BYTES_PER_PARAM,
    check_shardable,
    dequantize_state,
    is_nf4,
    load_nf4_model,
    nf4_storage_bytes,
    scaler_block_size,
    to_nf4,
)

# The widest gap between neighbouring NF4 code values is 1 − 0.6962 (between the two largest
# magnitudes); rounding to the nearest code errs by at most half of it, in units of the block's absmax.
_NF4_HALF_GAP = (1.0 - 0.6962) / 2
_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _build_model(out: Path) -> Path:
    """A ~400k-parameter Llama whose linears are all NF4-quantizable and split over 2 ranks:
    hidden 128, 2 heads of 64, 1 KV head (GQA, k/v are 64 × 128), MLP 256, 2 layers, untied."""
    from tests.runs import build_tiny_model
    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    build_tiny_model(out)  # for its SentencePiece tokenizer; the weights are replaced below
    hf = json.loads((out / "config.json").read_text())
    hf.update(
        hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=64
    )
    config = LlamaConfig.from_hf(hf)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.init_weights()
    save_model(model, out, config)
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qlora")
    _build_model(root / "model")
    write_dataset(root / "data.jsonl")
    return root


def _preset(workdir: Path, name: str, **sections: dict) -> Path:
    # Written as LoRA: the method is switched on the command line, as a user would.
    return write_preset(
        workdir / f"{name}.yaml",
        workdir / "model",
        workdir / "data.jsonl",
        lora={"rank": 8, "alpha": 16, "targets": _TARGETS},
        train={"max_steps": 16, "lr": 5e-3},
        **sections,
    )


def _elementwise_bound(weight: torch.Tensor, nf4: torch.Tensor) -> torch.Tensor:
    """Per-element bound on |W − dequant(NF4(W))|, shape of ``weight``.

    Code rounding errs by at most half the widest code gap times the block's true absmax; the
    block's scale is itself stored as int8 (double quantization), which errs by at most half a step
    of its scale block, 1 / (2 · quantization_factor), and multiplies a code of magnitude ≤ 1.
    """
    blocks = weight.reshape(-1, NF4_BLOCK_SIZE)  # (n_blocks, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)  # (n_blocks, 1)
    per_scale_block = nf4.n_blocks // nf4.quantization_factor.numel()
    scale_step = (1.0 / nf4.quantization_factor.float()).repeat_interleave(per_scale_block)[:, None] / 2
    return (_NF4_HALF_GAP * absmax + scale_step).expand_as(blocks).reshape(weight.shape)


def test_nf4_linear_matches_full_precision_within_quantization_error() -> None:
    torch.manual_seed(0)
    weight = torch.randn(256, 512) * 0.02  # (out, in): 2048 blocks -> 8 scale blocks of 256
    x = torch.randn(4, 512)
    nf4 = to_nf4(weight)
    assert is_nf4(nf4) and nf4.dtype == torch.float32 and nf4.shape == weight.shape
    assert nf4.block_size == 64 and nf4.scaler_block_size == 256  # QLoRA's sizes where they fit

    dequant = nf4.to(torch.float32)
    bound = _elementwise_bound(weight, nf4)
    assert bool(((dequant - weight).abs() <= bound + 1e-7).all())
    # The linear through the NF4 tensor is exactly the linear with the dequantized weight, and it
    # differs from the full-precision linear by at most Σ_i |x_i| · bound_ji for each output j.
    out = torch.nn.functional.linear(x, nf4)
    torch.testing.assert_close(out, x @ dequant.T, rtol=0, atol=1e-6)
    assert bool(((out - x @ weight.T).abs() <= x.abs() @ bound.T + 1e-6).all())
    # And the error is what 4 bits give, not just within a loose bound: ~10% relative RMS on Gaussians.
    rel = (out - x @ weight.T).norm() / (x @ weight.T).norm()
    assert 0.01 < float(rel) < 0.15
    # Quantization is deterministic (exact resume relies on it).
    again = to_nf4(weight)
    assert torch.equal(again.quantized_data, nf4.quantized_data) and torch.equal(
        again.quantized_scalers, nf4.quantized_scalers
    )


def test_nf4_backward_reaches_the_input_only() -> None:
    torch.manual_seed(0)
    nf4 = to_nf4(torch.randn(64, 128))
    x = torch.randn(3, 128, requires_grad=True)
    torch.nn.functional.linear(x, nf4).sum().backward()
    torch.testing.assert_close(x.grad, nf4.to(torch.float32).sum(0).expand(3, -1), rtol=0, atol=1e-5)


def test_scaler_block_size_keeps_scale_blocks_shardable() -> None:
    assert scaler_block_size(65536) == 256  # Llama-3-8B k_proj 1024 × 4096: QLoRA's 256, 256 scale blocks
    assert (
        scaler_block_size(1792) == 224
    )  # Qwen2.5-0.5B k_proj 128 × 896: 8 scale blocks of 224, not 7 of 256
    assert scaler_block_size(128) == 16  # our test model's k_proj 64 × 128
    assert scaler_block_size(3) == 3  # not a multiple of 8 blocks: the largest divisor (runs on one rank)


def test_load_nf4_model_quantizes_decoder_linears_only(workdir: Path) -> None:
    model = load_nf4_model(workdir / "model", dtype=torch.float32, device="cpu")
    quantized = sorted(n for n, p in model.named_parameters() if is_nf4(p))
    assert len(quantized) == 2 * 7 and all(n.startswith("model.layers.") for n in quantized)
    assert not is_nf4(model.lm_head.weight) and not is_nf4(model.model.embed_tokens.weight)
    n_params = sum(model.get_parameter(n).numel() for n in quantized)
    assert nf4_storage_bytes(model) / n_params == pytest.approx(NF4_BYTES_PER_PARAM, rel=0.02)
    check_shardable(model, 2)
    with pytest.raises(Exception, match="3 ranks cannot share evenly"):
        check_shardable(model, 3)


@pytest.mark.slow
def test_qlora_trains_through_cli_and_exports_loadable_weights(workdir: Path, tmp_path: Path) -> None:
    preset = _preset(workdir, "qlora-1")
    run_dir = tmp_path / "run"
    result = cli(
        "train", str(preset), "--set", "method=qlora", "--run-dir", str(run_dir), "--no-tui", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    start = next(e for e in events(run_dir) if e["event"] == "start")
    assert start["method"] == "qlora"
    losses = step_losses(run_dir)
    # Steps see different samples, so single losses are noisy: compare the first and last four.
    first, last = sum(losses[s] for s in (1, 2, 3, 4)) / 4, sum(losses[s] for s in (13, 14, 15, 16)) / 4
    assert len(losses) == 16 and last < 0.9 * first, losses  # 5.49 -> 4.71 when written

    # Step checkpoints hold the adapter only: the NF4 base is rebuilt from the checkpoint on resume.
    from torch.distributed.checkpoint import FileSystemReader

    keys = FileSystemReader(str(run_dir / "checkpoints" / "step-16")).read_metadata().state_dict_metadata
    model_keys = [k for k in keys if k.startswith("model.")]
    assert model_keys and all(".lora_" in k for k in model_keys)
    card = (run_dir / "final" / "adapter" / "README.md").read_text()
    assert "4-bit base" in card and "NF4" in card

    from tunewiz.lora.peft_files import load_peft_adapter

    # Our trained QLoRA model, rebuilt: NF4 base (deterministic) + the exported adapter.
    ours = load_nf4_model(workdir / "model", dtype=torch.float32, device="cpu")
    load_peft_adapter(ours, run_dir / "final" / "adapter")
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ours(ids)  # [B, T, V] logits

    import transformers
    from peft import PeftModel

    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.loading import save_model

    # peft: the adapter onto the dequantized base (what `final/` merged folds in as well).
    base = load_nf4_model(workdir / "model", dtype=torch.float32, device="cpu")
    state = dequantize_state(base.state_dict())
    assert not any(is_nf4(v) for v in state.values())
    config = LlamaConfig.from_file(workdir / "model" / "config.json")
    save_model(state, tmp_path / "dequantized", config)
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dequantized", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf_base, run_dir / "final" / "adapter").eval()
    merged = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "final", dtype=torch.float32).eval()
    with torch.no_grad():
        peft_logits = peft_model(ids).logits
        merged_logits = merged(ids).logits
    torch.testing.assert_close(peft_logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(merged_logits, expected, rtol=1e-4, atol=1e-4)

    # `--from step-N` (chat, eval, push, export): a QLoRA step checkpoint is loaded as final/ is, so the
    # last step gives final/'s logits exactly and publishes final/'s files byte for byte.
    from tunewiz.hub import stage_push
    from tunewiz.inference.load import load_for_inference, resolve_from

    def logits(checkpoint: str | None) -> torch.Tensor:
        found = resolve_from(run_dir, checkpoint, command="tunewiz chat")
        with torch.no_grad():
            return load_for_inference(str(run_dir), device="cpu", checkpoint=found).model(ids)

    final_logits = logits(None)
    assert torch.equal(logits("step-16"), final_logits)
    assert not torch.allclose(logits("step-2"), final_logits)
    for kind in ("adapter", "merged"):
        folders = [
            stage_push(
                run_dir,
                tmp_path / f"{kind}-{name}",
                repo_id="alice/q",
                kind=kind,  # type: ignore[arg-type]
                checkpoint=resolve_from(run_dir, name, command="tunewiz push"),
            ).path
            for name in ("final", "step-16")
        ]
        final_files, step_files = (
            {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "README.md"} for folder in folders
        )
        assert step_files == final_files, kind


@pytest.mark.slow
def test_qlora_two_ranks_fsdp2_match_one_rank(workdir: Path, tmp_path: Path) -> None:
    preset = _preset(workdir, "qlora-2")
    one, two = tmp_path / "one", tmp_path / "two"
    # The same global batch of 8 samples: 1 rank × 2 accumulated micro-batches, 2 ranks × 1.
    for run_dir, nproc, accum in ((one, "1", "2"), (two, "2", "1")):
        result = cli(
            "train",
            str(preset),
            "--set",
            "method=qlora",
            "--set",
            "train.max_steps=4",
            "--set",
            f"train.grad_accum={accum}",
            "--run-dir",
            str(run_dir),
            "--nproc-per-node",
            nproc,
            "--no-tui",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    start = next(e for e in events(two) if e["event"] == "start")
    assert start["world_size"] == 2 and start["method"] == "qlora"
    # Same quantized base on every rank count (block sizes depend on shapes only), same data order:
    # the same losses up to the float rounding of a different reduction order.
    losses_one, losses_two = step_losses(one), step_losses(two)
    assert losses_one.keys() == losses_two.keys() == {1, 2, 3, 4}
    for step in losses_one:
        assert losses_two[step] == pytest.approx(losses_one[step], rel=1e-4)
    # The export gathered the sharded NF4 weights and dequantized them: the same merged model.
    from safetensors.torch import load_file

    merged_one, merged_two = (
        load_file(one / "final" / "model.safetensors"),
        load_file(two / "final" / "model.safetensors"),
    )
    assert merged_one.keys() == merged_two.keys()
    for key in merged_one:
        torch.testing.assert_close(merged_two[key], merged_one[key], rtol=1e-4, atol=1e-5)
