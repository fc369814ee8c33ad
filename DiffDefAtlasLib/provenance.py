"""What produced a result: package versions, device and peak memory, recorded in every ``summary.json``."""

from __future__ import annotations

import platform
import sys


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (``None`` where the platform cannot tell).

    Example:
        >>> peak_rss_mb() > 0
        True
    """
    try:
        import resource
    except ImportError:  # Windows
        return _windows_peak_working_set_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0**2  # kB on Linux, bytes on macOS


def _windows_peak_working_set_mb() -> float | None:
    """``PeakWorkingSetSize`` from ``GetProcessMemoryInfo`` (the Windows counterpart of the peak RSS)."""
    try:
        import ctypes
        from ctypes import wintypes

        class Counters(ctypes.Structure):
            _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
                (name, ctypes.c_size_t)
                for name in ("PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                             "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")
            ]

        counters = Counters()
        counters.cb = ctypes.sizeof(counters)
        process = getattr(ctypes, "windll").kernel32.GetCurrentProcess()  # windll: Windows only
        if not getattr(ctypes, "windll").psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
            return None
        return counters.PeakWorkingSetSize / 1024.0**2
    except Exception:
        return None


def current_rss_mb() -> float | None:
    """Resident memory of this process now, in MiB (Linux ``/proc``; ``None`` elsewhere). Used to watch for leaks.

    Example:
        >>> rss = current_rss_mb()
        >>> rss is None or rss > 0
        True
    """
    import os

    try:
        with open("/proc/self/statm", encoding="ascii") as stream:
            resident_pages = int(stream.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1024.0**2


def environment_info(device: str | None = None) -> dict[str, object]:
    """Versions of the package, Python, torch, MONAI, SimpleITK and numpy, the platform, the device and the peak RSS.

    ``device`` may be a torch device name (``"cpu"``, ``"cuda:0"``) or a description that starts with one.

    Example:
        >>> sorted(environment_info("cpu"))[:3]
        ['device', 'diffdef_atlas_version', 'monai_version']
    """
    import monai
    import numpy
    import SimpleITK
    import torch

    from . import __version__

    peak = peak_rss_mb()
    info: dict[str, object] = {
        "diffdef_atlas_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "simpleitk_version": SimpleITK.Version.VersionString(),
        "numpy_version": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device or "cpu"),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": None if peak is None else round(peak, 1),
    }
    name = str(device or "cpu").split()[0]
    if name.startswith("cuda") and torch.cuda.is_available():
        try:
            info["gpu_name"] = torch.cuda.get_device_name(torch.device(name))
            info["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(torch.device(name)) / 1024**2, 1)
        except (RuntimeError, ValueError, AssertionError):
            pass
    return info
