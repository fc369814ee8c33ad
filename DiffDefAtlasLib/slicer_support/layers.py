"""Which MRML nodes an atlas or a registration becomes, decided without Slicer.

:func:`atlas_layers` turns the library's ``AtlasResult`` into the volumes the Slicer module creates (atlas, labels,
Jacobian, displacement magnitude, folding mask), each as a Slicer ``[k, j, i]`` array with its IJK-to-RAS matrix
and node name, plus the names of the segmentations and the grid transform and the generation record kept on the
atlas node. :func:`registration_layers` does the same for a ``RegistrationResult``. The module's Logic only
creates or updates the nodes these describe.

Example:
    >>> atlas_node_names("brain3d", {"age": 72, "sex": "F"})["jacobian"]
    'brain3d age-72 sex-F Jacobian'
    >>> registration_node_names("MRHead")["warped"]
    'MRHead in atlas space'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, cast

import numpy as np

from .arrays import displacement_magnitude, volume_to_slicer_array
from ..results import atlas_stem, seed_with_effect
from .overlays import WindowLevel, folding_from_jacobian, jacobian_window_level, magnitude_window_level

SCALAR_VOLUME = "vtkMRMLScalarVolumeNode"
LABEL_VOLUME = "vtkMRMLLabelMapVolumeNode"

#: The last word(s) of each atlas node's name; the README lists them.
ATLAS_NODE_SUFFIXES = {
    "atlas": "atlas",
    "labels": "labels",
    "segmentation": "segmentation",
    "deformation": "deformation",
    "jacobian": "Jacobian",
    "magnitude": "displacement (mm)",
    "folding": "folding",
}

#: Names of the registration nodes, ``{scan}`` being the registered volume's name; the README lists them.
REGISTRATION_NODE_NAMES = {
    "warped": "{scan} in atlas space",
    "transform": "{scan} to atlas transform",
    "jacobian": "{scan} registration Jacobian",
    "labels": "{scan} atlas labels",
    "segmentation": "{scan} atlas segmentation",
}

#: Name of the segment that marks folding voxels (det J <= 0).
FOLDING_SEGMENT_NAME = "folding"
#: Colour (RGB 0..1) of the folding segment.
FOLDING_SEGMENT_COLOR = (1.0, 0.85, 0.0)
#: Attribute of the atlas volume node holding :func:`generation_record` (JSON).
GENERATION_ATTRIBUTE = "DiffDefAtlas.generation"


@dataclass(frozen=True)
class VolumeLayer:
    """One volume node to create or update: its name, ``[k, j, i]`` array, IJK-to-RAS matrix and node class."""

    name: str
    array: np.ndarray = field(repr=False)
    ijk_to_ras: np.ndarray = field(repr=False)
    class_name: str = SCALAR_VOLUME

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def matches(self, shape, ijk_to_ras, atol: float = 1e-6) -> bool:
        """True when a volume of ``shape`` (``[k, j, i]``) and IJK-to-RAS matrix lies on exactly this layer's grid
        (so it can serve as the reference geometry of a segmentation made from this layer)."""
        matrix = np.asarray(ijk_to_ras, dtype=np.float64)
        return tuple(shape) == self.shape and matrix.shape == (4, 4) and bool(np.allclose(matrix, self.ijk_to_ras, atol=atol))


@dataclass(frozen=True)
class AtlasLayers:
    """Everything the Slicer module shows for one atlas (see :func:`atlas_layers`)."""

    atlas: VolumeLayer
    labels: VolumeLayer
    jacobian: VolumeLayer
    magnitude: VolumeLayer
    folding: VolumeLayer
    names: dict[str, str]
    displacement: np.ndarray = field(repr=False)
    grid: Any = field(repr=False)
    jacobian_window: WindowLevel
    magnitude_window: WindowLevel
    record: str


@dataclass(frozen=True)
class RegistrationLayers:
    """Everything the Slicer module shows for one registration (see :func:`registration_layers`)."""

    warped: VolumeLayer
    jacobian: VolumeLayer
    labels: VolumeLayer | None
    names: dict[str, str]
    displacement: np.ndarray = field(repr=False)
    grid: Any = field(repr=False)
    jacobian_window: WindowLevel


def atlas_title(model: str, conditions: Mapping[str, Any], seed: int | None = None) -> str:
    """The common start of every atlas node name: model, conditions (sorted) and the seed when it has an effect,
    separated by spaces (the rule of :func:`~DiffDefAtlasLib.results.atlas_stem`)."""
    return atlas_stem(model, conditions, seed).replace("_", " ")


def atlas_node_names(model: str, conditions: Mapping[str, Any], seed: int | None = None) -> dict[str, str]:
    """Node names of one atlas, keyed like :data:`ATLAS_NODE_SUFFIXES`."""
    title = atlas_title(model, conditions, seed)
    return {key: f"{title} {suffix}" for key, suffix in ATLAS_NODE_SUFFIXES.items()}


def registration_node_names(scan_name: str) -> dict[str, str]:
    """Node names of one registration of the scan ``scan_name``, keyed like :data:`REGISTRATION_NODE_NAMES`."""
    return {key: pattern.format(scan=scan_name) for key, pattern in REGISTRATION_NODE_NAMES.items()}


def volume_layer(volume, name: str, class_name: str = SCALAR_VOLUME) -> VolumeLayer:
    """A library ``Volume`` as a :class:`VolumeLayer` (label maps as uint8)."""
    array, ijk_to_ras = volume_to_slicer_array(volume)
    if class_name == LABEL_VOLUME and array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255 or not np.all(np.equal(np.mod(array, 1), 0))):
            raise ValueError(f"{name}: a label map needs integer values 0..255")
        array = array.astype(np.uint8)
    return VolumeLayer(name, array, ijk_to_ras, class_name)


def generation_record(model: str, conditions: Mapping[str, Any], seed: int, summary: Mapping[str, Any] | None) -> str:
    """JSON text stored on the atlas node: what was generated, so Export can name its files after it."""
    record = {"model": str(model), "conditions": dict(conditions), "seed": int(seed), "summary": dict(summary or {})}
    return json.dumps(record, default=str, sort_keys=True)


def read_generation_record(text: str | None) -> dict[str, Any]:
    """Inverse of :func:`generation_record`; empty or unreadable text gives ``{}``."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def export_stem_for_record(record: Mapping[str, Any], fallback_model: str = "atlas") -> str:
    """The export file stem of the atlas described by a generation record."""
    conditions = cast("dict[str, Any]", record.get("conditions")) if isinstance(record.get("conditions"), dict) else {}
    summary = record.get("summary") if isinstance(record.get("summary"), dict) else {}
    return atlas_stem(str(record.get("model") or fallback_model), conditions, seed_with_effect(record.get("seed"), cast("dict[str, Any]", summary)))


def atlas_layers(result, *, model: str, conditions: Mapping[str, Any], seed: int = 0) -> AtlasLayers:
    """The nodes for a library ``AtlasResult``.

    ``folding`` is the library's folding map (det J <= 0) when the result has one, else derived from the Jacobian;
    the displacement magnitude (mm) lies on the displacement grid.
    """
    from ..imageio import Volume

    names = atlas_node_names(model, conditions, seed_with_effect(seed, getattr(result, "summary", {})))
    grid = result.grid
    jacobian = np.asarray(result.jacobian.array)
    folding = getattr(result, "folding", None)
    folding_array = (np.asarray(folding.array) > 0).astype(np.uint8) if folding is not None else folding_from_jacobian(jacobian)
    folding_affine = folding.affine if folding is not None else result.jacobian.affine
    magnitude = displacement_magnitude(result.displacement)
    return AtlasLayers(
        atlas=volume_layer(result.atlas, names["atlas"]),
        labels=volume_layer(result.labels, names["labels"], LABEL_VOLUME),
        jacobian=volume_layer(result.jacobian, names["jacobian"]),
        magnitude=volume_layer(Volume(magnitude, grid.affine), names["magnitude"]),
        folding=volume_layer(Volume(folding_array, folding_affine), names["folding"], LABEL_VOLUME),
        names=names,
        displacement=np.asarray(result.displacement, dtype=np.float32),
        grid=grid,
        jacobian_window=jacobian_window_level(jacobian),
        magnitude_window=magnitude_window_level(magnitude),
        record=generation_record(model, conditions, seed, getattr(result, "summary", {})),
    )


def registration_layers(result, scan_name: str) -> RegistrationLayers:
    """The nodes for a library ``RegistrationResult`` (or :func:`DiffDefAtlasLib.slicer_support.jobs.read_register_outputs`)."""
    names = registration_node_names(scan_name)
    labels = getattr(result, "labels_on_moving", None)
    return RegistrationLayers(
        warped=volume_layer(result.warped, names["warped"]),
        jacobian=volume_layer(result.jacobian, names["jacobian"]),
        labels=volume_layer(labels, names["labels"], LABEL_VOLUME) if labels is not None else None,
        names=names,
        displacement=np.asarray(result.displacement, dtype=np.float32),
        grid=result.grid,
        jacobian_window=jacobian_window_level(np.asarray(result.jacobian.array)),
    )
