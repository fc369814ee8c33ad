"""Stand-ins for the parts of 3D Slicer that slicer-core (Kitware's Qt-free build of Slicer) does not have.

slicer-core brings the real MRML scene, the module logics (volumes, colors, segmentations, sequences, transforms,
subject hierarchy) and Slicer's own ``slicer/util.py``. What it lacks is the Qt application and Slicer's
pure-Python base classes. Each file here stands for one of those and says which Slicer behaviour (read from
Slicer's source, ``Base/Python/slicer/...``) it reproduces:

- :mod:`.qt`: the ``qt.QTimer`` the job launcher polls with, fired by ``slicer.app.processEvents()`` as Qt's event
  loop fires it, and the few ``qt`` constants ``slicer.util`` names;
- :mod:`.ScriptedLoadableModule`: the module, widget, logic and test base classes;
- :mod:`.ctk`: the name only (the condition sliders are ctk widgets, which the tier never builds);
- :mod:`.i18n`: ``tr`` and ``translate``, which return the text unchanged when no translation is loaded;
- :mod:`.parameterNodeWrapper`: typed properties stored in a ``vtkMRMLScriptedModuleNode`` (parameters and node
  references), with the range and type checks of Slicer's serializers; the GUI binding is Qt and is a no-op;
- :mod:`.widgets`: the Qt widgets of the module's designer file as ``slicer.util.childWidgetVariables`` gives
  them (properties, combo-box items, signals with PythonQt's argument rule), for tests of the widget's slots;
- :mod:`.application`: ``slicer.app`` (testing mode, command options, startup environment, event processing) and
  ``slicer.modules`` (each module's ``logic()``, bound to the scene by :func:`~.application.start`).

Nothing here stands in for what slicer-core has: scenes, nodes, storage nodes, logics and ``slicer.util`` are real.
"""
