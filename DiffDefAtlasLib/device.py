"""Choosing the torch device, and falling back to the CPU when the GPU runs out of memory.

Example:
    >>> select_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import warnings
from typing import Callable, TypeVar

from .errors import DiffDefInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")

T = TypeVar("T")


def select_device(name: str = "auto"):
    """The torch device for ``name``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).

    Asking for CUDA on a machine without it raises :class:`DiffDefInputError`.

    Example:
        >>> select_device("auto").type in ("cpu", "cuda")
        True
    """
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit() and text[5:].isascii()):
        if not torch.cuda.is_available():
            raise DiffDefInputError(f"device {name!r}: CUDA was requested but torch finds no CUDA GPU; use 'cpu' or 'auto'")
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DiffDefInputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are present")
        return device
    raise DiffDefInputError(f"device: expected one of {', '.join(DEVICE_CHOICES)} (or cuda:N), found {name!r}")


def describe_device(device) -> str:
    """A short human-readable name, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA RTX 4060, 8.0 GiB)"``."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return f"cuda:{index} ({props.name}, {props.total_memory / 1024**3:.1f} GiB)"


def run_with_cpu_fallback(function: Callable[..., T], device, *args, **kwargs) -> T:
    """Call ``function(device, *args, **kwargs)``; if CUDA runs out of memory, warn and call it again on the CPU.

    Example:
        >>> run_with_cpu_fallback(lambda device, x: (device.type, x + 1), select_device("cpu"), 1)
        ('cpu', 2)
    """
    import torch

    device = torch.device(device)
    try:
        return function(device, *args, **kwargs)
    except torch.cuda.OutOfMemoryError as error:
        if device.type != "cuda":
            raise
        torch.cuda.empty_cache()
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        warnings.warn(f"GPU ran out of memory ({first_line}); running again on the CPU", RuntimeWarning, stacklevel=2)
        return function(torch.device("cpu"), *args, **kwargs)
