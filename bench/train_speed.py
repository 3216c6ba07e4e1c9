"""Training throughput and memory: tunewiz against torchtune 0.6.1 and transformers + peft, side by side.

The same random ~27.5M-parameter Llama (vocab 8000, width 512, 6 blocks, 8 heads, SwiGLU 1408, untied
lm_head) is saved once as a Hugging Face checkpoint and loaded by all three, so the first-step losses
must agree (printed as a check). Every side trains on the same fixed synthetic corpus (random tokens,
batch 4 × seq 256, next-token loss on all 1024 positions), with AdamW and gradient clipping at 1.0,
no activation checkpointing, no dropout; LoRA rank 8, alpha 16 on q,v or on all seven projections;
full fine-tuning too; fp32 and bf16 (bf16 weights and adapters everywhere, as each recipe does).

- tunewiz: the recipe's pieces (`load_model`, `apply_lora`, adapters cast to the compute dtype as
  `FineTune._build_model` does, the model's chunked loss, `build_optimizer`, `clip_grad_norm`).
- transformers + peft: `AutoModelForCausalLM.from_pretrained` (SDPA attention), `get_peft_model`,
  the model's own loss; fused AdamW (the Trainer's default optimizer on torch >= 2.8).
- torchtune 0.6.1: `lora_llama2`/`llama2` builders, weights through `convert_weights.hf_to_tune`,
  `CEWithChunkedOutputLoss` with the model's chunked output (its LoRA recipe), fused AdamW (its configs).

Each (framework, configuration) is a long-lived worker process, so its memory is its own. The parent
warms every worker up, then runs ``--rounds`` rounds of ``--steps`` timed steps, rotating which
framework goes first, so drift and other people's load hit all of them alike. tokens/s is the median
over rounds and tunewiz's speed-up is the median of the per-round ratios (the sides of a round ran
back to back, so load drift cancels); the min–max spread is printed to show the noise. Memory is the peak
anonymous resident memory (``RssAnon``, sampled every 5 ms) during training, minus the process's
value after its imports and before the model was built: weights + gradients + optimizer state +
activations + allocator slack.

"share of peak" = model FLOP/s over the measured 2048² matmul FLOP/s of the same dtype (measured in
this run): full fine-tuning does 6·N + 12·L·D·T FLOPs per token (N = matmul parameters incl. lm_head,
PaLM's formula), LoRA 4·N + 8·L·D·T (frozen weights need no weight gradient).

torchtune needs torchao 0.14.1/0.15.0, which peft refuses, so it runs from its own virtualenv::

    python3.11 -m venv /work/bench-venvs/torchtune
    /work/bench-venvs/torchtune/bin/pip install torch==2.13.0 torchtune==0.6.1 torchao==0.15.0

Without that venv torchtune is skipped with a note. Run (about 10 minutes on two cores)::

    python bench/train_speed.py [--rounds 3 --steps 4] [--only bf16-lora-qv,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 8000,
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}
BATCH, SEQ = 4, 256
RANK, ALPHA = 8, 16.0
TARGETS = {
    "qv": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# (name, dtype, method, lora targets key)
RUNS = [
    ("fp32-lora-qv", "fp32", "lora", "qv"),
    ("fp32-lora-all", "fp32", "lora", "all"),
    ("fp32-full", "fp32", "full", None),
    ("bf16-lora-qv", "bf16", "lora", "qv"),
    ("bf16-lora-all", "bf16", "lora", "all"),
    ("bf16-full", "bf16", "full", None),
]
FRAMEWORKS = ("tunewiz", "torchtune", "hf+peft")
TORCHTUNE_PYTHON = Path("/work/bench-venvs/torchtune/bin/python")
PREFIX = "BENCH "  # our protocol lines on stdout; anything else a library prints is ignored


# -- worker side (runs in the framework's own interpreter) ---------------------------------------------


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class _AnonPeak:
    """Maximum of RssAnon, sampled in a thread every 5 ms."""

    def __init__(self) -> None:
        self.peak = _rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_anon())


def _corpus(torch):  # noqa: ANN001, ANN202 (torch module: workers import it lazily)
    """8 fixed batches of random tokens as (inputs, targets) pairs, each [B, T] and contiguous:
    targets are the inputs shifted by one. Step i trains on batch i % 8."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randint(3, CONFIG["vocab_size"], (8, BATCH, SEQ + 1), generator=g)
    return [(row[:, :-1].contiguous(), row[:, 1:].contiguous()) for row in x]


def _tunewiz_step(model_dir: Path, dtype, method: str, targets: list[str] | None):  # noqa: ANN001, ANN202
    from tunewiz.lora.layer import apply_lora
    from tunewiz.models.loading import load_model
    from tunewiz.models.loss import chunked_cross_entropy
    from tunewiz.preset.schema import TrainSection
    from tunewiz.train.distributed import clip_grad_norm
    from tunewiz.train.optim import build_optimizer

    model = load_model(model_dir, dtype=dtype, device="cpu")
    if method == "full":
        model.requires_grad_(True)
    else:
        apply_lora(model, targets=targets, rank=RANK, alpha=ALPHA, dropout=0.0, seed=0)
        for param in model.parameters():  # as FineTune._build_model: adapters in the compute dtype
            if param.requires_grad:
                param.data = param.data.to(dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, TrainSection(lr=1e-4))

    def step(batch):  # noqa: ANN001, ANN202 (inputs, targets: [B, T] each)
        loss_sum, n = chunked_cross_entropy(model(batch[0], output_hidden=True), model.lm_head, batch[1])
        loss = loss_sum / n
        loss.backward()
        clip_grad_norm(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def _hf_step(model_dir: Path, dtype, method: str, targets: list[str] | None):  # noqa: ANN001, ANN202
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    if method != "full":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"
        )
        # autocast_adapter_dtype=False: bf16 adapters like the other two (peft's default would keep
        # fp32 ones).
        model = get_peft_model(model, lora, autocast_adapter_dtype=False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step(batch):  # noqa: ANN001, ANN202
        # shift_labels: the already-shifted targets, so every side trains on the same T positions.
        loss = model(input_ids=batch[0], labels=batch[0], shift_labels=batch[1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def _torchtune_step(model_dir: Path, dtype, method: str, targets: list[str] | None):  # noqa: ANN001, ANN202
    import torch
    from safetensors.torch import load_file
    from torchtune.models.convert_weights import hf_to_tune
    from torchtune.models.llama2 import llama2, lora_llama2
    from torchtune.modules.loss import CEWithChunkedOutputLoss
    from torchtune.modules.peft import get_adapter_params, set_trainable_params

    c = CONFIG
    arch = dict(
        vocab_size=c["vocab_size"],
        num_layers=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        num_kv_heads=c["num_key_value_heads"],
        embed_dim=c["hidden_size"],
        max_seq_len=c["max_position_embeddings"],
        intermediate_dim=c["intermediate_size"],
        norm_eps=c["rms_norm_eps"],
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # as its recipe's `training.set_default_dtype`: everything in `dtype`
    if method == "full":
        model = llama2(**arch)
    else:
        attn = [t for t in targets if t.endswith("_proj") and t[0] in "qkvo"]
        model = lora_llama2(
            lora_attn_modules=attn,
            apply_lora_to_mlp=len(targets) > len(attn),
            apply_lora_to_output=False,
            lora_rank=RANK,
            lora_alpha=ALPHA,
            lora_dropout=0.0,
            **arch,
        )
    torch.set_default_dtype(previous)
    hf_state = {k: v.to(dtype) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    state = hf_to_tune(
        hf_state,
        num_heads=c["num_attention_heads"],
        num_kv_heads=c["num_key_value_heads"],
        dim=c["hidden_size"],
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("lora" in k for k in missing), (missing, unexpected)
    if method != "full":
        set_trainable_params(model, get_adapter_params(model))
    loss_fn = CEWithChunkedOutputLoss()
    model.set_num_output_chunks(loss_fn.num_output_chunks)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)

    def step(batch):  # noqa: ANN001, ANN202
        logits = model(batch[0])  # list of chunks of [B, T / 8, V]
        loss = loss_fn(logits, batch[1])
        del logits
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return model, step


def worker(
    framework: str, model_dir: Path, dtype_name: str, method: str, targets: list[str] | None, warmup: int
) -> None:
    """Build one side, warm it up, then serve ``run N`` requests on stdin with a JSON line each."""
    import torch

    torch.manual_seed(0)
    dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
    build = {"tunewiz": _tunewiz_step, "hf+peft": _hf_step, "torchtune": _torchtune_step}[framework]
    base = _rss_anon()
    model, step = build(model_dir, dtype, method, targets)
    data = _corpus(torch)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sampler = _AnonPeak()
    first_loss = step(data[0])
    for i in range(1, warmup):
        step(data[i % len(data)])
    _emit({"first_loss": first_loss, "trainable": trainable, "threads": torch.get_num_threads()})
    done = warmup
    for line in sys.stdin:
        if not line.startswith("run "):
            break
        n = int(line.split()[1])
        start = time.perf_counter()
        for _ in range(n):
            loss = step(data[done % len(data)])
            done += 1
        seconds = time.perf_counter() - start
        _emit(
            {"seconds": seconds, "tokens": n * BATCH * SEQ, "loss": loss, "peak_bytes": sampler.peak - base}
        )


def _emit(payload: dict) -> None:
    print(PREFIX + json.dumps(payload), flush=True)


# -- parent side -----------------------------------------------------------------------------------------


class Worker:
    """A worker process and its line protocol."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                return json.loads(line[len(PREFIX) :])
        raise RuntimeError(f"worker {self.proc.args} exited with {self.proc.wait()} before answering")

    def run(self, steps: int) -> dict:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@dataclass
class Result:
    rates: list[float]  # tokens/s per round
    peak_bytes: int
    first_loss: float

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def matmul_peak() -> dict[str, float]:
    """Best-of-10 GFLOP/s of a 2048² @ 2048² matmul in fp32 and bf16 on this process's threads."""
    import torch

    n, out = 2048, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(10):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * n**3 / best / 1e9
    return out


def flops_per_token(method: str) -> float:
    """PaLM-style training FLOPs per token (see the module docstring)."""
    c = CONFIG
    d, i, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    n = layers * (4 * d * d + 3 * d * i) + d * c["vocab_size"]  # matmul weights, lm_head included
    attention = layers * d * SEQ
    return 6 * n + 12 * attention if method == "full" else 4 * n + 8 * attention


def write_model(out: Path) -> None:
    """The random fp32 checkpoint every side loads."""
    import torch

    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    config = LlamaConfig.from_hf(CONFIG)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.init_weights()
    save_model(model, out, config)


def bench_run(
    run: tuple, args: argparse.Namespace, model_dir: Path, env: dict[str, str]
) -> dict[str, Result]:
    """Warm up one worker per framework for this configuration, then the interleaved timed rounds."""
    name, dtype, method, targets_key = run
    targets = ",".join(TARGETS[targets_key]) if targets_key else "-"
    workers: dict[str, Worker] = {}
    meta: dict[str, dict] = {}
    for framework in args.frameworks:
        python = str(TORCHTUNE_PYTHON) if framework == "torchtune" else sys.executable
        argv = [
            python,
            str(Path(__file__).resolve()),
            "--worker",
            framework,
            "--model-dir",
            str(model_dir),
            "--dtype",
            dtype,
            "--method",
            method,
            "--targets",
            targets,
            "--warmup",
            str(args.warmup),
        ]
        workers[framework] = Worker(argv, env)
        meta[framework] = workers[framework].read()  # wait: warm-ups do not overlap
    rates: dict[str, list[float]] = {f: [] for f in workers}
    peaks: dict[str, int] = dict.fromkeys(workers, 0)
    order = list(workers)
    for r in range(args.rounds):
        for framework in order[r % len(order) :] + order[: r % len(order)]:
            out = workers[framework].run(args.steps)
            rates[framework].append(out["tokens"] / out["seconds"])
            peaks[framework] = max(peaks[framework], out["peak_bytes"])
    for w in workers.values():
        w.close()
    return {f: Result(rates[f], peaks[f], meta[f]["first_loss"]) for f in workers}


def table(results: dict[str, dict[str, Result]], peak: dict[str, float]) -> str:
    """The Markdown table: one row per configuration and framework."""
    lines = [
        "| config | framework | tokens/s (median) | spread min–max | peak memory | tunewiz speed-up "
        "(median of per-round ratios) | share of matmul peak | first loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in RUNS:
        name, dtype, method, _ = run
        if name not in results:
            continue
        by = results[name]
        ours = by.get("tunewiz")
        for framework, res in by.items():
            # Paired by round (both ran within seconds of each other), so load drift cancels.
            paired = (
                [a / b for a, b in zip(ours.rates, res.rates, strict=False)]
                if ours and framework != "tunewiz"
                else []
            )
            ratio = f"{statistics.median(paired):.2f}×" if paired else "—"
            share = res.median * flops_per_token(method) / (peak[dtype] * 1e9)
            lines.append(
                f"| {name} | {framework} | {res.median:,.0f} | {min(res.rates):,.0f}–{max(res.rates):,.0f} | "
                f"{res.peak_bytes / 2**20:,.0f} MiB | {ratio} | {share:.0%} | {res.first_loss:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds per configuration")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the first round")
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all six)")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--targets", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        targets = None if args.targets == "-" else args.targets.split(",")
        worker(args.worker, args.model_dir, args.dtype, args.method, targets, args.warmup)
        return

    args.frameworks = list(FRAMEWORKS)
    if not TORCHTUNE_PYTHON.exists():
        args.frameworks.remove("torchtune")
        print(f"note: torchtune skipped: no {TORCHTUNE_PYTHON} (create it as the module docstring says)")
    runs = [r for r in RUNS if not args.only or r[0] in args.only.split(",")]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
    }
    peak_before = matmul_peak()
    results: dict[str, dict[str, Result]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        write_model(model_dir)
        for run in runs:
            start = time.perf_counter()
            results[run[0]] = bench_run(run, args, model_dir, env)
            summary = ", ".join(f"{f} {r.median:,.0f} tok/s" for f, r in results[run[0]].items())
            print(f"{run[0]}: {summary} ({time.perf_counter() - start:.0f} s)", flush=True)
    peak_after = matmul_peak()
    peak = {k: (peak_before[k] + peak_after[k]) / 2 for k in peak_before}
    print()
    print(
        f"Llama {CONFIG['num_hidden_layers']}×{CONFIG['hidden_size']}, vocab "
        f"{CONFIG['vocab_size']}, batch {BATCH} × seq {SEQ}; "
        f"{args.warmup} warm-up steps, {args.rounds} rounds × {args.steps} steps; "
        f"2048² matmul: fp32 {peak_before['fp32']:.0f}/{peak_after['fp32']:.0f}, bf16 "
        f"{peak_before['bf16']:.0f}/{peak_after['bf16']:.0f} "
        f"GFLOP/s (before/after)"
    )
    print()
    print(table(results, peak))


if __name__ == "__main__":
    main()
