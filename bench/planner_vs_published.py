"""Compare the planner with peers' published single-GPU peak memory, row by row.

The rows are ``bench/calibration/published_peaks.csv`` (92 rows, each with its source; how they were
gathered and their caveats: ``bench/calibration/NOTES.md``). For each row this script decides whether
the peer's setup is *like for like* with a tunewiz run: an architecture tunewiz trains, a known method,
micro-batch, sequence length that the batches really reach (packed, fixed-length, or truncated data
whose longest samples exceed it), known activation checkpointing and optimizer, and no peer mechanism
that moves state off the GPU (paged optimizers) or adds work tunewiz's step does not have (evaluation
inside the measured window). Rows that are not like for like keep their reason and, where the setup
can be expressed, the planner's number for information.

The planner's number is compared with what the peer measured: ``torch.cuda.max_memory_allocated``
(allocated / active) sees tensors only, ``max_memory_reserved`` adds the caching allocator's slack;
neither sees the CUDA context, so the context is left out of the comparison (it is in every fit
verdict). Units are converted (the ``unit`` column: GiB or GB = 1e9 bytes).

    python bench/planner_vs_published.py            # the table, the median |error|, the outliers
    python bench/planner_vs_published.py --markdown # the same as a Markdown table (bench/RESULTS.md)

Exit status 1 when a must-hold fails: median |error| over the like-for-like rows above 12%, or a
like-for-like row where the planner predicts less than the peer measured by more than the error band.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewiz.models.catalog import lookup
from tunewiz.plan.memory import ERROR_BAND, PlanInputs, allocator_view, estimate
from tunewiz.units import GiB

CSV = Path(__file__).resolve().parent / "calibration" / "published_peaks.csv"
MEDIAN_LIMIT = 0.12
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QV = ("q_proj", "v_proj")

# Peer model name -> tunewiz catalog architecture (Llama-3-8B has Llama-3.1-8B's shapes; Mistral-7B
# v0.2 has a 32000 vocabulary against v0.3's 32768: 13 MB of embeddings).
ARCH = {
    "Llama-3.1-8B": "llama-3.1-8b",
    "Llama-3-8B": "llama-3.1-8b",
    "Llama-3.2-3B": "llama-3.2-3b",
    "Llama-3.2-1B": "llama-3.2-1b",
    "Llama-2-7B": "llama-2-7b",
    "Llama 2 7B": "llama-2-7b",
    "Llama 2 13B": "llama-2-13b",
    "Mistral-7B": "mistral-7b-v0.3",
    "Mistral-7B-v0.2": "mistral-7b-v0.3",
    "TinyLlama-1.1B": "tinyllama-1.1b-chat",
}


# Setups a peer reports as out of memory (LitGPT's resource tables, A100-SXM4-40GB, bf16-true, LoRA r8 on
# q, v, no checkpointing, Alpaca's longest sample 1304 tokens; NOTES.md): the planner must never say
# "fits" for them. (Falcon-40B, also OOM there, is not an architecture tunewiz trains.)
_LITGPT = PlanInputs(method="lora", seq_len=1304, lora_rank=8, loss="full", foreach_step=True)
PEER_OOM = (
    ("llama-2-7b", dataclasses.replace(_LITGPT, micro_batch=4), 40.0 * 10**9 / 2**30),
    ("llama-2-13b", dataclasses.replace(_LITGPT, micro_batch=2), 40.0 * 10**9 / 2**30),
    ("llama-2-13b", dataclasses.replace(_LITGPT, micro_batch=4), 40.0 * 10**9 / 2**30),
)


@dataclass(frozen=True)
class Row:
    """One published measurement and the planner's number for the same setup.

    Args:
        row: the CSV's ``row`` id.
        label: model, method, batch × sequence, GPU, source.
        published: the peer's peak in bytes.
        predicted: the planner's peak in bytes as the peer's statistic sees it (None: not expressible).
        like_for_like: whether the row counts for the must-holds.
        why: why it is not like for like, or the assumptions made when it is.
    """

    row: int
    label: str
    published: int
    predicted: int | None
    like_for_like: bool
    why: str

    @property
    def error(self) -> float | None:
        return None if self.predicted is None else self.predicted / self.published - 1


def _targets(text: str) -> tuple[str, ...]:
    t = text.lower()
    if t in ("unknown", ""):
        return ()
    if t.startswith("gate_proj"):
        return ("gate_proj", "up_proj", "down_proj")
    if "mlp" in t and "output_proj" in t and "k" not in t.split(","):
        return ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    if "mlp" in t:
        return ALL
    if t.startswith("q_proj,k_proj,v_proj"):
        return ALL  # torchtune's 7B QLoRA config: q, k, v, output_proj and the MLP
    return QV


BNB = (
    "bitsandbytes QLoRA: its 4-bit matmul keeps each linear's input for backward (and LitGPT's LoRA dropout "
    "a second copy); tunewiz's NF4 linear (torchao) keeps only the weight, as its traced step shows"
)


def setup(r: dict[str, str]) -> tuple[str | None, PlanInputs | None, str]:
    """(catalog model, planner inputs, reason) for one CSV row; a reason without inputs excludes it.

    Args:
        r: the CSV row.
    """
    src, notes, model = r["source_project"], r["notes"], r["model"]
    if model not in ARCH:
        return None, None, f"{model}: an architecture tunewiz does not train"
    method = r["method"]
    mb, seq = int(r["micro_batch"]), int(r["seq_len"])
    # Micro-batches per step: stated by the source (LitGPT: global_batch_size / micro_batch_size of the
    # config) or 1. It matters for full fine-tunes only: their gradients outlive a micro-batch.
    accum = int(r["grad_accum"]) if r["grad_accum"] else 1
    ac = {"yes": True, "no": False}.get(r["activation_checkpointing"])
    opt = r["optimizer"].lower()
    rank = int(r["lora_rank"]) if r["lora_rank"].isdigit() else 8
    targets = _targets(r["lora_targets"]) or QV
    assumed: list[str] = []
    if method == "full" and not r["grad_accum"]:
        assumed.append("gradient accumulation not stated: 1")
    skip = ""
    loss = "chunked"
    if src == "torchtune" and "Memory and training speed" in r["source_url_or_repo_path"]:
        if "A6000" in r["gpu"]:
            skip = "settings not stated; twice the RTX 4090 row at the same batch, so they differ from it"
        elif method == "full":
            skip = "8-bit *paged* AdamW: optimizer state is evicted to CPU memory, the GPU peak omits it"
        else:
            ac = True
            targets = QV if method == "lora" else ("q_proj", "k_proj", "v_proj", "o_proj", *ALL[4:])
            assumed.append("default config of that commit (AC on, r8)")
    if src == "torchtune" and "0217d44c2" in r["source_url_or_repo_path"]:
        skip = "Alpaca not packed at max 2048: real lengths are far shorter than 2048"
    if src == "torchtune" and "Optimization flags" in r["source_url_or_repo_path"]:
        if r["packed"] == "no":
            skip = "Alpaca not packed at max 4096: real lengths are far shorter than 4096"
        if method == "lora":
            rank, targets = 64, ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
            assumed.append("default config of that commit (r64, q,v,o + MLP)")
        if "chunked_CE=no" in notes:
            loss = "full"
    if src == "torchtune" and r["row"] in ("16", "23"):
        skip = (
            "the peak is model initialisation: the tutorial gives 9.13 GB reserved at init of the 9.29 GB "
            "(torchtune's April-2024 NF4 loading); training added 0.16 GB"
        )
    if r["row"] == "17":
        skip = (
            "the same config is also published as 15.57 GB reserved (rows 22, 24); this 17.18 GB first "
            "appeared as an estimate on an A100 with an artificial memory limit (README @a95c6b931)"
        )
    if src == "torchtune" and r["packed"] == "no" and seq == 512:
        loss = "full"  # torchtune before chunked CE: fp32 [N, V] logits
        assumed.append("seq 512 = alpaca's truncation length, reached by its longest samples")
    if "paged" in opt and method == "full":
        skip = skip or "paged AdamW: optimizer state can be evicted to CPU memory, the GPU peak omits it"
    if opt.startswith("sgd"):
        skip = "SGD (no optimizer state): tunewiz trains with AdamW"
    if "SUSPECT" in notes:
        skip = "below the weights + grads + AdamW floor: probably not one GPU (NOTES.md)"
    if src == "peft":
        skip = "peak includes evaluation generation (batch 50) and length-bucketed, unpacked batches"
    if src == "fsdp_qlora":
        skip = "two GPUs (FSDP NO_SHARD), rank/targets/optimizer not stated"
    foreach = None
    if src == "litgpt":
        loss = "full"  # lm_head_chunk_size=128: every chunk's logits stay alive
        foreach = True  # torch.optim.AdamW's default on CUDA: foreach, with its sqrt temporary
        if method == "qlora":
            skip = skip or BNB
        if ac is None:
            skip = skip or "activation checkpointing not stated"
    if r["compile"] == "yes" and ac is False and not skip:
        skip = "torch.compile without checkpointing fuses away saved activations tunewiz keeps"
    if ac is None:
        skip = skip or "activation checkpointing not stated"
    inputs = PlanInputs(
        method=method,  # type: ignore[arg-type]
        dtype="fp32" if r["dtype"] == "fp32" else "bf16",
        micro_batch=mb,
        seq_len=seq,
        lora_rank=rank,
        lora_targets=targets,
        activation_checkpointing=bool(ac),
        loss=loss,  # type: ignore[arg-type]
        foreach_step=foreach,
        grad_accum=accum,
    )
    inputs = _savers(inputs, r, notes)
    return ARCH[model], inputs, skip or "; ".join(assumed)


def _savers(inputs: PlanInputs, r: dict[str, str], notes: str) -> PlanInputs:
    fields = {f.name for f in dataclasses.fields(PlanInputs)}
    changes: dict[str, object] = {}
    if "optimizer_in_backward" in fields and r["optimizer_in_backward"] == "yes":
        changes["optimizer_in_backward"] = True
    if "activation_offloading" in fields and "activation_offloading=yes" in notes or "offloading ON" in notes:
        changes["activation_offloading"] = True
    if "optimizer" in fields and "8bit" in r["optimizer"].replace("-", ""):
        changes["optimizer"] = "adamw8bit"
    return dataclasses.replace(inputs, **{k: v for k, v in changes.items() if k in fields})


def compare() -> list[Row]:
    """Every CSV row with the planner's number for its setup."""
    out = []
    for r in csv.DictReader(CSV.open(encoding="utf-8")):
        unit = GiB if r["unit"] == "GiB" else 10**9
        published = int(float(r["peak_memory_gb"]) * unit)
        label = (
            f"{r['model']} {r['method']} b{r['micro_batch']}x{r['seq_len']}"
            f"{' AC' if r['activation_checkpointing'] == 'yes' else ''} ({r['source_project']}, {r['gpu']})"
        )
        model, inputs, why = setup(r)
        predicted = None
        if model is not None and inputs is not None:
            predicted = allocator_view(estimate(lookup(model).arch, inputs), r["memory_kind"])
        like = predicted is not None and not _is_exclusion(why)
        out.append(Row(int(r["row"]), label, published, predicted, like, why))
    return out


def _is_exclusion(why: str) -> bool:
    return bool(why) and not why.startswith(("default config", "seq 512"))


def summary(rows: list[Row]) -> tuple[float, list[Row], list[Row]]:
    """(median |error| over the like-for-like rows, rows off by more than 15%, rows under by > band)."""
    like = [r for r in rows if r.like_for_like]
    median = statistics.median(abs(r.error) for r in like)  # type: ignore[arg-type]
    off = [r for r in like if abs(r.error) > 0.15]  # type: ignore[arg-type]
    under = [r for r in like if r.error < -ERROR_BAND["cuda"]]  # type: ignore[operator]
    return median, off, under


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--all", action="store_true", help="also list the rows that are not like for like")
    args = parser.parse_args(argv)
    rows = compare()
    median, off, under = summary(rows)
    shown = [r for r in rows if r.like_for_like or args.all]
    if args.markdown:
        print("| row | setup | published GiB | planner GiB | error | like for like / note |")
        print("|---:|---|---:|---:|---:|---|")
        for r in shown:
            pred = "—" if r.predicted is None else f"{r.predicted / GiB:.2f}"
            err = "—" if r.error is None else f"{r.error:+.0%}"
            note = ("yes" + (f": {r.why}" if r.why else "")) if r.like_for_like else f"no: {r.why}"
            print(f"| {r.row} | {r.label} | {r.published / GiB:.2f} | {pred} | {err} | {note} |")
    else:
        for r in shown:
            pred = "     —" if r.predicted is None else f"{r.predicted / GiB:6.2f}"
            err = "     —" if r.error is None else f"{r.error:+6.0%}"
            tag = "" if r.like_for_like else f"  [not like for like: {r.why}]"
            print(f"{r.row:3d} {r.label:62s} {r.published / GiB:6.2f} {pred} {err}{tag}")
    like = sum(r.like_for_like for r in rows)
    print(f"\n{like} like-for-like rows of {len(rows)}; median |error| {median:.1%}", end="")
    print(f" (limit {MEDIAN_LIMIT:.0%})")
    for r in off:
        print(f"off by more than 15%: row {r.row} {r.label}: {r.error:+.0%}")
    for r in under:
        print(f"UNDER by more than the band: row {r.row} {r.label}: {r.error:+.0%}")
    return 0 if median <= MEDIAN_LIMIT and not under else 1


if __name__ == "__main__":
    sys.exit(main())
