"""Slice views without Qt: what ``qMRMLSliceWidget`` / ``qMRMLSliceView`` put on screen, drawn offscreen.

Stands for Slicer's Qt slice view (``Libs/MRML/Widgets/qMRMLSliceView.cxx`` with CTK's
``vtkLightBoxRendererManager``), which slicer-core does not have. Everything that decides the pixels is slicer-core's
own: the slice logic of the view (``vtkMRMLSliceLogic``, which blends the background, foreground and label layers
into an RGBA image), and the displayable managers that ``qMRMLSliceView`` and the loadable modules register with
``vtkMRMLSliceViewDisplayableManagerFactory`` (colour legend, segmentations, transforms, model slices...), each drawing
into the view's renderer from the scene's nodes.

What this file does itself is only the Qt widget's plumbing:
- an offscreen ``vtkRenderWindow`` with one renderer (parallel projection, as a slice view's);
- the slice image as CTK's light-box manager shows it: a ``vtkImageMapper`` (window 255, level 127.5: the blended
  image is already 8-bit RGBA) on a background ``vtkActor2D``, fed by ``vtkMRMLSliceLogic.GetImageDataConnection``;
- the view size passed to ``vtkMRMLSliceLogic.ResizeSliceNode`` (``qMRMLSliceWidget`` does this on resize);
- :meth:`SliceView.capture`, a screenshot (``vtkWindowToImageFilter``), as ``slicer.util`` / ScreenCapture take one;
- :func:`slice_views`, the Red, Yellow and Green views made once per process, as Slicer's layout manager makes them
  at start-up: before any data is loaded. (That order matters: the colour legend manager, like Slicer's, draws the
  legends whose display nodes are added to the scene after it exists.)

The render window is whatever VTK gives headless: EGL on Linux wheels without a display (set
``VTK_DEFAULT_OPENGL_WINDOW`` before VTK makes its first window to choose, e.g. ``vtkOSOpenGLRenderWindow``).
"""

from __future__ import annotations

import os
import sys

import numpy as np

#: Displayable managers of a slice view: those ``qMRMLSliceView`` registers itself, then those the loadable modules
#: register (Colors: colour legend; Segmentations: 2D segments; Transforms: grid/glyph/contour of a transform).
SLICE_VIEW_MANAGERS = (
    "vtkMRMLVolumeGlyphSliceDisplayableManager",
    "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
    "vtkMRMLScalarBarDisplayableManager",
    "vtkMRMLColorLegendDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLTransformsDisplayableManager2D",
)


#: The orientation each view of Slicer's conventional layout gives its slice node (``qMRMLLayoutManager`` sets it from
#: the layout's ``orientation`` property; a slice node made by ``vtkMRMLSliceLogic.AddSliceNode`` alone is "Reformat").
LAYOUT_ORIENTATIONS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


def _headless_default() -> None:
    """Without an X display, ask VTK for its EGL window directly (it would otherwise try X first and warn)."""
    if not os.environ.get("DISPLAY") and "VTK_DEFAULT_OPENGL_WINDOW" not in os.environ:
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"


_PROBE = """
import vtk
from vtk.util.numpy_support import vtk_to_numpy
window = vtk.vtkRenderWindow()
window.SetOffScreenRendering(1)
window.SetSize(8, 8)
renderer = vtk.vtkRenderer()
renderer.SetBackground(1.0, 0.0, 0.0)
window.AddRenderer(renderer)
window.Render()
grab = vtk.vtkWindowToImageFilter()
grab.SetInput(window)
grab.Update()
pixels = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
assert pixels.shape[0] == 64 and (pixels[:, 0] > 200).all() and (pixels[:, 1] < 50).all(), pixels[:4]
print(window.GetClassName())
"""
_probe: dict = {}


def offscreen_rendering() -> tuple:
    """``(works, detail)``: whether VTK renders offscreen here (a red 8 x 8 window read back), tried once per process
    in a child process, since a VTK without an OpenGL context may abort rather than raise. ``detail`` is the
    render window's class (e.g. ``vtkEGLRenderWindow``) or why it failed."""
    if not _probe:
        import subprocess

        _headless_default()
        try:
            run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
            lines = (run.stdout.strip() or run.stderr.strip() or f"exit status {run.returncode}").splitlines()
            _probe["result"] = (run.returncode == 0, lines[-1] if run.returncode == 0 else "\n".join(lines[-5:]))
        except (OSError, subprocess.TimeoutExpired) as error:
            _probe["result"] = (False, str(error))
    return _probe["result"]


class SliceView:
    """One slice view (``Red``, ``Yellow`` or ``Green``) of a slice logic, rendered offscreen at ``size`` pixels."""

    def __init__(self, slice_logic, app_logic, size=(256, 256), orientation=None) -> None:
        _headless_default()
        import slicer
        import vtk

        self.logic = slice_logic
        orientation = orientation or LAYOUT_ORIENTATIONS.get(slice_logic.GetSliceNode().GetLayoutName())
        if orientation:
            slice_logic.GetSliceNode().SetOrientation(orientation)
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(int(size[0]), int(size[1]))
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()  # some managers reach the view's interactor
        self.interactor.SetRenderWindow(self.window)

        self.image_mapper = vtk.vtkImageMapper()
        self.image_mapper.SetColorWindow(255.0)
        self.image_mapper.SetColorLevel(127.5)
        self.image_actor = vtk.vtkActor2D()
        self.image_actor.SetMapper(self.image_mapper)
        self.image_actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image_actor)

        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(app_logic)
        for name in SLICE_VIEW_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = factory.InstantiateDisplayableManagers(self.renderer)
        self.managers.SetMRMLDisplayableNode(slice_logic.GetSliceNode())
        self.window.Render()  # create the OpenGL context first, as qMRMLSliceView does
        self.resize(size)

    @property
    def slice_node(self):
        return self.logic.GetSliceNode()

    def manager_names(self) -> list:
        return [self.managers.GetNthDisplayableManager(i).GetClassName()
                for i in range(self.managers.GetDisplayableManagerCount())]

    def resize(self, size) -> None:
        self.window.SetSize(int(size[0]), int(size[1]))
        self.logic.ResizeSliceNode(int(size[0]), int(size[1]))

    def fit(self) -> None:
        """Fit the view to its background volume (the slice view's "reset field of view")."""
        self.logic.FitSliceToBackground()
        self.slice_node.UpdateMatrices()

    def render(self) -> None:
        self.image_mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.logic.GetImageDataConnection().GetProducer().Update()
        self.managers.RequestRender()
        self.window.Render()

    def capture(self) -> np.ndarray:
        """The rendered view as an ``(height, width, 3)`` uint8 array, top row first."""
        import vtk
        from vtk.util.numpy_support import vtk_to_numpy

        self.render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
        return np.ascontiguousarray(pixels[::-1, :, :3])

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.renderer.RemoveAllViewProps()
        self.window.Finalize()


_views: dict = {}


def slice_views(env, size=(256, 256)) -> dict:
    """The ``Red``, ``Yellow`` and ``Green`` views of ``env`` (``application.start()``), made on the first call and
    resized on later ones; a dict by view name."""
    if not _views:
        for slice_logic in env.slice_logics:
            _views[slice_logic.GetSliceNode().GetLayoutName()] = SliceView(slice_logic, env.app_logic, size)
    for view in _views.values():
        view.resize(size)
    return dict(_views)
