"""Which packages the extension still has to install inside 3D Slicer.

torch comes from the PyTorch extension (``PyTorchUtils``); the rest (:data:`DiffDefAtlasLib.scene.SLICER_PIP_REQUIREMENTS`)
from pip. NumPy, SimpleITK, VTK and Pillow ship with Slicer.

Example:
    >>> missing_dependencies(find_spec=lambda name: None, version_of={}.__getitem__)
    ['torch', 'monai', 'nibabel', 'safetensors', 'tqdm']
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..scene import SLICER_PIP_REQUIREMENTS, TORCH_REQUIREMENT, missing_requirements, requirement_name


def torch_installed(find_spec: Callable[[str], Any] | None = None) -> bool:
    """True when ``import torch`` can find the package (checked without importing it)."""
    if find_spec is None:
        from importlib.util import find_spec as default_find_spec

        find_spec = default_find_spec
    return find_spec("torch") is not None


def missing_dependencies(find_spec: Callable[[str], Any] | None = None, version_of: Callable[[str], str] | None = None) -> list[str]:
    """Names of the packages still to install: ``torch`` first (if missing), then the pip requirements."""
    missing = [] if torch_installed(find_spec) else ["torch"]
    return missing + [requirement_name(r) for r in missing_pip_requirements(version_of=version_of)]


def missing_pip_requirements(version_of: Callable[[str], str] | None = None) -> list[str]:
    """The pip requirement strings (``"monai>=1.4"``...) not yet satisfied, for ``slicer.util.pip_install``.

    Looking up installed versions (``version_of`` not given) first clears the import system's caches, so packages that
    pip installed a moment ago in another process are seen.
    """
    if version_of is None:
        import importlib

        importlib.invalidate_caches()
    return missing_requirements(version_of=version_of)


def torch_version_requirement() -> str:
    """The version requirement passed to ``PyTorchUtilsLogic.installTorch(torchVersionRequirement=...)``."""
    return TORCH_REQUIREMENT


def pip_requirements(requirements: Sequence[str] = SLICER_PIP_REQUIREMENTS) -> list[Any]:
    """The pip requirements as ``packaging.requirements.Requirement`` objects, the form ``slicer.packaging.pip_ensure``
    accepts in every Slicer version that has it."""
    from packaging.requirements import Requirement

    return [Requirement(r) for r in requirements]
