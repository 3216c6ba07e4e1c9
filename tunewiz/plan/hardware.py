"""What this machine can train with: GPUs, host RAM, disk, Hub token, optional extras.

``probe()`` looks, at one of two depths: the full probe asks torch (imported inside it; every
``torch.cuda`` call is guarded), the quick one (``quick=True``) reads the GPUs with ``nvidia-smi`` and
never imports torch, for the wizard's first question and ``tunewiz train``'s plan. Neither infers a GPU
from nvcc or /usr/local/cuda. ``describe()`` builds the same :class:`Machine` from a description
(``--gpus 2 --gpu-memory 24GB``) for planning another machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunewiz.errors import TunewizError
from tunewiz.units import GiB, MiB

OPTIONAL_EXTRAS = ("transformers", "peft", "lm_eval", "torchao", "pynvml")
_UNITS = {
    "": GiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "t": 1024 * GiB,
    "tb": 1024 * GiB,
    "tib": 1024 * GiB,
}


@dataclass(frozen=True)
class Gpu:
    """One CUDA device.

    Args:
        index: CUDA ordinal.
        name: product name.
        total_memory: bytes.
        free_memory: bytes free now (None when unknown).
        compute_capability: ``"8.9"``.
        bf16: supports bfloat16 compute.
    """

    index: int
    name: str
    total_memory: int
    free_memory: int | None
    compute_capability: str
    bf16: bool


@dataclass(frozen=True)
class Machine:
    """What the planner needs of a machine: the device kind, how many, and the memory of each.

    Args:
        device: ``cuda`` or ``cpu``.
        num_devices: GPUs (cuda), or training processes (cpu).
        memory_per_device: bytes one device (or, on CPU, one process) may use.
        name: for messages: ``2 × NVIDIA GeForce RTX 4090`` or ``CPU (24.0 GiB RAM)``.
        bf16: the devices compute in bfloat16 well.
    """

    device: str
    num_devices: int
    memory_per_device: int
    name: str
    bf16: bool = True


@dataclass(frozen=True)
class Hardware:
    """Everything ``tunewiz doctor`` reports.

    Args:
        gpus: detected CUDA devices (empty without a GPU).
        cuda_available: ``torch.cuda.is_available()`` (quick probe: nvidia-smi listed a GPU).
        torch_version: installed torch (None when it is not installed).
        cuda_version: CUDA torch was built with (None for a CPU build, or after a quick probe).
        driver_version: NVIDIA driver (None unless pynvml or nvidia-smi can tell).
        cpu_count: logical CPUs.
        ram_total: host RAM bytes.
        ram_available: host RAM bytes available now.
        disks: path -> free bytes, for the runs directory and the Hugging Face cache.
        hub_token: whether a Hugging Face token is configured (the token itself is never kept).
        extras: optional package -> version, or None when not installed.
        notes: anything that went wrong while probing, as sentences.
    """

    gpus: tuple[Gpu, ...]
    cuda_available: bool
    torch_version: str | None
    cuda_version: str | None
    driver_version: str | None
    cpu_count: int
    ram_total: int
    ram_available: int
    disks: dict[str, int]
    hub_token: bool
    extras: dict[str, str | None]
    notes: tuple[str, ...] = field(default=())

    def machine(self, processes: int = 1) -> Machine:
        """The planner's view: the GPUs, or host RAM split over ``processes`` CPU ranks.

        Args:
            processes: CPU training processes sharing the RAM (ignored with GPUs).
        """
        if self.gpus:
            smallest = min(self.gpus, key=lambda g: g.total_memory)
            name = f"{len(self.gpus)} × {smallest.name}"
            return Machine(
                "cuda", len(self.gpus), smallest.total_memory, name, all(g.bf16 for g in self.gpus)
            )
        return Machine(
            "cpu",
            processes,
            self.ram_available // processes,
            f"CPU ({self.ram_available / GiB:.1f} GiB RAM available)",
            bf16=True,
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "gpus": [asdict(g) for g in self.gpus], "notes": list(self.notes)}


def parse_memory(text: str) -> int:
    """Bytes from ``24GB``, ``24GiB``, ``24``, ``24000MiB``, ``0.5TB``.

    GPU makers' "GB" are GiB (an RTX 4090 "24 GB" has 24564 MiB), so GB and GiB both mean 1024³;
    a bare number is GiB.

    Args:
        text: the value of ``--gpu-memory``.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise TunewizError(
            f"--gpu-memory `{text}` is not a memory size",
            hint="write it like `24GB`, `24GiB`, `24` (GiB) or `80000MiB`",
        )
    return int(float(match.group(1)) * _UNITS[unit])


def describe(gpus: int, gpu_memory: str | int, name: str | None = None) -> Machine:
    """A described machine: ``gpus`` GPUs of ``gpu_memory`` each (0 GPUs: a CPU with that much RAM).

    Args:
        gpus: number of GPUs (0 for CPU).
        gpu_memory: per-GPU memory, as bytes or a string for :func:`parse_memory`.
        name: shown in messages; defaults to ``2 × 24 GiB GPU``.
    """
    if gpus < 0:
        raise TunewizError(f"--gpus {gpus} is negative", hint="give the number of GPUs, e.g. `--gpus 2`")
    memory = gpu_memory if isinstance(gpu_memory, int) else parse_memory(gpu_memory)
    if gpus == 0:
        return Machine("cpu", 1, memory, name or f"CPU ({memory / GiB:.0f} GiB RAM)")
    return Machine("cuda", gpus, memory, name or f"{gpus} × {memory / GiB:.0f} GiB GPU")


def probe(runs_dir: str | Path = "runs", *, quick: bool = False) -> Hardware:
    """Look at this machine. Never fails: what cannot be probed becomes a note.

    Args:
        runs_dir: where run directories go (its free disk is reported; it need not exist).
        quick: read the GPUs with ``nvidia-smi`` instead of torch, so torch is never imported (torch
            takes seconds to import; the wizard's first question must appear at once). It cannot
            tell the CUDA version torch was built with, nor whether torch can use the GPUs.
    """
    import psutil

    notes: list[str] = []
    if quick:
        gpus, driver = _smi_gpus(notes)
        cuda_available, torch_version, cuda_version = bool(gpus), _version("torch"), None
    else:
        import torch

        gpus, cuda_available = _cuda_gpus(torch, notes)
        torch_version, cuda_version = torch.__version__, torch.version.cuda
        driver = _driver_version(notes) if gpus else None
    mem = psutil.virtual_memory()
    return Hardware(
        gpus=gpus,
        cuda_available=cuda_available,
        torch_version=torch_version,
        cuda_version=cuda_version,
        driver_version=driver,
        cpu_count=os.cpu_count() or 1,
        ram_total=int(mem.total),
        ram_available=int(mem.available),
        disks={str(p): _free_disk(p) for p in (Path(runs_dir).resolve(), hf_cache_dir())},
        hub_token=_hub_token_configured(),
        extras={name: _version(name) for name in OPTIONAL_EXTRAS},
        notes=tuple(notes),
    )


def hf_cache_dir() -> Path:
    """Where the Hugging Face hub cache lives (``HF_HUB_CACHE``, ``HF_HOME``/hub, or the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def _cuda_gpus(torch: object, notes: list[str]) -> tuple[tuple[Gpu, ...], bool]:
    try:
        available = bool(torch.cuda.is_available())  # type: ignore[attr-defined]
    except Exception as exc:  # a broken driver raises here rather than returning False
        notes.append(f"torch.cuda.is_available() failed: {exc}")
        return (), False
    if not available:
        return (), False
    gpus = []
    for index in range(torch.cuda.device_count()):  # type: ignore[attr-defined]
        try:
            props = torch.cuda.get_device_properties(index)  # type: ignore[attr-defined]
            free: int | None
            try:
                free, _ = torch.cuda.mem_get_info(index)  # type: ignore[attr-defined]
            except Exception:
                free = None
            gpus.append(
                Gpu(
                    index,
                    props.name,
                    int(props.total_memory),
                    free,
                    f"{props.major}.{props.minor}",
                    props.major >= 8,
                )
            )  # bf16 tensor cores: Ampere (8.x) and newer
        except Exception as exc:
            notes.append(f"GPU {index} could not be queried: {exc}")
    return tuple(gpus), True


def _smi_gpus(notes: list[str]) -> tuple[tuple[Gpu, ...], str | None]:
    """(GPUs, driver version) as ``nvidia-smi`` lists them; nothing when it is not installed.

    nvidia-smi ships with the driver and answers in ~0.1 s, where torch takes seconds to import.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return (), None
    query = "index,name,memory.total,memory.free,compute_cap,driver_version"
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"nvidia-smi failed: {exc}")
        return (), None
    gpus, driver = [], None
    for line in out.strip().splitlines():
        # The name may contain commas: split the fixed fields off both ends.
        index, rest = line.split(",", 1)
        name, total_mib, free_mib, cc, driver = (part.strip() for part in rest.rsplit(",", 4))
        free = int(float(free_mib)) * MiB if free_mib.replace(".", "").isdigit() else None
        gpus.append(Gpu(int(index), name, int(float(total_mib)) * MiB, free, cc, float(cc) >= 8.0))
    return tuple(gpus), driver


def _driver_version(notes: list[str]) -> str | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as exc:  # NVMLError_LibraryNotFound and friends
        notes.append(f"NVML unavailable ({type(exc).__name__}); driver version unknown")
        return None


def _free_disk(path: Path) -> int:
    # The directory may not exist yet: measure the nearest existing parent (the same filesystem).
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def _hub_token_configured() -> bool:
    try:
        from huggingface_hub import get_token
    except ImportError:
        return bool(os.environ.get("HF_TOKEN"))
    return get_token() is not None


def _version(package: str) -> str | None:
    dist = {"lm_eval": "lm-eval", "pynvml": "nvidia-ml-py"}.get(package, package)
    for name in (dist, package):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
