"""The memory planner and the recommender: hand-checked arithmetic, sanity over reference machines,
agreement with a fake-tensor trace of the real step, and the `tunewiz plan` command."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunewiz.models.catalog import lookup
from tunewiz.models.config import LlamaConfig
from tunewiz.plan.hardware import describe
from tunewiz.plan.memory import CPU_PROCESS_BYTES, CUDA_CONTEXT_BYTES, PlanInputs, estimate, lora_params
from tunewiz.plan.recommend import PlanRequest, _preference, recommend, seq_len_from_lengths
from tunewiz.units import GiB

ROOT = Path(__file__).resolve().parent.parent
TOY = LlamaConfig(
    model_type="llama",
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
)
REFERENCE_MACHINES = [(1, 8), (1, 12), (1, 16), (1, 24), (2, 24), (1, 48), (1, 80), (8, 80), (2, 16), (8, 24)]


def test_weights_and_trainable_state_by_hand() -> None:
    # TOY: 2*1000*64 embeddings + 2 layers * (64*(64+2*32) + 64*64 + 3*64*128 + 2*64) + 64 = 202_048 params.
    assert TOY.num_parameters() == 202_048
    full = estimate(TOY, PlanInputs(method="full", dtype="fp32", num_devices=1, device="cpu", seq_len=8))
    # Everything in model.dtype: fp32 weights 4 B/param; grads 4 + AdamW 8 (+4 for the foreach sqrt if the
    # step is the peak).
    assert full.breakdown.weights == 4 * 202_048
    assert full.breakdown.trainable_state in (12 * 202_048, 16 * 202_048)
    # bf16: no fp32 master copy, grads and AdamW states in bf16 too: half of every number.
    full_bf16 = estimate(TOY, PlanInputs(method="full", dtype="bf16", num_devices=1, device="cpu", seq_len=8))
    assert full_bf16.breakdown.weights == 2 * 202_048
    assert full_bf16.breakdown.trainable_state in (6 * 202_048, 8 * 202_048)
    # LoRA r8 on q, v: r*(in+out) per target per layer = 2 * 8*((64+64) + (64+32)) = 3584 params.
    assert lora_params(TOY, 8, ("q_proj", "v_proj")) == 3584
    lora = estimate(TOY, PlanInputs(method="lora", dtype="bf16", device="cpu", seq_len=8))
    assert lora.trainable_params == 3584
    # The adapters are cast to the model dtype like the frozen base: bf16, 2 B each; grads + AdamW 6 B.
    assert lora.breakdown.weights == 2 * (202_048 + 3584)
    assert lora.breakdown.trainable_state == 6 * 3584
    assert lora.breakdown.overhead == CPU_PROCESS_BYTES + int(0.05 * (lora.peak - lora.breakdown.overhead))


def test_fsdp_shards_persistent_state() -> None:
    arch = lookup("llama-3.1-8b").arch
    # With checkpointing the persistent state (weights, grads, AdamW) dominates, and that is what shards.
    one = estimate(
        arch, PlanInputs(method="full", num_devices=1, seq_len=2048, activation_checkpointing=True)
    )
    eight = estimate(
        arch, PlanInputs(method="full", num_devices=8, seq_len=2048, activation_checkpointing=True)
    )
    assert eight.breakdown.weights == one.breakdown.weights // 8
    assert eight.breakdown.fsdp_buffers > 0 == one.breakdown.fsdp_buffers
    assert eight.peak < one.peak / 4


def test_qlora_uses_nf4_weights() -> None:
    arch = lookup("llama-3.1-8b").arch
    lora = estimate(arch, PlanInputs(method="lora"))
    qlora = estimate(arch, PlanInputs(method="qlora"))
    assert qlora.breakdown.weights < 0.4 * lora.breakdown.weights
    assert lora.breakdown.overhead >= CUDA_CONTEXT_BYTES


@pytest.mark.parametrize("knob", ["micro_batch", "seq_len", "lora_rank"])
def test_more_work_never_needs_less_memory(knob: str) -> None:
    arch = lookup("llama-3.2-1b").arch
    base = PlanInputs(micro_batch=1, seq_len=512, lora_rank=8)
    small = estimate(arch, base).peak
    big = estimate(arch, dataclasses.replace(base, **{knob: getattr(base, knob) * 4})).peak
    assert big > small


def test_accumulated_full_grads_live_beside_the_activations() -> None:
    # From the second micro-batch of a step on, a full fine-tune's backward adds into gradients that
    # already exist for every parameter, while that micro-batch's activations are alive: the peak grows
    # by the grads the first backward had not made yet (all but the root's). LoRA's grads are tiny.
    arch = lookup("llama-3.2-1b").arch
    base = PlanInputs(method="full", micro_batch=4, seq_len=512)
    one, eight = estimate(arch, base), estimate(arch, dataclasses.replace(base, grad_accum=8))
    grads = 2 * arch.num_parameters()
    embeddings = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    root = 2 * (embeddings + arch.hidden_size)  # embeddings, lm_head, final norm
    grown = eight.breakdown.trainable_state - one.breakdown.trainable_state
    assert grown == grads - root
    assert any("gradient accumulation over 8" in r for r in eight.reasons)
    lora = PlanInputs(method="lora", micro_batch=4, seq_len=512)
    lora_grown = estimate(arch, dataclasses.replace(lora, grad_accum=8)).peak - estimate(arch, lora).peak
    assert lora_grown == 0


def test_checkpointing_and_chunked_loss_save_memory() -> None:
    arch = lookup("llama-3.2-3b").arch
    base = PlanInputs(method="full", micro_batch=2, seq_len=4096)
    assert (
        estimate(arch, dataclasses.replace(base, activation_checkpointing=True)).peak
        < estimate(arch, base).peak
    )
    assert estimate(arch, dataclasses.replace(base, loss="full")).peak > estimate(arch, base).peak


@pytest.mark.parametrize("model", ["llama-3.2-1b", "llama-3.1-8b", "qwen2.5-7b", "llama-2-13b"])
def test_reference_machines_monotone_and_safe(model: str) -> None:
    m = lookup(model)
    by_memory: dict[int, list] = {}
    for gpus, gib in REFERENCE_MACHINES:
        rec = recommend(describe(gpus, f"{gib}GB"), m, request=PlanRequest(target_global_batch=32))
        if rec.fits:
            # A plan said to fit keeps its error band free: peak × 1.1 <= the GPU's memory.
            assert rec.plan.peak_high <= rec.verdict.memory == gib * GiB
            assert rec.global_batch >= 32
        else:
            assert rec.alternatives
        by_memory.setdefault(gpus, []).append((gib, rec))
    for recs in by_memory.values():
        recs.sort(key=lambda r: r[0])
        for (_, small), (_, big) in zip(recs, recs[1:], strict=False):
            # More memory never gives a smaller plan, nor turns a fit into a miss.
            assert big.fits or not small.fits
            if small.fits and big.fits:
                # The chosen plan on the bigger machine is at least as good by the recommender's own order.
                methods = ["lora", "qlora"]
                assert _preference(big.plan, methods) >= _preference(small.plan, methods)


def test_nothing_fits_names_what_would() -> None:
    rec = recommend(describe(1, "12GB"), lookup("llama-3.1-8b"), request=PlanRequest(method="lora"))
    assert rec.verdict.kind == "does not fit"
    text = " ".join(rec.alternatives)
    assert "QLoRA" in text and "more GPUs" in text and "smaller model" in text


def test_seq_len_from_lengths() -> None:
    lengths = list(range(1, 1001))  # p99 = 990 -> 1024
    chosen, reason = seq_len_from_lengths(lengths, 4096)
    assert chosen == 1024 and "99th percentile" in reason
    assert "0 of 1000 sampled samples (0.0%) are longer: truncated or dropped" in reason
    assert seq_len_from_lengths([10_000] * 10, 2048)[0] == 2048


def test_recommendation_with_lengths_and_reasons() -> None:
    rec = recommend(describe(1, "24GB"), lookup("llama-3.2-1b"), token_lengths=[300] * 99 + [700])
    assert rec.verdict.kind == "fits"
    assert rec.plan.inputs.seq_len == 320
    assert any(r.startswith("micro_batch") for r in rec.reasons)
    assert any(r.startswith("grad_accum") for r in rec.reasons)


def test_fixed_off_checkpointing_reports_fits_with_checkpointing() -> None:
    req = PlanRequest(method="lora", micro_batch=2, seq_len=2048, activation_checkpointing=False)
    rec = recommend(describe(1, "24GB"), lookup("llama-3.1-8b"), request=req)
    assert rec.verdict.label == "fits with savers (activation checkpointing)"
    assert rec.plan.inputs.activation_checkpointing


# --- against the traced real step (bench/planner_vs_trace.py), small configurations only
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.parametrize(
    "inputs",
    [
        PlanInputs(method="lora", dtype="bf16", micro_batch=2, seq_len=256),
        PlanInputs(
            method="lora",
            dtype="fp32",
            micro_batch=1,
            seq_len=512,
            lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        ),
        PlanInputs(method="full", dtype="fp32", micro_batch=1, seq_len=256),
        PlanInputs(method="full", dtype="bf16", micro_batch=1, seq_len=256),
        PlanInputs(method="lora", dtype="bf16", micro_batch=2, seq_len=512, activation_checkpointing=True),
        PlanInputs(method="qlora", dtype="bf16", micro_batch=2, seq_len=256),
        PlanInputs(method="full", dtype="bf16", micro_batch=1, seq_len=256, optimizer_in_backward=True),
        PlanInputs(method="full", dtype="bf16", micro_batch=1, seq_len=256, grad_accum=2),
        PlanInputs(method="lora", dtype="bf16", micro_batch=4, seq_len=512),
    ],
    ids=[
        "lora-bf16",
        "lora-all-fp32",
        "full-fp32",
        "full-bf16",
        "lora-ac",
        "qlora-bf16",
        "full-bf16-in-bwd",
        "full-bf16-accum",
        "lora-bf16-two-loss-chunks",  # was -14% while a loss chunk outlived its loop iteration
    ],
)
@pytest.mark.slow
def test_planner_agrees_with_traced_step(inputs: PlanInputs) -> None:
    from planner_vs_trace import compare

    c = compare("test", lookup("smollm2-135m").arch, inputs)
    assert abs(c.error) <= TRACE_TOLERANCE, (c.traced, c.predicted)


TRACE_TOLERANCE = 0.05


def _plan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", "plan", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_plan_cli_table() -> None:
    out = _plan_cli("--model", "llama-3.1-8b", "--gpus", "1", "--gpu-memory", "24GB")
    assert out.returncode == 0, out.stderr
    assert "predicted peak" in out.stdout and "verdict: fits" in out.stdout and "why:" in out.stdout


def test_plan_reasons_wrap_under_their_bullet() -> None:
    from rich.console import Console

    from tunewiz.plan.hardware import describe
    from tunewiz.plan.recommend import recommend
    from tunewiz.plan.report import render_recommendation

    console = Console(width=60, record=True, file=io.StringIO())
    console.print(render_recommendation(recommend(describe(1, "8GB"), lookup("llama-3.1-8b"))))
    lines = console.export_text().splitlines()
    why = lines[lines.index("why:") + 1 :]
    assert len(why) > len(recommend(describe(1, "8GB"), lookup("llama-3.1-8b")).reasons)  # some wrapped
    for line in why:
        assert line.startswith(("  • ", "    ", "what would fit:")) and not line.endswith(" "), line


def test_plan_cli_json() -> None:
    out = _plan_cli(
        "--model", "llama-2-13b", "--gpus", "1", "--gpu-memory", "8", "--method", "lora", "--json"
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["verdict"] == "does not fit" and plan["alternatives"]
    assert plan["plan"]["breakdown_bytes"]["total"] == plan["plan"]["peak_bytes"]


def test_plan_cli_preset_keeps_its_values() -> None:
    out = _plan_cli(str(ROOT / "presets" / "tiny-lora.yaml"), "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["model"]["name"] == "tunewiz:tiny" and plan["verdict"] == "fits"
    assert any(r.endswith(": given") for r in plan["reasons"])


def test_plan_cli_errors() -> None:
    out = _plan_cli("--model", "llama-3.2-1", "--gpus", "1", "--gpu-memory", "8GB")
    assert out.returncode == 2 and "did you mean `llama-3.2-1b`" in out.stderr and "hint:" in out.stderr
    out = _plan_cli("--model", "llama-3.2-1b", "--gpus", "1", "--gpu-memory", "lots")
    assert out.returncode == 2 and "--gpu-memory `lots` is not a memory size" in out.stderr
    out = _plan_cli("--model", "llama-3.2-1b", "--gpus", "2")
    assert out.returncode == 2 and "needs --gpu-memory" in out.stderr


@pytest.mark.parametrize("mode", ["right", "left", "drop"])
def test_planned_share_over_max_seq_len_equals_what_training_counts(tmp_path: Path, mode: str) -> None:
    """The wizard samples lengths with the training pipeline; the share it reports as longer than the
    chosen max_seq_len is exactly the truncated + dropped samples training reports for the same rows."""
    from tunewiz.data import build_datasets
    from tunewiz.models.loading import resolve_model_dir
    from tunewiz.plan.recommend import over_length
    from tunewiz.preset.schema import DataSection
    from tunewiz.text.tokenizer import load_tokenizer
    from tunewiz.wizard.dataset_step import sample_token_lengths

    rows = [{"instruction": "What colour is the cup?", "output": "red"}] * 97
    rows += [{"instruction": "Mia has a red cup. " * n, "output": "red"} for n in (12, 15, 60)]
    rows += [{"instruction": "hi", "output": "Mia has a red cup. " * 80}]  # a long reply
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = lookup("tunewiz:tiny")
    lengths, note, _ = sample_token_lengths(model, str(data), None)
    assert lengths is not None and "measured" in note
    chosen, reason = seq_len_from_lengths(lengths, model.max_context)
    cut = over_length(lengths, chosen)
    assert cut >= 1 and f"{cut} of {len(lengths)} sampled samples" in reason

    tokenizer = load_tokenizer(resolve_model_dir(model.repo_id))
    cfg = DataSection(path=str(data), max_seq_len=chosen, val_fraction=0.0, truncation=mode)
    _, _, stats = build_datasets(cfg, tokenizer, seed=0)
    assert stats.truncated + stats.dropped_long == cut
    assert (stats.dropped_long == cut) if mode == "drop" else stats.truncated >= 1
