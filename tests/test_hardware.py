"""Hardware probe and `tunewiz doctor`: no GPU here, so it must say CPU; the token is never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunewiz.errors import TunewizError
from tunewiz.plan.hardware import describe, parse_memory, probe
from tunewiz.units import GiB

FAKE_TOKEN = "hf_tunewizFakeTokenForTests1234567890"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GB", 24 * GiB),
        ("24GiB", 24 * GiB),
        ("24", 24 * GiB),
        ("24 gb", 24 * GiB),
        ("80000MiB", 80000 * 1024**2),
        ("0.5TB", 512 * GiB),
        ("7.5", int(7.5 * GiB)),
    ],
)
def test_parse_memory(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "24XB", "-3GB", "0", "twenty"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(TunewizError, match="is not a memory size"):
        parse_memory(text)


def test_describe() -> None:
    m = describe(2, "24GB")
    assert (m.device, m.num_devices, m.memory_per_device) == ("cuda", 2, 24 * GiB)
    assert describe(0, "16").device == "cpu"


def test_probe_on_this_machine_finds_no_gpu() -> None:
    hw = probe()
    assert hw.gpus == () and not hw.cuda_available
    assert hw.ram_total > hw.ram_available > 0
    assert all(free > 0 for free in hw.disks.values())
    m = hw.machine()
    assert m.device == "cpu" and m.memory_per_device == hw.ram_available
    assert hw.extras["transformers"] is not None


def _doctor(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tunewiz", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_doctor_says_cpu_and_hides_the_token() -> None:
    out = _doctor(token=FAKE_TOKEN)
    assert out.returncode == 0, out.stderr
    assert "no GPU found — tunewiz will train on CPU" in out.stdout
    assert "Hugging Face token: configured" in out.stdout
    assert FAKE_TOKEN not in out.stdout + out.stderr
    assert "RAM" in out.stdout and "disk:" in out.stdout and "optional extras" in out.stdout


def test_doctor_json() -> None:
    out = _doctor("--json", token=FAKE_TOKEN)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["gpus"] == [] and report["hub_token"] is True
    assert report["cpu_count"] >= 1 and report["ram_total"] > 0
    assert FAKE_TOKEN not in out.stdout


def test_quick_probe_imports_no_torch_and_agrees_with_the_full_probe() -> None:
    code = (
        "import sys; from tunewiz.plan.hardware import probe; hw = probe(quick=True); "
        "print(len(hw.gpus), hw.cuda_available, hw.cuda_version, hw.torch_version, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    gpus, cuda, cuda_version, torch_version, imported = out.stdout.split()
    full = probe()
    assert (int(gpus), cuda == "True", imported) == (len(full.gpus), full.cuda_available, "False")
    assert cuda_version == "None" and torch_version == full.torch_version
