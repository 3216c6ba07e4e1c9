#!/usr/bin/env bash
# Create a virtual environment and install tunewiz into it.
#
#   bash scripts/setup.sh          # runtime: .venv with tunewiz
#   bash scripts/setup.sh --dev    # + test/dev tools (pytest, transformers, peft, tensorboard, mlflow, wandb)
#
# torch: on a machine with an NVIDIA GPU, pip resolves tunewiz's `torch>=2.6` range to the default
# (CUDA) build. Without a GPU we install the CPU build of torch 2.13.0 first, so the range is already
# satisfied and no multi-GB CUDA build is pulled. Set TORCH_INDEX_URL to a PyTorch CPU wheel index on
# machines whose default index serves CUDA builds only.
# Environment: TUNEWIZ_VENV (default .venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TUNEWIZ_VENV:-.venv}"
python="${PYTHON:-python3}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; torch comes with its CUDA build" >&2
  else
    echo "setup: no NVIDIA GPU found; installing the CPU build of torch" >&2
    "${pip[@]}" install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
fi
"${pip[@]}" install -e ".${extras}"
echo "setup: done; tunewiz is at $venv/bin/tunewiz" >&2
