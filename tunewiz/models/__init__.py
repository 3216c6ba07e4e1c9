"""The native Llama-family model (Llama 2/3, Mistral, Qwen2) with Hugging Face's parameter names.

- ``config``: ``LlamaConfig``, read from and written to ``config.json`` (no torch import).
- ``llama``: ``LlamaForCausalLM`` and its blocks (``forward`` returns logits, or the final hidden
  states for the loss); ``kv_cache``: ``KVCache`` for generation.
- ``loss``: ``chunked_cross_entropy``, the training loss that never holds [B*T, V] logits.
- ``loading``: ``resolve_model_dir``, ``load_model``, ``save_model`` (safetensors only).

Import from the submodules; this package imports nothing so that the CLI stays fast.
"""
