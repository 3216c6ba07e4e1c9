"""The recommender: search the configurations that fit a machine and pick one, with a reason for every
choice; when nothing fits, say what would. Pure Python: no torch.

Choices the caller fixes (a preset's values, a flag) are kept and their reason says so; the rest are
searched: method (LoRA, then QLoRA), memory savers (none first: each costs speed, see ``SAVER_COST``),
micro-batch (the largest power of two that fits), LoRA rank. Whether a configuration fits is decided
by :func:`tunewiz.plan.verdict.judge`, the one rule every surface uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from tunewiz.models.catalog import CATALOG, CatalogModel, format_params
from tunewiz.models.config import LlamaConfig
from tunewiz.plan.hardware import Machine
from tunewiz.plan.memory import MemoryPlan, PlanInputs, estimate
from tunewiz.plan.verdict import Verdict, judge
from tunewiz.units import GiB

DEFAULT_SEQ_LEN = 2048
MAX_MICRO_BATCH = 64

# Step time with each saver relative to without it. Checkpointing recomputes the forward (~1/3 more
# compute); offloading copies every saved activation to the host and back (synchronous
# `save_on_cpu`: PCIe-bound, about as costly as checkpointing on a consumer card); 8-bit AdamW
# (de)quantizes the states in the step (a few % of a full fine-tune's step, nothing for LoRA); the step
# in backward costs nothing but forbids accumulation and clipping. Measured on CPU where it can be:
# bench/RESULTS.md, "Memory savers".
SAVER_COST = {
    "activation checkpointing": 4 / 3,
    "activation offloading": 4 / 3,
    "8-bit AdamW": 1.05,
    "optimizer step in backward": 1.0,
}


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
        optimizer: ``adamw`` or ``adamw8bit`` (None: searched, full fine-tuning only).
        optimizer_in_backward: step each parameter in backward (None: offered when allowed and needed).
        activation_offloading: keep saved activations in CPU memory (None: searched, CUDA only).
        grad_clipping: ``train.max_grad_norm`` is set (the default); it rules out the step in backward.
    """

    method: str | None = None
    micro_batch: int | None = None
    seq_len: int | None = None
    activation_checkpointing: bool | None = None
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    dtype: str | None = None
    target_global_batch: int = 16
    optimizer: str | None = None
    optimizer_in_backward: bool | None = None
    activation_offloading: bool | None = None
    grad_clipping: bool = True


@dataclass(frozen=True)
class Recommendation:
    """The chosen configuration and why, or why nothing fits and what would.

    Args:
        model: the model planned for.
        machine: the machine planned for.
        verdict: from :func:`tunewiz.plan.verdict.judge`: fits / fits with savers / does not fit.
        plan: the memory plan of the chosen configuration (of the smallest tried when nothing fits).
        grad_accum: micro-batches per optimizer step.
        reasons: one sentence per choice, saying where each value came from.
        alternatives: when it does not fit: what would (a smaller model, fewer tokens, more GPUs, QLoRA).
    """

    model: CatalogModel
    machine: Machine
    verdict: Verdict
    plan: MemoryPlan
    grad_accum: int
    reasons: tuple[str, ...] = field(default=())
    alternatives: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return self.verdict.fits

    @property
    def global_batch(self) -> int:
        return self.plan.inputs.micro_batch * self.grad_accum * self.machine.num_devices

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "model": {"name": self.model.name, "repo_id": self.model.repo_id, "params": self.model.params},
            "machine": dataclasses.asdict(self.machine),
            "verdict": self.verdict.kind,
            "savers": list(self.plan.inputs.savers),
            "verdict_explained": self.verdict.explain(),
            "fits": self.fits,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "memory_per_device_bytes": self.verdict.memory,
            "error_band": self.verdict.band,
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
) -> Recommendation:
    """Choose method, savers, micro-batch, accumulation, max_seq_len and LoRA rank that fit.

    Args:
        machine: detected (``probe().machine()``) or described (``describe(2, "24GB")``).
        model: from :func:`tunewiz.models.catalog.lookup`.
        token_lengths: token lengths sampled from the dataset (None: 2048, capped by the model).
        request: values the caller fixed; the rest are chosen.

    Returns:
        The recommendation; a ``does not fit`` verdict comes with ``alternatives``.
    """
    req = request or PlanRequest()
    memory = machine.memory_per_device
    reasons: list[str] = [
        f"memory {memory / GiB:.1f} GiB per {'GPU' if machine.device == 'cuda' else 'process'}: a plan fits "
        "when its predicted peak (CUDA context and allocator included) plus its ±10% error band fits it; "
        "there is no other margin"
    ]
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
        for savers in _saver_sets(req, method, machine):
            for rank in ranks:
                for mb in batches:
                    accum = _accum(req, mb, machine)
                    if savers.get("optimizer_in_backward") and accum > 1:
                        continue  # the step in backward cannot accumulate
                    plan = estimate(
                        model.arch,
                        dataclasses.replace(
                            base, method=method, lora_rank=rank, micro_batch=mb, grad_accum=accum, **savers
                        ),
                    )
                    if smallest is None or plan.peak_high < smallest.peak_high:
                        smallest = plan
                    if judge(plan, memory).fits:
                        feasible.append(plan)
    if feasible:
        # The best of everything that fits. More memory only adds candidates, so the choice never gets
        # worse on a bigger machine (the monotonicity the tests check).
        plan = max(feasible, key=lambda p: _preference(p, methods))
        mb = plan.inputs.micro_batch
        without_savers = [p.inputs.micro_batch for p in feasible if not p.inputs.savers]
        best_plain = max(without_savers, default=0)
        reasons += _choice_reasons(req, plan, batches, per_device_batch, memory, best_plain)
        reasons += _in_backward_reason(req, plan, machine)
        accum = plan.inputs.grad_accum
        reasons.append(
            f"grad_accum {accum}: {mb} × {accum} × {machine.num_devices} device(s) = "
            f"{mb * accum * machine.num_devices} sequences per step (target {req.target_global_batch})"
        )
        return Recommendation(model, machine, judge(plan, memory), plan, accum, tuple(reasons))
    assert smallest is not None
    reasons.append(
        f"nothing fits: the smallest configuration tried needs {smallest.peak_high / GiB:.1f} GiB "
        f"per device (with its error band) against {memory / GiB:.1f} GiB"
    )
    reasons += _in_backward_reason(req, smallest, machine)
    return Recommendation(
        model,
        machine,
        judge(smallest, memory),
        smallest,
        smallest.inputs.grad_accum,
        tuple(reasons),
        tuple(_alternatives(machine, model, smallest, req)),
    )


def _accum(req: PlanRequest, micro_batch: int, machine: Machine) -> int:
    return max(1, math.ceil(req.target_global_batch / (micro_batch * machine.num_devices)))


def in_backward_allowed(req: PlanRequest) -> str | None:
    """None when the optimizer step may run in backward, else why not (clipping needs every gradient
    at once; accumulation sums gradients over micro-batches before any step).

    Args:
        req: the request (its clipping; accumulation depends on the micro-batch, checked per plan).
    """
    if req.grad_clipping:
        return "gradient clipping (`train.max_grad_norm`) needs all gradients at once"
    return None


def _saver_sets(req: PlanRequest, method: str, machine: Machine) -> list[dict[str, object]]:
    """The saver combinations to try, fewest first; a saver the request fixed is kept as given."""
    cuda = machine.device == "cuda"
    levels: list[dict[str, object]] = [
        {},
        {"activation_checkpointing": True},
        {"activation_checkpointing": True, "activation_offloading": True},
    ]
    if method == "full":  # LoRA's optimizer state is tiny: 8-bit states or an in-backward step save nothing
        levels.append({**levels[-1], "optimizer": "adamw8bit"})
        levels.append({**levels[-1], "optimizer_in_backward": True})
    out = []
    for level in levels:
        chosen = dict(level)
        fixed = {
            "activation_checkpointing": req.activation_checkpointing or None,
            "activation_offloading": req.activation_offloading,
            "optimizer": req.optimizer,
            "optimizer_in_backward": req.optimizer_in_backward,
        }
        for key, value in fixed.items():
            if value is not None:
                chosen[key] = value
        if chosen.get("activation_offloading") and not cuda:
            chosen.pop("activation_offloading")  # moot on CPU: the activations are in RAM already
        searched = req.optimizer_in_backward is None
        if chosen.get("optimizer_in_backward") and searched and in_backward_allowed(req):
            chosen.pop("optimizer_in_backward")
        if chosen not in out:
            out.append(chosen)
    return out


def _in_backward_reason(req: PlanRequest, plan: MemoryPlan, machine: Machine) -> list[str]:
    i = plan.inputs
    if i.method != "full" or i.optimizer_in_backward:
        return []
    why_not = in_backward_allowed(req)
    if why_not is None and _accum(req, i.micro_batch, machine) > 1:
        why_not = "gradient accumulation sums gradients over micro-batches before any step"
    if why_not is None:
        return []
    return [
        f"optimizer step in backward not offered: {why_not} (it needs `train.grad_accum=1` and "
        "`train.max_grad_norm=null`)"
    ]


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


def _preference(plan: MemoryPlan, methods: list[str]) -> tuple[int, int, float, int, int, int]:
    """Sort key of a fitting plan: the preferred method first (LoRA before QLoRA); then as few savers
    beyond checkpointing as fit (offloading, 8-bit states and the step in backward are last resorts);
    then throughput (sequences per forward, divided by the savers' costs: checkpointing is traded
    against a bigger micro-batch), fewer savers, LoRA rank, the smaller peak."""
    i = plan.inputs
    throughput = i.micro_batch / math.prod(SAVER_COST[s] for s in i.savers)
    heavy = sum(s != "activation checkpointing" for s in i.savers)
    return (-methods.index(i.method), -heavy, throughput, -len(i.savers), i.lora_rank, -plan.peak)


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
    memory: int,
    best_without_savers: int,
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
    out.append(_ac_reason(req, i, best_without_savers))
    out += _other_saver_reasons(req, i)
    if req.micro_batch:
        out.append(f"micro_batch {i.micro_batch}: given")
    else:
        headroom = 1 - plan.peak_high / memory
        out.append(
            f"micro_batch {i.micro_batch}: the fastest power of two up to {min(per_device, batches[0])} "
            f"that fits, with {headroom:.0%} of the memory to spare after the error band"
        )
    out.append(f"predicted peak {plan.peak / GiB:.2f} GiB per device (±{plan.error_band:.0%})")
    return out


def _ac_reason(req: PlanRequest, i: PlanInputs, best_without_savers: int) -> str:
    asked = req.activation_checkpointing
    if asked is not None and asked == i.activation_checkpointing:
        return f"activation checkpointing {'on' if i.activation_checkpointing else 'off'}: given"
    if i.activation_checkpointing and req.activation_checkpointing is False:
        return (
            "activation checkpointing on: needed, although it was asked off "
            "(`--set train.activation_checkpointing=true`)"
        )
    if i.activation_checkpointing and not best_without_savers:
        return "activation checkpointing on: no micro-batch fits without a memory saver (it costs ~30% speed)"
    if i.activation_checkpointing:
        return (
            f"activation checkpointing on: micro_batch {i.micro_batch} with it outruns micro_batch "
            f"{best_without_savers} without it, despite the ~30% recomputation"
        )
    return "activation checkpointing off: the plan fits without it, so no recomputation"


def _other_saver_reasons(req: PlanRequest, i: PlanInputs) -> list[str]:
    out = []
    given = {
        "activation offloading": req.activation_offloading,
        "8-bit AdamW": req.optimizer == "adamw8bit" if req.optimizer else None,
        "optimizer step in backward": req.optimizer_in_backward,
    }
    why = {
        "activation offloading": "saved activations wait in CPU memory (`train.activation_offloading`); "
        "the copies cost speed",
        "8-bit AdamW": "torchao's 8-bit states (`train.optimizer=adamw8bit`): 2 B instead of "
        f"{4 if i.dtype == 'bf16' else 8} B of AdamW state per parameter",
        "optimizer step in backward": "each gradient is applied and freed as it is produced "
        "(`train.optimizer_in_backward`)",
    }
    for saver in ("activation offloading", "8-bit AdamW", "optimizer step in backward"):
        if saver in i.savers:
            out.append(f"{saver} on: " + ("given" if given[saver] else f"needed to fit; {why[saver]}"))
    return out


def _alternatives(machine: Machine, model: CatalogModel, smallest: MemoryPlan, req: PlanRequest) -> list[str]:
    """What would fit: QLoRA, fewer tokens, more GPUs, a smaller model (each checked with the planner)."""
    out = []
    capacity = machine.memory_per_device

    def fits(inputs: PlanInputs, arch: LlamaConfig = model.arch) -> bool:
        return judge(estimate(arch, inputs), capacity).fits

    i = dataclasses.replace(
        smallest.inputs,
        micro_batch=1,
        grad_accum=_accum(req, 1, machine),
        activation_checkpointing=True,
        lora_rank=8,
    )
    if i.method != "qlora" and fits(dataclasses.replace(i, method="qlora")):
        out.append("QLoRA (`--method qlora`): the base weights in 4-bit fit")
    seq = i.seq_len // 2
    while seq >= 128:
        if fits(dataclasses.replace(i, seq_len=seq)):
            out.append(f"shorter sequences: `--seq-len {seq}` fits with activation checkpointing")
            break
        seq //= 2
    if machine.device == "cuda":
        for n in (2, 4, 8, 16, 32, 64):
            if n > machine.num_devices and fits(dataclasses.replace(i, num_devices=n)):
                out.append(
                    f"more GPUs: {n} × {machine.memory_per_device / GiB:.0f} GiB shard it enough (FSDP)"
                )
                break
    smaller = [
        m
        for m in CATALOG
        if m.params < model.params
        and fits(dataclasses.replace(i, seq_len=min(i.seq_len, m.max_context)), m.arch)
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
