"""First contact with a GPU (issue 22): measured peaks beside the planner, the recipe through the real CLI,
training and decode speed against transformers (+ peft). One JSON and one Markdown table under --out.

    python bench/gpu_check.py --out DIR                    # on a CUDA machine (one GPU)
    python bench/gpu_check.py --out DIR --only peaks       # the most valuable section alone
    python bench/gpu_check.py --out DIR --device cpu --tiny   # the same code on tiny shapes (CI, by hand)

Sections 1, 3 and 4 take a few minutes on one GPU (estimated, not yet run on one); section 2 adds nine
short `tunewiz train` runs. Sections, most valuable first (an error in one, a missing package
included, is recorded in the JSON and does not stop the others):

1. ``peaks``: Llama-3.2-1B- and Llama-3.1-8B-shaped models with random weights built in memory (no
   download, nothing written to disk), LoRA bf16 and QLoRA, seq 2048, micro-batch 1 and 2, activation
   checkpointing on: two training steps as the recipe runs them, then ``torch.cuda.max_memory_reserved``,
   ``max_memory_allocated`` and this process's memory as ``nvidia-smi`` sees it, beside the planner's
   prediction. These rows join bench/calibration as GPU measurements.
2. ``recipe``: ``tunewiz train`` (the real CLI and torchrun, one rank) on ``tunewiz:tiny`` for 5 steps:
   LoRA, QLoRA and full in fp32 (losses must equal a CPU run's to 1e-4) and bf16 (within 2% of fp32).
3. ``train_speed``: LoRA bf16 tokens/s and MFU on the 1B shape, tunewiz against transformers + peft on
   the same weights and batch.
4. ``decode``: greedy decode tokens/s, tunewiz's ``generate`` against transformers' on the 1B shape.

Needs: torch (a CUDA build for the GPU run), this checkout of tunewiz on ``PYTHONPATH`` with its light
dependencies (pydantic, pyyaml, typer, rich, safetensors, huggingface_hub, tokenizers, sentencepiece,
psutil), torchao (QLoRA), transformers and peft (sections 3 and 4), ``nvidia-smi`` (optional).
Missing ones travel as wheels: ``pip download --no-deps -d wheels torchao transformers peft ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {"1b": "llama-3.2-1b", "8b": "llama-3.1-8b"}


def _arch(name: str, tiny: bool):  # noqa: ANN202 (LlamaConfig)
    from tunewiz.models.catalog import lookup

    arch = lookup(SHAPES[name]).arch
    if not tiny:
        return arch
    # Same family and ratios, ~1M parameters: runs in seconds on two CPU cores.
    return dataclasses.replace(
        arch, vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2, head_dim=16
    )


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _build(arch, method: str, device: str, ac: bool):  # noqa: ANN001, ANN202
    """The model as FineTune._build_model makes it, from random weights in memory."""
    import torch

    from tunewiz.lora.layer import apply_lora
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.nf4 import is_quantized_weight, to_nf4
    from tunewiz.train.distributed import apply_activation_checkpointing

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: no fp32 copy of an 8B model
    try:
        with torch.device(device):
            model = LlamaForCausalLM(arch)
    finally:
        torch.set_default_dtype(default)
    model.requires_grad_(False)
    if method == "qlora":
        for name, module in model.named_modules():
            if is_quantized_weight(f"{name}.weight"):
                module.weight = torch.nn.Parameter(to_nf4(module.weight.data, name=name), requires_grad=False)
    apply_lora(model, targets=["q_proj", "v_proj"], rank=8, alpha=16.0, dropout=0.0, seed=0)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    if ac:
        apply_activation_checkpointing(model)
    return model.train()


def _train_steps(model, arch, batch: int, seq: int, device: str, steps: int) -> float:  # noqa: ANN001
    """Run ``steps`` optimizer steps as the recipe does; seconds per step after the first."""
    import torch

    from tunewiz.models.loss import chunked_cross_entropy
    from tunewiz.preset.schema import TrainSection
    from tunewiz.train.distributed import clip_grad_norm
    from tunewiz.train.optim import build_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, TrainSection(lr=1e-4))
    ids = torch.randint(0, arch.vocab_size, (batch, seq), device=device)
    start = 0.0
    for i in range(steps):
        if i == 1:
            _sync(device)
            start = time.perf_counter()
        loss_sum, n = chunked_cross_entropy(model(ids, output_hidden=True), model.lm_head, ids)
        (loss_sum / n).backward()
        clip_grad_norm(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return (time.perf_counter() - start) / max(1, steps - 1)


def _smi_bytes() -> int | None:
    """This process's GPU memory as nvidia-smi reports it (context included), or None."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, mib = (s.strip() for s in line.split(","))
        if pid == str(os.getpid()):
            return int(mib) * 2**20
    return None


def peaks(device: str, tiny: bool) -> list[dict]:
    """Section 1: measured peaks beside the planner's, per shape × method × micro-batch."""
    import torch

    from tunewiz.plan.memory import PlanInputs, estimate

    seq = 64 if tiny else 2048
    rows = []
    for shape in SHAPES:
        arch = _arch(shape, tiny)
        for method in ("lora", "qlora"):
            for mb in (1, 2):
                inputs = PlanInputs(
                    method=method, micro_batch=mb, seq_len=seq, activation_checkpointing=True, device=device
                )
                plan = estimate(arch, inputs)
                row = {"shape": shape, "method": method, "micro_batch": mb, "seq_len": seq}
                row |= {
                    "planned_bytes": plan.peak,
                    "planned_tensor_bytes": plan.peak - plan.breakdown.overhead,
                }
                try:
                    model = _build(arch, method, device, ac=True)
                    if device == "cuda":  # the training step's peak, not the build's transients
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    row["seconds_per_step"] = _train_steps(model, arch, mb, seq, device, steps=2)
                    if device == "cuda":
                        row["max_reserved_bytes"] = torch.cuda.max_memory_reserved()
                        row["max_allocated_bytes"] = torch.cuda.max_memory_allocated()
                        row["nvidia_smi_bytes"] = _smi_bytes()
                        row["error"] = row["max_reserved_bytes"] / plan.peak - 1
                    del model
                except Exception as exc:  # an OOM or a crash is a finding: keep going
                    row["failed"] = f"{type(exc).__name__}: {exc}"[:500]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def recipe(device: str, out: Path) -> list[dict]:
    """Section 2: `tunewiz train` on the tiny model, 5 steps, per method and dtype, vs a CPU run."""
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    losses: dict[tuple[str, str, str], list[float]] = {}
    # CPU: fp32 only (the reference), and bf16 too when CPU is all there is; the device: both dtypes.
    runs = [
        (dev, dtype)
        for dtype in ("fp32", "bf16")
        for dev in ("cpu", device)
        if dev == device or dtype == "fp32"
    ]
    for method in ("lora", "qlora", "full"):
        for dev, dtype in sorted(set(runs)):
            run = out / "runs" / f"{method}-{dtype}-{dev}"
            cmd = [sys.executable, "-m", "tunewiz", "train", str(ROOT / "presets" / "tiny-lora.yaml")]
            cmd += ["--run-dir", str(run), "--set", f"method={method}", "--set", f"device={dev}"]
            cmd += ["--set", f"model.dtype={dtype}", "--set", "train.max_steps=5"]
            cmd += ["--set", f"output.adapter={str(method != 'full').lower()}"]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            events = run / "events.jsonl"
            steps = [json.loads(x) for x in events.read_text().splitlines()] if events.exists() else []
            losses[method, dtype, dev] = [e["loss"] for e in steps if e.get("event") == "step"]
            rows.append(
                {"method": method, "dtype": dtype, "device": dev, "returncode": done.returncode}
                | {"losses": losses[method, dtype, dev], "stderr_tail": done.stderr[-400:]}
            )
    for row in rows:
        fp32 = losses[row["method"], "fp32", row["device"]]
        cpu = losses.get((row["method"], "fp32", "cpu"), [])
        if row["losses"] and row["dtype"] == "fp32":
            row["max_abs_vs_cpu"] = max(
                (abs(a - b) for a, b in zip(row["losses"], cpu, strict=False)), default=None
            )
        if row["losses"] and row["dtype"] == "bf16" and fp32:
            row["max_rel_vs_fp32"] = max(abs(a / b - 1) for a, b in zip(row["losses"], fp32, strict=False))
    return rows


def train_speed(device: str, tiny: bool) -> dict:
    """Section 3: LoRA bf16 tokens/s and MFU, tunewiz vs transformers + peft on the same weights."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    arch = _arch("1b", tiny)
    batch, seq = (2, 64) if tiny else (4, 2048)
    ours = _build(arch, "lora", device, ac=False)
    result = {"tunewiz_s_per_step": _train_steps(ours, arch, batch, seq, device, steps=4)}
    hf_cfg = transformers.LlamaConfig(**arch.to_hf())
    with torch.device(device):
        hf = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16)
    base = {k: v for k, v in ours.state_dict().items() if "lora_" not in k}
    hf.load_state_dict(base, strict=False)
    del ours
    hf = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])).train()
    params = [p for p in hf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda")
    ids = torch.randint(0, arch.vocab_size, (batch, seq), device=device)
    for i in range(4):
        if i == 1:
            _sync(device)
            start = time.perf_counter()
        hf(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    result["hf_peft_s_per_step"] = (time.perf_counter() - start) / 3
    tokens = batch * seq
    flops = 4 * arch.num_parameters() * tokens  # LoRA: no weight gradients of the frozen base
    peak = 989e12 if device == "cuda" else None  # H100/H200 dense bf16; set for other GPUs
    for side in ("tunewiz", "hf_peft"):
        s = result[f"{side}_s_per_step"]
        result[f"{side}_tokens_per_s"] = tokens / s
        result[f"{side}_mfu"] = flops / s / peak if peak else None
    result["ratio"] = result["hf_peft_s_per_step"] / result["tunewiz_s_per_step"]
    return result


def decode(device: str, tiny: bool) -> dict:
    """Section 4: greedy decode tokens/s of tunewiz's generate on the 1B shape (batch 1, 128 tokens)."""
    from tunewiz.inference.generate import SamplingParams, generate

    arch = _arch("1b", tiny)
    model = _build(arch, "lora", device, ac=False).eval()
    new = 16 if tiny else 128
    prompt = [[1 + i % (arch.vocab_size - 1) for i in range(32)]]
    times = {}
    for n in (1, new):
        _sync(device)
        start = time.perf_counter()
        generate(model, prompt, SamplingParams(max_new_tokens=n), stop_ids=(), pad_id=0)
        _sync(device)
        times[n] = time.perf_counter() - start
    return {"tunewiz_decode_tokens_per_s": (new - 1) / max(times[new] - times[1], 1e-9), "new_tokens": new}


def markdown(report: dict) -> str:
    """The report as Markdown tables."""
    lines = [f"# gpu_check on {report['device_name']} ({report['device']}, tiny={report['tiny']})", ""]
    lines += [
        "| shape | method | mb | seq | planned GiB | reserved GiB | allocated GiB | nvidia-smi GiB | error |"
    ]
    lines += ["|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    gib = lambda b: "—" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
    for r in report["sections"].get("peaks", []) if isinstance(report["sections"].get("peaks"), list) else []:
        err = f"{r['error']:+.1%}" if "error" in r else r.get("failed", "—")[:40]
        lines.append(
            f"| {r['shape']} | {r['method']} | {r['micro_batch']} | {r['seq_len']} "
            f"| {gib(r['planned_bytes'])} | {gib(r.get('max_reserved_bytes'))} "
            f"| {gib(r.get('max_allocated_bytes'))} "
            f"| {gib(r.get('nvidia_smi_bytes'))} | {err} |"
        )
    for name in ("recipe", "train_speed", "decode"):
        lines += ["", f"## {name}", "", "```json", json.dumps(report["sections"].get(name), indent=1), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json and .md")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--tiny", action="store_true", help="~1M-parameter shapes (a CPU test run)")
    parser.add_argument("--only", nargs="*", default=["peaks", "recipe", "train_speed", "decode"])
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device; use `--device cpu --tiny` to test the script", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    report = {"device": args.device, "device_name": name, "tiny": args.tiny, "torch": torch.__version__}
    report["sections"] = {}
    sections = {
        "peaks": lambda: peaks(args.device, args.tiny),
        "recipe": lambda: recipe(args.device, args.out),
        "train_speed": lambda: train_speed(args.device, args.tiny),
        "decode": lambda: decode(args.device, args.tiny),
    }
    for key in args.only:
        start = time.perf_counter()
        try:
            report["sections"][key] = sections[key]()
        except Exception as exc:
            report["sections"][key] = {
                "failed": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        print(f"{key}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "gpu_check.md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
