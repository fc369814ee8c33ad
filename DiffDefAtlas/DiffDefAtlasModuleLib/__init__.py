"""Helper classes of the DiffDefAtlas Slicer module, one class per file (the way SlicerNNUnet splits its module).

This file imports nothing: ``DiffDefAtlas.py`` first makes ``DiffDefAtlasLib`` importable
(:func:`LibraryPath.addLibraryToPath`) and only then imports the files that use it.

- ``LibraryPath``: finds ``DiffDefAtlasLib`` beside an installed module or one folder up in a source checkout;
- ``DiffDefAtlasParameterNode``: the ``@parameterNodeWrapper`` parameter node;
- ``AtlasNodes`` / ``RegistrationNodes``: the nodes ``generateAtlas`` / ``registerVolume`` return;
- ``MRMLConversion``: library volumes and displacement fields in and out of MRML nodes;
- ``SegmentationBuilder``: label colour table, label and folding segmentations;
- ``OverlayDisplay``: transform grid/glyphs, Jacobian and magnitude colours, legends, slice layers;
- ``DependencyInstaller``: PyTorch through PyTorchUtils and pip packages, each after asking;
- ``JobLauncher``: registration and sweeps in a background process with progress and Cancel;
- ``ConditionPanel``: the condition sliders built from a model card.
"""
