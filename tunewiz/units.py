"""Units and the way tunewiz writes sizes, counts and durations for people (a leaf: no imports).

Memory is counted in binary units (``GiB`` = 1024³ bytes, as GPU makers' "GB" are); files on disk
and on the Hub in decimal ones (``GB`` = 10⁹ bytes, as ``df -H`` and the Hub show them).
"""

from __future__ import annotations

import math

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def fmt_bytes(n: float | None) -> str:
    """Memory in binary units: ``1.50 GiB``, ``12.3 GiB``, ``312 MiB``; ``-`` for None.

    Args:
        n: bytes.
    """
    if n is None:
        return "-"
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            value = n / size
            return (
                f"{value:.2f} {unit}"
                if value < 10
                else f"{value:.1f} {unit}"
                if value < 100
                else f"{value:.0f} {unit}"
            )
    return f"{int(n)} B"


def fmt_disk_bytes(n: int) -> str:
    """A file or disk size in decimal units: ``4.97 GB``, ``312.5 MB``.

    Args:
        n: bytes.
    """
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def fmt_count(n: int | None, *, thousand: str = "K") -> str:
    """A count with a suffix: ``1.2M``, ``350.0K``, ``812``; ``-`` for None.

    Args:
        n: the count.
        thousand: the symbol for 10³ (``k`` in model cards, SI's; ``K`` on the dashboard).
    """
    if n is None:
        return "-"
    for suffix, size in (("B", 1e9), ("M", 1e6), (thousand, 1e3)):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def shared_decimals(values: list[float | None], *, significant: int = 5) -> int:
    """Decimals for the numbers of one quantity shown side by side (base, fine-tuned, their change), so
    that they line up: enough for ``significant`` digits of the largest magnitude, ``significant - 1``
    for magnitudes under 1, and none from 10^``significant`` up (perplexity 40935 beside 1534).

    Args:
        values: the numbers; None and non-finite ones are skipped.
        significant: significant digits of the largest.
    """
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    largest = max(finite, default=0.0)
    magnitude = math.floor(math.log10(largest)) if largest >= 1 else 0
    return max(0, significant - 1 - magnitude)


def fmt_duration(seconds: float | None, *, long: bool = False) -> str:
    """``1h 02m``, ``3m 12s``, ``12s`` (``long``: ``1 h 02 min``, ``3 min 12 s``, ``12 s``); ``-`` for
    None or a non-finite value.

    Args:
        seconds: the duration.
        long: spelled out for prose (the model card) instead of the dashboard's short form.
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if long:
        return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"
