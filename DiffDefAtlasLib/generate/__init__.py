"""The Diff-Def generator: conditions -> latent diffusion -> velocity field -> diffeomorphic atlas.

Example:
    >>> from DiffDefAtlasLib.generate import generate_atlas, list_models
    >>> result = generate_atlas("brain3d", {"age": 72, "sex": "F"}, seed=0)  # doctest: +SKIP
"""

from .atlas import AtlasResult, Generator
from .bundled import generate_atlas, list_models, load_generator, save_model
from ..conditions.resolve import ExtrapolationWarning, encode_conditions, parse_assignment, resolve_conditions
from .model_card import ConditionSpec, ModelCard

__all__ = [
    "AtlasResult",
    "ConditionSpec",
    "ExtrapolationWarning",
    "Generator",
    "ModelCard",
    "encode_conditions",
    "generate_atlas",
    "list_models",
    "load_generator",
    "parse_assignment",
    "resolve_conditions",
    "save_model",
]
