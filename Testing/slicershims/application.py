"""``slicer.app`` and ``slicer.modules`` over a real MRML scene, and :func:`start`, which sets them up.

:func:`start` does what Slicer's core application does at start-up (``qSlicerCoreApplication::setMRMLScene`` and
the loadable modules' ``setup``), with slicer-core's real classes: a ``vtkMRMLScene`` set as ``slicer.mrmlScene``, with a data I/O and cache manager (bundles are unpacked there);
a ``vtkSlicerApplicationLogic`` with its colour logic and the default colour nodes; the crosshair; the Red, Yellow
and Green slice views (slice and slice-composite nodes from ``vtkMRMLSliceLogic``); and the module logics the
DiffDefAtlas module reaches (volumes, colors, segmentations, sequences, transforms, subject hierarchy, data),
each bound to the scene and registered with the application logic under its module name.

What stands in for Qt:
- ``slicer.app``: ``testingEnabled()`` and ``commandOptions().testingEnabled`` (Slicer's ``--testing``),
  ``processEvents()`` (fires due ``qt.QTimer`` timers, as Qt's event loop does), the override cursor (a no-op),
  ``startupEnvironment()`` (the environment Slicer started with), ``applicationName``, no top-level widgets (no
  main window, so ``slicer.util.showStatusMessage`` returns False and message boxes are only logged) and no layout
  manager;
- ``slicer.modules``: one object per module with ``logic()`` and ``path``; ``sequences.showSequenceBrowser``
  (Slicer's shows the Sequences toolbar) records the browser it was asked to show.

The color files Slicer ships in its share folder (``ColorFiles/*.txt``) are not in slicer-core, so colour-table IDs
such as ``vtkMRMLColorTableNodeFileDivergingBlueRed.txt`` do not exist here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

#: The folder holding ``DiffDefAtlas.py`` (the module as Slicer loads it).
MODULE_FOLDER = Path(__file__).resolve().parents[2] / "DiffDefAtlas"

_state: dict = {}


class _Environment:
    """A ``QProcessEnvironment``: ``keys()`` and ``value(name)``."""

    def __init__(self, environ) -> None:
        self._environ = dict(environ)

    def keys(self) -> list:
        return list(self._environ)

    def value(self, name: str, default: str = "") -> str:
        return self._environ.get(name, default)


class Application:
    """``slicer.app`` for a Slicer with no main window."""

    applicationName = "Slicer"

    def __init__(self) -> None:
        self.testing = True
        self._startup = _Environment(os.environ)

    def testingEnabled(self) -> bool:
        return self.testing

    def commandOptions(self):
        return SimpleNamespace(testingEnabled=self.testing, runPythonAndExit=False)

    def processEvents(self, *args) -> None:
        from . import qt

        qt.fire_due_timers()

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def startupEnvironment(self) -> _Environment:
        return self._startup

    def topLevelWidgets(self) -> list:
        return []

    def layoutManager(self):
        return None

    def translate(self, context: str, text: str) -> str:
        return text


class _Module:
    """One entry of ``slicer.modules``."""

    def __init__(self, logic, path: str = "") -> None:
        self._logic, self.path = logic, path
        self.shown: list = []

    def logic(self):
        return self._logic

    def showSequenceBrowser(self, browser) -> None:
        self.shown.append(browser)


def _install_shim_modules() -> None:
    """Make ``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.i18n`` and ``slicer.parameterNodeWrapper`` importable."""
    import slicer

    from . import ScriptedLoadableModule, ctk, i18n, parameterNodeWrapper, qt

    sys.modules.setdefault("qt", qt)
    sys.modules.setdefault("ctk", ctk)
    for name, module in (("ScriptedLoadableModule", ScriptedLoadableModule), ("i18n", i18n),
                         ("parameterNodeWrapper", parameterNodeWrapper)):
        sys.modules[f"slicer.{name}"] = module
        setattr(slicer, name, module)


def _bind(app_logic, scene, logic, name: str):
    logic.SetMRMLApplicationLogic(app_logic)
    logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic(name, logic)
    return logic


def start() -> SimpleNamespace:
    """Set up Slicer once per process (later calls return the same); returns the scene, the logics and the modules."""
    if _state:
        return _state["slicer"]
    import slicer
    import vtk

    _install_shim_modules()
    scene = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()  # Slicer's core application gives the scene a data I/O manager with a cache
    cache.SetRemoteCacheDirectory(tempfile.mkdtemp(prefix="slicer-cache-"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    slice_logics = []
    for view in ("Red", "Yellow", "Green"):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        logic.AddSliceNode(view)
        app_logic.GetSliceLogics().AddItem(logic)
        slice_logics.append(logic)
    logics = {
        "volumes": _bind(app_logic, scene, slicer.vtkSlicerVolumesLogic(), "Volumes"),
        "colors": _bind(app_logic, scene, slicer.vtkSlicerColorLogic(), "Colors"),
        "subjecthierarchy": _bind(app_logic, scene, slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy"),
        "segmentations": _bind(app_logic, scene, slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations"),
        "sequences": _bind(app_logic, scene, slicer.vtkSlicerSequencesLogic(), "Sequences"),
        "transforms": _bind(app_logic, scene, slicer.vtkSlicerTransformLogic(), "Transforms"),
        "data": _bind(app_logic, scene, slicer.vtkSlicerDataModuleLogic(), "Data"),
    }
    modules = SimpleNamespace(**{name: _Module(logic) for name, logic in logics.items()})
    modules.diffdefatlas = _Module(None, str(MODULE_FOLDER / "DiffDefAtlas.py"))
    modules.path = lambda name: getattr(modules, name.lower()).path
    slicer.mrmlScene = scene
    slicer.app = Application()
    slicer.modules = modules
    if str(MODULE_FOLDER) not in sys.path:
        sys.path.insert(0, str(MODULE_FOLDER))
    _state["slicer"] = SimpleNamespace(scene=scene, io_manager=io_manager, cache=cache, app_logic=app_logic, slice_logics=slice_logics, logics=logics,
                                       modules=modules, app=slicer.app)
    return _state["slicer"]


def shim_module(name: str) -> ModuleType:
    """The shim standing for ``name`` (for tests that check a shim against the behaviour it stands for)."""
    return sys.modules[name]
