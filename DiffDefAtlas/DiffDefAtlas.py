"""DiffDefAtlas: conditional brain atlases in 3D Slicer.

This file is glue. The widget wires ``Resources/UI/DiffDefAtlas.ui`` to the logic; the logic moves arrays and
matrices between MRML nodes and ``DiffDefAtlasLib``, which does the work (``DiffDefAtlasLib.api``) and makes every
display decision (``DiffDefAtlasLib.scene``, ``DiffDefAtlasLib.process``). Heavy packages (torch, MONAI) are imported
only inside functions, after the user has agreed to install them.

Console use::

    logic = slicer.util.getModuleLogic("DiffDefAtlas")
    nodes = logic.generateAtlas(model="brain3d", conditions={"age": 72, "sex": "F"})
    logic.registerVolume(getNode("MRHead"), nodes.atlas)
"""

import json
import logging
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLGridTransformNode, vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _addLibraryToPath() -> Path:
    """Make ``DiffDefAtlasLib`` importable and return the folder that holds it.

    An installed extension has it beside this file; a source checkout (module path added in the Application
    settings) has it one folder up.
    """
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        if (folder / "DiffDefAtlasLib" / "__init__.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return folder
    logging.error(f"DiffDefAtlasLib not found next to {here} or in {here.parent}; reinstall the extension")
    return here


LIBRARY_PARENT = _addLibraryToPath()

from DiffDefAtlasLib import process, scene  # noqa: E402  (numpy only; no torch)

COLOR_TABLE_NAME = "DiffDefAtlas tissue labels"
ATTRIBUTE_PREFIX = "DiffDefAtlas."


#
# Module
#


class DiffDefAtlas(ScriptedLoadableModule):
    """Module description shown in Slicer's Help & Acknowledgement panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffDef Atlas")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffDefAtlas developers"]
        self.parent.helpText = _(
            "Generate a brain atlas for chosen conditions (age, sex, ventricle volume...) with a diffusion model"
            " of deformation fields, see how it deforms the MNI ICBM152 template (grid, Jacobian, folding),"
            " and register a loaded scan to it."
            ' See the <a href="https://github.com/DiffDefAtlas/DiffDefAtlas#3d-slicer">documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Method after Diff-Def (arXiv 2403.16776). Template: derived from MNI ICBM152 2009a nonlinear symmetric,"
            " Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute."
        )


#
# Parameter node
#


@parameterNodeWrapper
class DiffDefAtlasParameterNode:
    """GUI state saved with the scene. Condition values are JSON text because each model has its own conditions."""

    model: str = "brain3d"
    conditionsJson: str = "{}"
    allowExtrapolation: bool = False
    liveUpdate: bool = True
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    steps: Annotated[int, WithinRange(0, 1000)] = 0  # 0: the model's default
    device: str = "auto"
    deformationDisplay: str = "grid"  # none, grid or glyph
    deformationScale: Annotated[float, WithinRange(0.1, 10.0)] = 1.0
    gridSpacing: Annotated[float, WithinRange(2.0, 40.0)] = 8.0
    foreground: str = "jacobian"  # jacobian, magnitude or none
    foregroundOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    jacobianHalfWidth: Annotated[float, WithinRange(0.05, 2.0)] = 0.5
    showFolding: bool = True
    inputVolume: vtkMRMLScalarVolumeNode
    affine: bool = True
    refineIterations: Annotated[int, WithinRange(0, 1000)] = 0
    # nodes of the current atlas ("makes or updates": generating again reuses them)
    atlasVolume: vtkMRMLScalarVolumeNode
    atlasLabels: vtkMRMLLabelMapVolumeNode
    atlasSegmentation: vtkMRMLSegmentationNode
    deformation: vtkMRMLGridTransformNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    magnitudeVolume: vtkMRMLScalarVolumeNode
    foldingSegmentation: vtkMRMLSegmentationNode


@dataclass
class AtlasNodes:
    """The nodes of one generated atlas; ``result`` is the library's ``AtlasResult``."""

    atlas: Any
    labels: Any
    segmentation: Any
    transform: Any
    jacobian: Any
    magnitude: Any
    folding: Any
    result: Any = None


@dataclass
class RegistrationNodes:
    """The nodes of one registration: the scan in atlas space, the transform (atlas to scan), its Jacobian and the
    atlas labels on the scan (``None`` when the atlas had no labels)."""

    warped: Any
    transform: Any
    jacobian: Any
    labels: Any = None
    segmentation: Any = None
    result: Any = None


#
# Widget
#


class DiffDefAtlasWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the .ui to :class:`DiffDefAtlasLogic`; condition sliders are built from the selected model card."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._controls = {}  # condition name -> scene.ConditionControl
        self._conditionWidgets = {}  # condition name -> (value widget, "use" check box)
        self._job = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffDefAtlas.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffDefAtlasLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for comboBox, items in (
            (self.ui.deviceComboBox, ((_("Auto"), "auto"), (_("CPU"), "cpu"), (_("CUDA (GPU)"), "cuda"))),
            (self.ui.deformationModeComboBox, ((_("Grid"), "grid"), (_("Glyphs"), "glyph"), (_("Hidden"), "none"))),
            (self.ui.foregroundComboBox, ((_("Jacobian determinant"), "jacobian"),
                                          (_("Displacement magnitude"), "magnitude"), (_("None"), "none"))),
        ):
            comboBox.clear()
            for text, data in items:
                comboBox.addItem(text, data)

        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.allowExtrapolationCheckBox.connect("toggled(bool)", lambda checked: self.rebuildConditionWidgets())
        self.ui.generateButton.connect("clicked(bool)", self.onGenerate)
        self.ui.deformationModeComboBox.connect("currentIndexChanged(int)", self.onDisplayChoiceChanged)
        self.ui.foregroundComboBox.connect("currentIndexChanged(int)", self.onDisplayChoiceChanged)
        self.ui.jacobianAutoButton.connect("clicked(bool)", self.onJacobianAutoWindow)
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self.ui.sweepConditionComboBox.connect("currentIndexChanged(int)", self.onSweepConditionChanged)
        self.ui.sweepButton.connect("clicked(bool)", self.onSweep)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.exportDirectoryButton.directory = str(Path.home())
        self.ui.jobFrame.visible = False

        self.initializeParameterNode()
        self.refreshDependencyState()

    def cleanup(self) -> None:
        if self._job is not None and not self._job.finished:
            self._job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer reload: also reload the library's modules (but not torch)."""
        for name in [n for n in sys.modules if n == "DiffDefAtlasLib" or n.startswith("DiffDefAtlasLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._setComboData(self.ui.deviceComboBox, self._parameterNode.device)
            self._setComboData(self.ui.deformationModeComboBox, self._parameterNode.deformationDisplay)
            self._setComboData(self.ui.foregroundComboBox, self._parameterNode.foreground)
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        busy = self._job is not None and not self._job.finished
        self.ui.generateButton.enabled = bool(p.model) and not busy
        self.ui.registerButton.enabled = bool(p.inputVolume and p.atlasVolume) and not busy
        self.ui.sweepButton.enabled = bool(p.model and self._controls) and not busy
        self.ui.exportButton.enabled = bool(p.atlasVolume)
        self.logic.applyDisplaySettings(p)

    # --- setup: dependencies, device, models

    def refreshDependencyState(self) -> None:
        missing = self.logic.missingDependencies()
        self.ui.installDependenciesButton.visible = bool(missing)
        if missing:
            self.ui.dependencyStatusLabel.text = _("Needs {packages} (installed on first use, after asking).").format(
                packages=", ".join(missing)
            )
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet.")
            return
        self.ui.dependencyStatusLabel.text = _("All dependencies are installed.")
        self.onDeviceChanged()
        self.populateModels()

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to install dependencies."), waitCursor=True):
            self.logic.ensureDependencies()
        self.refreshDependencyState()

    def onDeviceChanged(self, index=None) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.currentData or "auto"
        if self.logic.missingDependencies():
            return
        try:
            self.ui.deviceInfoLabel.text = scene.describe_device(self.ui.deviceComboBox.currentData or "auto")
        except Exception as error:  # a broken CUDA driver must not break the GUI
            self.ui.deviceInfoLabel.text = _("Device check failed: {error}").format(error=error)

    def populateModels(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to list the bundled models."), waitCursor=True):
            cards = self.logic.modelCards()
            wasBlocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.clear()
            for card in cards:
                if card.spatial_dims == 3:  # Slicer shows 3D atlases; 2D models are for the command line
                    self.ui.modelComboBox.addItem(card.name, card.name)
            self.ui.modelComboBox.blockSignals(wasBlocked)
            wanted = self._parameterNode.model if self._parameterNode else ""
            index = max(0, self.ui.modelComboBox.findData(wanted))
            self.ui.modelComboBox.setCurrentIndex(index)
            self.onModelChanged()

    def onModelChanged(self, index=None) -> None:
        name = self.ui.modelComboBox.currentData
        if not name or self._parameterNode is None:
            return
        card = self.logic.modelCard(name)
        if self._parameterNode.model != name:
            self._parameterNode.model = name
            self._parameterNode.conditionsJson = "{}"
        self.ui.modelDescriptionLabel.text = card.description
        self.rebuildConditionWidgets()

    # --- condition sliders

    def rebuildConditionWidgets(self) -> None:
        p = self._parameterNode
        if p is None or not p.model or self.logic.missingDependencies():
            return
        card = self.logic.modelCard(p.model)
        # read the check box itself: its parameter-node binding may not have run yet when this slot runs
        controls = scene.condition_controls(card, allow_extrapolation=self.ui.allowExtrapolationCheckBox.checked)
        stored = scene.conditions_from_json(p.conditionsJson)
        values = {c.name: c.clamp(stored.get(c.name, c.default)) for c in controls}
        used = set(stored) if stored else {c.name for c in controls}

        layout = self.ui.conditionsFrame.layout()
        while layout.count():
            item = layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self._controls = {c.name: c for c in controls}
        self._conditionWidgets = {}
        wasBlocked = self.ui.sweepConditionComboBox.blockSignals(True)
        self.ui.sweepConditionComboBox.clear()
        for control in controls:
            row = qt.QWidget()
            rowLayout = qt.QHBoxLayout(row)
            rowLayout.setContentsMargins(0, 0, 0, 0)
            use = qt.QCheckBox()
            use.checked = control.name in used
            use.toolTip = _("Untick to leave this condition unset (the model averages over it).")
            rowLayout.addWidget(use)
            if control.is_categorical:
                value = qt.QComboBox()
                for choice in control.choices:
                    value.addItem(choice)
                value.currentText = str(values[control.name])
                value.connect("currentIndexChanged(int)", lambda *args: self.onConditionEdited())
            else:
                value = ctk.ctkSliderWidget()
                value.decimals = control.decimals
                value.singleStep = control.single_step
                value.minimum = control.slider_minimum
                value.maximum = control.slider_maximum
                value.value = float(values[control.name])
                value.tracking = False  # valueChanged only on release: live update regenerates once per move
                value.connect("valueChanged(double)", lambda *args: self.onConditionEdited())
                self.ui.sweepConditionComboBox.addItem(control.label, control.name)
            value.toolTip = control.trained_range_text
            use.connect("toggled(bool)", lambda *args: self.onConditionEdited())
            rowLayout.addWidget(value, 1)
            rangeLabel = qt.QLabel(control.trained_range_text)
            rangeLabel.enabled = False
            rowLayout.addWidget(rangeLabel)
            layout.addRow(control.label, row)
            self._conditionWidgets[control.name] = (value, use)
        self.ui.sweepConditionComboBox.blockSignals(wasBlocked)
        self.onSweepConditionChanged()
        self._storeConditions()
        self.onParameterNodeModified()

    def currentConditions(self) -> dict:
        conditions = {}
        for name, (widget, use) in self._conditionWidgets.items():
            if use.checked:
                conditions[name] = widget.currentText if self._controls[name].is_categorical else float(widget.value)
        return conditions

    def _storeConditions(self) -> None:
        conditions = self.currentConditions()
        self._parameterNode.conditionsJson = scene.conditions_to_json(conditions)
        outside = scene.conditions_outside_trained_range(list(self._controls.values()), conditions)
        self.ui.extrapolationWarningLabel.text = (
            _("Outside the trained range: {names}. Results are extrapolated.").format(names=", ".join(outside))
            if outside
            else ""
        )

    def onConditionEdited(self) -> None:
        self._storeConditions()
        if self._parameterNode.liveUpdate and self._parameterNode.atlasVolume:
            self.onGenerate()

    # --- generate, overlays

    def onGenerate(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to generate the atlas."), waitCursor=True):
            self.ui.generateStatusLabel.text = _("Generating...")
            slicer.app.processEvents()
            nodes = self.logic.generateAtlas(
                model=p.model,
                conditions=scene.conditions_from_json(p.conditionsJson),
                seed=p.seed,
                steps=p.steps or None,
                device=p.device,
                allowExtrapolation=p.allowExtrapolation,
            )
            summary = nodes.result.summary if nodes.result is not None else {}
            self.ui.generateStatusLabel.text = self._statusText(_("Atlas ready"), summary)
            self.ui.overlayStatsLabel.text = self.logic.overlaySummary(summary)
        if self.ui.generateStatusLabel.text == _("Generating..."):
            self.ui.generateStatusLabel.text = _("Generation failed (see the error message).")

    def _statusText(self, first: str, summary: dict) -> str:
        parts = [first]
        if summary.get("device"):
            parts.append(_("on {device}").format(device=summary["device"]))
        parts.append(f"({self.logic.lastSeconds:.1f} s)")
        text = " ".join(parts)
        if self.logic.lastWarnings:
            text += "\n" + "\n".join(self.logic.lastWarnings)
        return text

    def onDisplayChoiceChanged(self, index=None) -> None:
        if self._parameterNode is None:
            return
        self._parameterNode.deformationDisplay = self.ui.deformationModeComboBox.currentData or "none"
        self._parameterNode.foreground = self.ui.foregroundComboBox.currentData or "none"
        self.logic.showAtlasLayers(self._parameterNode)

    def onJacobianAutoWindow(self) -> None:
        p = self._parameterNode
        if p and p.jacobianVolume:
            window = scene.jacobian_window_level(slicer.util.arrayFromVolume(p.jacobianVolume))
            p.jacobianHalfWidth = min(2.0, max(0.05, window.window / 2.0))

    # --- registration and sweeps (long work runs in a child process)

    def onRegister(self) -> None:
        p = self._parameterNode
        if p.refineIterations == 0:
            with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
                self.ui.registerStatusLabel.text = _("Registering...")
                slicer.app.processEvents()
                nodes = self.logic.registerVolume(p.inputVolume, p.atlasVolume, affine=p.affine, device=p.device)
                self.ui.registerStatusLabel.text = self._statusText(
                    _("Registered {name}").format(name=p.inputVolume.GetName()), nodes.result.summary
                )
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the registration."), waitCursor=True):
            self._startJob(
                _("Registering with {n} refinement iterations...").format(n=p.refineIterations),
                lambda onProgress, onDone: self.logic.startRegistrationJob(
                    p.inputVolume, p.atlasVolume, refine=p.refineIterations, affine=p.affine, device=p.device,
                    onProgress=onProgress, onDone=onDone,
                ),
            )

    def onSweepConditionChanged(self, index=None) -> None:
        control = self._controls.get(self.ui.sweepConditionComboBox.currentData)
        if control is None:
            return
        for spinBox in (self.ui.sweepStartDoubleSpinBox, self.ui.sweepStopDoubleSpinBox, self.ui.sweepStepDoubleSpinBox):
            spinBox.decimals = control.decimals
            spinBox.minimum = control.slider_minimum if spinBox is not self.ui.sweepStepDoubleSpinBox else control.single_step
            spinBox.maximum = control.slider_maximum
        self.ui.sweepStartDoubleSpinBox.value = control.minimum
        self.ui.sweepStopDoubleSpinBox.value = control.maximum
        self.ui.sweepStepDoubleSpinBox.value = max(control.single_step, (control.maximum - control.minimum) / 8.0)

    def onSweep(self) -> None:
        p = self._parameterNode
        vary = (
            self.ui.sweepConditionComboBox.currentData,
            self.ui.sweepStartDoubleSpinBox.value,
            self.ui.sweepStopDoubleSpinBox.value,
            self.ui.sweepStepDoubleSpinBox.value,
        )
        with slicer.util.tryWithErrorDisplay(_("Could not start the sweep."), waitCursor=True):
            self._startJob(
                _("Generating a sweep over {name}...").format(name=vary[0]),
                lambda onProgress, onDone: self.logic.startSweepJob(
                    p.model, vary, scene.conditions_from_json(p.conditionsJson), seed=p.seed, steps=p.steps or None,
                    device=p.device, allowExtrapolation=p.allowExtrapolation, onProgress=onProgress, onDone=onDone,
                ),
            )

    def _startJob(self, title: str, start: Callable) -> None:
        self.ui.jobProgressBar.value = 0
        self.ui.jobStatusLabel.text = title
        self._job = start(self._onJobProgress, self._onJobDone)
        if not self._job.finished:  # a job that could not start has already reported through _onJobDone
            self.ui.jobFrame.visible = True
        self.onParameterNodeModified()

    def _onJobProgress(self, fraction: float, message: str) -> None:
        self.ui.jobProgressBar.value = int(round(100 * fraction))
        if message:
            self.ui.jobStatusLabel.text = message

    def _onJobDone(self, job, nodes, error: str) -> None:
        self.ui.jobFrame.visible = job.state is process.JobState.FAILED
        if job.state is process.JobState.SUCCEEDED:
            slicer.util.showStatusMessage(_("Background job finished."), 5000)
        elif job.state is process.JobState.CANCELLED:
            slicer.util.showStatusMessage(_("Cancelled; the scene was not changed."), 5000)
        else:
            self.ui.jobStatusLabel.text = error
            slicer.util.errorDisplay(_("The background job failed."), detailedText=error + "\n\n" + "\n".join(job.log))
        self._job = None
        self.onParameterNodeModified()

    def onCancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    # --- export

    def onExport(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            written = self.logic.exportAtlas(self.ui.exportDirectoryButton.directory)
            slicer.util.showStatusMessage(_("Wrote {n} files to {folder}").format(
                n=len(written), folder=self.ui.exportDirectoryButton.directory), 5000)

    @staticmethod
    def _setComboData(comboBox, value) -> None:
        index = comboBox.findData(value)
        if index >= 0:
            wasBlocked = comboBox.blockSignals(True)
            comboBox.setCurrentIndex(index)
            comboBox.blockSignals(wasBlocked)


#
# Logic
#


class DiffDefAtlasLogic(ScriptedLoadableModuleLogic):
    """MRML glue around ``DiffDefAtlasLib``; usable from the Python console without the widget.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("DiffDefAtlas")
        nodes = logic.generateAtlas(model="brain3d", conditions={"age": 72, "sex": "F"})
        logic.registerVolume(getNode("MRHead"), nodes.atlas)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastWarnings: list = []
        self.lastSeconds = 0.0
        self._cards = None

    def getParameterNode(self):
        return DiffDefAtlasParameterNode(super().getParameterNode())

    # --- dependencies

    @staticmethod
    def missingDependencies() -> list:
        """Names of the packages still to install (torch first)."""
        import importlib.util

        missing = [] if importlib.util.find_spec("torch") else ["torch"]
        return missing + [scene.requirement_name(r) for r in scene.missing_requirements()]

    def ensureDependencies(self) -> None:
        """Install what is missing, each step after asking: torch through the PyTorch extension, the rest with pip."""
        if not self.missingDependencies():
            return
        import importlib.util

        if not importlib.util.find_spec("torch"):
            try:
                import PyTorchUtils
            except ModuleNotFoundError as error:
                raise RuntimeError(
                    "DiffDefAtlas needs the PyTorch extension: install 'PyTorch' from the Extensions Manager,"
                    " restart Slicer, and try again."
                ) from error
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=scene.TORCH_REQUIREMENT)
                if torch is None:
                    raise RuntimeError("PyTorch was not installed; DiffDefAtlas cannot run without it.")
        missing = scene.missing_requirements()
        if not missing:
            return
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(list(scene.SLICER_PIP_REQUIREMENTS), requester="DiffDefAtlas")
        else:
            if not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
                _("DiffDefAtlas needs these Python packages: {packages}. Download and install them now?").format(
                    packages=", ".join(missing)
                ),
                _("Install Python packages"),
            ):
                raise RuntimeError("Installation cancelled; DiffDefAtlas needs " + ", ".join(missing))
            slicer.util.pip_install(missing)
        still = scene.missing_requirements()
        if still:
            raise RuntimeError("These packages are still missing after installation: " + ", ".join(still))

    # --- models

    def modelCards(self) -> list:
        """The bundled models (``DiffDefAtlasLib.api.list_models``), read once."""
        if self._cards is None:
            self.ensureDependencies()
            from DiffDefAtlasLib import api

            self._cards = list(api.list_models())
        return self._cards

    def modelCard(self, name: str):
        for card in self.modelCards():
            if card.name == name:
                return card
        raise ValueError(f"unknown model {name!r}; bundled: {', '.join(c.name for c in self.modelCards())}")

    def _call(self, function, *args, **kwargs):
        """Call a library function, keeping its warnings (e.g. CUDA out of memory, fell back to CPU) for the GUI."""
        import time

        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = function(*args, **kwargs)
        self.lastSeconds = time.perf_counter() - start
        self.lastWarnings = [str(w.message) for w in caught]
        for message in self.lastWarnings:
            logging.warning(message)
        return result

    # --- generate

    def generateAtlas(
        self,
        model: str = "brain3d",
        conditions: Optional[dict] = None,
        *,
        seed: int = 0,
        steps: Optional[int] = None,
        device: str = "auto",
        allowExtrapolation: bool = False,
    ) -> AtlasNodes:
        """Generate an atlas and show it: atlas volume, label map + segmentation, grid transform (template to atlas),
        Jacobian (foreground), displacement magnitude and folding segment. Generating again updates the same nodes."""
        self.ensureDependencies()
        from DiffDefAtlasLib import api

        conditions = dict(conditions or {})
        result = self._call(
            api.generate_atlas, model, conditions, seed=int(seed), steps=steps or None, device=scene.device_choice(device),
            allow_extrapolation=bool(allowExtrapolation),
        )
        return self.showAtlasResult(result, model=model, conditions=conditions, seed=int(seed))

    def showAtlasResult(self, result, *, model: str, conditions: dict, seed: int = 0) -> AtlasNodes:
        """Create or update the atlas nodes from a library ``AtlasResult``."""
        from DiffDefAtlasLib.imageio import Volume

        p = self.getParameterNode()
        title = scene.export_stem(model, conditions, seed).replace("_", " ")
        p.atlasVolume = self.volumeNode(result.atlas, f"{title} atlas", node=p.atlasVolume)
        p.atlasLabels = self.volumeNode(result.labels, f"{title} labels", node=p.atlasLabels,
                                        className="vtkMRMLLabelMapVolumeNode")
        p.atlasLabels.GetDisplayNode().SetAndObserveColorNodeID(self.labelColorNode().GetID())
        p.atlasSegmentation = self.segmentationFromLabels(p.atlasLabels, f"{title} segmentation", node=p.atlasSegmentation)
        p.deformation = self.gridTransformNode(result.displacement, result.grid, f"{title} deformation", node=p.deformation)
        p.jacobianVolume = self.volumeNode(result.jacobian, f"{title} Jacobian", node=p.jacobianVolume)
        magnitude = Volume(scene.displacement_magnitude(result.displacement), result.grid.affine)
        p.magnitudeVolume = self.volumeNode(magnitude, f"{title} displacement (mm)", node=p.magnitudeVolume)
        p.foldingSegmentation = self.foldingSegmentation(result.folding, f"{title} folding", node=p.foldingSegmentation,
                                                         reference=p.jacobianVolume)
        record = {"model": model, "conditions": conditions, "seed": seed, "summary": getattr(result, "summary", {})}
        p.atlasVolume.SetAttribute(ATTRIBUTE_PREFIX + "generation", json.dumps(record, default=str))
        self.showAtlasLayers(p)
        return AtlasNodes(p.atlasVolume, p.atlasLabels, p.atlasSegmentation, p.deformation, p.jacobianVolume,
                          p.magnitudeVolume, p.foldingSegmentation, result)

    # --- MRML <-> arrays

    @staticmethod
    def volumeNode(volume, name: str, *, node=None, className: str = "vtkMRMLScalarVolumeNode"):
        """Create (or update) a volume node from a library ``Volume``."""
        array, ijkToRAS = scene.volume_to_slicer_array(volume)
        if node is None:
            node = slicer.util.addVolumeFromArray(array, ijkToRAS, name, className)
        else:
            slicer.util.updateVolumeFromArray(node, array)
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRAS))
            node.SetName(name)
        node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def volumeFromNode(node):
        """A library ``Volume`` (a copy) from a volume node; a node under a transform must be hardened first."""
        if node is None:
            raise ValueError("no volume selected")
        if node.GetParentTransformNode() is not None:
            raise ValueError(f"{node.GetName()} is under a transform: harden it first (Data module, right-click, Harden transform)")
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return scene.volume_from_slicer_array(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVTKMatrix(matrix))

    @staticmethod
    def gridTransformNode(displacement, grid, name: str, *, node=None):
        """A ``vtkMRMLGridTransformNode`` whose FromParent transform is ``x -> x + u(x)`` (RAS mm).

        That is the resampling transform: a volume placed under it is shown warped, as the library warps it.
        """
        from vtk.util import numpy_support

        from DiffDefAtlasLib.spatial.convert import displacement_to_slicer_array

        array, ijkToRAS = displacement_to_slicer_array(displacement, grid)
        geometry = scene.split_ijk_to_ras(ijkToRAS)
        image = vtk.vtkImageData()
        image.SetOrigin(*geometry.origin)
        image.SetSpacing(*geometry.spacing)
        image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
        image.AllocateScalars(vtk.VTK_DOUBLE, 3)
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(array.shape)[:] = array
        transform = slicer.vtkOrientedGridTransform()
        transform.SetDisplacementGridData(image)
        transform.SetGridDirectionMatrix(slicer.util.vtkMatrixFromArray(geometry.direction_matrix4()))
        transform.SetInterpolationModeToCubic()
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
        node.SetName(name)
        node.SetAndObserveTransformFromParent(transform)
        node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def displacementFromTransformNode(node):
        """Inverse of :meth:`gridTransformNode`: ``(u, grid)`` in the library's convention."""
        from DiffDefAtlasLib.spatial.convert import displacement_from_slicer_array

        transform = node.GetTransformFromParent()
        image = transform.GetDisplacementGrid()
        directions = slicer.util.arrayFromVTKMatrix(transform.GetGridDirectionMatrix())[:3, :3]
        geometry = scene.ImageGeometry(tuple(image.GetOrigin()), tuple(image.GetSpacing()), directions)
        return displacement_from_slicer_array(slicer.util.arrayFromGridTransform(node).copy(), geometry.ijk_to_ras())

    def labelColorNode(self):
        """The colour table naming the template's tissue labels (created once per scene)."""
        node = slicer.mrmlScene.GetFirstNodeByName(COLOR_TABLE_NAME)
        if node is not None:
            return node
        from DiffDefAtlasLib.template import LABEL_COLORS, LABEL_NAMES

        rows = scene.label_colors(LABEL_NAMES, LABEL_COLORS)
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
        node.SetTypeToUser()
        node.SetNumberOfColors(max(row[0] for row in rows) + 1)
        node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for value, name, rgb in rows:
            node.SetColor(value, name, *rgb, 1.0)
        return node

    @staticmethod
    def segmentationFromLabels(labelNode, name: str, *, node=None):
        """Segments (named and coloured by the label map's colour table) from a label map."""
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetName(name)
        node.CreateDefaultDisplayNodes()
        node.GetSegmentation().RemoveAllSegments()
        node.SetReferenceImageGeometryParameterFromVolumeNode(labelNode)
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, node)
        node.GetDisplayNode().SetVisibility2DFill(False)
        return node

    def foldingSegmentation(self, folding, name: str, *, node=None, reference=None):
        """A segmentation with one segment, "folding", where det J <= 0 (empty when the map is diffeomorphic).

        ``reference`` is a volume node on the folding map's grid (the Jacobian); without one a temporary node is used.
        """
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetName(name)
        node.CreateDefaultDisplayNodes()
        segmentation = node.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName("folding")
        if not segmentId:
            segmentId = segmentation.AddEmptySegment("folding", "folding", [1.0, 0.85, 0.0])
        array, ijkToRAS = scene.volume_to_slicer_array(folding)
        temporary = reference is None or not self._sameGeometry(reference, array.shape, ijkToRAS)
        if temporary:
            reference = self.volumeNode(folding, "DiffDefAtlas folding reference", className="vtkMRMLLabelMapVolumeNode")
        try:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
            slicer.util.updateSegmentBinaryLabelmapFromArray((array > 0).astype("uint8"), node, segmentId, reference)
        finally:
            if temporary:
                self.removeNode(reference)
        return node

    @staticmethod
    def _sameGeometry(volumeNode, shape, ijkToRAS) -> bool:
        import numpy as np

        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return (tuple(slicer.util.arrayFromVolume(volumeNode).shape) == tuple(shape)
                and np.allclose(slicer.util.arrayFromVTKMatrix(matrix), ijkToRAS, atol=1e-6))

    @staticmethod
    def removeNode(node) -> None:
        """Remove a node with its display and storage nodes (temporary nodes must leave nothing behind)."""
        for index in reversed(range(node.GetNumberOfDisplayNodes())):
            slicer.mrmlScene.RemoveNode(node.GetNthDisplayNode(index))
        if node.GetStorageNode():
            slicer.mrmlScene.RemoveNode(node.GetStorageNode())
        slicer.mrmlScene.RemoveNode(node)

    # --- display

    def applyDisplaySettings(self, p=None) -> None:
        """Apply the overlay settings of the parameter node (cheap; called on every GUI change)."""
        p = p or self.getParameterNode()
        display = p.deformation.GetDisplayNode() if p.deformation else None
        if display:
            visible = p.deformationDisplay in ("grid", "glyph")
            display.SetVisibility(visible)
            display.SetVisibility2D(visible)
            display.SetVisibility3D(False)
            if p.deformationDisplay == "glyph":
                display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH)
                display.SetGlyphScalePercent(100.0 * p.deformationScale)
                display.SetGlyphSpacingMm(p.gridSpacing)
            elif p.deformationDisplay == "grid":
                display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
                display.SetGridScalePercent(100.0 * p.deformationScale)
                display.SetGridSpacingMm(p.gridSpacing)
        if p.jacobianVolume:
            window = scene.jacobian_window_level(half_width=p.jacobianHalfWidth)
            self._colourVolume(p.jacobianVolume, scene.JACOBIAN_COLOR_NODE_ID, window, "det J", p.foreground == "jacobian")
        if p.magnitudeVolume:
            window = scene.magnitude_window_level(slicer.util.arrayFromVolume(p.magnitudeVolume))
            self._colourVolume(p.magnitudeVolume, scene.MAGNITUDE_COLOR_NODE_ID, window, "|u| (mm)", p.foreground == "magnitude")
        if p.foldingSegmentation and p.foldingSegmentation.GetDisplayNode():
            p.foldingSegmentation.GetDisplayNode().SetVisibility(p.showFolding)
        slicer.util.setSliceViewerLayers(foregroundOpacity=p.foregroundOpacity)

    @staticmethod
    def _colourVolume(node, colorNodeID: str, window, title: str, legendVisible: bool) -> None:
        display = node.GetDisplayNode()
        if display is None:
            return
        display.SetAndObserveColorNodeID(colorNodeID)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(window.window, window.level)
        colors = slicer.modules.colors.logic()
        legend = colors.GetColorLegendDisplayNode(node) or colors.AddDefaultColorLegendDisplayNode(node)
        legend.SetTitleText(title)
        legend.SetVisibility(legendVisible)

    def showAtlasLayers(self, p=None) -> None:
        """Atlas in the background, the chosen overlay (Jacobian or displacement magnitude) in the foreground."""
        p = p or self.getParameterNode()
        foreground = {"jacobian": p.jacobianVolume, "magnitude": p.magnitudeVolume}.get(p.foreground)
        background = p.atlasVolume if p.atlasVolume else "keep-current"
        slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                         foregroundOpacity=p.foregroundOpacity, fit=False)
        self.applyDisplaySettings(p)

    @staticmethod
    def overlaySummary(summary: dict) -> str:
        """One line on folding and det J range from the library's summary, for the Overlays section."""
        parts = []
        for key, label in (("folding_ratio", "folding"), ("nonpositive", "det J <= 0"), ("jacobian_min", "det J min"),
                           ("jacobian_max", "det J max")):
            value = summary.get(key)
            if isinstance(value, (int, float)):
                parts.append(f"{label}: {value:.4g}")
            elif isinstance(value, dict):
                parts.extend(f"{label} {k}: {v:.4g}" for k, v in value.items() if isinstance(v, (int, float)))
        return ", ".join(parts)

    # --- registration

    def registerVolume(self, movingNode, atlasNode=None, *, refine: int = 0, affine: bool = True, device: str = "auto",
                       atlasLabelsNode=None) -> RegistrationNodes:
        """Register a scan to the atlas (affine + learned deformable, optional refinement) in this process.

        ``atlasNode`` defaults to the current atlas; its label map (the current atlas's, or ``atlasLabelsNode``) is
        propagated onto the scan. Blocks until done; the GUI runs refinement in a background process instead.
        """
        self.ensureDependencies()
        from DiffDefAtlasLib import api

        p = self.getParameterNode()
        atlasNode = atlasNode or p.atlasVolume
        if atlasNode is None:
            raise ValueError("no atlas: generate one first, or pass atlasNode")
        if atlasLabelsNode is None and p.atlasVolume and atlasNode.GetID() == p.atlasVolume.GetID():
            atlasLabelsNode = p.atlasLabels
        labels = self.volumeFromNode(atlasLabelsNode) if atlasLabelsNode else None
        result = self._call(
            api.register_to_atlas, self.volumeFromNode(movingNode), self.volumeFromNode(atlasNode),
            atlas_labels=labels, refine=int(refine), affine=bool(affine), device=scene.device_choice(device),
        )
        return self.showRegistrationResult(result, movingNode, atlasNode)

    def showRegistrationResult(self, result, movingNode, atlasNode) -> RegistrationNodes:
        """Show the scan in atlas space over the atlas, the transform, its Jacobian and the labels on the scan."""
        name = movingNode.GetName()
        warped = self.volumeNode(result.warped, f"{name} in atlas space", node=self._existing(f"{name} in atlas space"))
        transform = self.gridTransformNode(result.displacement, result.grid, f"{name} atlas-to-scan transform",
                                           node=self._existing(f"{name} atlas-to-scan transform", "vtkMRMLGridTransformNode"))
        jacobian = self.volumeNode(result.jacobian, f"{name} registration Jacobian",
                                   node=self._existing(f"{name} registration Jacobian"))
        window = scene.jacobian_window_level(slicer.util.arrayFromVolume(jacobian))
        self._colourVolume(jacobian, scene.JACOBIAN_COLOR_NODE_ID, window, "det J", False)
        labels = segmentation = None
        if getattr(result, "labels_on_moving", None) is not None:
            labels = self.volumeNode(result.labels_on_moving, f"{name} atlas labels", className="vtkMRMLLabelMapVolumeNode",
                                     node=self._existing(f"{name} atlas labels", "vtkMRMLLabelMapVolumeNode"))
            labels.GetDisplayNode().SetAndObserveColorNodeID(self.labelColorNode().GetID())
            segmentation = self.segmentationFromLabels(labels, f"{name} atlas segmentation",
                                                       node=self._existing(f"{name} atlas segmentation", "vtkMRMLSegmentationNode"))
        transform.GetDisplayNode().SetVisibility(False)
        slicer.util.setSliceViewerLayers(background=atlasNode, foreground=warped, foregroundOpacity=0.5)
        return RegistrationNodes(warped, transform, jacobian, labels, segmentation, result)

    @staticmethod
    def _existing(name: str, className: str = "vtkMRMLScalarVolumeNode"):
        """The node of that name and class made by an earlier run (so repeated runs update rather than pile up)."""
        for node in slicer.util.getNodesByClass(className):
            if node.GetName() == name and node.GetClassName() == className:
                return node
        return None

    def _jobFolder(self, kind: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"DiffDefAtlas-{kind}-"))

    def _startJob(self, arguments: list, work: Path, expected: list, onProgress, finish, onDone):
        """Run ``PythonSlicer -m DiffDefAtlasLib.cli.main ...``; ``finish(job)`` loads results only on success."""
        runner = process.SubprocessRunner()
        timer = qt.QTimer()
        timer.setInterval(200)

        def done(job):
            timer.stop()
            nodes, error = None, job.error
            try:
                if job.state is process.JobState.SUCCEEDED:
                    nodes = finish(job)
            except Exception as exception:  # loading failed: report it like a failed job
                logging.exception("DiffDefAtlas: loading the results failed")
                job.state, error = process.JobState.FAILED, f"loading the results failed: {exception}"
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if onDone:
                onDone(job, nodes, error)

        environment = process.library_environment(slicer.util.startupEnvironment(), LIBRARY_PARENT)
        job = process.BackgroundJob(runner, process.python_executable(), arguments, environment=environment,
                                    expected_outputs=expected, on_progress=onProgress, on_log=logging.info, on_done=done)
        timer.timeout.connect(runner.poll)
        job.timer = timer  # keep the timer alive as long as the job
        job.start()
        if not job.finished:
            timer.start()
        return job

    def startRegistrationJob(self, movingNode, atlasNode=None, *, refine: int = 50, affine: bool = True,
                             device: str = "auto", onProgress=None, onDone=None):
        """Register in a background process (``diffdef-atlas register``); the scene changes only on success.

        ``onProgress(fraction, message)`` follows the job; ``onDone(job, nodes, error)`` is called once, with
        ``nodes`` a :class:`RegistrationNodes` on success and ``None`` when cancelled or failed.
        """
        from DiffDefAtlasLib.imageio import write_image

        p = self.getParameterNode()
        atlasNode = atlasNode or p.atlasVolume
        if atlasNode is None:
            raise ValueError("no atlas: generate one first, or pass atlasNode")
        work = self._jobFolder("register")
        moving, fixed, out = work / "moving.nii.gz", work / "atlas.nii.gz", work / "out"
        fixedLabels = None
        try:
            write_image(self.volumeFromNode(movingNode), moving)
            write_image(self.volumeFromNode(atlasNode), fixed)
            if p.atlasLabels and p.atlasVolume and atlasNode.GetID() == p.atlasVolume.GetID():
                fixedLabels = work / "atlas_labels.nii.gz"
                write_image(self.volumeFromNode(p.atlasLabels), fixedLabels)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        arguments = process.register_arguments(moving, fixed, out, fixed_labels=fixedLabels, refine=refine, affine=affine,
                                               device=scene.device_choice(device))

        def finish(job):
            from types import SimpleNamespace

            import numpy as np

            from DiffDefAtlasLib.imageio import read_image
            from DiffDefAtlasLib.spatial.convert import load_displacement

            u, grid = load_displacement(out / "displacement.nii.gz")
            labelsPath = out / "labels.nii.gz"
            summaryPath = out / "summary.json"
            result = SimpleNamespace(
                warped=read_image(out / "warped.nii.gz"), displacement=u, grid=grid,
                jacobian=read_image(out / "jacobian.nii.gz"),
                labels_on_moving=read_image(labelsPath, dtype=np.uint8) if labelsPath.is_file() else None,
                summary=json.loads(summaryPath.read_text()) if summaryPath.is_file() else {},
            )
            return self.showRegistrationResult(result, movingNode, atlasNode)

        return self._startJob(arguments, work, [out / name for name in process.REGISTER_OUTPUTS], onProgress, finish, onDone)

    def startSweepJob(self, model: str, vary: tuple, conditions: dict, *, seed: int = 0, steps=None, device: str = "auto",
                      allowExtrapolation: bool = False, onProgress=None, onDone=None):
        """Generate one atlas per value of ``vary = (name, start, stop, step)`` in a background process and load them
        as a sequence (play it with the Sequences toolbar)."""
        work = self._jobFolder("sweep")
        out = work / "out"
        arguments = process.sweep_arguments(model, vary, conditions, out, seed=seed, steps=steps,
                                            device=scene.device_choice(device), allow_extrapolation=allowExtrapolation)

        def finish(job):
            from DiffDefAtlasLib.imageio import read_image

            files = process.sweep_atlas_files(out)
            if not files:
                raise RuntimeError(f"the sweep wrote no atlas files into {out}")
            values = process.sweep_values(*vary[1:])
            labels = [scene.format_number(v) for v in values] if len(values) == len(files) else [str(i) for i in range(len(files))]
            sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{model} sweep over {vary[0]}")
            sequence.SetIndexName(vary[0])
            for label, path in zip(labels, files):
                item = self.volumeNode(read_image(path), f"{vary[0]} {label}")
                sequence.SetDataNodeAtValue(item, label)
                self.removeNode(item)
            browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{model} sweep browser")
            browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
            slicer.util.setSliceViewerLayers(background=browser.GetProxyNode(sequence), fit=True)
            return sequence

        return self._startJob(arguments, work, [], onProgress, finish, onDone)

    # --- export

    def exportAtlas(self, folder) -> dict:
        """Write the current atlas, labels, deformation (NIfTI intent 1006), Jacobian, folding and summary to a folder.

        File names say model, conditions and seed (``brain3d_age-72_sex-F_seed-0_atlas.nii.gz``...).
        """
        p = self.getParameterNode()
        if not p.atlasVolume:
            raise ValueError("no atlas to export: generate one first")
        record = json.loads(p.atlasVolume.GetAttribute(ATTRIBUTE_PREFIX + "generation") or "{}")
        stem = scene.export_stem(record.get("model", p.model), record.get("conditions", {}), record.get("seed", 0))
        displacement, grid = self.displacementFromTransformNode(p.deformation) if p.deformation else (None, None)
        return scene.export_atlas(
            folder, stem, atlas=self.volumeFromNode(p.atlasVolume),
            labels=self.volumeFromNode(p.atlasLabels) if p.atlasLabels else None,
            displacement=displacement, grid=grid,
            jacobian=self.volumeFromNode(p.jacobianVolume) if p.jacobianVolume else None,
            summary=record,
        )


#
# Test
#


class DiffDefAtlasTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: the *Reload and Test* button (developer mode), or from a terminal::

        Slicer --testing --additional-module-paths DiffDefAtlas \\
               --python-code "import DiffDefAtlas; DiffDefAtlas.DiffDefAtlasTest().runTest(); slicer.util.exit(0)"
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_generate_nodes_match_library()
        self.test_register_sample_volume()
        self.test_cancelled_job_leaves_scene_unchanged()

    def _generate(self):
        logic = DiffDefAtlasLogic()
        return logic, logic.generateAtlas(model="brain3d", conditions={"age": 72, "sex": "F"}, device="cpu")

    def test_generate_nodes_match_library(self):
        import numpy as np

        from DiffDefAtlasLib.spatial.convert import displacement_to_slicer_array

        self.delayDisplay("Generating an atlas")
        logic, nodes = self._generate()
        result = nodes.result
        for node in (nodes.atlas, nodes.labels, nodes.segmentation, nodes.transform, nodes.jacobian, nodes.magnitude,
                     nodes.folding):
            self.assertIsNotNone(node)
            self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(node.GetID()))
        # geometry and voxels against the library's output
        for node, volume in ((nodes.atlas, result.atlas), (nodes.labels, result.labels), (nodes.jacobian, result.jacobian)):
            array, ijkToRAS = scene.volume_to_slicer_array(volume)
            np.testing.assert_allclose(slicer.util.arrayFromVolume(node), array, rtol=1e-6, atol=1e-6)
            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), ijkToRAS, atol=1e-6)
        expected = displacement_to_slicer_array(result.displacement, result.grid)[0]
        np.testing.assert_allclose(slicer.util.arrayFromGridTransform(nodes.transform), expected, atol=1e-5)
        # the transform maps a grid point x to x + u(x) (FromParent = resampling transform)
        i, j, k = (s // 2 for s in result.grid.shape)
        x = result.grid.affine @ np.array([i, j, k, 1.0])
        moved = nodes.transform.GetTransformFromParent().TransformPoint(x[:3])
        np.testing.assert_allclose(moved, x[:3] + result.displacement[:, i, j, k], atol=1e-3)
        u, grid = logic.displacementFromTransformNode(nodes.transform)
        np.testing.assert_allclose(u, result.displacement, atol=1e-5)
        np.testing.assert_allclose(grid.affine, result.grid.affine, atol=1e-6)
        # overlays
        display = nodes.jacobian.GetDisplayNode()
        self.assertEqual(display.GetColorNodeID(), scene.JACOBIAN_COLOR_NODE_ID)
        self.assertAlmostEqual(display.GetLevel(), 1.0)
        self.assertEqual(nodes.transform.GetDisplayNode().GetVisualizationMode(),
                         slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
        self.assertTrue(nodes.transform.GetDisplayNode().GetVisibility2D())
        self.assertTrue(nodes.folding.GetSegmentation().GetSegmentIdBySegmentName("folding"))
        np.testing.assert_allclose(slicer.util.arrayFromVolume(nodes.magnitude).transpose(2, 1, 0),
                                   scene.displacement_magnitude(result.displacement), atol=1e-4)
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            self.assertEqual(composite.GetBackgroundVolumeID(), nodes.atlas.GetID())
            self.assertEqual(composite.GetForegroundVolumeID(), nodes.jacobian.GetID())
        # regenerating updates the same nodes
        again = logic.generateAtlas(model="brain3d", conditions={"age": 80, "sex": "F"}, device="cpu")
        self.assertEqual(again.atlas.GetID(), nodes.atlas.GetID())
        # export writes every file
        folder = Path(tempfile.mkdtemp(prefix="DiffDefAtlasTest-"))
        try:
            written = logic.exportAtlas(folder)
            self.assertEqual(set(written), set(scene.EXPORT_SUFFIXES))
            self.assertTrue(all(path.is_file() for path in written.values()))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.delayDisplay("Atlas nodes match the library output")

    def test_register_sample_volume(self):
        import numpy as np
        import SampleData

        logic, nodes = self._generate()
        self.delayDisplay("Registering MRHead to the atlas")
        moving = SampleData.downloadSample("MRHead")
        registered = logic.registerVolume(moving, nodes.atlas, device="cpu")
        self.assertEqual(slicer.util.arrayFromVolume(registered.warped).shape,
                         slicer.util.arrayFromVolume(nodes.atlas).shape)
        self.assertIsNotNone(registered.labels)
        self.assertEqual(slicer.util.arrayFromVolume(registered.labels).shape, slicer.util.arrayFromVolume(moving).shape)
        self.assertGreater(int(np.count_nonzero(slicer.util.arrayFromVolume(registered.labels))), 0)
        self.delayDisplay("Registration done")

    def test_cancelled_job_leaves_scene_unchanged(self):
        import SampleData

        logic, nodes = self._generate()
        moving = SampleData.downloadSample("MRHead")
        before = slicer.mrmlScene.GetNumberOfNodes()
        finished = []
        job = logic.startRegistrationJob(moving, nodes.atlas, refine=200, device="cpu",
                                         onDone=lambda job, result, error: finished.append((job.state, result)))
        slicer.util.delayDisplay("Started a background registration; cancelling it", 1000)
        job.cancel()
        self.assertEqual(finished, [(process.JobState.CANCELLED, None)])
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel left the scene unchanged")
