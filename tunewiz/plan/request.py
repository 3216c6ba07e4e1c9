"""Turn a preset and/or command-line values into what the recommender needs: the model, the
machine, and the values the user fixed. Flags win over the preset; the preset wins over defaults."""

from __future__ import annotations

from dataclasses import replace

from tunewiz.errors import TunewizError
from tunewiz.models.catalog import CatalogModel, lookup
from tunewiz.plan.hardware import Hardware, Machine, describe, probe
from tunewiz.plan.recommend import PlanRequest


def build_request(
    preset: str | None,
    *,
    model: str | None = None,
    method: str | None = None,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    rank: int | None = None,
    checkpointing: bool | None = None,
    global_batch: int | None = None,
    gpus: int | None = None,
    gpu_memory: str | None = None,
) -> tuple[PlanRequest, CatalogModel, Machine]:
    """The request, model and machine of ``tunewiz plan``.

    Args:
        preset: a preset file or shipped name, or None.
        model: catalog name / Hub id / local directory (overrides the preset's model.path).
        method: ``lora``, ``qlora`` or ``full``.
        micro_batch: sequences per device per step.
        seq_len: max_seq_len.
        rank: LoRA rank.
        checkpointing: activation checkpointing on/off.
        global_batch: target sequences per optimizer step.
        gpus: describe a machine with this many GPUs (0: CPU) instead of probing this one.
        gpu_memory: per-GPU memory of the described machine (``24GB``).
    """
    if method is not None and method not in ("lora", "qlora", "full"):
        raise TunewizError(f"--method `{method}` is not a method", hint="use `lora`, `qlora` or `full`")
    fixed: dict[str, object] = {}
    device, preset_accum = "auto", 1
    if preset is not None:
        from tunewiz.preset.files import load_preset

        p = load_preset(preset)[0]
        model = model or p.model.path
        device, preset_accum = p.device, p.train.grad_accum
        fixed = {
            "method": p.method,
            "micro_batch": p.train.micro_batch_size,
            "seq_len": p.data.max_seq_len,
            "activation_checkpointing": p.train.activation_checkpointing,
            "lora_rank": p.lora.rank,
            "lora_targets": tuple(t for t in p.lora.targets if t != "lm_head"),
            "dtype": p.model.dtype,
            "optimizer": p.train.optimizer,
            "optimizer_in_backward": p.train.optimizer_in_backward,
            "activation_offloading": p.train.activation_offloading,
            "grad_clipping": p.train.max_grad_norm is not None,
        }
    if model is None:
        raise TunewizError(
            "no model to plan for",
            hint="give a preset (`tunewiz plan PRESET`) or "
            "`--model NAME` (`tunewiz plan --list-models` lists them)",
        )
    flags = {
        "method": method,
        "micro_batch": micro_batch,
        "seq_len": seq_len,
        "lora_rank": rank,
        "activation_checkpointing": checkpointing,
    }
    fixed.update({k: v for k, v in flags.items() if v is not None})
    machine = _machine(gpus, gpu_memory, device)
    if preset is not None and global_batch is None:
        global_batch = int(fixed["micro_batch"]) * preset_accum * machine.num_devices  # type: ignore[call-overload]
    request = PlanRequest(target_global_batch=global_batch or 16, **fixed)  # type: ignore[arg-type]
    return request, lookup(model), machine


def machine_for(gpus: int | None, gpu_memory: str | None) -> Machine:
    """The machine described by ``--gpus``/``--gpu-memory``, else this one (probed without torch).

    Args:
        gpus: GPUs of a described machine (0: CPU), or None.
        gpu_memory: per-GPU memory of a described machine (``24GB``), or None.
    """
    return _machine(gpus, gpu_memory, "auto")


def _machine(gpus: int | None, gpu_memory: str | None, device: str) -> Machine:
    if gpus is None and gpu_memory is None:
        # quick: GPUs from nvidia-smi, so `tunewiz plan` never imports torch (~0.7 s of its ~1.2 s).
        hw = probe(quick=True)
        return hw.machine() if device != "cpu" or not hw.gpus else _cpu_only(hw)
    if gpus is None:
        gpus = 1
    if gpus > 0 and gpu_memory is None:
        raise TunewizError(f"--gpus {gpus} needs --gpu-memory", hint="e.g. `--gpus 2 --gpu-memory 24GB`")
    if gpus == 0 and gpu_memory is None:
        return _cpu_only(probe(quick=True))
    return describe(gpus, gpu_memory or "0")


def _cpu_only(hw: Hardware) -> Machine:
    # A preset with `device: cpu` trains on CPU even on a machine with GPUs.
    return replace(hw, gpus=()).machine()
