"""Install what the library needs inside Slicer, each step after asking the user.

torch comes through the PyTorch extension (``PyTorchUtils``), which picks the CUDA build matching the NVIDIA driver;
MONAI, nibabel, safetensors and tqdm through ``slicer.packaging.pip_ensure`` where this Slicer has it (5.13 and
newer), else ``slicer.util.pip_install`` after a confirmation dialog, with a restart offered when a package that was
already imported was updated (5.10 has no ``slicer.packaging``). Either way pip runs under a constraints file that pins
the installed torch, so MONAI cannot replace the PyTorch extension's build. In testing mode (``Slicer --testing``)
nothing is ever downloaded. Which packages are missing is decided by ``DiffDefAtlasLib.slicer_support.dependencies``.
"""

import sys
import tempfile
from pathlib import Path

import slicer
from slicer.i18n import tr as _

from DiffDefAtlasLib.slicer_support import dependencies


class DependencyInstaller:
    """Static helpers: list and install the missing packages."""

    @staticmethod
    def missingDependencies() -> list:
        """Names of the packages still to install or update (torch first)."""
        return dependencies.missing_dependencies()

    @staticmethod
    def _refuseInTestingMode(what: str) -> None:
        if slicer.app.testingEnabled():
            raise RuntimeError(f"{what} not installed; Slicer's testing mode downloads nothing (install it first)")

    @staticmethod
    def ensureTorch() -> None:
        """Install PyTorch through the PyTorch extension if it is missing (PyTorchUtils asks first); a torch older
        than the requirement is an error that says what to do."""
        problem = dependencies.torch_problem()
        if problem is None:
            return
        if dependencies.torch_installed():  # importable but too old: PyTorchUtils would not replace it by itself
            raise RuntimeError(problem + ". Update it in the PyTorch Utils module (or pip), restart Slicer and try again.")
        DependencyInstaller._refuseInTestingMode("PyTorch")
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise RuntimeError(
                "DiffDefAtlas needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, restart Slicer,"
                " and try again."
            ) from error
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.torchInstalled():
            return
        torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=dependencies.torch_version_requirement())
        if torch is None:
            raise RuntimeError("PyTorch was not installed; DiffDefAtlas cannot run without it.")

    @staticmethod
    def _constraintsFile() -> Path:
        """A pip constraints file pinning the installed torch (empty without torch)."""
        constraint = dependencies.torch_constraint()
        handle = tempfile.NamedTemporaryFile("w", prefix="DiffDefAtlas-constraints-", suffix=".txt", delete=False)
        with handle:
            handle.write((constraint or "") + "\n")
        return Path(handle.name)

    @staticmethod
    def ensurePipPackages() -> None:
        """Install the missing pip packages, after asking, keeping the installed torch."""
        missing = dependencies.missing_pip_requirements()
        if not missing:
            return
        DependencyInstaller._refuseInTestingMode(", ".join(missing))
        constraints = DependencyInstaller._constraintsFile()
        try:
            packaging = getattr(slicer, "packaging", None)
            if packaging is not None and hasattr(packaging, "pip_ensure"):
                # asks (prompt_install) and offers a restart when an already imported package was updated
                packaging.pip_ensure(dependencies.pip_requirements(missing), constraints=str(constraints),
                                     requester="DiffDefAtlas")
            else:
                DependencyInstaller._pipInstallAndOfferRestart(missing, constraints)
        finally:
            constraints.unlink(missing_ok=True)
        still = dependencies.missing_pip_requirements()
        if still:
            raise RuntimeError("These packages are still missing after installation: " + ", ".join(still))

    @staticmethod
    def _pipInstallAndOfferRestart(missing: list, constraints: Path) -> None:
        """Slicer 5.10: ``slicer.util.pip_install`` after a confirmation, then the restart ``pip_ensure`` would offer."""
        if not slicer.util.confirmOkCancelDisplay(
            _("DiffDefAtlas needs these Python packages: {packages}. Download and install them now?").format(
                packages=", ".join(missing)),
            _("Install Python packages"),
        ):
            raise RuntimeError("Installation cancelled; DiffDefAtlas needs " + ", ".join(missing))
        before = dependencies.installed_versions()
        slicer.util.pip_install(["-c", str(constraints), *missing])
        updated = dependencies.updated_imported_packages(before, dependencies.installed_versions(), list(sys.modules),
                                                         dependencies.distribution_import_names())
        if updated and slicer.util.confirmYesNoDisplay(
            _("These packages were updated while an older version was in use: {packages}. Restart Slicer now so that"
              " the new versions are used?").format(packages=", ".join(updated)),
            _("Restart Slicer"),
        ):
            slicer.util.restart()

    @staticmethod
    def ensureDependencies() -> None:
        """Install everything that is missing: torch first, then the pip packages."""
        if not dependencies.missing_dependencies():
            return
        DependencyInstaller.ensureTorch()
        DependencyInstaller.ensurePipPackages()
