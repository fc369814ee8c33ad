"""Which packages the extension still has to install inside 3D Slicer.

torch comes from the PyTorch extension (``PyTorchUtils``); the rest (:data:`SLICER_PIP_REQUIREMENTS`)
from pip. NumPy, SimpleITK, VTK and Pillow ship with Slicer.

Example:
    >>> missing_dependencies(find_spec=lambda name: None, version_of={}.__getitem__)
    ['torch', 'monai', 'nibabel', 'safetensors', 'tqdm']
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import re

#: Extra Python packages the extension installs with pip inside Slicer (after asking). torch comes from the PyTorch
#: extension; numpy, SimpleITK, vtk and pillow ship with Slicer.
SLICER_PIP_REQUIREMENTS = ("monai>=1.4", "nibabel>=5.0", "safetensors>=0.4", "tqdm>=4.60")
#: The minimum torch version, passed to ``PyTorchUtils``.
TORCH_REQUIREMENT = ">=2.1"


def requirement_name(requirement: str) -> str:
    """The distribution name of a pip requirement: ``"monai>=1.4"`` gives ``"monai"``."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def missing_requirements(requirements: Sequence[str] = SLICER_PIP_REQUIREMENTS, version_of=None) -> list[str]:
    """The requirements not yet satisfied; ``version_of(name)`` returns an installed version or raises.

    Only ``>=`` lower bounds are compared (that is all :data:`SLICER_PIP_REQUIREMENTS` uses).

    Example:
        >>> missing_requirements(["monai>=1.4", "tqdm"], version_of={"monai": "1.3.2", "tqdm": "4.66"}.__getitem__)
        ['monai>=1.4']
    """
    if version_of is None:
        from importlib.metadata import version as version_of
    missing = []
    for requirement in requirements:
        name = requirement_name(requirement)
        try:
            installed = str(version_of(name))
        except Exception:  # PackageNotFoundError, KeyError from a lookup table
            missing.append(requirement)
            continue
        match = re.search(r">=\s*([0-9][0-9.]*)", requirement)
        if match and _version_tuple(installed) < _version_tuple(match.group(1)):
            missing.append(requirement)
    return missing


def _version_tuple(text: str) -> tuple[int, ...]:
    numbers = []
    for part in re.split(r"[.+-]", text):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def torch_installed(find_spec: Callable[[str], Any] | None = None) -> bool:
    """True when ``import torch`` can find the package (checked without importing it)."""
    if find_spec is None:
        from importlib.util import find_spec as default_find_spec

        find_spec = default_find_spec
    return find_spec("torch") is not None


def torch_problem(find_spec: Callable[[str], Any] | None = None, version_of: Callable[[str], str] | None = None) -> str | None:
    """Why the installed torch will not do (absent, or older than :data:`TORCH_REQUIREMENT`), or ``None`` when it will.

    Example:
        >>> torch_problem(find_spec=lambda name: object(), version_of={"torch": "1.13.1+cu117"}.__getitem__)
        'PyTorch 1.13.1+cu117 is installed; DiffDefAtlas needs torch>=2.1'
    """
    if not torch_installed(find_spec):
        return "PyTorch is not installed"
    try:
        found = str((version_of or _installed_version)("torch"))
    except Exception:  # importable but without distribution metadata: nothing to compare
        return None
    if missing_requirements(["torch" + TORCH_REQUIREMENT], version_of=lambda name: found):
        return f"PyTorch {found} is installed; DiffDefAtlas needs torch{TORCH_REQUIREMENT}"
    return None


def _installed_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def missing_dependencies(find_spec: Callable[[str], Any] | None = None, version_of: Callable[[str], str] | None = None) -> list[str]:
    """Names of the packages still to install or update: ``torch`` first (if missing or too old), then the pip
    requirements."""
    missing = [] if torch_problem(find_spec, version_of) is None else ["torch"]
    return missing + [requirement_name(r) for r in missing_pip_requirements(version_of=version_of)]


def torch_constraint(version_of: Callable[[str], str] | None = None) -> str | None:
    """A pip constraint that keeps the installed torch build (``"torch==2.5.1+cu121"``), or ``None`` without torch.

    Installing MONAI with plain pip could otherwise replace the PyTorch extension's CUDA build of torch by whatever
    wheel the index offers (often a CPU or a different CUDA build).

    Example:
        >>> torch_constraint({"torch": "2.5.1+cu121"}.__getitem__)
        'torch==2.5.1+cu121'
    """
    try:
        return f"torch=={(version_of or _installed_version)('torch')}"
    except Exception:  # PackageNotFoundError, KeyError from a lookup table
        return None


def installed_versions() -> dict[str, str]:
    """``{lower-case distribution name: version}`` of everything installed (caches cleared first)."""
    import importlib
    import importlib.metadata

    importlib.invalidate_caches()
    return {str(d.metadata["Name"]).lower(): str(d.version) for d in importlib.metadata.distributions() if d.metadata["Name"]}


def updated_imported_packages(before: dict[str, str], after: dict[str, str], imported: Sequence[str],
                              import_names: dict[str, Sequence[str]]) -> list[str]:
    """Distributions whose version changed (or that appeared) while one of their modules was already imported: the old
    code stays loaded until Slicer restarts. ``import_names`` maps a distribution to its top-level modules.

    Example:
        >>> updated_imported_packages({"monai": "1.3"}, {"monai": "1.4", "tqdm": "4.6"}, ["monai"], {"monai": ["monai"]})
        ['monai 1.3 -> 1.4']
    """
    loaded = set(imported)
    changed = []
    for name, version in sorted(after.items()):
        if before.get(name) != version and loaded.intersection(import_names.get(name, [name])):
            changed.append(f"{name} {before.get(name, 'new')} -> {version}")
    return changed


def distribution_import_names() -> dict[str, list[str]]:
    """``{lower-case distribution name: its top-level import names}`` (``importlib.metadata.packages_distributions``)."""
    import importlib.metadata

    names: dict[str, list[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            names.setdefault(distribution.lower(), []).append(module)
    return names


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
