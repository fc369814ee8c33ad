"""Library volumes and displacement fields in and out of MRML nodes.

Every array order, matrix and vector convention is decided in ``DiffDefAtlasLib`` (``arrays.volume_to_slicer_array``,
``slicer_support.layers``, ``slicer_support.vtk_grid``) and tested there; this class only calls Slicer with them.
"""

import slicer
import vtk

from DiffDefAtlasLib.slicer_support import arrays
from DiffDefAtlasLib.slicer_support import layers, vtk_grid


class MRMLConversion:
    """Static helpers: create or update nodes from library objects, and read library objects back from nodes."""

    @staticmethod
    def volumeNode(layer, node=None):
        """Create (or update in place) a volume node from a ``layers.VolumeLayer``."""
        if node is None:
            node = slicer.util.addVolumeFromArray(layer.array, layer.ijk_to_ras, layer.name, layer.class_name)
        else:
            slicer.util.updateVolumeFromArray(node, layer.array)
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(layer.ijk_to_ras))
            node.SetName(layer.name)
        node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def volumeFromNode(node):
        """A library ``Volume`` (a copy) from a scalar volume node. A node under a transform must be hardened first,
        since the library works in the node's own IJK-to-RAS geometry."""
        if node is None:
            raise ValueError("no volume selected")
        if node.GetParentTransformNode() is not None:
            raise ValueError(f"{node.GetName()} is under a transform: harden it first (Data module, right-click, Harden transform)")
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return arrays.volume_from_slicer_array(slicer.util.arrayFromVolume(node), slicer.util.arrayFromVTKMatrix(matrix))

    @staticmethod
    def sameGeometry(volumeNode, layer) -> bool:
        """True when ``volumeNode`` lies on the grid of ``layer`` (shape and IJK-to-RAS)."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return layer.matches(slicer.util.arrayFromVolume(volumeNode).shape, slicer.util.arrayFromVTKMatrix(matrix))

    @staticmethod
    def gridTransformNode(displacement, grid, name: str, node=None):
        """A ``vtkMRMLGridTransformNode`` whose FromParent transform is ``x -> x + u(x)`` (RAS mm).

        That is the resampling transform: a volume placed under it is shown warped, as the library warps it.
        """
        image, direction = vtk_grid.displacement_grid_image(displacement, grid)
        transform = slicer.vtkOrientedGridTransform()
        transform.SetDisplacementGridData(image)
        transform.SetGridDirectionMatrix(direction)
        transform.SetInterpolationModeToCubic()
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
        node.SetName(name)
        node.SetAndObserveTransformFromParent(transform)
        node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def displacementFromTransformNode(node):
        """Inverse of :meth:`gridTransformNode`: ``(u, grid)`` in the library's convention."""
        transform = node.GetTransformFromParent()
        if transform is None or not hasattr(transform, "GetDisplacementGrid") or transform.GetDisplacementGrid() is None:
            raise ValueError(f"{node.GetName()} holds no displacement grid")
        return vtk_grid.displacement_from_grid_image(transform.GetDisplacementGrid(), transform.GetGridDirectionMatrix())

    @staticmethod
    def existingNode(name: str, className: str = layers.SCALAR_VOLUME):
        """The node of that name and exact class made by an earlier run (so repeated runs update, not pile up)."""
        for node in slicer.util.getNodesByClass(className):
            if node.GetName() == name and node.GetClassName() == className:
                return node
        return None

    @staticmethod
    def removeNode(node) -> None:
        """Remove a node with its display and storage nodes (temporary nodes must leave nothing behind)."""
        if node is None or node.GetScene() is None:
            return
        for index in reversed(range(node.GetNumberOfDisplayNodes())):
            slicer.mrmlScene.RemoveNode(node.GetNthDisplayNode(index))
        if node.GetStorageNode():
            slicer.mrmlScene.RemoveNode(node.GetStorageNode())
        slicer.mrmlScene.RemoveNode(node)
