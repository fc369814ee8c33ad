"""DiffDefAtlas: conditional brain atlases in 3D Slicer.

This file holds the four entry points Slicer looks for (Module, Widget, Logic, Test) and stays thin. The helper
classes live one per file in ``DiffDefAtlasModuleLib/``; every computation and display decision is a function of
``DiffDefAtlasLib`` (``api`` does the work; ``slicer_support`` decides what the module shows), tested by pytest without Slicer. Heavy packages (torch, MONAI) are imported only inside functions, after the
user has agreed to install them.

Console use::

    logic = slicer.util.getModuleLogic("DiffDefAtlas")
    nodes = logic.generateAtlas(model="brain3d", conditions={"age": 72, "sex": "F"})
    logic.registerVolume(getNode("MRHead"), nodes.atlas)
"""

import importlib.util
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

if importlib.util.find_spec("DiffDefAtlasLib") is None:
    # a source checkout run with --additional-module-paths: the library sits beside the module folder. Installed, the
    # library is in the module's own folder, which Slicer has put on sys.path, and sys.path is left alone.
    from DiffDefAtlasModuleLib.LibraryPath import addLibraryToPath

    addLibraryToPath(Path(__file__).parent)

# numpy-only library modules (no torch): usable before the dependencies are installed
from DiffDefAtlasLib.slicer_support import arrays, devices, exports, gui_state, jobs, layers, overlays, sliders  # noqa: E402
from DiffDefAtlasModuleLib.AtlasNodes import AtlasNodes  # noqa: E402
from DiffDefAtlasModuleLib.ConditionPanel import ConditionPanel  # noqa: E402
from DiffDefAtlasModuleLib.DependencyInstaller import DependencyInstaller  # noqa: E402
from DiffDefAtlasModuleLib.ErrorDisplay import ErrorDisplay  # noqa: E402
from DiffDefAtlasModuleLib.JobLauncher import JobLauncher  # noqa: E402
from DiffDefAtlasModuleLib.MRMLConversion import MRMLConversion  # noqa: E402
from DiffDefAtlasModuleLib.OverlayDisplay import OverlayDisplay  # noqa: E402
from DiffDefAtlasModuleLib.DiffDefAtlasParameterNode import DiffDefAtlasParameterNode  # noqa: E402
from DiffDefAtlasModuleLib.RegistrationNodes import RegistrationNodes  # noqa: E402
from DiffDefAtlasModuleLib.SegmentationBuilder import SegmentationBuilder  # noqa: E402

#: Packages reloaded by the developer Reload button (the library and the module's helper classes, not torch).
RELOADED_PACKAGES = ("DiffDefAtlasLib", "DiffDefAtlasModuleLib")


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
            ' See the <a href="https://github.com/diffdefatlas/SlicerDiffDefAtlas#3d-slicer">documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Method after Diff-Def (arXiv 2403.16776). Template: derived from MNI ICBM152 2009a nonlinear symmetric,"
            " Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute."
        )


#
# Widget
#


class DiffDefAtlasWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires ``Resources/UI/DiffDefAtlas.ui`` to :class:`DiffDefAtlasLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.conditionPanel = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._dependenciesReady = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffDefAtlas.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffDefAtlasLogic()
        self.conditionPanel = ConditionPanel(self.ui, self.onConditionEdited)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        choices = (
            (self.ui.deviceComboBox, {"auto": _("Auto"), "cpu": _("CPU"), "cuda": _("CUDA (GPU)")}),
            (self.ui.deformationModeComboBox, {"grid": _("Grid"), "glyph": _("Glyphs"), "none": _("Hidden")}),
            (self.ui.foregroundComboBox, {"jacobian": _("Jacobian determinant"), "magnitude": _("Displacement magnitude"),
                                          "none": _("None")}),
        )
        for comboBox, items in choices:
            comboBox.clear()
            for data, text in items.items():
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
        self.onCancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()  # a job finishing later must not load into the next scene
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer reload: also reload the library and the helper classes (but not torch)."""
        for name in [n for n in sys.modules if n.split(".")[0] in RELOADED_PACKAGES]:
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
        self.ui.generateButton.enabled = self._dependenciesReady and bool(p.model) and not busy
        self.ui.registerButton.enabled = bool(p.inputVolume and p.atlasVolume) and not busy
        sweepable = any(not control.is_categorical for control in self.conditionPanel.controls.values())
        self.ui.sweepButton.enabled = self._dependenciesReady and bool(p.model) and sweepable and not busy
        self.ui.exportButton.enabled = bool(p.atlasVolume)
        self.logic.applyDisplaySettings(p)

    # --- setup: dependencies, device, models

    def refreshDependencyState(self) -> None:
        """Show what is missing; once everything is installed, fill the device label, the models and the sliders."""
        missing = self.logic.missingDependencies()
        self._dependenciesReady = not missing
        self.ui.installDependenciesButton.visible = bool(missing)
        if missing:
            self.ui.dependencyStatusLabel.text = _("Needs {packages} (installed on first use, after asking).").format(
                packages=", ".join(missing))
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet.")
            self.ui.generateStatusLabel.text = _("Install the dependencies (Setup) to generate an atlas.")
        else:
            self.ui.dependencyStatusLabel.text = _("All dependencies are installed.")
            self.onDeviceChanged()
            self.populateModels()
        self.onParameterNodeModified()

    def onInstallDependencies(self) -> bool:
        """Install what is missing (after asking), then refresh the Setup section; True when all is installed."""
        with ErrorDisplay(_("Failed to install dependencies.")):
            self.logic.ensureDependencies()
        self.refreshDependencyState()
        return self._dependenciesReady

    def onDeviceChanged(self, index=None) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.currentData or "auto"
        if self.logic.missingDependencies():
            return
        try:
            self.ui.deviceInfoLabel.text = devices.describe_device(self.ui.deviceComboBox.currentData or "auto")
        except Exception as error:  # a broken CUDA driver must not break the GUI
            self.ui.deviceInfoLabel.text = _("Device check failed: {error}").format(error=error)

    def populateModels(self) -> None:
        with ErrorDisplay(_("Failed to list the bundled models.")):
            cards = gui_state.slicer_models(self.logic.modelCards())
            wasBlocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.clear()
            for card in cards:
                self.ui.modelComboBox.addItem(card.name, card.name)
            self.ui.modelComboBox.blockSignals(wasBlocked)
            wanted = self._parameterNode.model if self._parameterNode else ""
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(wanted)))
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
        # read the check box itself: its parameter-node binding may not have run yet when this slot runs
        self.conditionPanel.rebuild(self.logic.modelCard(p.model), self.ui.allowExtrapolationCheckBox.checked,
                                    sliders.conditions_from_json(p.conditionsJson))
        self.onSweepConditionChanged()
        self._storeConditions()
        self.onParameterNodeModified()

    def _storeConditions(self) -> None:
        self._parameterNode.conditionsJson = sliders.conditions_to_json(self.conditionPanel.conditions())
        outside = self.conditionPanel.outsideTrainedRange()
        self.ui.extrapolationWarningLabel.text = (
            _("Outside the trained range: {names}. Results are extrapolated.").format(names=", ".join(outside))
            if outside else "")

    def onConditionEdited(self) -> None:
        self._storeConditions()
        if self._parameterNode.liveUpdate and self._parameterNode.atlasVolume:
            self.onGenerate()

    # --- generate, overlays

    def onGenerate(self) -> None:
        if not self._dependenciesReady:  # install first; the sliders are built once the models can be listed
            self.onInstallDependencies()
            return
        p = self._parameterNode
        self.ui.generateStatusLabel.text = _("Generating...")
        slicer.app.processEvents()
        with ErrorDisplay(_("Failed to generate the atlas.")) as outcome:
            nodes = self.logic.generateAtlas(model=p.model, conditions=sliders.conditions_from_json(p.conditionsJson),
                                             seed=p.seed, steps=p.steps or None, device=p.device,
                                             allowExtrapolation=p.allowExtrapolation)
            summary = nodes.result.summary if nodes.result is not None else {}
            self.ui.generateStatusLabel.text = gui_state.status_text(_("Atlas ready"), summary, self.logic.lastSeconds,
                                                                     self.logic.lastWarnings)
            self.ui.overlayStatsLabel.text = gui_state.overlay_summary(summary)
        if outcome.failed:
            self.ui.generateStatusLabel.text = _("Generation failed: {error}").format(error=outcome.error)

    def onDisplayChoiceChanged(self, index=None) -> None:
        if self._parameterNode is None:
            return
        foreground = self.ui.foregroundComboBox.currentData or "none"
        foregroundChanged = foreground != self._parameterNode.foreground
        self._parameterNode.deformationDisplay = self.ui.deformationModeComboBox.currentData or "none"
        self._parameterNode.foreground = foreground
        if foregroundChanged:  # only then are the views' layers ours to set; the grid/glyph choice is applied on its own
            self.logic.showAtlasLayers(self._parameterNode)

    def onJacobianAutoWindow(self) -> None:
        p = self._parameterNode
        if p and p.jacobianVolume:
            p.jacobianHalfWidth = gui_state.auto_jacobian_half_width(slicer.util.arrayFromVolume(p.jacobianVolume))

    # --- registration and sweeps (long work runs in a child process)

    def onRegister(self) -> None:
        p = self._parameterNode
        if p.refineIterations == 0:
            self.ui.registerStatusLabel.text = _("Registering...")
            slicer.app.processEvents()
            with ErrorDisplay(_("Registration failed.")) as outcome:
                nodes = self.logic.registerVolume(p.inputVolume, p.atlasVolume, affine=p.affine, device=p.device)
                self.ui.registerStatusLabel.text = gui_state.status_text(
                    _("Registered {name}").format(name=p.inputVolume.GetName()), nodes.result.summary,
                    self.logic.lastSeconds, self.logic.lastWarnings)
            if outcome.failed:
                self.ui.registerStatusLabel.text = _("Registration failed: {error}").format(error=outcome.error)
            return
        with ErrorDisplay(_("Could not start the registration.")):
            self._startJob(
                _("Registering with {n} refinement iterations...").format(n=p.refineIterations),
                lambda onProgress, onDone: self.logic.startRegistrationJob(
                    p.inputVolume, p.atlasVolume, refine=p.refineIterations, affine=p.affine, device=p.device,
                    onProgress=onProgress, onDone=onDone))

    def onSweepConditionChanged(self, index=None) -> None:
        control = self.conditionPanel.controls.get(self.ui.sweepConditionComboBox.currentData)
        if control is None or control.is_categorical:
            return
        sweep = gui_state.sweep_range(control)
        for spinBox in (self.ui.sweepStartDoubleSpinBox, self.ui.sweepStopDoubleSpinBox, self.ui.sweepStepDoubleSpinBox):
            spinBox.decimals = sweep.decimals
        self.ui.sweepStartDoubleSpinBox.setRange(sweep.minimum, sweep.maximum)
        self.ui.sweepStopDoubleSpinBox.setRange(sweep.minimum, sweep.maximum)
        self.ui.sweepStepDoubleSpinBox.setRange(sweep.step_minimum, sweep.maximum - sweep.minimum)
        self.ui.sweepStartDoubleSpinBox.value = sweep.start
        self.ui.sweepStopDoubleSpinBox.value = sweep.stop
        self.ui.sweepStepDoubleSpinBox.value = sweep.step

    def onSweep(self) -> None:
        p = self._parameterNode
        vary = (self.ui.sweepConditionComboBox.currentData, self.ui.sweepStartDoubleSpinBox.value,
                self.ui.sweepStopDoubleSpinBox.value, self.ui.sweepStepDoubleSpinBox.value)
        with ErrorDisplay(_("Could not start the sweep.")):
            self._startJob(
                _("Generating a sweep over {name}...").format(name=vary[0]),
                lambda onProgress, onDone: self.logic.startSweepJob(
                    p.model, vary, sliders.conditions_from_json(p.conditionsJson), seed=p.seed, steps=p.steps or None,
                    device=p.device, allowExtrapolation=p.allowExtrapolation, onProgress=onProgress, onDone=onDone))

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
        self.ui.jobFrame.visible = job.state is jobs.JobState.FAILED
        if job.state is jobs.JobState.SUCCEEDED:
            slicer.util.showStatusMessage(_("Background job finished."), 5000)
        elif job.state is jobs.JobState.CANCELLED:
            slicer.util.showStatusMessage(_("Cancelled; the scene was not changed."), 5000)
        else:
            self.ui.jobStatusLabel.text = error
            slicer.util.errorDisplay(_("The background job failed."), detailedText=error + "\n\n" + "\n".join(job.log))
        self._job = None
        self.onParameterNodeModified()

    def onCancel(self) -> None:
        if self._job is not None and not self._job.finished:
            self._job.cancel()

    # --- export

    def onExport(self) -> None:
        with ErrorDisplay(_("Export failed.")):
            folder = self.ui.exportDirectoryButton.directory
            conflicts = self.logic.exportConflicts(folder)
            if conflicts and not slicer.util.confirmOkCancelDisplay(
                    _("Replace {n} files of this atlas in {folder}?").format(n=len(conflicts), folder=folder),
                    detailedText="\n".join(str(p) for p in conflicts)):
                return
            written = self.logic.exportAtlas(folder, overwrite=bool(conflicts))
            slicer.util.showStatusMessage(_("Wrote {n} files to {folder}").format(n=len(written), folder=folder), 5000)

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

    # conversions, for scripts: library Volume / displacement field <-> MRML nodes
    volumeFromNode = staticmethod(MRMLConversion.volumeFromNode)
    gridTransformNode = staticmethod(MRMLConversion.gridTransformNode)
    displacementFromTransformNode = staticmethod(MRMLConversion.displacementFromTransformNode)
    missingDependencies = staticmethod(DependencyInstaller.missingDependencies)
    ensureDependencies = staticmethod(DependencyInstaller.ensureDependencies)

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastWarnings: list = []
        self.lastSeconds = 0.0
        self._cards = None
        self.jobs = JobLauncher(Path(arrays.__file__).resolve().parents[2])  # the folder holding DiffDefAtlasLib

    def getParameterNode(self):
        return DiffDefAtlasParameterNode(super().getParameterNode())

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

    def generateAtlas(self, model: str = "brain3d", conditions: Optional[dict] = None, *, seed: int = 0,
                      steps: Optional[int] = None, device: str = "auto", allowExtrapolation: bool = False) -> AtlasNodes:
        """Generate an atlas and show it: atlas volume, label map + segmentation, grid transform (template to atlas),
        Jacobian (foreground), displacement magnitude and folding segment. Generating again updates the same nodes."""
        self.ensureDependencies()
        from DiffDefAtlasLib import api

        conditions = dict(conditions or {})
        result = self._call(api.generate_atlas, model, conditions, seed=int(seed), steps=steps or None,
                            device=devices.device_choice(device), allow_extrapolation=bool(allowExtrapolation))
        return self.showAtlasResult(result, model=model, conditions=conditions, seed=int(seed))

    def showAtlasResult(self, result, *, model: str, conditions: dict, seed: int = 0) -> AtlasNodes:
        """Create or update the atlas nodes from a library ``AtlasResult`` (``layers.atlas_layers`` decides them)."""
        p = self.getParameterNode()
        plan = layers.atlas_layers(result, model=model, conditions=conditions, seed=seed)
        p.atlasVolume = MRMLConversion.volumeNode(plan.atlas, p.atlasVolume)
        p.atlasLabels = MRMLConversion.volumeNode(plan.labels, p.atlasLabels)
        p.atlasLabels.GetDisplayNode().SetAndObserveColorNodeID(SegmentationBuilder.labelColorNode().GetID())
        p.atlasSegmentation = SegmentationBuilder.segmentationFromLabels(p.atlasLabels, plan.names["segmentation"],
                                                                         p.atlasSegmentation)
        p.deformation = MRMLConversion.gridTransformNode(plan.displacement, plan.grid, plan.names["deformation"],
                                                         p.deformation)
        p.jacobianVolume = MRMLConversion.volumeNode(plan.jacobian, p.jacobianVolume)
        p.magnitudeVolume = MRMLConversion.volumeNode(plan.magnitude, p.magnitudeVolume)
        p.foldingSegmentation = SegmentationBuilder.foldingSegmentation(plan.folding, p.foldingSegmentation,
                                                                        reference=p.jacobianVolume)
        p.atlasVolume.SetAttribute(layers.GENERATION_ATTRIBUTE, plan.record)
        self.showAtlasLayers(p)
        return AtlasNodes(p.atlasVolume, p.atlasLabels, p.atlasSegmentation, p.deformation, p.jacobianVolume,
                          p.magnitudeVolume, p.foldingSegmentation, result)

    # --- display

    def applyDisplaySettings(self, p=None) -> None:
        """Apply the overlay settings of the parameter node (grid/glyphs, colours, legends, folding visibility)."""
        OverlayDisplay.applyDisplaySettings(p or self.getParameterNode())

    def showAtlasLayers(self, p=None) -> None:
        """Atlas in the background, the chosen overlay (Jacobian or displacement magnitude) in the foreground."""
        OverlayDisplay.showAtlasLayers(p or self.getParameterNode())

    # --- registration

    def _atlasAndLabels(self, atlasNode, atlasLabelsNode):
        """The atlas to register to (default: the current one) and its label map (the current atlas's labels)."""
        p = self.getParameterNode()
        atlasNode = atlasNode or p.atlasVolume
        if atlasNode is None:
            raise ValueError("no atlas: generate one first, or pass atlasNode")
        if atlasLabelsNode is None and p.atlasVolume and atlasNode.GetID() == p.atlasVolume.GetID():
            atlasLabelsNode = p.atlasLabels
        return atlasNode, atlasLabelsNode

    def registerVolume(self, movingNode, atlasNode=None, *, refine: int = 0, affine: bool = True, device: str = "auto",
                       atlasLabelsNode=None) -> RegistrationNodes:
        """Register a scan to the atlas (affine + learned deformable, optional refinement) in this process.

        ``atlasNode`` defaults to the current atlas; its label map (the current atlas's, or ``atlasLabelsNode``) is
        propagated onto the scan. Blocks until done; :meth:`startRegistrationJob` runs in a background process.
        """
        self.ensureDependencies()
        from DiffDefAtlasLib import api

        if movingNode is None:
            raise ValueError("no scan to register: load one and select it")
        atlasNode, atlasLabelsNode = self._atlasAndLabels(atlasNode, atlasLabelsNode)
        labels = MRMLConversion.volumeFromNode(atlasLabelsNode) if atlasLabelsNode else None
        result = self._call(api.register_to_atlas, MRMLConversion.volumeFromNode(movingNode),
                            MRMLConversion.volumeFromNode(atlasNode), atlas_labels=labels, refine=int(refine),
                            affine=bool(affine), device=devices.device_choice(device))
        return self.showRegistrationResult(result, movingNode, atlasNode)

    def showRegistrationResult(self, result, movingNode, atlasNode) -> RegistrationNodes:
        """Show the scan in atlas space over the atlas, the transform, its Jacobian and the labels on the scan."""
        plan = layers.registration_layers(result, movingNode.GetName())
        existing = MRMLConversion.existingNode
        warped = MRMLConversion.volumeNode(plan.warped, existing(plan.warped.name))
        transform = MRMLConversion.gridTransformNode(plan.displacement, plan.grid, plan.names["transform"],
                                                     existing(plan.names["transform"], "vtkMRMLGridTransformNode"))
        transform.GetDisplayNode().SetVisibility(False)
        jacobian = MRMLConversion.volumeNode(plan.jacobian, existing(plan.jacobian.name))
        OverlayDisplay.colourVolume(jacobian, overlays.JACOBIAN_COLOR_NODE_ID, plan.jacobian_window,
                                    overlays.REGISTRATION_JACOBIAN_LEGEND_TITLE, False)
        labels = segmentation = None
        if plan.labels is not None:
            labels = MRMLConversion.volumeNode(plan.labels, existing(plan.labels.name, layers.LABEL_VOLUME))
            labels.GetDisplayNode().SetAndObserveColorNodeID(SegmentationBuilder.labelColorNode().GetID())
            segmentation = SegmentationBuilder.segmentationFromLabels(
                labels, plan.names["segmentation"], existing(plan.names["segmentation"], "vtkMRMLSegmentationNode"))
        slicer.util.setSliceViewerLayers(background=atlasNode, foreground=warped, foregroundOpacity=0.5)
        return RegistrationNodes(warped, transform, jacobian, labels, segmentation, result)

    def startRegistrationJob(self, movingNode, atlasNode=None, *, refine: int = 50, affine: bool = True,
                             device: str = "auto", onProgress=None, onDone=None, atlasLabelsNode=None):
        """Register in a background process (``diffdef-atlas register``); the scene changes only on success.

        ``onProgress(fraction, message)`` follows the job; ``onDone(job, nodes, error)`` is called once, with
        ``nodes`` a :class:`RegistrationNodes` on success and ``None`` when cancelled or failed. ``job.cancel()``
        stops it.
        """
        self.ensureDependencies()  # the child process runs the library; the scene conversion needs it too
        if movingNode is None:
            raise ValueError("no scan to register: load one and select it")
        atlasNode, atlasLabelsNode = self._atlasAndLabels(atlasNode, atlasLabelsNode)
        return self.jobs.startRegistration(
            movingNode, atlasNode, atlasLabelsNode, lambda result: self.showRegistrationResult(result, movingNode, atlasNode),
            refine=refine, affine=affine, device=device, onProgress=onProgress, onDone=onDone)

    def startSweepJob(self, model: str, vary: tuple, conditions: dict, *, seed: int = 0, steps=None, device: str = "auto",
                      allowExtrapolation: bool = False, onProgress=None, onDone=None):
        """Generate one atlas per value of ``vary = (name, start, stop, step)`` in a background process and load them
        as a sequence (play it with the Sequences toolbar). Callbacks as in :meth:`startRegistrationJob`."""
        self.ensureDependencies()
        return self.jobs.startSweep(model, vary, conditions, seed=seed, steps=steps, device=device,
                                    allowExtrapolation=allowExtrapolation, onProgress=onProgress, onDone=onDone)

    # --- export

    def _exportStem(self) -> tuple:
        p = self.getParameterNode()
        if not p.atlasVolume:
            raise ValueError("no atlas to export: generate one first")
        record = layers.read_generation_record(p.atlasVolume.GetAttribute(layers.GENERATION_ATTRIBUTE))
        return record, layers.export_stem_for_record(record, p.model)

    def exportConflicts(self, folder) -> list:
        """The files in ``folder`` that :meth:`exportAtlas` would replace (ask the user before passing overwrite)."""
        _, stem = self._exportStem()
        return [path for path in exports.export_paths(folder, stem).values() if path.exists()]

    def exportAtlas(self, folder, overwrite: bool = False) -> dict:
        """Write the current atlas, labels, deformation (NIfTI intent 1006), Jacobian, folding and summary to a folder.

        File names say model, conditions and, where it has an effect, the seed (``brain3d_age-72_sex-F_atlas.nii.gz``...). Files of those
        names already in the folder are replaced only with ``overwrite`` (otherwise an error lists them).
        """
        p = self.getParameterNode()
        record, stem = self._exportStem()
        displacement, grid = self.displacementFromTransformNode(p.deformation) if p.deformation else (None, None)
        return exports.export_atlas(
            folder, stem, atlas=self.volumeFromNode(p.atlasVolume),
            labels=self.volumeFromNode(p.atlasLabels) if p.atlasLabels else None, displacement=displacement, grid=grid,
            jacobian=self.volumeFromNode(p.jacobianVolume) if p.jacobianVolume else None, summary=record, overwrite=overwrite)


#
# Test
#


class DiffDefAtlasTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: the *Reload and Test* button (developer mode), or from a terminal::

        Slicer --testing --additional-module-paths DiffDefAtlas \\
               --python-code "import DiffDefAtlas; DiffDefAtlas.DiffDefAtlasTest().runTest(); slicer.util.exit(0)"

    With ``--testing`` and PyTorch or MONAI missing, the tests are skipped (nothing is downloaded); install the
    dependencies first (the module's Setup section) to run them. Outside testing mode the first test asks to install.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        missing = DiffDefAtlasLogic.missingDependencies()
        if missing and slicer.app.testingEnabled():
            # as SlicerTotalSegmentator does: under Slicer --testing (the extension factory) nothing is downloaded,
            # so without PyTorch and MONAI the logic tests are skipped, not failed and not installed for
            self.delayDisplay("Skipped: {} not installed; testing mode installs nothing".format(", ".join(missing)))
            return
        self.test_generate_nodes_match_library()
        self.test_register_sample_volume()
        self.test_cancelled_job_leaves_scene_unchanged()

    def _generate(self, conditions=None):
        logic = DiffDefAtlasLogic()
        return logic, logic.generateAtlas(model="brain3d", conditions=conditions or {"age": 72, "sex": "F"}, device="cpu")

    def test_generate_nodes_match_library(self):
        import numpy as np

        from DiffDefAtlasLib.spatial.convert import displacement_to_slicer_array

        self.delayDisplay("Generating an atlas")
        logic, nodes = self._generate()
        result = nodes.result
        names = layers.atlas_node_names("brain3d", {"age": 72, "sex": "F"})
        expectedNames = {"atlas": "atlas", "labels": "labels", "segmentation": "segmentation", "transform": "deformation",
                         "jacobian": "jacobian", "magnitude": "magnitude", "folding": "folding"}
        for field, key in expectedNames.items():
            node = getattr(nodes, field)
            self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(node.GetID()))
            self.assertEqual(node.GetName(), names[key])
        # voxels and geometry against the library's output
        for node, volume in ((nodes.atlas, result.atlas), (nodes.labels, result.labels), (nodes.jacobian, result.jacobian)):
            array, ijkToRAS = arrays.volume_to_slicer_array(volume)
            np.testing.assert_allclose(slicer.util.arrayFromVolume(node), array, rtol=1e-6, atol=1e-6)
            matrix = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(matrix)
            np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), ijkToRAS, atol=1e-6)
        self.assertEqual(nodes.labels.GetClassName(), "vtkMRMLLabelMapVolumeNode")
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
        # overlays: Jacobian foreground centred on 1 with a legend, grid visualisation, folding segment, magnitude
        display = nodes.jacobian.GetDisplayNode()
        self.assertEqual(display.GetColorNodeID(), overlays.JACOBIAN_COLOR_NODE_ID)
        self.assertAlmostEqual(display.GetLevel(), 1.0)
        self.assertIsNotNone(slicer.modules.colors.logic().GetColorLegendDisplayNode(nodes.jacobian))
        transformDisplay = nodes.transform.GetDisplayNode()
        self.assertEqual(transformDisplay.GetVisualizationMode(), slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
        self.assertTrue(transformDisplay.GetVisibility2D())
        self.assertTrue(nodes.folding.GetSegmentation().GetSegmentIdBySegmentName(layers.FOLDING_SEGMENT_NAME))
        np.testing.assert_allclose(slicer.util.arrayFromVolume(nodes.magnitude).transpose(2, 1, 0),
                                   arrays.displacement_magnitude(result.displacement), atol=1e-4)
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            self.assertEqual(composite.GetBackgroundVolumeID(), nodes.atlas.GetID())
            self.assertEqual(composite.GetForegroundVolumeID(), nodes.jacobian.GetID())
        # regenerating updates the same nodes
        again = logic.generateAtlas(model="brain3d", conditions={"age": 80, "sex": "F"}, device="cpu")
        self.assertEqual(again.atlas.GetID(), nodes.atlas.GetID())
        self.assertEqual(again.atlas.GetName(), layers.atlas_node_names("brain3d", {"age": 80, "sex": "F"})["atlas"])
        # export writes every file
        folder = Path(tempfile.mkdtemp(prefix="DiffDefAtlasTest-"))
        try:
            written = logic.exportAtlas(folder)
            self.assertEqual(set(written), set(exports.EXPORT_SUFFIXES))
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
        names = layers.registration_node_names(moving.GetName())
        self.assertEqual(registered.warped.GetName(), names["warped"])
        self.assertEqual(slicer.util.arrayFromVolume(registered.warped).shape, slicer.util.arrayFromVolume(nodes.atlas).shape)
        self.assertIsNotNone(registered.labels)
        self.assertEqual(slicer.util.arrayFromVolume(registered.labels).shape, slicer.util.arrayFromVolume(moving).shape)
        self.assertGreater(int(np.count_nonzero(slicer.util.arrayFromVolume(registered.labels))), 0)
        self.assertEqual(registered.jacobian.GetDisplayNode().GetColorNodeID(), overlays.JACOBIAN_COLOR_NODE_ID)
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
        self.assertEqual(finished, [(jobs.JobState.CANCELLED, None)])
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Cancel left the scene unchanged")
