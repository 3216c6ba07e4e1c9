"""One config-driven decoder for Llama 2/3, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 (text) and SmolLM3, whose
module names and RoPE layout are Hugging Face's, so ``state_dict()`` keys equal those of the matching
transformers ``*ForCausalLM`` and Hub ``*.safetensors`` load without renaming.

The families differ only in switches of :class:`LlamaConfig` (``tunewiz/models/config.py``): q/k norms
(Qwen3, Gemma 3), Gemma's ``(1 + weight)`` norms, norms after attention and MLP, GeGLU, scaled
embeddings, the attention scale, soft-capping (Gemma 2), per-layer sliding windows with their
own RoPE base (Gemma 3's local/global layers), and layers without RoPE (SmolLM3).

Read top to bottom: RMSNorm, RoPE, attention, MLP, the decoder block, the stack, the LM head. The
training loss lives in ``tunewiz/models/loss.py``. Shapes: B batch, T new tokens, S keys attended
(cached + new), D hidden size, H query heads, KV key/value heads, hd head dim, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunewiz.models.config import LinearRopeScaling, LlamaConfig
from tunewiz.models.kv_cache import KVCache

# Largest B*H*T*S whose bf16 attention probabilities training on CPU keeps per layer (8 MiB) to run
# attention as two matmuls instead of SDPA's flash kernel: see `matmul_attention`.
MATMUL_ATTENTION_MAX_SCORES = 2**22


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32, as transformers does: Llama casts back before scaling by
    ``weight``; Gemma (``unit_offset``) scales by ``1 + weight`` in fp32 and casts after."""

    def __init__(self, dim: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))
        self.eps = eps
        self.unit_offset = unit_offset

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` [..., dim] by its RMS in fp32, scale, and return it in its dtype."""
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (x * (1.0 + self.weight.float())).to(dtype)
        return self.weight * x.to(dtype)


def rope_inverse_frequencies(
    config: LlamaConfig, device: torch.device | str | None = None, local: bool = False
) -> Tensor:
    """RoPE inverse frequencies ``theta^(-2i/hd)`` ``[hd/2]`` fp32, with Llama 3.1 or linear scaling when
    configured.

    Args:
        config: the architecture.
        device: where to build the tensor.
        local: for Gemma 3's sliding layers: base ``rope_local_theta`` and no scaling.
    """
    dim = config.head_dim
    theta = config.rope_local_theta if local else config.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device).float() / dim))
    s = None if local else config.rope_scaling
    if s is None:
        return inv_freq
    if isinstance(s, LinearRopeScaling):  # position interpolation: positions / factor
        return inv_freq / s.factor
    # Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate smoothly in between.
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * torch.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin(
    config: LlamaConfig, position_ids: Tensor, dtype: torch.dtype, local: bool = False
) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``[B, T, hd]`` for the given positions (``local``: Gemma 3's sliding layers).

    The inverse frequencies are recomputed per call (hd/2 numbers) rather than kept in a buffer: a
    buffer would need re-initialising after meta-device construction and would lose precision when
    the model is cast to bf16.
    """
    inv_freq = rope_inverse_frequencies(config, position_ids.device, local)  # [hd/2] fp32
    freqs = position_ids[..., None].float() * inv_freq  # [B, T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [B, T, hd]: HF's half-split layout, not interleaved
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] over the last dim (the rotation pairs dim i with dim i + hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` [B, heads, T, hd] by the angles in cos/sin [B, T, hd]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, T, hd]: broadcast over heads
    return x * cos + rotate_half(x) * sin


def use_matmul_attention(q: Tensor, S: int) -> bool:
    """Whether ``matmul_attention`` should replace SDPA for queries ``q`` [B, H, T, hd] over S keys.

    Only for bf16 training on CPU with a small score matrix: there oneDNN's bf16 matmuls make the two
    attention matmuls plus a softmax faster than the CPU flash kernel, forward and backward (measured
    in bench/RESULTS.md); in fp32 they are not faster, and a large score matrix would cost B*H*T*S bf16
    values of activation memory per layer.
    """
    B, H, T, _ = q.shape
    return (
        torch.is_grad_enabled()
        and q.dtype == torch.bfloat16
        and q.device.type == "cpu"
        and B * H * T * S <= MATMUL_ATTENTION_MAX_SCORES
    )


def matmul_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    scale: float | None = None,
    softcap: float | None = None,
) -> Tensor:
    """Softmax attention as two matmuls, the scores rounded to q's dtype as transformers' eager path does.

    Args:
        q: queries [B, H, T, hd].
        k: keys [B, H, S, hd].
        v: values [B, H, S, hd].
        mask: bool, broadcastable to [B, H, T, S] (True = may attend); None = causal with S == T.
            Every query must see at least one key (true of causal and packed-document masks).
        scale: score scale; default ``hd ** -0.5``.
        softcap: Gemma 2's ``softcap * tanh(scores / softcap)`` before the mask, or None.
    """
    T, S = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # Scaling q (T*hd values) rather than the scores (T*S); exact when the scale is a power of two.
    scores = (q * scale) @ k.transpose(-1, -2)  # [B, H, T, S]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap  # a new tensor: tanh's saved output stays intact
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril_()  # [T, S] causal
    # An additive 0 / -inf bias rather than masked_fill: its backward is the identity, where
    # masked_fill's is a second pass over [B, H, T, S] (its cost is in bench/RESULTS.md).
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    # In place: the matmul's backward does not need its output. The softmax accumulates in fp32 and
    # returns q's dtype, so autograd keeps one bf16 [B, H, T, S] tensor (shared with the next matmul).
    probs = torch.softmax(scores.add_(bias), dim=-1)  # [B, H, T, S]
    return probs @ v  # [B, H, T, hd]


class LlamaAttention(nn.Module):
    """Grouped-query self-attention with unfused q/k/v projections (LoRA targets them by name), optional
    per-head q/k norms, a per-layer sliding window and RoPE base, and Gemma's scale and soft-cap."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_rep = config.num_attention_heads // config.num_key_value_heads  # query heads per kv head
        self.window = config.layer_window(layer_idx)  # None = full attention
        self.rope_local = config.layer_rope_is_local(layer_idx)
        self.use_rope = config.rope_layers is None or config.rope_layers[layer_idx]  # SmolLM3: some have none
        scalar = config.query_pre_attn_scalar
        self.scale = (scalar if scalar is not None else config.head_dim) ** -0.5
        self.softcap = config.attn_logit_softcapping
        q_dim, kv_dim = (
            config.num_attention_heads * config.head_dim,
            config.num_key_value_heads * config.head_dim,
        )
        self.q_proj = nn.Linear(config.hidden_size, q_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_dim, config.hidden_size, bias=config.o_proj_bias)
        if config.qk_norm:  # one RMSNorm over each head's hd features, shared by all heads
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps, config.norm_unit_offset)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps, config.norm_unit_offset)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, kv_cache: KVCache | None
    ) -> Tensor:
        """Attention of ``x`` [B, T, D] with RoPE (``cos``/``sin``), an optional mask and KV cache."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, -1, self.head_dim)  # [B, T, H, hd]
        k = self.k_proj(x).view(B, T, -1, self.head_dim)  # [B, T, KV, hd]
        v = self.v_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # [B, KV, T, hd]
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, T, hd], [B, KV, T, hd]
        if self.use_rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # [B, KV, S, hd]
        if self.num_rep > 1:  # repeat_interleave copies even for one repeat
            # Query head h reads kv head h // num_rep (transformers' repeat_kv order).
            k = k.repeat_interleave(self.num_rep, dim=1)  # [B, H, S, hd]
            v = v.repeat_interleave(self.num_rep, dim=1)  # [B, H, S, hd]
        if self.softcap is not None or (kv_cache is None and use_matmul_attention(q, k.shape[-2])):
            # SDPA cannot soft-cap the scores (transformers runs Gemma 2 eagerly for the same reason).
            y = matmul_attention(q, k, v, mask, self.scale, self.softcap)  # [B, H, T, hd]
        else:
            # mask None means plain causal attention over a cache-free sequence (S == T).
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale
            )  # [B, H, T, hd]
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # [B, T, D]


class LlamaMLP(nn.Module):
    """Gated feed-forward: ``down(act(gate(x)) * up(x))``, SwiGLU (silu) or GeGLU (tanh GELU, Gemma)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.gelu = config.hidden_act == "gelu_pytorch_tanh"

    def forward(self, x: Tensor) -> Tensor:
        """``down(act(gate(x)) * up(x))`` on ``x`` [B, T, D]."""
        gate = self.gate_proj(x)  # [B, T, I]
        act = F.gelu(gate, approximate="tanh") if self.gelu else F.silu(gate)
        return self.down_proj(act * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """One pre-norm block; the unit FSDP2 shards and activation checkpointing wraps. With
    ``sandwich_norm`` (Gemma 2/3) the attention and MLP outputs are normalised too before the residual
    add; the names are transformers': there ``post_attention_layernorm`` normalises the attention
    output, while Llama uses the same name for the norm in front of the MLP."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        norm = (config.hidden_size, config.rms_norm_eps, config.norm_unit_offset)
        self.input_layernorm = RMSNorm(*norm)
        self.post_attention_layernorm = RMSNorm(*norm)
        self.sandwich = config.sandwich_norm
        if self.sandwich:
            self.pre_feedforward_layernorm = RMSNorm(*norm)
            self.post_feedforward_layernorm = RMSNorm(*norm)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, kv_cache: KVCache | None
    ) -> Tensor:
        """Pre-norm residual block: attention, then the MLP, on ``x`` [B, T, D]."""
        if self.sandwich:
            x = x + self.post_attention_layernorm(
                self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
            )
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))  # [B, T, D]


class LlamaModel(nn.Module):
    """Embedding, the decoder blocks and the final norm (HF's ``model.`` prefix)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.norm_unit_offset)

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None,
        attn_mask: Tensor | None,
        kv_cache: KVCache | None,
    ) -> Tensor:
        """Hidden states [B, T, D] after the final norm, for token ids [B, T]."""
        B, T = input_ids.shape
        offset = kv_cache.length if kv_cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(offset, offset + T, device=input_ids.device).expand(B, T)
        x = self.embed_tokens(input_ids)  # [B, T, D]
        if self.config.scale_embeddings:
            # Gemma: sqrt(D) rounded to the model dtype first (fp32, then x's dtype), as transformers does.
            x = x * torch.tensor(self.config.hidden_size**0.5).to(x.dtype)
        # One RoPE table and one mask per kind of layer (global / Gemma 3's local), built once per forward.
        rope = {
            local: rope_cos_sin(self.config, position_ids, x.dtype, local)  # [B, T, hd] each
            for local in {layer.self_attn.rope_local for layer in self.layers}
        }
        masks = {
            window: self._attention_mask(attn_mask, T, offset, input_ids.device, window)
            for window in {layer.self_attn.window for layer in self.layers}
        }
        for layer in self.layers:
            cos, sin = rope[layer.self_attn.rope_local]
            x = layer(x, cos, sin, masks[layer.self_attn.window], kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.norm(x)  # [B, T, D]

    @staticmethod
    def _attention_mask(
        attn_mask: Tensor | None, T: int, offset: int, device: torch.device, window: int | None
    ) -> Tensor | None:
        """The boolean mask [.., T, S] (True = may attend), or None for plain causal attention."""
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            raise TypeError(f"attn_mask must be a bool tensor (True = may attend), got {attn_mask.dtype}")
        S = offset + T
        # Sliding window: query at cache slot p sees keys p - window < k <= p; binds only once S exceeds it.
        windowed = window is not None and S > window
        if attn_mask is None and offset == 0 and not windowed:
            return None
        q_pos = torch.arange(offset, S, device=device)[:, None]  # [T, 1]
        k_pos = torch.arange(S, device=device)[None, :]  # [1, S]
        mask = attn_mask if attn_mask is not None else k_pos <= q_pos  # [B, 1, T, S] or [T, S]
        if windowed:
            mask = mask & (k_pos > q_pos - window)
        return mask


class LlamaForCausalLM(nn.Module):
    """The decoder plus ``lm_head``. ``state_dict()`` keys are transformers' (both embedding keys
    appear when tied, as in transformers; ``save_model`` writes the shared tensor once).

    Args:
        config: the architecture.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Make ``lm_head.weight`` the embedding matrix when the config ties them (again after loading)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Random initialisation as transformers does it: normal(0, std) matrices, zero biases, unit norms.

        Args:
            std: standard deviation of the weight matrices and embeddings.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, RMSNorm):  # the identity: weight 1, or 0 under (1 + weight)
                nn.init.zeros_(module.weight) if module.unit_offset else nn.init.ones_(module.weight)
        if self.config.pad_token_id is not None:
            self.model.embed_tokens.weight[self.config.pad_token_id].zero_()

    def new_kv_cache(
        self,
        batch: int,
        max_len: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` tokens.

        Args:
            batch: sequences decoded together.
            max_len: prompt plus generated tokens.
            dtype: defaults to the dtype of the embedding weight.
            device: defaults to the device of the embedding weight.
        """
        weight = self.model.embed_tokens.weight
        c = self.config
        return KVCache(
            c.num_hidden_layers,
            batch,
            c.num_key_value_heads,
            max_len,
            c.head_dim,
            dtype=dtype or weight.dtype,
            device=device or weight.device,
        )

    def forward(
        self,
        input_ids: Tensor,
        *,
        position_ids: Tensor | None = None,
        attn_mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        output_hidden: bool = False,
    ) -> Tensor:
        """Logits, or the final hidden states for a separate loss call.

        Args:
            input_ids: tokens ``[B, T]``.
            position_ids: RoPE positions ``[B, T]``; default ``arange(T)`` after the cached length
                (packed sequences restart them per document).
            attn_mask: bool, broadcastable to ``[B, 1, T, S]`` with S = cached + T keys; True = may
                attend. Replaces the causal mask (so it must be causal itself): block-diagonal causal
                for packed documents, causal minus left padding for batched generation. None = causal.
            kv_cache: from :meth:`new_kv_cache`; new keys/values are appended, the length advances by T.
            output_hidden: return the hidden states ``[B, T, D]`` after the final norm instead of the
                logits; training passes them with ``lm_head`` to
                :func:`tunewiz.models.loss.chunked_cross_entropy`, so [B*T, V] logits never exist.

        Returns:
            Logits ``[B, T, V]`` in the model dtype (soft-capped when the config says so), or the
            hidden states ``[B, T, D]``.
        """
        hidden = self.model(input_ids, position_ids, attn_mask, kv_cache)  # [B, T, D]
        if output_hidden:
            return hidden
        return self.logits(hidden)  # [B, T, V]

    def logits(self, hidden: Tensor) -> Tensor:
        """``lm_head`` of final hidden states [..., D] -> logits [..., V] in the model dtype, soft-capped
        as ``cap * tanh(logits / cap)`` when the config says so (Gemma 2)."""
        logits = self.lm_head(hidden)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap
