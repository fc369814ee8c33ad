"""The module's parameter node: GUI state saved with the scene."""

from typing import Annotated

from slicer import vtkMRMLGridTransformNode, vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper


@parameterNodeWrapper
class DiffDefAtlasParameterNode:
    """Settings bound to the widgets (``SlicerParameterName`` in the .ui) and the nodes of the current atlas.

    Condition values are JSON text (``DiffDefAtlasLib.slicer_support.sliders.conditions_to_json``) because each model card has its own
    conditions. ``device``, ``deformationDisplay`` and ``foreground`` hold the combo boxes' data values.
    """

    model: str = "brain3d"
    conditionsJson: str = "{}"
    allowExtrapolation: bool = False
    liveUpdate: bool = True
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    steps: Annotated[int, WithinRange(0, 1000)] = 0  # 0: the model's default
    device: str = "auto"  # auto, cpu or cuda
    deformationDisplay: str = "grid"  # grid, glyph or none
    deformationScale: Annotated[float, WithinRange(0.1, 10.0)] = 1.0
    gridSpacing: Annotated[float, WithinRange(2.0, 40.0)] = 8.0
    foreground: str = "jacobian"  # jacobian, magnitude or none
    foregroundOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    jacobianHalfWidth: Annotated[float, WithinRange(0.05, 2.0)] = 0.5
    showFolding: bool = True
    inputVolume: vtkMRMLScalarVolumeNode
    affine: bool = True
    refineIterations: Annotated[int, WithinRange(0, 1000)] = 0
    # nodes of the current atlas ("makes or updates": generating again reuses them)
    atlasVolume: vtkMRMLScalarVolumeNode
    atlasLabels: vtkMRMLLabelMapVolumeNode
    atlasSegmentation: vtkMRMLSegmentationNode
    deformation: vtkMRMLGridTransformNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    magnitudeVolume: vtkMRMLScalarVolumeNode
    foldingSegmentation: vtkMRMLSegmentationNode
