"""Population models of template-to-subject deformations with known ground truth, and the OASIS 2D field set.

- :func:`load_population_model`: the bundled 3D model (age, sex) estimated from real IXI subjects; it samples subjects
  and gives the exact conditional-mean deformation and atlas (see ``docs/population_model.md``).
- :mod:`.oasis2d`: the unbiased OASIS axial template (:func:`~.oasis2d.load_oasis_template`) and the velocities of
  every OASIS subject (:func:`~.oasis2d.build_oasis_fields`).
- :func:`fit_velocity`: instance optimisation of a template-to-subject stationary velocity field (2D/3D).

Example:
    >>> from DiffDefAtlasLib.population import load_population_model
    >>> model = load_population_model()
    >>> model.condition_ranges["sex"]
    ['F', 'M']
"""

from .model import PopulationModel, PopulationSample, load_population_model, sex_code
from .regression import LinearGaussianFit, fit_linear_gaussian
from .svf_fit import FitSettings, fit_velocity, velocity_to_displacement

__all__ = [
    "FitSettings",
    "LinearGaussianFit",
    "PopulationModel",
    "PopulationSample",
    "fit_linear_gaussian",
    "fit_velocity",
    "load_population_model",
    "sex_code",
    "velocity_to_displacement",
]
