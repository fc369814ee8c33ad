"""The device a user picks in the Slicer module (auto, cpu, cuda), and its description for the GUI."""

from __future__ import annotations

from ..errors import DiffDefInputError


def device_choice(text: str) -> str:
    """Map the device combo box text (``Auto`` / ``CPU`` / ``CUDA``) to the library's ``auto`` / ``cpu`` / ``cuda``."""
    value = str(text).strip().lower()
    if value.startswith("cuda") or value.startswith("gpu"):
        return "cuda"
    if value.startswith("cpu"):
        return "cpu"
    if value in ("", "auto", "automatic"):
        return "auto"
    raise DiffDefInputError(f"device must be Auto, CPU or CUDA, found {text!r}")


def describe_device(choice: str = "auto") -> str:
    """One line naming the device a choice resolves to, for a GUI label (imports torch).

    For CUDA it gives the GPU's name and total memory from the device properties, which need no CUDA context: the
    label must not make the GUI process hold one (hundreds of MB of GPU memory) before any work runs on the GPU.
    A CUDA choice without a usable GPU gives the library's explanation instead of raising.

    Example:
        >>> describe_device("cpu")  # doctest: +SKIP
        'cpu (8 threads)'
    """
    import torch

    from ..device import select_device

    choice = device_choice(choice)
    try:
        device = select_device(choice)
    except DiffDefInputError as error:
        return str(error)
    if device.type == "cuda":
        index = device.index or 0
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 1024**3:.1f} GiB)"
    text = f"{device.type} ({torch.get_num_threads()} threads)"
    return text + ("; no CUDA GPU found" if choice == "auto" else "")
