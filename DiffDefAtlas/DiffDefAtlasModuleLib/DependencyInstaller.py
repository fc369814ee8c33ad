"""Install what the library needs inside Slicer, each step after asking the user.

torch comes through the PyTorch extension (``PyTorchUtils``), which picks the CUDA build matching the NVIDIA driver;
MONAI, nibabel, safetensors and tqdm through ``slicer.packaging.pip_ensure`` where this Slicer has it, else
``slicer.util.pip_install`` after a confirmation dialog. Which packages are missing is decided by
``DiffDefAtlasLib.slicer_support.dependencies``.
"""

import slicer
from slicer.i18n import tr as _

from DiffDefAtlasLib.slicer_support import dependencies


class DependencyInstaller:
    """Static helpers: list and install the missing packages."""

    @staticmethod
    def missingDependencies() -> list:
        """Names of the packages still to install (torch first)."""
        return dependencies.missing_dependencies()

    @staticmethod
    def ensureTorch() -> None:
        """Install PyTorch through the PyTorch extension if it is missing (PyTorchUtils asks first)."""
        if dependencies.torch_installed():
            return
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
    def ensurePipPackages() -> None:
        """Install the missing pip packages, after asking."""
        missing = dependencies.missing_pip_requirements()
        if not missing:
            return
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            # asks the user (prompt_install) and offers a restart when an already imported package was updated
            packaging.pip_ensure(dependencies.pip_requirements(missing), requester="DiffDefAtlas")
        else:
            if not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
                _("DiffDefAtlas needs these Python packages: {packages}. Download and install them now?").format(
                    packages=", ".join(missing)
                ),
                _("Install Python packages"),
            ):
                raise RuntimeError("Installation cancelled; DiffDefAtlas needs " + ", ".join(missing))
            slicer.util.pip_install(missing)
        still = dependencies.missing_pip_requirements()
        if still:
            raise RuntimeError("These packages are still missing after installation: " + ", ".join(still))

    @staticmethod
    def ensureDependencies() -> None:
        """Install everything that is missing: torch first, then the pip packages."""
        if not dependencies.missing_dependencies():
            return
        DependencyInstaller.ensureTorch()
        DependencyInstaller.ensurePipPackages()
