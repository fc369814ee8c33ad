"""Overlays in the slice views: the deformation grid or glyphs, the Jacobian and displacement-magnitude foregrounds
with their colour legends, and the folding segment. The settings come from ``DiffDefAtlasLib.slicer_support.gui_state``
and ``DiffDefAtlasLib.slicer_support.overlays``."""

import slicer

from DiffDefAtlasLib.slicer_support import overlays
from DiffDefAtlasLib.slicer_support import gui_state

JACOBIAN_LEGEND_TITLE = "det J"
MAGNITUDE_LEGEND_TITLE = "|u| (mm)"


class OverlayDisplay:
    """Static helpers that apply the parameter node's display settings to the atlas nodes."""

    @staticmethod
    def showDeformation(transformNode, mode: str, scale: float, spacingMm: float) -> None:
        """Draw a grid transform in the 2D views as a warped grid or glyphs (or hide it)."""
        display = transformNode.GetDisplayNode() if transformNode else None
        if display is None:
            return
        settings = gui_state.deformation_display(mode, scale, spacingMm)
        display.SetVisibility(settings.visible)
        display.SetVisibility2D(settings.visible)
        display.SetVisibility3D(False)
        if settings.mode == "glyph":
            display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH)
            display.SetGlyphScalePercent(settings.scale_percent)
            display.SetGlyphSpacingMm(settings.spacing_mm)
        elif settings.mode == "grid":
            display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
            display.SetGridScalePercent(settings.scale_percent)
            display.SetGridSpacingMm(settings.spacing_mm)

    @staticmethod
    def colourVolume(node, colorNodeID: str, window, title: str, legendVisible: bool) -> None:
        """Fixed window/level on a colour table, with a colour legend (created once, then updated)."""
        display = node.GetDisplayNode() if node else None
        if display is None:
            return
        display.SetAndObserveColorNodeID(colorNodeID)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(window.window, window.level)
        colors = slicer.modules.colors.logic()
        legend = colors.GetColorLegendDisplayNode(node) or colors.AddDefaultColorLegendDisplayNode(node)
        if legend is not None:
            legend.SetTitleText(title)
            legend.SetVisibility(legendVisible)

    @staticmethod
    def applyDisplaySettings(p) -> None:
        """Apply the overlay settings of the parameter node ``p`` (cheap; called on every GUI change)."""
        if p.deformation:
            OverlayDisplay.showDeformation(p.deformation, p.deformationDisplay, p.deformationScale, p.gridSpacing)
        if p.jacobianVolume:
            window = overlays.jacobian_window_level(half_width=p.jacobianHalfWidth)
            OverlayDisplay.colourVolume(p.jacobianVolume, overlays.JACOBIAN_COLOR_NODE_ID, window, JACOBIAN_LEGEND_TITLE,
                                        p.foreground == "jacobian")
        if p.magnitudeVolume:
            window = overlays.magnitude_window_level(slicer.util.arrayFromVolume(p.magnitudeVolume))
            OverlayDisplay.colourVolume(p.magnitudeVolume, overlays.MAGNITUDE_COLOR_NODE_ID, window, MAGNITUDE_LEGEND_TITLE,
                                        p.foreground == "magnitude")
        if p.foldingSegmentation and p.foldingSegmentation.GetDisplayNode():
            p.foldingSegmentation.GetDisplayNode().SetVisibility(p.showFolding)
        slicer.util.setSliceViewerLayers(foregroundOpacity=p.foregroundOpacity)

    @staticmethod
    def showAtlasLayers(p) -> None:
        """Atlas in the background, the chosen overlay (Jacobian or displacement magnitude) in the foreground."""
        foreground = {"jacobian": p.jacobianVolume, "magnitude": p.magnitudeVolume}.get(p.foreground)
        background = p.atlasVolume if p.atlasVolume else "keep-current"
        slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                         foregroundOpacity=p.foregroundOpacity, fit=False)
        OverlayDisplay.applyDisplaySettings(p)
