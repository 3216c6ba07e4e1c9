"""Start-up time of the commands people type first: ``tunewiz --help`` (target < 0.3 s) and
``tunewiz plan`` on a shipped preset (target < 1 s), best of ``--repeats`` fresh processes each,
and whether the process imported torch (``python -X importtime`` lists every module it loaded).

    python bench/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

COMMANDS = {
    "tunewiz --help": ["--help"],
    "tunewiz plan presets/tiny-lora.yaml": ["plan", "presets/tiny-lora.yaml"],
    "tunewiz plan --model llama-3.1-8b --gpus 1 --gpu-memory 24GB": [
        "plan",
        "--model",
        "llama-3.1-8b",
        "--gpus",
        "1",
        "--gpu-memory",
        "24GB",
    ],
}
TARGETS = {"tunewiz --help": 0.3}  # seconds; every plan command: 1.0


def measure(args: list[str], repeats: int) -> tuple[float, bool]:
    """Best wall time of ``python -m tunewiz ARGS`` over fresh processes, and whether torch was imported."""
    argv = [sys.executable, "-m", "tunewiz", *args]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], capture_output=True, text=True, check=True
    )
    imported_torch = any(line.rstrip().endswith("| torch") for line in trace.stderr.splitlines())
    return best, imported_torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"| command | best of {args.repeats} | target | imports torch |")
    print("|---|---:|---:|---|")
    for label, cmd in COMMANDS.items():
        seconds, torch_loaded = measure(cmd, args.repeats)
        target = TARGETS.get(label, 1.0)
        print(
            f"| `{label}` | {seconds:.2f} s | < {target} s {'✓' if seconds < target else '✗'} | "
            f"{'yes' if torch_loaded else 'no'} |"
        )


if __name__ == "__main__":
    main()
