"""LoRA, QLoRA and full fine-tuning of a Llama-family model, one recipe for 1..N ranks.

Started by torchrun (``tunewiz train`` builds the command)::

    torchrun --standalone --nproc-per-node N -m tunewiz.train.recipe --run-dir runs/NAME

It reads the resolved preset from ``RUN_DIR/config.yaml``; rank 0 appends events to
``RUN_DIR/events.jsonl``; step checkpoints go to ``RUN_DIR/checkpoints/step-N/`` and the result to
``RUN_DIR/final/``. ``--resume-from`` continues from a step checkpoint exactly.

Imports are at the top: this module runs under torchrun, never on the CLI's start-up path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from tunewiz.data import Sample, collate, epoch_order
from tunewiz.data.prepared import prepare
from tunewiz.data.samples import IGNORE_INDEX
from tunewiz.errors import TunewizError
from tunewiz.lora.layer import apply_lora
from tunewiz.models.loading import load_model, resolve_model_dir
from tunewiz.models.loss import chunked_cross_entropy
from tunewiz.models.nf4 import check_shardable, load_nf4_model
from tunewiz.preset.schema import Preset
from tunewiz.run.directory import RunDir
from tunewiz.run.events import EVENTS_VERSION, EventWriter, total_epochs
from tunewiz.run.lock import hold_ranks_lock
from tunewiz.text.prompt import write_prompt_record
from tunewiz.text.tokenizer import load_tokenizer
from tunewiz.tracking import open_tracking
from tunewiz.train import distributed as tdist
from tunewiz.train import faults
from tunewiz.train.batch_shape import BatchShape, Progress, StepBatches, check_one_global_batch
from tunewiz.train.checkpoint import load_checkpoint, save_checkpoint
from tunewiz.train.export import export_final
from tunewiz.train.launcher import data_contents, run_prompt
from tunewiz.train.optim import (
    build_optimizer,
    build_scheduler,
    eager_step,
    steps_in_backward,
    warmup_warning,
)
from tunewiz.train.peak_memory import peak_memory_bytes
from tunewiz.train.sample_generations import SampleGenerations, validation_prompts
from tunewiz.train.stop import StopFlag


@dataclass
class StepResult:
    loss: float  # mean cross-entropy over the step's trained tokens, all ranks
    tokens: int  # trained (non-masked) tokens, all ranks
    input_tokens: int  # non-padding input tokens, all ranks (for tokens/s)


@dataclass(frozen=True)
class EvalCheckpointPolicy:
    """When the loop validates and saves: every N steps, at each epoch's end and at the last step
    (and a checkpoint whenever a stop is requested, so the run can be resumed)."""

    eval_every_n_steps: int | None
    checkpoint_every_n_steps: int | None
    total_steps: int

    def should_validate(self, step: int, epoch_ended: bool) -> bool:
        """Whether to run validation after optimizer step ``step``."""
        every = self.eval_every_n_steps
        return bool(every and step % every == 0) or epoch_ended or step == self.total_steps

    def should_checkpoint(self, step: int, epoch_ended: bool, stopping: bool) -> bool:
        """Whether to save a step checkpoint after optimizer step ``step``."""
        every = self.checkpoint_every_n_steps
        return bool(every and step % every == 0) or epoch_ended or step == self.total_steps or stopping


class FineTune:
    """Holds what the loop needs. ``__init__`` sets up in the order torchtune writes down: data, model
    (load, adapters, freeze), parallelise, optimizer; :meth:`restore` then loads a checkpoint when
    the run resumes."""

    def __init__(self, run: RunDir, preset: Preset, env: tdist.DistEnv, events: EventWriter) -> None:
        self.run, self.preset, self.env, self.events = run, preset, env, events
        cfg = preset.train
        torch.manual_seed(cfg.seed)
        self.model_dir = resolve_model_dir(preset.model.path, preset.model.revision)
        tokenizer = load_tokenizer(self.model_dir)
        self.pad_id = tokenizer.pad_id
        # The prompt format is decided when the run starts and recorded (prompt.json); a resumed run
        # reads it back (tunewiz.train.launcher.run_prompt). The launcher prepared the data
        # (tunewiz.data.prepared) before torchrun started: the ranks find the entry and map it.
        recorded, legacy = run_prompt(run)
        self.data = prepare(preset.data, tokenizer, seed=cfg.seed, prompt=recorded, legacy=legacy, workers=1)
        self.train_samples, self.val_samples, self.data_stats = (
            self.data.train,
            self.data.val,
            self.data.stats,
        )
        self.prompt_format = self.data_stats.prompt
        self.samples = SampleGenerations(
            validation_prompts(
                preset.data,
                tokenizer,
                self.prompt_format,
                seed=cfg.seed,
                count=cfg.sample_generations,
                conversations=self.data.validation_conversations(),
            ),
            tokenizer,
            max_new_tokens=cfg.sample_max_new_tokens,
            env=env,
        )
        if env.is_main and recorded is None:
            write_prompt_record(run.path, self.prompt_format)
            if legacy:
                events.write(
                    "warning",
                    step=None,
                    message=f"{run.path} has no prompt.json (made by an older tunewiz): it continues "
                    "with the prompt rule it trained with (bos id before every sample, eos after every "
                    "reply), now recorded in prompt.json",
                )
        self.trained_tokens = self.train_samples.trained  # per sample (packed row)
        self.batches = StepBatches(
            BatchShape(cfg.micro_batch_size, cfg.grad_accum, env.world_size),
            len(self.train_samples),
            lambda epoch: epoch_order(
                len(self.train_samples), epoch=epoch, seed=cfg.seed, shuffle=preset.data.shuffle
            ),
        )
        check_one_global_batch(len(self.train_samples), self.batches.shape)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.policy = EvalCheckpointPolicy(
            cfg.eval_every_n_steps, preset.checkpoint.every_n_steps, self.total_steps
        )
        self.model = self._build_model()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.params, cfg)
        self.scheduler = build_scheduler(self.optimizer, total_steps=self.total_steps, cfg=cfg)
        self.progress = Progress()
        self.last_checkpoint: Path | None = None
        # Dropout differs per rank; initialisation above did not (same seed everywhere).
        torch.manual_seed(cfg.seed + 1 + env.rank)

    def _build_model(self) -> torch.nn.Module:
        preset = self.preset
        dtype = torch.float32 if preset.model.dtype == "fp32" else torch.bfloat16
        if preset.method == "qlora":
            # Decoder linears become NF4 one by one as they are read (on the training device).
            model = load_nf4_model(self.model_dir, dtype=dtype, device=self.env.device)
            check_shardable(model, self.env.world_size)
        else:
            model = load_model(self.model_dir, dtype=dtype, device="cpu")
        if preset.method == "full":
            model.requires_grad_(True)
        else:
            lora = preset.lora
            apply_lora(
                model,
                targets=lora.targets,
                rank=lora.rank,
                alpha=lora.alpha,
                dropout=lora.dropout,
                seed=preset.train.seed,
            )
            # One dtype per FSDP unit: adapters live in the compute dtype, like the frozen base.
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(dtype)
        return tdist.parallelize(
            model, self.env, activation_checkpointing=preset.train.activation_checkpointing
        )

    def restore(self, checkpoint: Path) -> None:
        """Load a step checkpoint: weights, optimizer, scheduler, RNG states, position and batch split."""
        self.progress = load_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler, self.env)
        self.batches.restore(self.progress.saved_split)
        self.last_checkpoint = checkpoint

    # -- one optimizer step ------------------------------------------------------------------------

    def _forward(self, indices: list[int], samples: Sequence[Sample]) -> tuple[torch.Tensor, int, int]:
        batch = {
            k: v.to(self.env.device) for k, v in collate([samples[i] for i in indices], self.pad_id).items()
        }
        # The root module's forward must run (under FSDP2 its pre-forward hook unshards embeddings, norm
        # and lm_head, and the root keeps them unsharded after forward), so it returns the hidden
        # states and the loss reads lm_head's weight right after it; no [B*T, V] logits exist.
        with self._offload():
            hidden = self.model(
                batch["input_ids"],
                position_ids=batch.get("position_ids"),
                attn_mask=batch.get("attn_mask"),
                output_hidden=True,
            )  # [B, T, D]
            loss_sum, num_tokens = chunked_cross_entropy(
                hidden, self.model.lm_head, batch["labels"], softcap=self.model.config.final_logit_softcapping
            )
        input_tokens = sum(len(samples[i].input_ids) for i in indices)  # padding not counted
        return loss_sum, int(num_tokens), input_tokens

    def _offload(self) -> AbstractContextManager[object]:
        """Activation offloading: tensors saved for backward wait in pinned CPU memory (CUDA only; on
        CPU they are in RAM already). Only while training: validation saves nothing."""
        if self.preset.train.activation_offloading and self.env.device.type == "cuda" and self.model.training:
            return torch.autograd.graph.save_on_cpu(pin_memory=True)
        return nullcontext()

    def train_step(self, micro_batches: list[list[int]]) -> StepResult:
        """Forward/backward over this rank's micro-batches; the optimizer steps in :meth:`optimizer_step`.

        Loss normalisation. The update we want is the gradient of
            L = (Σ over ranks r, micro-batches m, trained tokens t of CE_rmt) / N,
        N = trained tokens in the whole optimizer step, all ranks. Each rank back-propagates
        Σ_m CE_rm / N for its own micro-batches; the sum over ranks of those gradients is ∇L. FSDP2
        averages gradients over the W ranks (divides the sum by W), so each rank scales by W.
        N is counted before any forward pass, so micro-batch 4 × accumulation 1 and micro-batch 1 ×
        accumulation 4 (same samples, see tunewiz.train.batch_shape) give the same ∇L up to float rounding.
        """
        local = int(sum(self.trained_tokens[i] for mb in micro_batches for i in mb))
        total_tokens = int(
            tdist.all_reduce_sum(torch.tensor([local], dtype=torch.float64, device=self.env.device)).item()
        )
        scale = self.env.world_size / max(total_tokens, 1)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.env.device)
        input_tokens = 0
        for indices in micro_batches:
            faults.check_oom(len(indices))
            micro_loss, _, n_input = self._forward(indices, self.train_samples)
            micro_loss = faults.poison_loss(micro_loss, self.progress.step + 1)
            (micro_loss * scale).backward()
            loss_sum += micro_loss.detach().double()
            input_tokens += n_input
        totals = tdist.all_reduce_sum(
            torch.stack(
                [loss_sum, torch.tensor(float(input_tokens), dtype=torch.float64, device=self.env.device)]
            )
        )
        return StepResult(
            loss=float(totals[0]) / max(total_tokens, 1), tokens=total_tokens, input_tokens=int(totals[1])
        )

    def optimizer_step(self) -> float | None:
        """Clip the gradients, step the optimizer and the LR schedule, clear the gradients.

        Returns:
            The gradient norm before clipping; None when the optimizer stepped in backward, parameter
            by parameter (``train.optimizer_in_backward``: no gradient is left to clip).
        """
        if steps_in_backward(self.optimizer):
            grad_norm = None
        else:
            grad_norm = float(tdist.clip_grad_norm(self.params, self.preset.train.max_grad_norm))
            with eager_step(self.optimizer):
                self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean validation loss over all validation samples, all ranks.

        Every rank runs the same number of forward passes (FSDP gathers are collective): a rank with
        fewer samples pads its last batch with a masked repeat that contributes no tokens.
        """
        if not self.val_samples:
            return None
        self.model.eval()
        mine = list(range(self.env.rank, len(self.val_samples), self.env.world_size))
        per_rank = -(-len(self.val_samples) // self.env.world_size)
        mb = self.batches.shape.micro_batch_size
        totals = torch.zeros(2, dtype=torch.float64, device=self.env.device)
        for start in range(0, per_rank, mb):
            indices = mine[start : start + mb]
            if not indices:  # this rank ran out: a forward pass that counts nothing
                _ = self._forward([0], [_masked(self.val_samples[0])])
                continue
            loss_sum, n, _ = self._forward(indices, self.val_samples)
            totals += torch.stack(
                [loss_sum.double(), torch.tensor(float(n), dtype=torch.float64, device=self.env.device)]
            )
        tdist.all_reduce_sum(totals)
        self.model.train()
        return float(totals[0] / totals[1]) if totals[1] > 0 else None

    def peak_memory_per_rank(self) -> list[int]:
        """Every rank's peak memory in bytes (a collective: all ranks call it)."""
        mine = torch.tensor([peak_memory_bytes(self.env.device)], dtype=torch.int64, device=self.env.device)
        if self.env.world_size == 1:
            return [int(mine.item())]
        gathered = [torch.zeros_like(mine) for _ in range(self.env.world_size)]
        torch.distributed.all_gather(gathered, mine)
        return [int(t.item()) for t in gathered]

    def save_checkpoint(self) -> Path:
        """Save a step checkpoint (collective) and record it; returns its path."""
        self.last_checkpoint = save_checkpoint(
            self.run,
            self.progress,
            self.batches.shape,
            self.model,
            self.optimizer,
            self.scheduler,
            self.env,
            keep_last=self.preset.checkpoint.keep_last,
        )
        if self.env.is_main:
            self.events.write("checkpoint", step=self.progress.step, path=str(self.last_checkpoint))
        return self.last_checkpoint

    def fall_back(self, reason: str) -> None:
        """Halve the micro-batch and double accumulation (same global batch, same normalisation).

        Raises:
            TunewizError: already at micro-batch 1; the hint names what would save memory.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.env.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batches.shape.micro_batch_size == 1 or self.preset.train.optimizer_in_backward:
            # The step in backward cannot accumulate, so the micro-batch cannot be halved either.
            savers = (
                []
                if self.preset.train.activation_checkpointing
                else ["`--set train.activation_checkpointing=true`"]
            )
            if self.env.device.type == "cuda" and not self.preset.train.activation_offloading:
                savers.append("`--set train.activation_offloading=true`")
            savers += ["a shorter `data.max_seq_len`", "a smaller model (`tunewiz plan` shows what fits)"]
            raise TunewizError(
                f"out of memory at micro-batch {self.batches.shape.micro_batch_size} "
                f"(step {self.progress.step + 1}): {reason}",
                hint="try " + ", ".join(savers),
                exit_code=1,
            )
        shape = self.batches.halve()
        if self.env.is_main:
            self.events.write(
                "oom_fallback",
                step=self.progress.step + 1,
                micro_batch_size=shape.micro_batch_size,
                grad_accum=shape.grad_accum,
                reason=reason,
            )

    def export(self) -> None:
        """Gather the full state dict on rank 0 (collective) and write `final/`."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.model, options=options)
        if self.env.is_main:
            export_final(
                self.run, full, preset=self.preset, model_dir=self.model_dir, prompt=self.prompt_format
            )
        tdist.barrier()


def _masked(sample: Sample) -> Sample:
    """The sample with every label ignored: a forward pass that counts no tokens."""
    return replace(sample, labels=[IGNORE_INDEX] * len(sample.labels))


# -- the loop ---------------------------------------------------------------------------------------


def fit(ft: FineTune, stop: StopFlag, resumed_from: Path | None) -> int:
    """Train until the step budget is spent or a stop is requested; return the exit code.

    Each iteration asks one component per decision, as torchtitan's ``train()`` does: the batches
    (which samples), the step (forward/backward), the progress (did an epoch end), the policy (validate?
    checkpoint?), the run log (events).
    """
    env, p, log = ft.env, ft.progress, RunLog(ft)
    log.start(resumed_from)
    launch_start = time.perf_counter()
    ft.model.train()
    while p.step < ft.total_steps:
        step_start = time.perf_counter()
        try:
            result, oom = ft.train_step(ft.batches.micro_batches(p, env.rank)), None
        except torch.OutOfMemoryError as exc:
            result, oom = None, str(exc)
        if tdist.any_rank(oom is not None, env.device):  # decided by all ranks together
            ft.fall_back(oom or "out of memory on another rank")
            continue
        lr = ft.scheduler.get_last_lr()[0]  # this step's rate, before the schedule moves on
        if not math.isfinite(result.loss):
            ft.optimizer.zero_grad(set_to_none=True)
            return log.nan_stop(result.loss)
        grad_norm = ft.optimizer_step()
        step_time = time.perf_counter() - step_start
        epoch_ended = p.advance(
            tokens=result.tokens,
            seconds=step_time,
            global_batch=ft.batches.shape.global_batch,
            num_samples=ft.batches.num_samples,
            total_steps=ft.total_steps,
        )
        faults.maybe_kill("step", p.step)
        faults.maybe_delay()
        log.step(result, lr, grad_norm, step_time, elapsed=time.perf_counter() - launch_start)
        if ft.policy.should_validate(p.step, epoch_ended):
            log.validation(ft.validate())
            log.samples(ft.samples.generate(ft.model))
        stopping = tdist.any_rank(stop.is_set() or ft.run.stop_request.exists(), env.device)
        if ft.policy.should_checkpoint(p.step, epoch_ended, stopping):
            ft.save_checkpoint()
        if stopping and p.step < ft.total_steps:
            log.stopped(stop)
            return 0
    ft.export()
    log.end()
    return 0


class RunLog:
    """The loop's events (rank 0 writes them; the parent process draws the dashboard from them).

    Args:
        ft: the fine-tune whose run, progress and events it reports.
    """

    def __init__(self, ft: FineTune) -> None:
        self.ft = ft
        self.is_main = ft.env.is_main

    def start(self, resumed_from: Path | None) -> None:
        """The ``start`` event: what runs, on what, planned peak, sizes."""
        if self.is_main:
            self.ft.events.write("start", **_start_fields(self.ft, resumed_from))
            warmup = warmup_warning(self.ft.total_steps, self.ft.preset.train)
            if warmup:
                self.ft.events.write("warning", step=None, message=warmup)

    def step(
        self, result: StepResult, lr: float, grad_norm: float | None, step_time: float, elapsed: float
    ) -> None:
        """A ``step`` event every ``log_every_n_steps`` and at the last step. All ranks call it: the
        per-rank peak memory is gathered collectively."""
        ft, p = self.ft, self.ft.progress
        peaks = ft.peak_memory_per_rank()
        if self.is_main and (p.step % ft.preset.train.log_every_n_steps == 0 or p.step == ft.total_steps):
            ft.events.write(
                "step",
                step=p.step,
                epoch=p.trained_epoch,
                loss=result.loss,
                lr=lr,
                grad_norm=grad_norm,
                tokens=result.tokens,
                tokens_total=p.tokens_total,
                tokens_per_s=result.input_tokens / step_time,
                peak_memory_bytes=peaks,
                elapsed=elapsed,
            )

    def validation(self, val_loss: float | None) -> None:
        """An ``eval`` event (none when there is no validation set)."""
        if self.is_main and val_loss is not None:
            self.ft.events.write("eval", step=self.ft.progress.step, val_loss=val_loss)

    def samples(self, fields: dict | None) -> None:
        """A ``samples`` event: the greedy replies to the fixed validation prompts (none without them)."""
        if self.is_main and fields is not None:
            self.ft.events.write("samples", step=self.ft.progress.step, **fields)

    def stopped(self, stop: StopFlag) -> None:
        """The ``stop`` event after a requested stop (a signal, a STOP file, the launcher gone), with
        the command that resumes."""
        ft = self.ft
        if self.is_main:
            ft.run.stop_request.unlink(missing_ok=True)
            ft.events.write(
                "stop",
                step=ft.progress.step,
                reason=stop.reason if stop.is_set() else "signal",
                detail=stop.detail if stop.is_set() else None,
                checkpoint=str(ft.last_checkpoint),
                resume_command=f"tunewiz resume {ft.run.path}",
            )

    def nan_stop(self, loss: float) -> int:
        """``error`` and ``stop`` events for a NaN/inf loss, before its update; returns exit code 1."""
        ft = self.ft
        step, last = ft.progress.step + 1, ft.last_checkpoint
        if self.is_main:
            where = f"the last good checkpoint is `{last}`" if last else "no checkpoint was saved yet"
            ft.events.write(
                "error",
                rank=ft.env.rank,
                step=step,
                traceback=None,
                message=f"loss is {loss} at step {step}; stopped before the update; {where}",
            )
            ft.events.write(
                "stop",
                step=step - 1,
                reason="nan",
                checkpoint=str(last) if last else None,
                resume_command=f"tunewiz resume {ft.run.path} --set train.lr=<lower>",
            )
        return 1

    def end(self) -> None:
        """The ``end`` event: the run finished and ``final/`` is written."""
        ft, p = self.ft, self.ft.progress
        if self.is_main:
            ft.events.write(
                "end",
                step=p.step,
                elapsed=p.elapsed,
                final_dir=str(ft.run.final),
                tokens_total=p.tokens_total,
            )


def _start_fields(ft: FineTune, resumed_from: Path | None) -> dict:
    preset, stats, shape = ft.preset, ft.data_stats, ft.batches.shape
    plan = json.loads(ft.run.plan.read_text()) if ft.run.plan.is_file() else {}
    return dict(
        events_version=EVENTS_VERSION,
        run=ft.run.path.name,  # what the user calls the run; the preset's name can differ (--run-dir)
        preset=preset.name,
        model=preset.model.path,
        method=preset.method,
        device=ft.env.device.type,
        dtype=preset.model.dtype,
        world_size=ft.env.world_size,
        micro_batch_size=shape.micro_batch_size,
        grad_accum=shape.grad_accum,
        global_batch_size=shape.global_batch,
        total_steps=ft.total_steps,
        steps_per_epoch=ft.steps_per_epoch,
        epochs=total_epochs(ft.total_steps, ft.steps_per_epoch),
        step=ft.progress.step,
        resumed_from=str(resumed_from) if resumed_from else None,
        planned_peak_bytes=plan.get("peak_bytes"),
        hardware=_hardware(ft.env),
        num_train_samples=len(ft.train_samples),
        num_val_samples=len(ft.val_samples),
        # numel() of an FSDP2 DTensor is its full (unsharded) size.
        truncated_samples=stats.truncated,
        dropped_samples=stats.dropped_long,
        truncation=stats.truncation_event(),
        token_lengths=stats.token_lengths,
        datasets=list(stats.sources),
        data_contents=data_contents(ft.data),  # a resume checks it (launcher.check_same_data)
        trainable_params=sum(p.numel() for p in ft.params),
        total_params=sum(p.numel() for p in ft.model.parameters()),
    )


def _hardware(env: tdist.DistEnv) -> str:
    if env.device.type == "cuda":
        return f"{env.world_size} × {torch.cuda.get_device_name(env.device)}"
    return f"CPU ({os.cpu_count()} cores)"  # the ranks are in world_size


def read_run_preset(run: RunDir) -> Preset:
    """The resolved preset the launcher wrote into the run directory."""
    return Preset.model_validate(yaml.safe_load(run.config.read_text()))


def _report(events: EventWriter, **fields: object) -> None:
    """Write an error event; a full disk must not hide the original error behind a second one."""
    try:
        events.write("error", **fields)
    except OSError as exc:
        print(f"could not write the error event to {events.path}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument(
        "--resume-from", type=Path, default=None, help="a complete checkpoints/step-N directory"
    )
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir)
    # Held until this process exits, however it exits: no new trainer starts while a rank lives.
    ranks_lock = hold_ranks_lock(run)  # noqa: F841 (kept open on purpose)
    preset = read_run_preset(run)
    stop = StopFlag.from_env()
    env = tdist.init_distributed(tdist.resolve_device(preset.device))
    events = EventWriter(run.events)
    if env.is_main:  # experiment trackers (output.report_to) see rank 0's events as they are written
        sink = open_tracking(run, preset, warn=lambda text: events.write("warning", message=text, step=None))
        if sink is not None:
            events.add_sink(sink)
    step = None
    try:
        ft = FineTune(run, preset, env, events)
        if args.resume_from:
            ft.restore(args.resume_from)
        step = ft.progress.step
        return fit(ft, stop, args.resume_from)
    except TunewizError as exc:
        _report(events, rank=env.rank, message=str(exc), traceback=None, step=step)
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        _report(
            events,
            rank=env.rank,
            message=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
            step=step,
        )
        raise
    finally:
        events.close()
        tdist.shutdown()


if __name__ == "__main__":
    sys.exit(main())
