"""Peak memory and training throughput of QLoRA (NF4 base) vs LoRA (bf16 base) on a ~110M-parameter
Llama with random weights, on CPU.

Each method runs in its own process: load the model from safetensors, apply LoRA to every
projection, then train a few steps with AdamW. Printed per method: weight bytes held by the model,
peak RSS (``ru_maxrss``), peak anonymous RSS (``RssAnon``, sampled every 5 ms), and tokens/s (forward +
backward + step, after one warm-up step); then the QLoRA / LoRA ratios.

Why two peaks: the checkpoint is memory-mapped, so RSS also counts clean file pages of the
safetensors file that were read (reclaimable, and never on a GPU); anonymous RSS is what the process
allocated. Large allocations are returned to the OS when freed (``MALLOC_MMAP_THRESHOLD_``), so
anonymous RSS follows live tensors rather than the allocator's high-water mark.

    python bench/qlora_memory.py [--steps 3] [--batch 2] [--seq 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# ~110M parameters: 12 blocks of width 768 (85M in the decoder linears) + a tied 32k × 768 embedding.
CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model_dir(out: Path) -> None:
    """Random bf16 weights saved as a Hugging Face checkpoint."""
    import torch

    from tunewiz.models.config import LlamaConfig
    from tunewiz.models.llama import LlamaForCausalLM
    from tunewiz.models.loading import save_model

    config = LlamaConfig.from_hf(CONFIG)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.init_weights()
    save_model(model.to(torch.bfloat16), out, config)


class AnonPeak:
    """Samples this process's anonymous resident memory (``RssAnon``) in a thread; keeps the maximum."""

    def __init__(self, every_s: float = 0.005) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024  # kB
        raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now())


def measure(method: str, model_dir: Path, steps: int, batch: int, seq: int) -> dict[str, float]:
    """Load, apply LoRA, train; runs in a fresh process (see `main`)."""
    import resource

    import torch

    from tunewiz.lora.layer import apply_lora
    from tunewiz.models.loading import load_model
    from tunewiz.models.loss import chunked_cross_entropy
    from tunewiz.models.nf4 import is_nf4, load_nf4_model, nf4_storage_bytes

    torch.manual_seed(0)
    dtype = torch.bfloat16
    anon = AnonPeak()
    if method == "qlora":
        model = load_nf4_model(model_dir, dtype=dtype, device="cpu")
    else:
        model = load_model(model_dir, dtype=dtype, device="cpu")
    dense = sum(p.numel() * p.element_size() for p in model.parameters() if not is_nf4(p))
    weight_bytes = dense + nf4_storage_bytes(model)
    apply_lora(model, targets=TARGETS, rank=8, alpha=16.0, dropout=0.0, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.to(dtype)  # as the recipe does: adapters in the compute dtype
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    ids = torch.randint(3, CONFIG["vocab_size"], (batch, seq))
    elapsed = 0.0
    for step in range(steps + 1):
        start = time.perf_counter()
        loss_sum, n = chunked_cross_entropy(model(ids, output_hidden=True), model.lm_head, ids)
        (loss_sum / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step > 0:  # step 0 warms up allocator and kernels
            elapsed += time.perf_counter() - start
    return {
        "weight_bytes": weight_bytes,
        "peak_anon": anon.stop(),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
        "tokens_per_s": steps * batch * seq / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--worker", choices=["lora", "qlora"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.model_dir, args.steps, args.batch, args.seq)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build_model_dir(model_dir)
        results = {}
        for method in ("lora", "qlora"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                method,
                "--model-dir",
                str(model_dir),
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--seq",
                str(args.seq),
            ]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            results[method] = json.loads(out.strip().splitlines()[-1])
    mib = 2**20
    print(
        f"model: {CONFIG['num_hidden_layers']} × {CONFIG['hidden_size']}, ~110M params, bf16, CPU; "
        f"batch {args.batch} × {args.seq}, {args.steps} timed steps, LoRA r=8 on all projections"
    )
    print(f"{'method':<8}{'weights MiB':>13}{'peak RSS MiB':>14}{'peak anon MiB':>15}{'tokens/s':>10}")
    for method, r in results.items():
        print(
            f"{method:<8}{r['weight_bytes'] / mib:>13.1f}{r['peak_rss'] / mib:>14.1f}"
            f"{r['peak_anon'] / mib:>15.1f}{r['tokens_per_s']:>10.1f}"
        )
    q, lo = results["qlora"], results["lora"]
    print(
        f"QLoRA / LoRA: weights {q['weight_bytes'] / lo['weight_bytes']:.3f}, "
        f"peak anon {q['peak_anon'] / lo['peak_anon']:.3f}, peak RSS {q['peak_rss'] / lo['peak_rss']:.3f}, "
        f"tokens/s {q['tokens_per_s'] / lo['tokens_per_s']:.3f}"
    )


if __name__ == "__main__":
    main()
