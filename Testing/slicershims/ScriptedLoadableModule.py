"""``slicer.ScriptedLoadableModule``: the base classes of a scripted module (Slicer's
``Base/Python/slicer/ScriptedLoadableModule.py``), without their Qt parts.

- ``ScriptedLoadableModule(parent)``: keeps ``parent`` (title, categories, help text...) and ``moduleName`` (the
  class name) and registers the module's self-test in ``slicer.selfTests``;
- ``ScriptedLoadableModuleWidget``: ``moduleName`` is the class name without ``Widget``; the layout, the developer
  section and Reload are Qt and are not reproduced;
- ``ScriptedLoadableModuleLogic``: ``moduleName`` is the class name without ``Logic``; ``getParameterNode`` returns
  the scene's singleton ``vtkMRMLScriptedModuleNode`` tagged with the module name, creating it (tag, ``ModuleName``
  attribute, unique name) when there is none, and restores the attribute after a scene close, as Slicer does;
- ``ScriptedLoadableModuleTest``: a ``unittest.TestCase`` whose ``delayDisplay`` logs the message and processes
  events (Slicer's shows a popup for 50 ms first).
"""

from __future__ import annotations

import logging
import os
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = getattr(self, "runTest", None)

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[: -len("Widget")]
        self.layout = None
        self.developerMode = False

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(slicer.modules.path(self.moduleName)), "Resources", filename)

    def setup(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[: -len("Logic")]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            if node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, requestedDelay=None, msec=None) -> None:
        logging.info(message)
        slicer.app.processEvents()

    def setUp(self) -> None:
        slicer.mrmlScene.Clear(0)

    def runTest(self) -> None:
        pass
