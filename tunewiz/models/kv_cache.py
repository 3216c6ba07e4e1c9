"""A preallocated key/value cache for incremental decoding (prefill once, then one token per step)."""

from __future__ import annotations

import torch

from tunewiz.errors import TunewizError


class KVCache:
    """Keys and values of every layer, preallocated as ``[B, n_kv_heads, max_len, head_dim]``.

    The model writes each layer's new keys/values at positions ``length .. length+T`` and attends over
    ``[0, length+T)``; after the last layer it calls :meth:`advance`. Build one with
    ``LlamaForCausalLM.new_kv_cache``.

    Args:
        num_layers: decoder blocks.
        batch_size: sequences decoded together.
        num_kv_heads: key/value heads per layer.
        max_len: most tokens (prompt + generated) the cache holds.
        head_dim: per-head width.
        dtype: dtype of the cached keys/values (the model's compute dtype).
        device: where the cache lives.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.max_len = max_len
        self.length = 0  # positions already filled, the same in every layer

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values of one layer and return all keys/values so far.

        Args:
            layer_idx: which decoder block.
            k: new keys ``[B, n_kv_heads, T, head_dim]``.
            v: new values, same shape.

        Returns:
            keys and values ``[B, n_kv_heads, length + T, head_dim]`` (views into the cache).
        """
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise TunewizError(
                f"the KV cache holds {self.max_len} tokens but {end} were fed",
                hint="lower the number of new tokens or the prompt length, or build a larger cache",
            )
        self.keys[layer_idx][:, :, self.length : end] = k
        self.values[layer_idx][:, :, self.length : end] = v
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        """Mark ``num_tokens`` more positions as filled (called once per forward, after the last layer)."""
        self.length += num_tokens
