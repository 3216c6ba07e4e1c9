"""LoRA: ``LoRALinear`` and applying it (``layer``), PEFT adapter files (``peft_files``), merging (``merge``).

The public names are re-exported here, so ``from tunewiz.lora import apply_lora`` keeps working.
"""

from tunewiz.lora.layer import (
    LoRALinear,
    apply_lora,
    init_lora_parameters,
    lora_disabled,
    lora_modules,
    lora_parameter_count,
    lora_state_dict,
)
from tunewiz.lora.merge import merge_lora
from tunewiz.lora.peft_files import (
    from_peft_state_dict,
    load_peft_adapter,
    save_peft_adapter,
    to_peft_state_dict,
)

__all__ = [
    "LoRALinear",
    "apply_lora",
    "from_peft_state_dict",
    "init_lora_parameters",
    "load_peft_adapter",
    "lora_disabled",
    "lora_modules",
    "lora_parameter_count",
    "lora_state_dict",
    "merge_lora",
    "save_peft_adapter",
    "to_peft_state_dict",
]
