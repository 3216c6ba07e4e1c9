"""k-quants (``q4_k_m``, ``q5_k_m``, ``q6_k``) through llama.cpp's own quantizer.

k-quant mixes pick a type per tensor (more bits for ``attn_v`` and ``ffn_down`` in some layers, ...) with
llama.cpp's C code; reimplementing that would drift from llama.cpp. Two ways to reach it, tried in order:

1. the ``llama-cpp-python`` package (``llama_cpp.llama_model_quantize``, the same C function), when
   installed; ``pip install llama-cpp-python`` builds it;
2. the ``llama-quantize`` program (``$LLAMA_QUANTIZE``, else on ``PATH``), which llama.cpp's release
   archives and ``brew install llama.cpp`` provide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tunewiz.errors import TunewizError

# --quant value -> (llama.cpp's LLAMA_FTYPE_* number, the name llama-quantize takes)
K_QUANTS = {"q4_k_m": (15, "Q4_K_M"), "q5_k_m": (17, "Q5_K_M"), "q6_k": (18, "Q6_K")}
INSTALL_HINT = (
    "install llama.cpp's quantizer: `pip install llama-cpp-python` (builds llama.cpp, a few minutes), or "
    "`brew install llama.cpp` / a release from https://github.com/ggml-org/llama.cpp/releases and put "
    "`llama-quantize` on PATH (or set LLAMA_QUANTIZE); `--quant q8_0` needs neither"
)


def quantizer_available() -> str | None:
    """How a k-quant would be made here: ``llama-cpp-python``, a ``llama-quantize`` path, or None."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        return "llama-cpp-python"
    return os.environ.get("LLAMA_QUANTIZE") or shutil.which("llama-quantize")


def quantize(source: Path, target: Path, quant: str, *, threads: int | None = None) -> str:
    """Quantize the f16/bf16 GGUF ``source`` into ``target`` with llama.cpp; return which tool did it.

    Args:
        source: a complete 16-bit GGUF file.
        target: the file to write (replaced only when quantization succeeded).
        quant: a :data:`K_QUANTS` key.
        threads: CPU threads for llama.cpp (default: all).

    Raises:
        TunewizError: no quantizer is installed, or it failed.
    """
    ftype, name = K_QUANTS[quant]
    tool = quantizer_available()
    if tool is None:
        raise TunewizError(
            f"`--quant {quant}` needs llama.cpp's quantizer, which is not installed", hint=INSTALL_HINT
        )
    partial = target.with_name(f".{target.name}.tmp")
    try:
        if tool == "llama-cpp-python":
            _with_python_binding(source, partial, ftype, threads)
        else:
            _with_program(tool, source, partial, name, threads)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return tool


def _with_python_binding(source: Path, target: Path, ftype: int, threads: int | None) -> None:
    import ctypes

    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or 0
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise TunewizError(
            f"llama.cpp (llama-cpp-python) failed to quantize `{source}` (status {status})",
            hint="run `llama-quantize` on the f16 file by hand to see llama.cpp's message",
        )


def _with_program(program: str, source: Path, target: Path, name: str, threads: int | None) -> None:
    argv = [program, str(source), str(target), name, *([str(threads)] if threads else [])]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise TunewizError(
            f"`{program}` failed to quantize `{source}` (exit {done.returncode}): {' / '.join(tail)}",
            hint=f"run `{' '.join(argv)}` to see llama.cpp's full output",
        )
