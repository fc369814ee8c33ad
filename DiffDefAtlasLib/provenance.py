"""What produced a result: package versions, device and peak memory, recorded in every ``summary.json``."""

from __future__ import annotations

import platform
import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0**2


def environment_info(device: str | None = None) -> dict[str, object]:
    """Versions of the package, Python, torch and MONAI, the platform, and the device used.

    Example:
        >>> sorted(environment_info("cpu"))[:3]
        ['device', 'diffdef_atlas_version', 'monai_version']
    """
    import monai
    import torch

    from . import __version__

    info: dict[str, object] = {
        "diffdef_atlas_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "platform": platform.platform(),
        "device": device or "cpu",
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if device and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(torch.device(device))
        info["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(torch.device(device)) / 1024**2, 1)
    return info
