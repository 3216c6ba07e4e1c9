"""tunewiz: fine-tune open LLMs with LoRA or full fine-tuning, planned to fit in memory."""

__version__ = "0.1.0"
