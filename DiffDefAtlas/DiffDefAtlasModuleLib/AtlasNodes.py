"""The nodes ``DiffDefAtlasLogic.generateAtlas`` returns."""

from dataclasses import dataclass
from typing import Any


@dataclass
class AtlasNodes:
    """The nodes of one generated atlas (MRML nodes); ``result`` is the library's ``AtlasResult``.

    ``atlas`` (scalar volume), ``labels`` (label map), ``segmentation`` (one segment per tissue label),
    ``transform`` (grid transform, template to atlas), ``jacobian`` and ``magnitude`` (scalar volumes),
    ``folding`` (segmentation with the "folding" segment).
    """

    atlas: Any
    labels: Any
    segmentation: Any
    transform: Any
    jacobian: Any
    magnitude: Any
    folding: Any
    result: Any = None
