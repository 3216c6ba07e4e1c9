"""Process group, device choice, and `parallelize()`: activation checkpointing, then FSDP2 per block,
then the root.

Every recipe process runs under torchrun, world size 1 included, so one code path covers 1..N ranks:
the process group is always initialised (gloo on CPU, NCCL on GPU). Sharding is applied only when the
world size is above one; a single rank trains the plain module.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist

from tunewiz.errors import TunewizError
from tunewiz.train.rendezvous import NODE_RANK_ENV

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes events and the final export."""
        return self.rank == 0


def resolve_device(choice: Literal["auto", "cpu", "cuda"]) -> str:
    """`auto` → cuda when a GPU is usable, else cpu; `cuda` without a GPU is an error."""
    cuda = torch.cuda.is_available()
    if choice == "auto":
        return "cuda" if cuda else "cpu"
    if choice == "cuda" and not cuda:
        raise TunewizError(
            "`device: cuda` was requested but torch sees no CUDA GPU",
            hint="run `tunewiz doctor` to see what was found, or use `--device cpu`",
        )
    return choice


def init_distributed(device_kind: str) -> DistEnv:
    """Initialise the default process group from torchrun's environment variables.

    Several nodes: torchrun's c10d rendezvous numbers the nodes by host name and pid, not by
    ``--node-rank``; the launcher passes ``--node-rank`` as ``TUNEWIZ_NODE_RANK`` and the global rank
    becomes ``node_rank * LOCAL_WORLD_SIZE + LOCAL_RANK`` (every node runs the same number of ranks),
    so that node 0 — the one holding the run's lock and writing the plan — also has rank 0 (events,
    final/, checkpoint metadata). The workers only connect to torchrun's store, so renumbering them
    is a permutation the process group accepts.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    node_rank, local_world = os.environ.get(NODE_RANK_ENV), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if node_rank is not None and world_size % local_world == 0:
        os.environ["RANK"] = str(int(node_rank) * local_world + local_rank)
    rank = int(os.environ.get("RANK", "0"))
    if device_kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TunewizError(
                f"rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible",
                hint="lower `--nproc-per-node` to the number of GPUs",
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor across ranks (in place) and return it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag is set on at least one rank: every rank takes the same decision."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each decoder block in backward. Module names (and so checkpoint keys) are unchanged."""
    from torch.distributed._composable import checkpoint

    blocks = list(model.model.layers)
    for block in blocks:
        checkpoint(block)
    log.info("activation checkpointing on %d blocks", len(blocks))
    return len(blocks)


def apply_fsdp(model: nn.Module, env: DistEnv) -> None:
    """`fully_shard` each decoder block, then the root (embeddings, final norm, lm_head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    blocks = list(model.model.layers)
    for i, block in enumerate(blocks):
        # The last block is resharded by the root's backward anyway: keep it gathered after forward.
        fully_shard(block, mesh=mesh, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=mesh)
    log.info("FSDP2: sharded %d blocks and the root over %d ranks", len(blocks), env.world_size)


def parallelize(model: nn.Module, env: DistEnv, *, activation_checkpointing: bool) -> nn.Module:
    """The checklist, in order: activation checkpointing, FSDP2 per block, then the root.

    Args:
        model: a tunewiz Llama-family model, LoRA already applied, weights loaded (on CPU or device).
        env: this process's place in the job.
        activation_checkpointing: recompute blocks in backward to save activation memory.
    """
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if env.world_size > 1:
        apply_fsdp(model, env)
    else:
        model.to(env.device)
    return model


def clip_grad_norm(params: list[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Total gradient norm (over all ranks when sharded), clipping to `max_norm` when given."""
    params = [p for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0, foreach=True)
    if hasattr(total, "full_tensor"):  # DTensor: the partial norms of the shards, reduced
        total = total.full_tensor()
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total


def barrier() -> None:
    """Wait for every rank (no-op for one process or before init)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group if one was started."""
    if dist.is_initialized():
        dist.destroy_process_group()
