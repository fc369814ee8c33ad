"""Render the DiffDefAtlas module's slice views with 3D Slicer's own displayable managers, offscreen.

The picture in the README (``docs/images/slicer_atlas_jacobian.png``) is made with::

    .venv/bin/python scripts/render_slicer_views.py --out docs/images/slicer_atlas_jacobian.png --age 72 --sex F --size 360

What draws it is Slicer's, from slicer-core (Kitware's Qt-free build of 3D Slicer): the module's Logic
(``DiffDefAtlasLogic.generateAtlas``) makes the nodes and display settings on a real ``vtkMRMLScene``; each view's
``vtkMRMLSliceLogic`` blends the atlas (background) and the Jacobian (foreground) with their colour tables; the
displayable managers Slicer's slice views register (colour legend, segmentations 2D, transforms 2D, ...) draw the
legend, the segment outlines and the deformation grid. Only the Qt widget around a slice view is stood in for, by
``Testing/slicershims/sliceviews.py`` (an offscreen ``vtkRenderWindow``; EGL on a headless Linux machine).

The three views (axial Red, coronal Green, sagittal Yellow, each fitted to the atlas as Slicer's "reset field of
view" does) are put side by side under a title strip. Exit status 2, with a message, when slicer-core is missing,
offscreen rendering is not available, the Jacobian's colour table is missing, or a view renders empty.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The views, left to right: Slicer's conventional slice views and their orientations.
VIEWS = (("Red", "Axial"), ("Green", "Coronal"), ("Yellow", "Sagittal"))


def _fail(message: str) -> None:
    print(f"render_slicer_views: {message}", file=sys.stderr)
    raise SystemExit(2)


def _slicer_environment():
    """slicer-core with the shims standing for Slicer's Qt side (``Testing/slicershims``)."""
    try:
        import slicer

        slicer.vtkMRMLScene  # noqa: B018 (the ``slicer`` meta-package without slicer-core has no MRML)
        slicer.vtkMRMLSliceViewDisplayableManagerFactory  # noqa: B018
    except (ImportError, AttributeError):
        _fail("slicer-core is not installed (wheels for Python 3.11 on Linux x86_64: pip install slicer-core)")
    for folder in (ROOT, ROOT / "Testing"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from slicershims import application

    return application.start()


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default(size)


def _folding_text(nodes) -> str:
    import numpy as np

    folded = int(np.count_nonzero(np.asarray(nodes.result.folding.array)))
    return f"folding segment outline: {folded} voxels" if folded else "folding segment: empty (det J > 0 everywhere)"


def _compose(views: list, title: list, labels: list):
    """The views side by side under a title strip, each with its name under it."""
    from PIL import Image, ImageDraw

    height, width = views[0].shape[:2]
    gap, label_height, line = 6, 26, 24
    strip = 16 + line * len(title)
    canvas = Image.new("RGB", (len(views) * width + (len(views) + 1) * gap, strip + height + label_height + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(title):
        draw.text((gap + 4, 8 + i * line), text, fill="black", font=_font(18 if i == 0 else 14))
    for i, (view, label) in enumerate(zip(views, labels)):
        x = gap + i * (width + gap)
        canvas.paste(Image.fromarray(view), (x, strip))
        draw.text((x + 4, strip + height + 4), label, fill="black", font=_font(15))
    return canvas


def render(out: Path, age: float, sex: str, size: int, model: str = "brain3d", width=None) -> Path:
    env = _slicer_environment()
    import numpy as np
    import DiffDefAtlas
    from slicershims import sliceviews

    works, detail = sliceviews.offscreen_rendering()
    if not works:
        _fail(f"VTK cannot render offscreen here (no EGL or OSMesa OpenGL; try VTK_DEFAULT_OPENGL_WINDOW="
              f"vtkOSOpenGLRenderWindow): {detail}")
    print(f"offscreen rendering with {detail}")
    width = int(width or round(size * 1.6))
    views = sliceviews.slice_views(env, (width, size))  # the views exist before the data, as in Slicer
    logic = DiffDefAtlas.DiffDefAtlasLogic()
    nodes = logic.generateAtlas(model=model, conditions={"age": age, "sex": sex}, device="cpu")
    jacobian = nodes.jacobian.GetDisplayNode()
    if jacobian.GetLookupTable() is None:
        _fail(f"the Jacobian's colour node {jacobian.GetColorNodeID()!r} is not in the scene, so the foreground "
              "would be drawn without colours")
    images, labels = [], []
    for name, orientation in VIEWS:
        view = views[name]
        view.slice_node.SetOrientation(orientation)
        view.fit()
        pixels = view.capture()
        if pixels.std() < 1.0 or len(np.unique(pixels.reshape(-1, 3), axis=0)) < 16:
            _fail(f"the {orientation.lower()} view rendered empty (one colour); is offscreen OpenGL working?")
        images.append(pixels)
        labels.append(f"{orientation} ({name} view)")
    p = logic.getParameterNode()
    colour = jacobian.GetColorNode()
    title = [
        f"DiffDefAtlas in 3D Slicer: {model} atlas, age {age:g}, sex {sex}",
        f"background: atlas | foreground: det J at opacity {p.foregroundOpacity:g} "
        f"({colour.GetName() if colour else 'no colour table'}, window {jacobian.GetWindow():g} at level {jacobian.GetLevel():g})"
        " with its colour legend",
        f"deformation grid every {p.gridSpacing:g} mm (coloured by |u|) | tissue segment outlines | {_folding_text(nodes)}",
        "rendered offscreen by Slicer's own slice logic and displayable managers (slicer-core): "
        "scripts/render_slicer_views.py",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    _compose(images, title, labels).save(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "slicer_atlas_jacobian.png")
    parser.add_argument("--age", type=float, default=72.0)
    parser.add_argument("--sex", default="F")
    parser.add_argument("--size", type=int, default=360, help="height of each view in pixels")
    parser.add_argument("--width", type=int, default=None,
                        help="width of each view in pixels (default 1.6 times --size, as a slice view of Slicer's conventional layout "
                             "on a wide screen: that leaves the colour legend room)")
    parser.add_argument("--model", default="brain3d")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = render(args.out, args.age, args.sex, args.size, args.model, args.width)
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
