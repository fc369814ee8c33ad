"""The module panel's slots on real Slicer MRML (slicer-core), with the Qt widgets of ``DiffDefAtlas.ui`` stood in
for by ``Testing/slicershims/widgets.py`` (slicer-core has no Qt), and the dependency installer's two paths.

What a running Slicer shows and these check: a failed step leaves a status line that says so (Slicer's
``tryWithErrorDisplay`` re-raises, read from ``Base/Python/slicer/util.py``), a model-listing error does not stop
the panel from being built, Generate waits for the dependencies, a sweep needs a continuous condition, the
background jobs ask to install first, testing mode downloads nothing, pip keeps the installed torch, and Slicer 5.10
(no ``slicer.packaging``; slicer-core is 5.13 and has none either, so both paths are driven through
``slicer.util.pip_install`` / a stand-in ``slicer.packaging.pip_ensure``) offers a restart after an upgrade of an
imported package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.slicer_core

UI_FILE = Path(__file__).resolve().parents[1] / "DiffDefAtlas" / "Resources" / "UI" / "DiffDefAtlas.ui"


@pytest.fixture
def module(scene):
    import DiffDefAtlas

    return DiffDefAtlas


@pytest.fixture
def make_widget(module, monkeypatch):
    """A ``DiffDefAtlasWidget`` whose ``setup()`` loads the designer file's widgets (call it to build the panel)."""
    import ctk
    import qt
    import slicer
    from slicershims import widgets

    made = []

    def make():
        top, ui = widgets.designer_widgets(UI_FILE)
        monkeypatch.setattr(slicer.util, "loadUI", lambda path: top)
        monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: ui)
        # the parent stands for Slicer's qSlicerScriptedLoadableModuleWidget (isEntered: the module is shown)
        widget = module.DiffDefAtlasWidget(SimpleNamespace(isEntered=False))
        widget.layout = widgets.Layout()
        made.append(widget)
        return widget

    for name, cls in widgets.qt_classes().items():
        monkeypatch.setattr(ctk if name.startswith("ctk") else qt, name, cls, raising=False)
    yield make
    for widget in made:  # as Slicer does when the module is unloaded: observers off the scene
        widget.cleanup()


def _missing(module, monkeypatch, names: list) -> None:
    monkeypatch.setattr(module.DiffDefAtlasLogic, "missingDependencies", staticmethod(lambda: list(names)))


def _volume(name: str):
    import slicer

    return slicer.util.addVolumeFromArray(np.zeros((4, 5, 6), np.float32), name=name)


def test_failed_generation_says_so_in_the_status_line(make_widget, monkeypatch):
    """Before the fix the error escaped the slot and the line stayed at "Generating..."."""
    from DiffDefAtlasLib.errors import DiffDefInputError

    widget = make_widget()
    widget.setup()

    def fail(**kwargs):
        raise DiffDefInputError("age 500 is outside the trained range")

    monkeypatch.setattr(widget.logic, "generateAtlas", fail)
    widget.ui.generateButton.click()
    assert widget.ui.generateStatusLabel.text == "Generation failed: age 500 is outside the trained range"


def test_failed_registration_says_so_in_the_status_line(make_widget, monkeypatch):
    widget = make_widget()
    widget.setup()
    p = widget._parameterNode
    p.inputVolume, p.atlasVolume, p.refineIterations = _volume("scan"), _volume("atlas"), 0

    def fail(*args, **kwargs):
        raise ValueError("the scan is 2D")

    monkeypatch.setattr(widget.logic, "registerVolume", fail)
    widget.onParameterNodeModified()
    widget.ui.registerButton.click()
    assert widget.ui.registerStatusLabel.text == "Registration failed: the scan is 2D"


def test_a_model_listing_error_does_not_stop_the_panel(make_widget, module, monkeypatch):
    """A corrupt model card raised out of ``setup()`` before, and Slicer showed no panel at all."""

    def fail(self):
        raise RuntimeError("brain3d.json: Expecting value: line 1 column 1")

    monkeypatch.setattr(module.DiffDefAtlasLogic, "modelCards", fail)
    widget = make_widget()
    widget.setup()
    assert widget.ui.modelComboBox.count() == 0
    assert widget.ui.dependencyStatusLabel.text == "All dependencies are installed."
    widget.ui.exportButton.click()  # the rest of the panel was wired


def test_generate_waits_for_the_dependencies_then_the_setup_section_refreshes(make_widget, module, monkeypatch):
    """Before the fix Generate was enabled with nothing installed, and installing through it never listed the
    models or built the condition sliders."""
    state = {"missing": ["torch", "monai"], "installs": 0}
    monkeypatch.setattr(module.DiffDefAtlasLogic, "missingDependencies", staticmethod(lambda: list(state["missing"])))

    def install():  # as the real one: nothing to do once everything is installed
        if state["missing"]:
            state["installs"] += 1
            state["missing"] = []

    monkeypatch.setattr(module.DiffDefAtlasLogic, "ensureDependencies", staticmethod(install))
    widget = make_widget()
    generated = []
    widget.setup()
    monkeypatch.setattr(widget.logic, "generateAtlas", lambda **kwargs: generated.append(kwargs))
    assert not widget.ui.generateButton.enabled and widget.ui.installDependenciesButton.visible
    assert not widget.ui.sweepButton.enabled and widget.ui.modelComboBox.count() == 0
    widget.onGenerate()  # as live update or a console call would: installs, generates nothing
    assert state["installs"] == 1 and generated == []
    assert widget.ui.modelComboBox.currentData == "brain3d" and not widget.ui.installDependenciesButton.visible
    assert set(widget.conditionPanel.controls) >= {"age", "sex"}
    assert widget.ui.generateButton.enabled and widget.ui.sweepButton.enabled


def test_sweep_needs_a_continuous_condition(make_widget):
    widget = make_widget()
    widget.setup()
    controls = widget.conditionPanel.controls
    assert any(not c.is_categorical for c in controls.values()) and widget.ui.sweepButton.enabled
    widget.conditionPanel.controls = {name: c for name, c in controls.items() if c.is_categorical}
    assert widget.conditionPanel.controls  # sex
    widget.onParameterNodeModified()
    assert not widget.ui.sweepButton.enabled


def test_background_jobs_ask_to_install_first(module, monkeypatch):
    """From the console without torch, the jobs failed with an ImportError in the child instead of the prompt."""
    logic = module.DiffDefAtlasLogic()
    asked, started = [], []

    def declined():
        asked.append(True)
        raise RuntimeError("Installation cancelled; DiffDefAtlas needs torch")

    monkeypatch.setattr(module.DiffDefAtlasLogic, "ensureDependencies", staticmethod(declined))
    monkeypatch.setattr(logic, "jobs", SimpleNamespace(startRegistration=lambda *a, **k: started.append(a),
                                                       startSweep=lambda *a, **k: started.append(a)))
    with pytest.raises(RuntimeError, match="Installation cancelled"):
        logic.startRegistrationJob(_volume("scan"), _volume("atlas"))
    with pytest.raises(RuntimeError, match="Installation cancelled"):
        logic.startSweepJob("brain3d", ("age", 60, 70, 5), {})
    assert len(asked) == 2 and started == []


def test_the_device_label_opens_no_cuda_context(make_widget, monkeypatch):
    """The label is filled on every device change; with CUDA it must not allocate (``mem_get_info`` did)."""
    import torch

    def needs_context(*args, **kwargs):
        raise AssertionError("the GUI label opened a CUDA context")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", needs_context)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(name="Test GPU", total_memory=2**33))
    widget = make_widget()
    widget.setup()
    widget.ui.deviceComboBox.setCurrentIndex(widget.ui.deviceComboBox.findData("cuda"))
    assert widget.ui.deviceInfoLabel.text == "cuda:0 (Test GPU, 8.0 GiB)"


def test_importing_the_module_leaves_sys_path_alone(module, monkeypatch):
    """Installed (the library importable), importing ``DiffDefAtlas.py`` edits nothing; it used to insert the
    library's folder into ``sys.path`` on every import."""
    import importlib

    from DiffDefAtlasModuleLib import LibraryPath

    calls = []
    monkeypatch.setattr(LibraryPath, "addLibraryToPath", lambda folder: calls.append(folder))
    before = list(sys.path)
    importlib.reload(module)
    assert calls == [] and sys.path == before


def test_self_test_is_skipped_without_dependencies_in_testing_mode(module, monkeypatch, slicer_env):
    """``Slicer --testing`` (the extension factory) must not download PyTorch; the tests skip instead."""
    _missing(module, monkeypatch, ["torch", "monai"])
    monkeypatch.setattr(module.DiffDefAtlasTest, "test_generate_nodes_match_library",
                        lambda self: pytest.fail("ran without dependencies"))
    slicer_env.app.testing = True
    module.DiffDefAtlasTest().runTest()


# --- the dependency installer


@pytest.fixture
def installer(module, monkeypatch):
    """``DependencyInstaller`` with monai missing (a lookup table of versions decides it)."""
    from DiffDefAtlasLib.slicer_support import dependencies

    from DiffDefAtlasModuleLib.DependencyInstaller import DependencyInstaller

    state = {"missing": ["monai>=1.4"]}
    monkeypatch.setattr(dependencies, "missing_pip_requirements", lambda version_of=None: list(state["missing"]))
    monkeypatch.setattr(dependencies, "torch_constraint", lambda version_of=None: "torch==2.5.1+cu121")
    return SimpleNamespace(cls=DependencyInstaller, state=state, dependencies=dependencies)


def test_testing_mode_installs_nothing(installer, monkeypatch, slicer_env):
    """Before, testing mode only skipped the confirmation and then installed."""
    import slicer

    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda *args, **kwargs: installs.append(args))
    slicer_env.app.testing = True
    with pytest.raises(RuntimeError, match="testing mode downloads nothing"):
        installer.cls.ensurePipPackages()
    fake = ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = lambda: pytest.fail("PyTorchUtils asked to install torch in testing mode")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    monkeypatch.setattr(installer.dependencies, "torch_problem", lambda *a: "PyTorch is not installed")
    monkeypatch.setattr(installer.dependencies, "torch_installed", lambda *a: False)
    with pytest.raises(RuntimeError, match="testing mode downloads nothing"):
        installer.cls.ensureTorch()
    assert installs == []


def test_slicer_5_10_pip_keeps_torch_and_offers_a_restart_after_an_upgrade(installer, monkeypatch, slicer_env):
    """Slicer 5.10 path (no ``slicer.packaging``): ``slicer.util.pip_install`` with a constraints file pinning the
    installed torch, then the restart that ``pip_ensure`` offers on 5.13 when an imported package changed."""
    import slicer

    slicer_env.app.testing = False
    monkeypatch.delattr(slicer, "packaging", raising=False)
    calls: dict = {"pip": [], "asked": [], "restarts": 0}

    def pip_install(args):
        calls["pip"].append((list(args), Path(args[1]).read_text()))
        installer.state["missing"] = []

    versions = iter([{"monai": "1.3.2"}, {"monai": "1.4.0"}])
    monkeypatch.setattr(installer.dependencies, "installed_versions", lambda: next(versions))
    monkeypatch.setattr(installer.dependencies, "distribution_import_names", lambda: {"monai": ["monai"]})
    monkeypatch.setitem(sys.modules, "monai", sys.modules.get("monai") or ModuleType("monai"))
    monkeypatch.setattr(slicer.util, "pip_install", pip_install)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *args, **kwargs: True)
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", lambda text, *a, **k: calls["asked"].append(text) or True)
    monkeypatch.setattr(slicer.util, "restart", lambda: calls.__setitem__("restarts", calls["restarts"] + 1))
    installer.cls.ensurePipPackages()
    (args, constraints), = calls["pip"]
    assert args[0] == "-c" and args[2:] == ["monai>=1.4"] and constraints.strip() == "torch==2.5.1+cu121"
    assert not Path(args[1]).exists()  # the constraints file is removed afterwards
    assert len(calls["asked"]) == 1 and "monai 1.3.2 -> 1.4.0" in calls["asked"][0] and calls["restarts"] == 1


def test_slicer_5_13_pip_ensure_gets_the_torch_constraint(installer, monkeypatch, slicer_env):
    """Slicer 5.13+: ``slicer.packaging.pip_ensure(requirements, constraints=...)`` (its signature in
    ``Base/Python/slicer/packaging.py``), which prompts and offers the restart itself."""
    import slicer

    slicer_env.app.testing = False
    seen = []

    def pip_ensure(requirements, constraints=None, **kwargs):
        seen.append(([str(r) for r in requirements], Path(constraints).read_text().strip(), kwargs))
        installer.state["missing"] = []

    monkeypatch.setattr(slicer, "packaging", SimpleNamespace(pip_ensure=pip_ensure), raising=False)
    installer.cls.ensurePipPackages()
    assert seen == [(["monai>=1.4"], "torch==2.5.1+cu121", {"requester": "DiffDefAtlas"})]


def test_a_too_old_torch_is_an_error_that_says_what_to_do(installer, monkeypatch):
    """Before, an importable torch was accepted whatever its version."""
    monkeypatch.setattr(installer.dependencies, "torch_installed", lambda *a: True)
    monkeypatch.setattr(installer.dependencies, "torch_problem",
                        lambda *a: "PyTorch 1.13.1 is installed; DiffDefAtlas needs torch>=2.1")
    with pytest.raises(RuntimeError, match=r"PyTorch 1.13.1 is installed; DiffDefAtlas needs torch>=2.1\. Update it"):
        installer.cls.ensureTorch()
