"""The pure-library side of the 3D Slicer module (no slicer, qt or ctk), testable without Slicer.

The module (``DiffDefAtlas/``) only moves arrays into MRML nodes and wires widgets; every decision it makes is a
function here, in a module named for what it does:

- :mod:`.arrays`: a ``Volume`` (``[i, j, k]``) to and from the ``[k, j, i]`` array and IJK-to-RAS matrix of a volume
  node; origin, spacing and directions of an image; the displacement magnitude;
- :mod:`.overlays`: colour tables, window/level of the overlays, label colours, the folding mask, preview overlays;
- :mod:`.sliders`: one slider (or combo box) per condition of a model card, with its trained range;
- :mod:`.devices`: the device choice and its description;
- :mod:`.exports`: export stems and the files of the Export button;
- :mod:`.jobs`: background jobs (registration, sweeps) in a child process, with progress and cancel;
- :mod:`.layers`: which nodes an atlas or a registration becomes, and the generation record on the atlas node;
- :mod:`.vtk_grid`: the ``vtkImageData`` and direction matrix of a grid transform, and back;
- :mod:`.gui_state`: condition-slider state, sweep ranges, status lines and transform-display settings;
- :mod:`.dependencies`: which packages still need installing inside Slicer.

No module here imports torch, MONAI, nibabel, SimpleITK or VTK at file scope (only numpy), so the Slicer module can
import them before the user has installed anything.
"""
