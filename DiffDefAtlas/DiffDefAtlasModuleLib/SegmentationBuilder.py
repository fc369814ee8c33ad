"""The label colour table and the segmentations (tissue labels, folding regions)."""

import slicer

from DiffDefAtlasLib.slicer_support import overlays
from DiffDefAtlasLib.slicer_support import layers

from .MRMLConversion import MRMLConversion

COLOR_TABLE_NAME = "DiffDefAtlas tissue labels"


class SegmentationBuilder:
    """Static helpers that build segmentations from label maps and binary masks."""

    @staticmethod
    def labelColorNode():
        """The colour table naming the template's tissue labels (created once per scene)."""
        node = slicer.mrmlScene.GetFirstNodeByName(COLOR_TABLE_NAME)
        if node is not None:
            return node
        from DiffDefAtlasLib.template import LABEL_COLORS, LABEL_NAMES

        rows = overlays.label_colors(LABEL_NAMES, LABEL_COLORS)
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
        node.SetTypeToUser()
        node.SetNumberOfColors(max(row[0] for row in rows) + 1)
        node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for value, name, rgb in rows:
            node.SetColor(value, name, *rgb, 1.0)
        return node

    @staticmethod
    def segmentationFromLabels(labelNode, name: str, node=None):
        """One segment per label of a label map node, named and coloured by its colour table (outlines only)."""
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.SetName(name)
        node.CreateDefaultDisplayNodes()
        node.GetSegmentation().RemoveAllSegments()
        node.SetReferenceImageGeometryParameterFromVolumeNode(labelNode)
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, node)
        node.GetDisplayNode().SetVisibility2DFill(False)
        return node

    @staticmethod
    def foldingSegmentation(layer, node=None, reference=None):
        """A segmentation with one segment, "folding", from a ``layers.VolumeLayer`` 0/1 mask (det J <= 0); the
        segment is empty when the deformation does not fold.

        ``reference`` is a volume node on the mask's grid (the Jacobian); without one a temporary node is used.
        """
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", layer.name)
        node.SetName(layer.name)
        node.CreateDefaultDisplayNodes()
        segmentation = node.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(layers.FOLDING_SEGMENT_NAME)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment(layers.FOLDING_SEGMENT_NAME, layers.FOLDING_SEGMENT_NAME,
                                                     list(layers.FOLDING_SEGMENT_COLOR))
        temporary = reference is None or not MRMLConversion.sameGeometry(reference, layer)
        if temporary:
            reference = MRMLConversion.volumeNode(layer)
        try:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
            slicer.util.updateSegmentBinaryLabelmapFromArray(layer.array, node, segmentId, reference)
        finally:
            if temporary:
                MRMLConversion.removeNode(reference)
        return node
