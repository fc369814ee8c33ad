"""Repeated timing with warm-up, robust statistics (median, quartiles) and peak memory.

Example:
    >>> t = measure(lambda: sum(range(1000)), repeats=5, warmup=1)
    >>> t.runs, t.minimum <= t.median <= t.maximum
    (5, True)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from ..provenance import peak_rss_mb


@dataclass
class Timing:
    """Seconds of ``runs`` repeated calls (after ``warmup`` calls left out): median, quartiles, min, max, first call."""

    runs: int
    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    first: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Rounded plain dict for JSON."""
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarise(seconds: list[float], first: float | None = None) -> Timing:
    """Median, quartiles and range of a list of durations.

    Example:
        >>> summarise([1.0, 2.0, 3.0, 4.0, 100.0]).median
        3.0
    """
    if not seconds:
        raise ValueError("no timings to summarise")
    q1, q3 = (float(v) for v in np.percentile(seconds, [25, 75]))
    return Timing(len(seconds), float(statistics.median(seconds)), q1, q3, float(min(seconds)), float(max(seconds)), first)


def measure(function: Callable[[], Any], repeats: int = 5, warmup: int = 1, synchronize: Callable[[], None] | None = None) -> Timing:
    """Call ``function`` ``warmup`` times (the first duration is kept as ``first``), then time ``repeats`` calls.

    ``synchronize`` (e.g. ``torch.cuda.synchronize``) runs before each clock read so GPU work is counted.
    """
    sync = synchronize or (lambda: None)
    first = None
    for k in range(warmup):
        sync()
        start = time.perf_counter()
        function()
        sync()
        if k == 0:
            first = time.perf_counter() - start
    seconds = []
    for _ in range(max(1, repeats)):
        sync()
        start = time.perf_counter()
        function()
        sync()
        seconds.append(time.perf_counter() - start)
    return summarise(seconds, first)


def memory_figures(device: str = "cpu") -> dict[str, float | None]:
    """Peak resident memory of this process (MB) and, on CUDA, the peak allocated GPU memory (MB) since the last reset."""
    out: dict[str, float | None] = {"peak_rss_mb": round(peak_rss_mb() or 0.0, 1) or None}
    if str(device).startswith("cuda"):
        import torch

        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    return out
