"""The plan of one run, written into its run directory before training starts.

Every run checks the planner: ``tunewiz train`` writes ``plan.json`` here, the recipe copies its
``peak_bytes`` into the ``start`` event (``planned_peak_bytes``), and each ``step`` event carries the
measured peak per rank, so the dashboard shows measured against planned.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tunewiz.models.catalog import lookup
from tunewiz.plan.hardware import probe
from tunewiz.plan.memory import MemoryPlan, PlanInputs, estimate
from tunewiz.plan.verdict import judge

if TYPE_CHECKING:
    from tunewiz.preset.schema import Preset
    from tunewiz.run.directory import RunDir


def run_plan(preset: Preset, device: str, world_size: int = 1) -> MemoryPlan:
    """The planner's prediction for exactly this preset: nothing is searched or changed.

    Args:
        preset: the resolved preset.
        device: ``cuda`` or ``cpu``, as the recipe resolves ``preset.device``.
        world_size: training processes (FSDP2 shards over them).
    """
    model = lookup(preset.model.path)
    inputs = PlanInputs(
        method=preset.method,
        dtype=preset.model.dtype,
        micro_batch=preset.train.micro_batch_size,
        seq_len=min(preset.data.max_seq_len, model.max_context),
        lora_rank=preset.lora.rank,
        lora_targets=tuple(t for t in preset.lora.targets if t != "lm_head"),
        activation_checkpointing=preset.train.activation_checkpointing,
        num_devices=world_size,
        device="cuda" if device == "cuda" else "cpu",
        optimizer=preset.train.optimizer,
        optimizer_in_backward=preset.train.optimizer_in_backward,
        activation_offloading=preset.train.activation_offloading,
        grad_accum=preset.train.grad_accum,
    )
    return estimate(model.arch, inputs)


def write_run_plan(preset: Preset, run: RunDir, world_size: int = 1) -> dict[str, object]:
    """Plan ``preset`` on this machine and write it atomically to ``run.plan`` (``plan.json``).

    The device is resolved as the recipe resolves it (``auto`` is cuda when torch sees a GPU); the
    capacity is the smallest GPU's memory, or the RAM available to each CPU process.

    Args:
        preset: the resolved preset.
        run: the run directory (already created).
        world_size: training processes on all nodes.

    Returns:
        What was written: the plan (``peak_bytes`` at the top level), the model, the device memory
        and the verdict of `tunewiz.plan.verdict.judge` (peak plus error band against the memory).
    """
    from tunewiz.atomic import atomic_write_json
    from tunewiz.train.distributed import resolve_device

    device = resolve_device(preset.device)
    hw = probe(run.path.parent, quick=True)
    if device == "cpu":  # a CPU run on a machine with GPUs is planned against the RAM
        hw = dataclasses.replace(hw, gpus=())
    machine = hw.machine(processes=world_size)
    plan = run_plan(preset, device, world_size)
    verdict = judge(plan, machine.memory_per_device)
    written = {
        **plan.as_dict(),
        "model": preset.model.path,
        "machine": machine.name,
        "memory_per_device_bytes": machine.memory_per_device,
        "verdict": verdict.kind,
        "verdict_explained": verdict.explain(),
        "fits": verdict.fits,
    }
    atomic_write_json(run.plan, written)
    return written
