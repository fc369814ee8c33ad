"""The public entry points in one place, for scripts, the Slicer module and the Slicer Python console.

Example:
    >>> from DiffDefAtlasLib import api
    >>> [card.name for card in api.list_models()]  # doctest: +SKIP
    ['brain3d', 'oasis2d']
    >>> result = api.generate_atlas("brain3d", {"age": 72, "sex": "F"})  # doctest: +SKIP
    >>> result.atlas.array.shape  # doctest: +SKIP
    (159, 191, 159)
"""

from __future__ import annotations

from .analysis import FieldAnalysis, analyze_field
from .device import run_with_cpu_fallback, select_device
from .generate.bundled import generate_atlas, list_models, load_generator
from .imageio import Volume, read_image, write_image
from .errors import DiffDefInputError, QualityCheckError
from .register.engine import RegistrationCancelled, RegistrationResult, register_to_atlas
from .template import load_template

__all__ = [
    "DiffDefInputError",
    "FieldAnalysis",
    "QualityCheckError",
    "RegistrationCancelled",
    "RegistrationResult",
    "Volume",
    "analyze_field",
    "generate_atlas",
    "list_models",
    "load_generator",
    "load_template",
    "read_image",
    "register_to_atlas",
    "run_with_cpu_fallback",
    "select_device",
    "write_image",
]
