"""Device selection and the CUDA out-of-memory fallback (reference: torch's own CUDA availability)."""

from __future__ import annotations

import pytest
import torch

from DiffDefAtlasLib.device import run_with_cpu_fallback, select_device
from DiffDefAtlasLib.errors import DiffDefInputError


def test_select_device_names():
    """'cpu' is the CPU; 'auto' is CUDA exactly when torch reports CUDA."""
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_an_input_error():
    """Asking for CUDA where torch has none is the user's error, with a one-line message."""
    with pytest.raises(DiffDefInputError, match="CUDA"):
        select_device("cuda")


def test_unknown_device_name():
    """Only auto, cpu and cuda[:N] are accepted."""
    with pytest.raises(DiffDefInputError, match="expected one of"):
        select_device("tpu")


def test_out_of_memory_falls_back_to_cpu_with_a_warning():
    """A CUDA OOM reruns the same call on the CPU and warns; other errors propagate."""
    calls = []

    def work(device, value):
        calls.append(device.type)
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return value * 2

    with pytest.warns(RuntimeWarning, match="out of memory"):
        assert run_with_cpu_fallback(work, torch.device("cuda"), 21) == 42
    assert calls == ["cuda", "cpu"]

    def broken(device):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        run_with_cpu_fallback(broken, torch.device("cuda"))
