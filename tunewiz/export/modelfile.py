"""The Ollama ``Modelfile`` beside an exported GGUF, and the commands that run the model.

No ``TEMPLATE`` line: Ollama reads the chat template from the GGUF's ``tokenizer.chat_template``, which
holds the template the run trained with; a hand-written Go template could only drift from it. The stop
strings are the run's end-of-turn tokens (eos and the template's end-of-turn marker), which Ollama would
otherwise print and talk past; the sampling defaults come from the model's ``generation_config.json``
(greedy when it says ``do_sample: false``, as ``tunewiz chat`` does by default).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ollama's context default is small; a model's own maximum (128k for Llama 3.1) would reserve a KV cache
# most laptops cannot hold. The Modelfile asks for the model's context up to this.
MAX_NUM_CTX = 8192


@dataclass(frozen=True)
class Modelfile:
    """An Ollama Modelfile.

    Args:
        gguf_name: the GGUF file's name, relative to the Modelfile's folder.
        stop: stop strings, in order.
        parameters: other ``PARAMETER`` lines (``temperature``, ``top_p``, ``top_k``, ``num_ctx``, ...).
        comment: a first line saying where it came from.
    """

    gguf_name: str
    stop: tuple[str, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    comment: str = ""

    def text(self) -> str:
        """The file's contents."""
        lines = [f"# {self.comment}"] if self.comment else []
        lines.append(f"FROM ./{self.gguf_name}")
        lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in self.stop]
        lines += [f"PARAMETER {key} {value}" for key, value in self.parameters.items()]
        return "\n".join(lines) + "\n"


def sampling_parameters(model_dir: Path, context_length: int) -> dict[str, Any]:
    """Ollama ``PARAMETER`` defaults from a model folder's ``generation_config.json``.

    Args:
        model_dir: the folder with ``generation_config.json`` (may lack it: then greedy).
        context_length: the model's maximum positions (``num_ctx`` is capped at :data:`MAX_NUM_CTX`).
    """
    path = Path(model_dir) / "generation_config.json"
    gen = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    params: dict[str, Any] = {}
    if not gen.get("do_sample", False):
        params["temperature"] = 0
    else:
        for key in ("temperature", "top_p", "top_k"):
            if gen.get(key) is not None:
                params[key] = gen[key]
    if gen.get("repetition_penalty") not in (None, 1.0):
        params["repeat_penalty"] = gen["repetition_penalty"]
    params["num_ctx"] = min(context_length, MAX_NUM_CTX)
    return params


def run_commands(gguf_path: Path, modelfile_path: Path, model_name: str) -> list[str]:
    """The commands that load the export: Ollama, llama.cpp's chat CLI and its server.

    Args:
        gguf_path: the GGUF file.
        modelfile_path: the Modelfile beside it.
        model_name: the name to give the model in Ollama.
    """
    folder = shlex.quote(str(modelfile_path.parent))
    gguf = shlex.quote(str(gguf_path))
    return [
        f"cd {folder} && ollama create {model_name} -f Modelfile && ollama run {model_name}",
        f"llama-cli -m {gguf} --jinja -cnv --temp 0",
        f"llama-server -m {gguf} --jinja   # OpenAI-compatible API on http://127.0.0.1:8080",
    ]
