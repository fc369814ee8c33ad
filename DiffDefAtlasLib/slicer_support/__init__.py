"""Helpers behind the 3D Slicer module, testable without Slicer.

The module (``DiffDefAtlas/``) only moves arrays into MRML nodes and wires widgets; every decision it makes is a
function here or in :mod:`DiffDefAtlasLib.scene` / :mod:`DiffDefAtlasLib.process`:

- :mod:`.layers`: which nodes an atlas or a registration becomes (names, ``[k, j, i]`` arrays, IJK-to-RAS matrices,
  overlay windows) and the generation record stored on the atlas node;
- :mod:`.vtk_grid`: the ``vtkImageData`` and direction matrix of a grid transform, and back;
- :mod:`.gui_state`: condition-slider state, sweep ranges, status lines and transform-display settings;
- :mod:`.dependencies`: which packages still need installing inside Slicer.

No module here imports torch, MONAI, nibabel, SimpleITK or VTK at file scope (only numpy), so the Slicer module can
import them before the user has installed anything.
"""
