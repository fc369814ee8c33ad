"""The nodes ``DiffDefAtlasLogic.registerVolume`` returns."""

from dataclasses import dataclass
from typing import Any


@dataclass
class RegistrationNodes:
    """The nodes of one registration: ``warped`` (the scan in atlas space), ``transform`` (atlas to scan, a grid
    transform), ``jacobian`` (its det J on the atlas grid), and the atlas labels carried onto the scan as ``labels``
    and ``segmentation`` (``None`` when the atlas had no labels). ``result`` is the library's result."""

    warped: Any
    transform: Any
    jacobian: Any
    labels: Any = None
    segmentation: Any = None
    result: Any = None
