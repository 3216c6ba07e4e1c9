"""The recommender: search the configurations that fit a machine and pick one, with a reason for every
choice; when nothing fits, say what would. Pure Python: no torch.

Choices the caller fixes (a preset's values, a flag) are kept and their reason says so; the rest are
searched: method (LoRA, then QLoRA), activation checkpointing (off first: it costs ~30% speed),
micro-batch (the largest power of two that fits), LoRA rank.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from tunewiz.models.catalog import CATALOG, CatalogModel, format_params
from tunewiz.plan.hardware import GiB, Machine
from tunewiz.plan.memory import MemoryPlan, PlanInputs, estimate

DEFAULT_MARGIN = 0.10  # share of device memory left free on top of the plan's error band
DEFAULT_SEQ_LEN = 2048
MAX_MICRO_BATCH = 64

Verdict = Literal["fits", "fits with activation checkpointing", "does not fit"]


@dataclass(frozen=True)
class PlanRequest:
    """What the caller fixed; None means "choose for me".

    Args:
        method: ``lora``, ``qlora`` or ``full``.
        micro_batch: sequences per device per step.
        seq_len: ``max_seq_len``.
        activation_checkpointing: recompute blocks in backward.
        lora_rank: adapter rank.
        lora_targets: adapter targets (default ``q_proj, v_proj``, as the preset schema).
        dtype: ``bf16`` or ``fp32`` (default: bf16 on GPUs that support it, fp32 on CPU).
        target_global_batch: sequences per optimizer step over all devices (sets accumulation).
    """

    method: str | None = None
    micro_batch: int | None = None
    seq_len: int | None = None
    activation_checkpointing: bool | None = None
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    dtype: str | None = None
    target_global_batch: int = 16


@dataclass(frozen=True)
class Recommendation:
    """The chosen configuration and why, or why nothing fits and what would.

    Args:
        model: the model planned for.
        machine: the machine planned for.
        verdict: ``fits``, ``fits with activation checkpointing`` or ``does not fit``.
        plan: the memory plan of the chosen configuration (of the smallest tried when nothing fits).
        grad_accum: micro-batches per optimizer step.
        capacity: bytes per device the plan may use (device memory minus the safety margin).
        margin: the safety margin, as a share of device memory.
        reasons: one sentence per choice, saying where each value came from.
        alternatives: when it does not fit: what would (a smaller model, fewer tokens, more GPUs, QLoRA).
    """

    model: CatalogModel
    machine: Machine
    verdict: Verdict
    plan: MemoryPlan
    grad_accum: int
    capacity: int
    margin: float
    reasons: tuple[str, ...] = field(default=())
    alternatives: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return self.verdict != "does not fit"

    @property
    def global_batch(self) -> int:
        return self.plan.inputs.micro_batch * self.grad_accum * self.machine.num_devices

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "model": {"name": self.model.name, "repo_id": self.model.repo_id, "params": self.model.params},
            "machine": dataclasses.asdict(self.machine),
            "verdict": self.verdict,
            "fits": self.fits,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "capacity_bytes": self.capacity,
            "margin": self.margin,
            "plan": self.plan.as_dict(),
            "reasons": list(self.reasons),
            "alternatives": list(self.alternatives),
        }


def seq_len_from_lengths(lengths: list[int], model_max: int) -> tuple[int, str]:
    """``max_seq_len`` covering the 99th percentile of the dataset's token lengths.

    Args:
        lengths: token lengths of (a sample of) the training examples.
        model_max: the model's context length.

    Returns:
        The length (a multiple of 64, at most ``model_max``) and the reason for it.
    """
    ordered = sorted(lengths)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    chosen = min(model_max, max(64, math.ceil(p99 / 64) * 64))
    reason = (
        f"max_seq_len {chosen}: the 99th percentile of {len(ordered)} sampled lengths is {p99} tokens, "
        f"rounded up to a multiple of 64; {over_length_text(ordered, chosen)}"
    )
    if chosen == model_max and p99 > model_max:
        reason = (
            f"max_seq_len {chosen}: the model's context length (the 99th percentile is {p99} tokens); "
            f"{over_length_text(ordered, chosen)}"
        )
    return chosen, reason


def over_length(lengths: list[int], max_seq_len: int) -> int:
    """How many of ``lengths`` exceed ``max_seq_len``: the samples training will truncate or drop
    (``data.truncation``), which it counts as ``truncated + dropped_long`` for the same rows.

    Args:
        lengths: untruncated sample lengths in tokens (samples with a trained token).
        max_seq_len: the limit.
    """
    return sum(1 for n in lengths if n > max_seq_len)


def over_length_text(lengths: list[int], max_seq_len: int) -> str:
    """``"3 of 1000 sampled samples (0.3%) are longer: truncated or dropped (data.truncation)"``."""
    cut = over_length(lengths, max_seq_len)
    return (
        f"{cut} of {len(lengths)} sampled samples ({cut / max(len(lengths), 1):.1%}) are longer: "
        "truncated or dropped as `data.truncation` says"
    )


def recommend(
    machine: Machine,
    model: CatalogModel,
    token_lengths: list[int] | None = None,
    request: PlanRequest | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Recommendation:
    """Choose method, micro-batch, accumulation, checkpointing, max_seq_len and LoRA rank that fit.

    Args:
        machine: detected (``probe().machine()``) or described (``describe(2, "24GB")``).
        model: from :func:`tunewiz.models.catalog.lookup`.
        token_lengths: token lengths sampled from the dataset (None: 2048, capped by the model).
        request: values the caller fixed; the rest are chosen.
        margin: share of device memory kept free on top of the plan's error band.

    Returns:
        The recommendation; ``verdict == "does not fit"`` with ``alternatives`` when nothing fits.
    """
    req = request or PlanRequest()
    reasons: list[str] = []
    capacity = int(machine.memory_per_device * (1 - margin))
    reasons.append(
        f"capacity {capacity / GiB:.1f} GiB per {'GPU' if machine.device == 'cuda' else 'process'}: "
        f"{machine.memory_per_device / GiB:.1f} GiB minus a {margin:.0%} safety margin; a plan fits "
        "when its peak plus its error band stays below it"
    )

    seq_len, seq_reason = _seq_len(model, token_lengths, req)
    reasons.append(seq_reason)
    dtype = req.dtype or ("bf16" if machine.device == "cuda" and machine.bf16 else "fp32")
    reasons.append(
        f"dtype {dtype}: "
        + (
            "given"
            if req.dtype
            else "bf16 compute on GPUs with bf16 support"
            if dtype == "bf16"
            else "fp32 on CPU (exact, reproducible)"
            if machine.device == "cpu"
            else "this GPU lacks bf16"
        )
    )

    methods = [req.method] if req.method else ["lora", "qlora"]
    ranks = [req.lora_rank] if req.lora_rank else [16, 8]
    # A fixed "off" is still followed by "on": the verdict then says it fits with checkpointing.
    checkpointing = [True] if req.activation_checkpointing else [False, True]
    per_device_batch = max(1, req.target_global_batch // machine.num_devices)
    batches = [req.micro_batch] if req.micro_batch else _powers_of_two(min(per_device_batch, MAX_MICRO_BATCH))

    base = PlanInputs(
        dtype=dtype,
        seq_len=seq_len,
        lora_targets=req.lora_targets,
        num_devices=machine.num_devices,
        device="cuda" if machine.device == "cuda" else "cpu",
    )
    feasible: list[MemoryPlan] = []
    smallest: MemoryPlan | None = None
    for method in methods:
        for ac in checkpointing:
            for rank in ranks:
                for mb in batches:
                    plan = estimate(
                        model.arch,
                        dataclasses.replace(
                            base, method=method, activation_checkpointing=ac, lora_rank=rank, micro_batch=mb
                        ),
                    )
                    if smallest is None or plan.peak_high < smallest.peak_high:
                        smallest = plan
                    if plan.peak_high <= capacity:
                        feasible.append(plan)
    if feasible:
        # The best of everything that fits. More memory only adds candidates, so the choice never gets
        # worse on a bigger machine (the monotonicity the tests check).
        plan = max(feasible, key=lambda p: _preference(p, methods))
        mb = plan.inputs.micro_batch
        without_ac = [p.inputs.micro_batch for p in feasible if not p.inputs.activation_checkpointing]
        reasons += _choice_reasons(req, plan, batches, per_device_batch, capacity, max(without_ac, default=0))
        accum = max(1, math.ceil(req.target_global_batch / (mb * machine.num_devices)))
        reasons.append(
            f"grad_accum {accum}: {mb} × {accum} × {machine.num_devices} device(s) = "
            f"{mb * accum * machine.num_devices} sequences per step (target {req.target_global_batch})"
        )
        verdict: Verdict = (
            "fits with activation checkpointing" if plan.inputs.activation_checkpointing else "fits"
        )
        return Recommendation(model, machine, verdict, plan, accum, capacity, margin, tuple(reasons))
    assert smallest is not None
    reasons.append(
        f"nothing fits: the smallest configuration tried needs {smallest.peak_high / GiB:.1f} GiB "
        f"per device (with its error band) against {capacity / GiB:.1f} GiB"
    )
    return Recommendation(
        model,
        machine,
        "does not fit",
        smallest,
        1,
        capacity,
        margin,
        tuple(reasons),
        tuple(_alternatives(machine, model, smallest, capacity, req)),
    )


def _seq_len(model: CatalogModel, token_lengths: list[int] | None, req: PlanRequest) -> tuple[int, str]:
    if req.seq_len:
        if req.seq_len > model.max_context:
            return model.max_context, (
                f"max_seq_len {model.max_context}: {req.seq_len} was asked, but "
                f"{model.name}'s context length is {model.max_context}"
            )
        return req.seq_len, f"max_seq_len {req.seq_len}: given"
    if token_lengths:
        return seq_len_from_lengths(token_lengths, model.max_context)
    chosen = min(DEFAULT_SEQ_LEN, model.max_context)
    return chosen, f"max_seq_len {chosen}: default without a dataset sample (capped by the model's context)"


AC_SLOWDOWN = 4 / 3  # activation checkpointing recomputes the forward: ~1/3 more compute per step


def _preference(plan: MemoryPlan, methods: list[str]) -> tuple[int, float, int, int]:
    """Sort key of a fitting plan: the preferred method first (LoRA before QLoRA), then throughput
    (sequences per forward, divided by the recomputation cost of checkpointing), then LoRA rank,
    then the smaller peak."""
    i = plan.inputs
    throughput = i.micro_batch / (AC_SLOWDOWN if i.activation_checkpointing else 1.0)
    return (-methods.index(i.method), throughput, i.lora_rank, -plan.peak)


def _powers_of_two(limit: int) -> list[int]:
    # Largest first: the search keeps the first that fits.
    out, b = [], 1
    while b <= limit:
        out.append(b)
        b *= 2
    return out[::-1]


def _choice_reasons(
    req: PlanRequest,
    plan: MemoryPlan,
    batches: list[int],
    per_device: int,
    capacity: int,
    best_without_ac: int,
) -> list[str]:
    i = plan.inputs
    out = []
    if req.method:
        out.append(f"method {i.method}: given")
    elif i.method == "lora":
        out.append("method lora: trains ~1% of the weights, fits without quantizing the base model")
    else:
        out.append("method qlora: LoRA with the base in 4-bit NF4, because plain LoRA does not fit")
    if i.method != "full":
        out.append(
            f"lora rank {i.lora_rank}: "
            + (
                "given"
                if req.lora_rank
                else "16 when it fits (more capacity, negligible memory)"
                if i.lora_rank == 16
                else "8, because rank 16 does not fit"
            )
        )
    if (
        req.activation_checkpointing is not None
        and req.activation_checkpointing == i.activation_checkpointing
    ):
        out.append(f"activation checkpointing {'on' if i.activation_checkpointing else 'off'}: given")
    elif i.activation_checkpointing and req.activation_checkpointing is False:
        out.append(
            "activation checkpointing on: needed, although it was asked off "
            "(`--set train.activation_checkpointing=true`)"
        )
    elif i.activation_checkpointing and not best_without_ac:
        out.append("activation checkpointing on: no micro-batch fits without it (it costs ~30% speed)")
    elif i.activation_checkpointing:
        out.append(
            f"activation checkpointing on: micro_batch {i.micro_batch} with it outruns micro_batch "
            f"{best_without_ac} without it, despite the ~30% recomputation"
        )
    else:
        out.append("activation checkpointing off: the plan fits without it, so no recomputation")
    if req.micro_batch:
        out.append(f"micro_batch {i.micro_batch}: given")
    else:
        headroom = 1 - plan.peak_high / capacity
        out.append(
            f"micro_batch {i.micro_batch}: the fastest power of two up to {min(per_device, batches[0])} "
            f"that fits, with {headroom:.0%} of the capacity to spare"
        )
    out.append(f"predicted peak {plan.peak / GiB:.2f} GiB per device (±{plan.error_band:.0%})")
    return out


def _alternatives(
    machine: Machine, model: CatalogModel, smallest: MemoryPlan, capacity: int, req: PlanRequest
) -> list[str]:
    """What would fit: QLoRA, fewer tokens, more GPUs, a smaller model (each checked with the planner)."""
    out = []
    i = dataclasses.replace(smallest.inputs, micro_batch=1, activation_checkpointing=True, lora_rank=8)
    if (
        i.method != "qlora"
        and estimate(model.arch, dataclasses.replace(i, method="qlora")).peak_high <= capacity
    ):
        out.append("QLoRA (`--method qlora`): the base weights in 4-bit fit")
    seq = i.seq_len // 2
    while seq >= 128:
        if estimate(model.arch, dataclasses.replace(i, seq_len=seq)).peak_high <= capacity:
            out.append(f"shorter sequences: `--seq-len {seq}` fits with activation checkpointing")
            break
        seq //= 2
    if machine.device == "cuda":
        for n in (2, 4, 8, 16, 32, 64):
            if (
                n > machine.num_devices
                and estimate(model.arch, dataclasses.replace(i, num_devices=n)).peak_high <= capacity
            ):
                out.append(
                    f"more GPUs: {n} × {machine.memory_per_device / GiB:.0f} GiB shard it enough (FSDP)"
                )
                break
    smaller = [
        m
        for m in CATALOG
        if m.params < model.params
        and estimate(m.arch, dataclasses.replace(i, seq_len=min(i.seq_len, m.max_context))).peak_high
        <= capacity
    ]
    if smaller:
        # The largest that fits, preferring a base/instruct kind like the model asked for.
        best = max(
            smaller, key=lambda m: ((m.chat_template is None) == (model.chat_template is None), m.params)
        )
        out.append(f"a smaller model: `{best.name}` ({format_params(best.params)}) fits with {i.method}")
    if not out:
        out.append(
            f"nothing in the catalog fits {capacity / GiB:.1f} GiB per device with {i.method}; "
            "use a machine with more memory"
        )
    return out
