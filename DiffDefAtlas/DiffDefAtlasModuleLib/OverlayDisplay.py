"""Overlays in the slice views: the deformation grid or glyphs, the Jacobian and displacement-magnitude foregrounds
with their colour legends, and the folding segment. The settings come from ``DiffDefAtlasLib.slicer_support.gui_state``
and ``DiffDefAtlasLib.slicer_support.overlays``.

``applyDisplaySettings`` runs on every change of the module's GUI, so it applies only what changed since it last
applied it (each node keeps what was applied in the attribute ``gui_state.APPLIED_DISPLAY_ATTRIBUTE``), and touches
only the module's own nodes and the views that show them: what the user set in Slicer (window/level, the opacity of
their own foreground, a legend) stays until the setting of the module that drives it changes.
"""

import slicer

from DiffDefAtlasLib.slicer_support import overlays
from DiffDefAtlasLib.slicer_support import gui_state

MAGNITUDE_LEGEND_TITLE = "|u| (mm)"


class OverlayDisplay:
    """Static helpers that apply the parameter node's display settings to the atlas nodes."""

    # --- what was applied to a node

    @staticmethod
    def _changes(node, wanted: dict) -> dict:
        return gui_state.display_changes(node.GetAttribute(gui_state.APPLIED_DISPLAY_ATTRIBUTE), wanted)

    @staticmethod
    def _remember(node, changes: dict) -> None:
        if changes:
            record = node.GetAttribute(gui_state.APPLIED_DISPLAY_ATTRIBUTE)
            node.SetAttribute(gui_state.APPLIED_DISPLAY_ATTRIBUTE, gui_state.remember_display(record, changes))

    # --- colour table of the Jacobian

    @staticmethod
    def jacobianColorNode():
        """The module's det J colour table (red below 1: larger in the atlas than in the template; white at 1; blue
        above 1), made once per scene from ``overlays.volume_change_colour_table``, and again after a scene close.

        A singleton node: its ID is the fixed ``overlays.JACOBIAN_COLOR_NODE_ID`` and a cleared scene keeps it."""
        node = slicer.mrmlScene.GetNodeByID(overlays.JACOBIAN_COLOR_NODE_ID)
        if node is not None:
            return node
        table = overlays.volume_change_colour_table().tolist()
        node = slicer.vtkMRMLColorTableNode()
        node.SetSingletonTag(overlays.JACOBIAN_COLOR_SINGLETON_TAG)
        node.SetName(overlays.JACOBIAN_COLOR_NODE_NAME)
        node.SetTypeToUser()
        node.SetNumberOfColors(len(table))
        for index, (red, green, blue, alpha) in enumerate(table):
            node.SetColor(index, red, green, blue, alpha)
        node.SetAttribute("Category", "DiffDefAtlas")
        node.SetDescription(overlays.JACOBIAN_COLOR_WORDS)
        node.SetHideFromEditors(False)
        node.SetSaveWithScene(False)  # as Slicer's own colour tables: made by the module, not stored with scenes
        slicer.mrmlScene.AddNode(node)
        return slicer.mrmlScene.GetNodeByID(overlays.JACOBIAN_COLOR_NODE_ID)

    @staticmethod
    def _setColorNode(display, colorNodeID: str) -> None:
        if colorNodeID == overlays.JACOBIAN_COLOR_NODE_ID:
            OverlayDisplay.jacobianColorNode()
            if display.GetColorNodeID() == colorNodeID:  # the node was made again: observe the new one
                display.SetAndObserveColorNodeID(None)
        display.SetAndObserveColorNodeID(colorNodeID)

    # --- single nodes

    @staticmethod
    def showDeformation(transformNode, mode: str, scale: float, spacingMm: float) -> None:
        """Draw a grid transform in the 2D views as a warped grid or glyphs (or hide it).

        Slicer draws a transform from its transform to the parent (``vtkSlicerTransformLogic::
        GetTransformedPointSamples`` uses ``GetTransformToWorld``), the inverse of the stored FromParent map
        x -> x + u(x): the drawing shows the motion of the template's anatomy into the atlas (arrows of about -u)."""
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
    def _legend(node, title: str, visible: bool) -> None:
        colors = slicer.modules.colors.logic()
        legend = colors.GetColorLegendDisplayNode(node) or colors.AddDefaultColorLegendDisplayNode(node)
        if legend is not None:
            legend.SetTitleText(title)
            legend.SetVisibility(visible)

    @staticmethod
    def colourVolume(node, colorNodeID: str, window, title: str, legendVisible: bool) -> None:
        """Fixed window/level on a colour table, with a colour legend (created once, then updated); applied now."""
        display = node.GetDisplayNode() if node else None
        if display is None:
            return
        OverlayDisplay._setColorNode(display, colorNodeID)
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(window.window, window.level)
        OverlayDisplay._legend(node, title, legendVisible)
        OverlayDisplay._remember(display, {"colorNodeID": colorNodeID, "legendTitle": title,
                                           "legendVisible": bool(legendVisible)})

    @staticmethod
    def _overlayIDs(p) -> set:
        return {node.GetID() for node in (p.jacobianVolume, p.magnitudeVolume) if node}

    @staticmethod
    def _compositesShowing(nodeID: str) -> list:
        return [c for c in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode") if c.GetForegroundVolumeID() == nodeID]

    @staticmethod
    def _applyOverlay(node, colorNodeID: str, windowFrom, window, title: str, legendVisible: bool, opacity: float) -> None:
        """What changed of an overlay's colours, window (``window()`` is called only when ``windowFrom``, what the
        window is made from, changed), legend, and opacity in the views whose foreground it is."""
        display = node.GetDisplayNode()
        if display is None:
            return
        wanted = {"colorNodeID": colorNodeID, "windowFrom": windowFrom, "legendTitle": title,
                  "legendVisible": bool(legendVisible), "foregroundOpacity": float(opacity)}
        changes = OverlayDisplay._changes(display, wanted)
        if colorNodeID == overlays.JACOBIAN_COLOR_NODE_ID and slicer.mrmlScene.GetNodeByID(colorNodeID) is None:
            changes["colorNodeID"] = colorNodeID  # our table has gone (a closed scene): make it again
        if windowFrom is None:
            changes.pop("windowFrom", None)
        if "colorNodeID" in changes:
            OverlayDisplay._setColorNode(display, colorNodeID)
        if "windowFrom" in changes:
            level = window()
            display.SetAutoWindowLevel(False)
            display.SetWindowLevel(level.window, level.level)
        if "legendTitle" in changes or "legendVisible" in changes:
            OverlayDisplay._legend(node, title, legendVisible)
        if "foregroundOpacity" in changes:
            for composite in OverlayDisplay._compositesShowing(node.GetID()):
                composite.SetForegroundOpacity(opacity)
        OverlayDisplay._remember(display, changes)

    # --- the parameter node's settings

    @staticmethod
    def applyDisplaySettings(p) -> None:
        """Apply what changed of the overlay settings of the parameter node ``p`` (cheap; called on every GUI change).

        Only the module's nodes change, and the opacity only of the views whose foreground is one of its overlays."""
        if p.deformation and p.deformation.GetDisplayNode():
            display = p.deformation.GetDisplayNode()
            changes = OverlayDisplay._changes(display, {"mode": p.deformationDisplay, "scale": p.deformationScale,
                                                        "spacing": p.gridSpacing})
            if changes:
                OverlayDisplay.showDeformation(p.deformation, p.deformationDisplay, p.deformationScale, p.gridSpacing)
                OverlayDisplay._remember(display, changes)
        if p.jacobianVolume:
            halfWidth = float(p.jacobianHalfWidth)
            OverlayDisplay._applyOverlay(p.jacobianVolume, overlays.JACOBIAN_COLOR_NODE_ID, halfWidth,
                                         lambda: overlays.jacobian_window_level(half_width=halfWidth),
                                         overlays.JACOBIAN_LEGEND_TITLE, p.foreground == "jacobian", p.foregroundOpacity)
        if p.magnitudeVolume:
            volume = p.magnitudeVolume
            image = volume.GetImageData()
            # the window is a percentile over every voxel: computed again only when the voxels change
            OverlayDisplay._applyOverlay(volume, overlays.MAGNITUDE_COLOR_NODE_ID, image.GetMTime() if image else None,
                                         lambda: overlays.magnitude_window_level(slicer.util.arrayFromVolume(volume)),
                                         MAGNITUDE_LEGEND_TITLE, p.foreground == "magnitude", p.foregroundOpacity)
        folding = p.foldingSegmentation.GetDisplayNode() if p.foldingSegmentation else None
        if folding is not None:
            changes = OverlayDisplay._changes(folding, {"visible": bool(p.showFolding)})
            if changes:
                folding.SetVisibility(p.showFolding)
                OverlayDisplay._remember(folding, changes)

    @staticmethod
    def showAtlasLayers(p) -> None:
        """Atlas in the background, the chosen overlay (Jacobian or displacement magnitude) in the foreground of every
        slice view; with no overlay chosen, the module's overlays leave the views (another foreground stays).

        With no atlas yet the views are left as they are."""
        if p.atlasVolume:
            chosen = {"jacobian": p.jacobianVolume, "magnitude": p.magnitudeVolume}.get(p.foreground)
            ours = OverlayDisplay._overlayIDs(p)
            for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
                composite.SetBackgroundVolumeID(p.atlasVolume.GetID())
                if chosen:
                    composite.SetForegroundVolumeID(chosen.GetID())
                    composite.SetForegroundOpacity(p.foregroundOpacity)
                elif composite.GetForegroundVolumeID() in ours:
                    composite.SetForegroundVolumeID(None)
            if chosen and chosen.GetDisplayNode():
                OverlayDisplay._remember(chosen.GetDisplayNode(), {"foregroundOpacity": float(p.foregroundOpacity)})
        OverlayDisplay.applyDisplaySettings(p)
