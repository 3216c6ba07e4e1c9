"""Peak memory per device of one training step, as a breakdown in bytes. Pure Python: no torch.

The model counts the tensors tunewiz's own step allocates (``tunewiz/models/llama.py``,
``tunewiz/lora/layer.py``, ``tunewiz/train/distributed.py``, ``tunewiz/train/optim.py``): weights,
trainable state,
the tensors autograd saves for backward, the chunked loss, FSDP2's unsharded copies, and the
runtime's own overhead. ``bench/planner_vs_trace.py`` checks it against a fake-tensor trace of the
real step.

Notation: N = micro_batch × seq_len tokens per device, D hidden, Q = heads × head_dim,
K = kv_heads × head_dim, I intermediate, V vocab, r LoRA rank, e bytes of the preset's ``model.dtype``
(2 for bf16, 4 for fp32).

dtype semantics (``FineTune._build_model`` in ``tunewiz/train/recipe.py``): EVERY parameter — the
frozen base, the LoRA adapters, or the whole model in a full fine-tune — is stored in ``model.dtype``;
gradients and AdamW states have the same dtype; there is no fp32 master copy and no autocast (torchtune's
approach). Only RMSNorm, softmax and the loss compute in fp32 internally, which shows up in the
activations (fp32 copies inside the norms, the loss chunk's fp32 logits). fp32 runs are all-fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tunewiz.models.catalog import format_params
from tunewiz.models.config import LlamaConfig
from tunewiz.models.nf4 import NF4_BYTES_PER_PARAM
from tunewiz.units import MiB

Method = Literal["lora", "qlora", "full"]
Dtype = Literal["bf16", "fp32"]
Device = Literal["cuda", "cpu"]

# = tunewiz.models.loss.LOSS_CHUNK_TOKENS and LOSS_CHUNK_LOGITS (not imported: that module imports torch)
LOSS_CHUNK_TOKENS = 1024
LOSS_CHUNK_LOGITS = 2**27
MATMUL_ATTENTION_MAX_SCORES = 2**22  # = tunewiz.models.llama.MATMUL_ATTENTION_MAX_SCORES (same reason)
CUDA_CONTEXT_BYTES = 600 * MiB  # CUDA context + cuBLAS/cuDNN workspaces outside the caching allocator
NCCL_BUFFER_BYTES = 400 * MiB  # NCCL communicator buffers, only with more than one GPU
# RSS of the recipe's process besides its tensors: Python + torch + tunewiz imported (~280 MiB measured on
# Linux, torch 2.13 CPU), the gloo process group, tokenizer, data and the CPU kernels' first-use buffers.
# A tiny-model run here peaks at ~344 MiB RSS with ~7 MiB of tensors (tests/test_run_plan.py checks it).
CPU_PROCESS_BYTES = 340 * MiB
ALLOCATOR_SLACK = 0.05  # caching-allocator fragmentation, as a share of the tensors' peak
ERROR_BAND = {"cuda": 0.10, "cpu": 0.10}  # ± share of the predicted peak (see the module docstring)

ADAMW8BIT_BLOCK = 256  # torchao AdamW8bit: one fp32 scale per 256 quantized state values
ADAMW8BIT_BYTES_PER_STATE = 1 + 4 / ADAMW8BIT_BLOCK
OFFLOAD_BLOCKS_IN_FLIGHT = 2  # offloading keeps the block being offloaded/prefetched and its neighbour

_BYTES = {"bf16": 2, "fp32": 4}
_ATTN_TARGETS = ("q_proj", "k_proj", "v_proj")
_MLP_IN_TARGETS = ("gate_proj", "up_proj")


@dataclass(frozen=True)
class PlanInputs:
    """Everything the memory of one step depends on, besides the architecture.

    Args:
        method: ``lora``, ``qlora`` (NF4 base) or ``full``.
        dtype: the preset's ``model.dtype``: every parameter, gradient and AdamW state is stored in it.
        micro_batch: sequences per device per forward/backward.
        seq_len: tokens per sequence (``max_seq_len``; packed rows are full).
        lora_rank: rank r of the adapters (ignored for ``full``).
        lora_targets: projection names that get an adapter (``lm_head`` is not modelled).
        activation_checkpointing: recompute each block in backward.
        num_devices: data-parallel ranks; with more than one, FSDP2 shards weights, grads and
            optimizer state over them.
        device: ``cuda`` or ``cpu``; only the fixed overheads differ.
        optimizer: ``adamw`` (two states per trained parameter, in ``dtype``) or ``adamw8bit``
            (torchao's ``AdamW8bit``: both states in 8 bits + one fp32 scale per 256 values).
        optimizer_in_backward: each parameter is stepped as soon as its gradient is complete and the
            gradient is freed (torchtune's ``optimizer_in_bwd``): no step where all grads exist.
        activation_offloading: saved activations go to CPU memory in forward and come back in
            backward; the GPU holds those of about two blocks at a time (CUDA only: on CPU it is moot).
        foreach_step: AdamW's step with foreach kernels, which allocate sqrt(exp_avg_sq) for all
            parameters at once. None: tunewiz's choice (``tunewiz/train/optim.py``): fused kernels on
            CUDA (no temporary), foreach on CPU. Peers' recipes set it explicitly.
        loss: ``chunked`` (tunewiz's loss: fp32 logits for 1024 tokens at a time) or ``full``
            ([N, V] fp32 logits at once, as a naive ``cross_entropy(model(x).float())``).
        grad_accum: micro-batches per optimizer step. From the second micro-batch on, every trained
            parameter's gradient already exists (backward adds into ``.grad``) while that micro-batch's
            activations are alive; with 1, backward frees activations as it produces the gradients.
    """

    method: Method = "lora"
    dtype: Dtype = "bf16"
    micro_batch: int = 1
    seq_len: int = 2048
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    activation_checkpointing: bool = False
    num_devices: int = 1
    device: Device = "cuda"
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    optimizer_in_backward: bool = False
    activation_offloading: bool = False
    foreach_step: bool | None = None
    loss: Literal["chunked", "full"] = "chunked"
    grad_accum: int = 1

    @property
    def savers(self) -> tuple[str, ...]:
        """The memory savers this configuration uses, in the words the verdicts print."""
        on = (
            ("activation checkpointing", self.activation_checkpointing),
            ("activation offloading", self.activation_offloading),
            ("8-bit AdamW", self.optimizer == "adamw8bit"),
            ("optimizer step in backward", self.optimizer_in_backward),
        )
        return tuple(name for name, used in on if used)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per device at the step's peak, by kind. ``total`` is the predicted peak.

    Args:
        weights: this rank's share of the model weights (frozen base + trained parameters).
        trainable_state: gradients + AdamW states (+ the optimizer step's temporaries).
        activations: tensors saved for backward by the decoder blocks and the final norm, plus the
            largest backward temporaries of one block.
        logits_loss: the loss's live logits and their gradients (one chunk with the chunked loss).
        fsdp_buffers: unsharded (all-gathered) parameters and gradients of the blocks in flight,
            and the root's (embeddings, lm_head) unsharded copy; 0 on one device.
        overhead: CUDA context, NCCL buffers and allocator fragmentation (process RSS on CPU).
    """

    weights: int
    trainable_state: int
    activations: int
    logits_loss: int
    fsdp_buffers: int
    overhead: int

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.trainable_state
            + self.activations
            + self.logits_loss
            + self.fsdp_buffers
            + self.overhead
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "trainable_state": self.trainable_state,
            "activations": self.activations,
            "logits_loss": self.logits_loss,
            "fsdp_buffers": self.fsdp_buffers,
            "overhead": self.overhead,
            "total": self.total,
        }


@dataclass(frozen=True)
class MemoryPlan:
    """The predicted peak per device of one configuration, with its error band and reasons.

    Args:
        inputs: the configuration.
        breakdown: bytes by kind; ``breakdown.total`` is the predicted peak.
        error_band: relative uncertainty of the peak (0.1 = ±10%).
        trainable_params: parameters the optimizer updates (whole model, not per rank).
        total_params: parameters of the model (+ adapters).
        reasons: one sentence per modelling choice that matters for this configuration.
    """

    inputs: PlanInputs
    breakdown: MemoryBreakdown
    error_band: float
    trainable_params: int
    total_params: int
    reasons: tuple[str, ...] = field(default=())

    @property
    def peak(self) -> int:
        return self.breakdown.total

    @property
    def peak_high(self) -> int:
        """The top of the error band: what a plan must leave room for."""
        return int(self.peak * (1 + self.error_band))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (for ``plan.json`` and ``--json``)."""
        i = self.inputs
        return {
            "inputs": {**vars(i), "lora_targets": list(i.lora_targets)},
            "breakdown_bytes": self.breakdown.as_dict(),
            "peak_bytes": self.peak,
            "peak_high_bytes": self.peak_high,
            "error_band": self.error_band,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "reasons": list(self.reasons),
        }


def lora_params(arch: LlamaConfig, rank: int, targets: tuple[str, ...]) -> int:
    """Adapter parameters: r × (in + out) per targeted projection per layer.

    Args:
        arch: the architecture.
        rank: LoRA rank.
        targets: projection names.
    """
    shapes = _projection_shapes(arch)
    return arch.num_hidden_layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def estimate(arch: LlamaConfig, inputs: PlanInputs) -> MemoryPlan:
    """Predict the peak memory per device of one training step (forward, backward, optimizer step).

    Args:
        arch: the model's architecture numbers.
        inputs: method, dtype, batch shape, LoRA settings, checkpointing, devices.

    Returns:
        The plan: a breakdown in bytes whose total is the peak, an error band and reasons.
    """
    i = inputs
    e = _BYTES[i.dtype]
    n_dev = max(1, i.num_devices)
    full = i.method == "full"
    total = arch.num_parameters()
    targets = () if full else tuple(i.lora_targets)
    adapters = 0 if full else lora_params(arch, i.lora_rank, targets)
    trained = total if full else adapters
    reasons: list[str] = []

    # --- weights: each rank stores 1/n_dev of every parameter (FSDP2 shards when n_dev > 1), all in
    # model.dtype (the recipe casts the adapters to it too).
    linear = arch.num_hidden_layers * _layer_linear_params(arch)
    other = total - linear  # embeddings, lm_head when untied, norms, biases
    if full:
        weights = e * total
        reasons.append(
            f"full fine-tune: every parameter trained; weights, grads and AdamW states in "
            f"{i.dtype} (no fp32 master copy)"
            + (f": {4 * e} B per parameter before sharding" if i.optimizer == "adamw" else "")
        )
    elif i.method == "qlora":
        weights = int(NF4_BYTES_PER_PARAM * linear) + e * (other + adapters)
        reasons.append(
            f"QLoRA: the {format_params(linear)} linear weights in NF4 ({NF4_BYTES_PER_PARAM:.3f} "
            f"B/param), embeddings, norms and adapters in {i.dtype}"
        )
    else:
        weights = e * (total + adapters)
        reasons.append(f"LoRA: frozen base and adapters on {', '.join(targets)} in {i.dtype} ({e} B/param)")
    weights //= n_dev

    # --- trainable state: grads (e B per trained param) + AdamW's two states (e B each, or 8 bits + a
    # scale with adamw8bit), sharded. The step's temporary: foreach AdamW allocates sqrt(exp_avg_sq) for
    # the whole group (+e B per trained param); fused AdamW (tunewiz on CUDA) none; torchao's 8-bit step
    # dequantizes one parameter's two states to fp32 at a time (8 B × the largest trained tensor).
    largest = _largest_trained(arch, i, targets)
    foreach = i.foreach_step if i.foreach_step is not None else i.device == "cpu"
    if i.optimizer == "adamw8bit":
        states = int(2 * ADAMW8BIT_BYTES_PER_STATE * trained) // n_dev
        step_temp = 8 * largest // n_dev
    else:
        states = 2 * e * trained // n_dev
        step_temp = (e * (largest if i.optimizer_in_backward else trained) if foreach else 0) // n_dev
    grads = e * trained // n_dev
    if i.optimizer_in_backward:
        # Each grad is stepped and freed as soon as it is complete: the largest one is alive at a time
        # (a tied embedding's grad from the loss until the embedding lookup, so all of backward).
        tied = _root_params(arch) if full and arch.tie_word_embeddings else 0
        grads = e * max(largest, tied) // n_dev

    saved, block_transient = _activations(arch, i, e, targets)
    loss = _loss_bytes(arch, i, e)
    gather = _fsdp_buffers(arch, i, e, full, n_dev)
    if i.method == "qlora":
        # One projection is dequantised to the compute dtype at a time: [out, in] × e, live in fwd and bwd.
        gather += e * max(a * b for a, b in _projection_shapes(arch).values())

    # Backward holds every saved activation and, one after the other, two transients: first the loss
    # (a chunk's logits, while only the root's grad exists), then each block's recompute/grads. Then the
    # optimizer step: all grads + states + its temporary, activations gone. AdamW's states live from
    # the first step on, so every phase holds them. In a full fine-tune the grads grow while the
    # activations shrink through backward, so its end (all grads, no activations) is a phase too.
    # During backward only the root's grads exist yet (they come first), unless an earlier micro-batch of
    # the same step already made every grad (accumulation: backward adds into them).
    if full and not i.optimizer_in_backward and i.grad_accum == 1:
        root_grads = e * _root_params(arch) // n_dev
    else:
        root_grads = grads
    # With the step in backward, a parameter's update (and its temporary) happens while backward runs.
    in_bwd_step = step_temp if i.optimizer_in_backward else 0
    phases = {
        "loss": saved + loss + root_grads + in_bwd_step,
        "blocks": saved + block_transient + root_grads + in_bwd_step,
        "end of backward": grads + (block_transient if full else 0) + in_bwd_step,
        "optimizer step": 0 if i.optimizer_in_backward else grads + step_temp,
    }
    phase = max(phases, key=lambda k: phases[k])
    if phase in ("loss", "blocks"):
        trainable_state = states + root_grads + in_bwd_step
        activations, logits = saved + max(0, block_transient - loss), loss
    else:
        trainable_state, activations, logits = states + phases[phase], 0, 0
    reasons.append(
        f"peak phase: {phase}"
        + {
            "loss": " (all saved activations + one loss chunk's fp32 logits)",
            "blocks": " (all saved activations + one block's backward)",
            "end of backward": " (all grads, activations freed)",
            "optimizer step": " (all grads + AdamW states"
            + (
                " + the 8-bit step's fp32 states of its largest tensor)"
                if i.optimizer == "adamw8bit"
                else " + the foreach step's sqrt temporary)"
                if step_temp
                else ")"
            ),
        }[phase]
    )

    tensors = weights + trainable_state + activations + logits + gather
    if i.device == "cuda":
        overhead = (
            CUDA_CONTEXT_BYTES + (NCCL_BUFFER_BYTES if n_dev > 1 else 0) + int(ALLOCATOR_SLACK * tensors)
        )
    else:
        overhead = CPU_PROCESS_BYTES + int(ALLOCATOR_SLACK * tensors)
    if n_dev > 1:
        reasons.append(
            f"FSDP2 over {n_dev} devices: weights, grads and optimizer states sharded {n_dev} ways; "
            "two blocks and the root are gathered at a time"
        )
    reasons.append(
        "activation checkpointing: only each block's input is kept, one block is recomputed at a time"
        if i.activation_checkpointing
        else "no activation checkpointing: every block keeps its saved tensors until backward"
    )
    if i.optimizer == "adamw8bit":
        reasons.append("8-bit AdamW (torchao): both states in 8 bits + a fp32 scale per 256 values")
    if i.optimizer_in_backward:
        reasons.append("optimizer step in backward: each gradient is applied and freed as it is produced")
    if i.grad_accum > 1 and full:
        reasons.append(
            f"gradient accumulation over {i.grad_accum} micro-batches: from the second one on, all "
            "gradients are alive during backward, beside that micro-batch's activations"
        )
    if i.activation_offloading and i.device == "cuda":
        reasons.append(
            "activation offloading: saved activations wait in CPU memory; "
            f"{OFFLOAD_BLOCKS_IN_FLIGHT} blocks' worth stay on the GPU"
        )
    breakdown = MemoryBreakdown(weights, trainable_state, activations, logits, gather, overhead)
    return MemoryPlan(i, breakdown, ERROR_BAND[i.device], trained, total + adapters, tuple(reasons))


def _projection_shapes(arch: LlamaConfig) -> dict[str, tuple[int, int]]:
    # (in_features, out_features) of each projection.
    d, q, k, m = (
        arch.hidden_size,
        arch.num_attention_heads * arch.head_dim,
        arch.num_key_value_heads * arch.head_dim,
        arch.intermediate_size,
    )
    return {
        "q_proj": (d, q),
        "k_proj": (d, k),
        "v_proj": (d, k),
        "o_proj": (q, d),
        "gate_proj": (d, m),
        "up_proj": (d, m),
        "down_proj": (m, d),
    }


def _layer_linear_params(arch: LlamaConfig) -> int:
    return sum(a * b for a, b in _projection_shapes(arch).values())


def _block_saved_bytes_per_token(arch: LlamaConfig, i: PlanInputs, e: int, targets: tuple[str, ...]) -> int:
    """Bytes autograd saves per token in one decoder block (no checkpointing). The derivation follows
    the block's forward in ``tunewiz/models/llama.py`` and ``LoRALinear.forward`` in
    ``tunewiz/lora/layer.py``.

    A frozen ``F.linear`` saves nothing of its input (its input-grad needs only the weight); a trained
    one saves its input. ``x * y`` saves each factor whose partner needs a grad.
    """
    d, q, m = arch.hidden_size, arch.num_attention_heads * arch.head_dim, arch.intermediate_size
    heads = arch.num_attention_heads
    full = i.method == "full"
    shapes = _projection_shapes(arch)

    def rms_norm(consumers_save_output: bool) -> int:
        # x.float() [N, D] fp32 is saved by pow(2) and by x * rsqrt; rsqrt [N, 1] fp32. In fp32 x.float()
        # is x itself: still kept alive by the saves. `weight * x.to(dtype)` saves x.to(dtype) only when
        # the weight is trained (full), and its output [N, D] e is saved by the trained consumers.
        saved = 4 * d + 4
        if full:
            saved += e * d  # x.to(dtype) * ... : the normed tensor (a new tensor in fp32 too)
        if consumers_save_output:
            saved += e * d
        return saved

    def lora(names: tuple[str, ...], input_saved: bool) -> int:
        # The adapters have the input's dtype, so `x.to(lora dtype)` is x itself: lora_A saves the
        # projections' shared input [N, in] e (once, unless a trained base already saves it), and
        # lora_B saves lora_A's output [N, r] e per adapter.
        hit = [n for n in names if n in targets]
        shared_input = e * shapes[hit[0]][0] if hit and not input_saved else 0
        return shared_input + e * i.lora_rank * len(hit)

    per_token = 0
    # Attention: norm -> q/k/v -> RoPE (saves only cos/sin, shared) -> repeat_interleave of k, v to H heads
    # -> SDPA saves q, k_rep, v_rep [N, Q] e each, its output [N, Q] e and logsumexp [N, H] fp32.
    # bf16 training on CPU with a small score matrix uses `matmul_attention` instead (models/llama.py):
    # it saves the scaled q, k_rep, v_rep [N, Q] e and the probabilities [B, H, T, T] e = H*T per token.
    per_token += rms_norm(full)
    per_token += lora(_ATTN_TARGETS, full)
    scores = i.micro_batch * heads * i.seq_len * i.seq_len
    if i.device == "cpu" and e == 2 and scores <= MATMUL_ATTENTION_MAX_SCORES:
        per_token += 3 * q * e + heads * i.seq_len * e
    else:
        per_token += 4 * q * e + 4 * heads
    # o_proj input: y.transpose(1, 2).reshape(B, T, Q): a copy unless SDPA's output is already
    # [B, T, H, hd] in memory (CUDA flash/efficient kernels); saved when o_proj is trained.
    o_saves = full or "o_proj" in targets
    if o_saves and i.device == "cpu":
        per_token += e * q
    per_token += lora(("o_proj",), o_saves)
    # Qwen3/Gemma 3 q_norm/k_norm: the fp32 copies of q and k [N, Q + K] and their rsqrt per head.
    if arch.qk_norm:
        kv_heads = arch.num_key_value_heads
        per_token += 4 * (heads + kv_heads) * (arch.head_dim + 1)
    # Gemma 2/3 norm the attention and MLP outputs too: two more fp32 inputs [N, D] and rsqrt.
    if arch.sandwich_norm:
        per_token += 2 * (4 * d + 4)
    # MLP: norm -> gate [N, I], up [N, I] -> silu(gate) (Gemma: tanh GELU) saves gate; act * up saves both;
    # the product is saved by down_proj when trained.
    per_token += rms_norm(full)
    per_token += lora(_MLP_IN_TARGETS, full)
    per_token += 3 * e * m + (e * m if full else 0)
    per_token += lora(("down_proj",), full)
    return per_token


def _block_backward_temp_per_token(arch: LlamaConfig, e: int) -> int:
    # While one block runs backward, the grads of its MLP intermediates exist next to its saved
    # tensors: d(product), d(silu), d(up), d(gate) [N, I] e, two at a time, plus the [N, D] fp32
    # grad of the residual stream.
    return 2 * e * arch.intermediate_size + 4 * arch.hidden_size


def _activations(arch: LlamaConfig, i: PlanInputs, e: int, targets: tuple[str, ...]) -> tuple[int, int]:
    """(bytes saved for backward until it reaches them, bytes of one block's backward transient)."""
    n = i.micro_batch * i.seq_len
    layers = arch.num_hidden_layers
    block = _block_saved_bytes_per_token(arch, i, e, targets)
    # Final norm (its fp32 input + the normed output the loss chunks read) and the int64 input ids/labels.
    tail = 4 * arch.hidden_size + 4 + e * arch.hidden_size * (2 if i.method == "full" else 1) + 16
    # RoPE tables cos/sin [B, T, hd] e, shared by every block.
    rope = 2 * e * arch.head_dim
    if i.activation_offloading and i.device == "cuda":
        layers = min(layers, OFFLOAD_BLOCKS_IN_FLIGHT)  # the rest wait in CPU memory
    if i.activation_checkpointing:
        # Each checkpointed block keeps its input [N, D] e; in backward one block is recomputed.
        saved, transient = layers * e * arch.hidden_size, block + _block_backward_temp_per_token(arch, e)
    else:
        saved, transient = layers * block, _block_backward_temp_per_token(arch, e)
    return n * (saved + tail + rope), n * transient


def _loss_bytes(arch: LlamaConfig, i: PlanInputs, e: int) -> int:
    n = i.micro_batch * i.seq_len
    v = arch.vocab_size
    if i.loss == "full":
        # [N, V] logits in e, their fp32 upcast, log_softmax's saved fp32 output and its grad.
        return n * v * (e + 4 * (e != 4) + 8)
    # Fused chunked loss (models/loss.py, LinearCrossEntropy): per chunk the fp32 logits [C, V] (turned
    # into softmax - onehot in place) and their cast to e for the grad matmuls (none in fp32), plus
    # the grad of the final hidden states [N, D] e that the forward fills chunk by chunk.
    # Tokens per chunk: models/loss.py's `loss_chunk_tokens` (fewer for large vocabularies such as Gemma's).
    c = min(LOSS_CHUNK_TOKENS, max(128, LOSS_CHUNK_LOGITS // v), n)
    return c * v * (4 + e * (e != 4)) + n * arch.hidden_size * e


def _fsdp_buffers(arch: LlamaConfig, i: PlanInputs, e: int, full: bool, n_dev: int) -> int:
    if n_dev == 1:
        return 0  # distributed.py applies FSDP2 only when world_size > 1
    total = arch.num_parameters()
    layer = (total - _root_params(arch)) // arch.num_hidden_layers
    stored = e  # parameters are gathered in the dtype they are stored in: model.dtype
    # The root (embeddings, final norm, untied lm_head) stays gathered from forward to the end of backward;
    # a block and the prefetched next one are gathered at a time; in backward a block's unsharded grads
    # exist until reduce-scatter (full fine-tune only: LoRA grads are tiny).
    root = _root_params(arch)
    return stored * (root + 2 * layer) + (e * layer if full else 0) - (stored * (root + 2 * layer)) // n_dev


def _largest_trained(arch: LlamaConfig, i: PlanInputs, targets: tuple[str, ...]) -> int:
    """Elements of the largest trained tensor (the unit of per-parameter optimizer work)."""
    shapes = _projection_shapes(arch)
    if i.method == "full":
        return max(arch.vocab_size * arch.hidden_size, *(a * b for a, b in shapes.values()))
    return max((i.lora_rank * max(shapes[t]) for t in targets if t in shapes), default=0)


def _root_params(arch: LlamaConfig) -> int:
    return arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2) + arch.hidden_size


def allocator_view(plan: MemoryPlan, kind: str) -> int:
    """The plan's peak as a CUDA memory statistic sees it, for comparing with published measurements.

    ``torch.cuda.max_memory_allocated`` / ``active_bytes`` count tensors only; ``max_memory_reserved``
    adds the caching allocator's slack; neither counts the CUDA context or NCCL's buffers, which
    ``nvidia-smi`` (and a fit verdict) does.

    Args:
        plan: a CUDA plan from :func:`estimate`.
        kind: ``allocated``, ``reserved`` or ``unknown`` (treated as reserved: the larger).
    """
    b = plan.breakdown
    tensors = b.total - b.overhead
    return tensors if kind == "allocated" else tensors + int(ALLOCATOR_SLACK * tensors)
