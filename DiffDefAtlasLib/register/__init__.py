"""Registration engine: SimpleITK affine + learned diffeomorphic network (SVF, spatially varying λ) + refinement.

Example:
    >>> from DiffDefAtlasLib.register import register_to_atlas
    >>> result = register_to_atlas(scan, template.t1, atlas_labels=template.labels, refine=100)  # doctest: +SKIP
"""

from .engine import RegistrationCancelled, RegistrationResult, register_to_atlas
from .network import NetworkConfig, RegistrationNetwork
from .weights import load_registration_network, read_model_card

__all__ = [
    "NetworkConfig",
    "RegistrationCancelled",
    "RegistrationNetwork",
    "RegistrationResult",
    "load_registration_network",
    "read_model_card",
    "register_to_atlas",
]
