"""What each bundled model is trained on: its data source, grids, template and default stage sizes.

``brain3d``: the 3D population model (4 mm velocities, integrated on the 2 mm working grid, MNI template at 1 mm).
``oasis2d``: OASIS-1 axial slices (velocities fitted by the population helper, OASIS 2D template).
``synthetic2d`` / ``synthetic3d``: smooth synthetic fields, for tests and development only.

The training fields are drawn once and cached in the work folder (``fields.npz``) so every stage and every rank of a
distributed run sees the same data.

Example:
    >>> recipe = RECIPES["synthetic2d"]
    >>> recipe.defaults["autoencoder"]["steps"] > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np

from ..errors import DiffDefInputError
from ..generate.model_card import ConditionSpec, ModelCard
from ..spatial.grid import Grid
from .data import FieldSet, oasis2d_fields, population3d_fields, synthetic_fields
from ..atomic import atomic_path
from ..imageio import Volume
from ..population.oasis2d import load_oasis_template
from ..template import LABEL_NAMES, template_grid, working_grid
from .stages import new_draft


@dataclass
class Recipe:
    """How to build one model: ``fields(subjects, seed)``, ``setup(fields)`` -> (working grid, output grid, template
    entry, files to write beside the card), a description, default stage settings, sampling defaults that differ
    from the generic ones (written into the card), and the terms of the conditional-mean trend the autoencoder codes
    around (none: the unconditional mean; see :mod:`DiffDefAtlasLib.generate.trend`)."""

    name: str
    description: str
    fields: Callable[[int, int], FieldSet]
    setup: Callable[[FieldSet], tuple[Grid, Grid, dict[str, Any], dict[str, Any]]]
    subjects: int
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    trend: dict[str, Any] = field(default_factory=dict)


#: Quadratic in age, per sex.
AGE_SEX_TERMS: list[list[str]] = [["age"], ["age", "age"], ["sex"], ["sex", "age"]]
#: The age and sex terms, plus the ventricle volume beyond what age and sex predict.
AGE_SEX_VENTRICLE_TREND: dict[str, Any] = {"terms": [*AGE_SEX_TERMS, ["ventricle_volume"]], "adjusted": {"ventricle_volume": {"terms": AGE_SEX_TERMS}}}
#: The age and sex terms; CDR and nWBV enter beyond what age and sex predict.
OASIS_TREND: dict[str, Any] = {"terms": [*AGE_SEX_TERMS, ["cdr"], ["nwbv"]], "adjusted": {name: {"terms": AGE_SEX_TERMS} for name in ("cdr", "nwbv")}}


def _brain3d_setup(fields: FieldSet):

    return working_grid(), template_grid("1mm"), {"kind": "mni152"}, {}


def _oasis2d_setup(fields: FieldSet):

    image, _, labels = load_oasis_template()
    entry = {"kind": "files", "image": "template.nii.gz", "labels": "labels.nii.gz", "label_names": {str(k): v for k, v in LABEL_NAMES.items()}}
    # the velocities were fitted by integrating on the 1 mm slice grid, so that is the working grid too
    return image.grid, image.grid, entry, {"template.nii.gz": image, "labels.nii.gz": labels}


def _synthetic_setup(fields: FieldSet):

    grid = fields.grid
    fine = grid.zoomed(0.5)
    coords = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in fine.shape], indexing="ij"))
    radius = np.sqrt((coords**2).sum(0))
    image = np.clip(1.2 - radius, 0, 1).astype(np.float32)
    labels = (radius < 0.8).astype(np.uint8) * 3 + (radius < 0.3).astype(np.uint8)
    return fine, fine, {"kind": "files", "image": "template.nii.gz", "labels": "labels.nii.gz", "label_names": {"3": "wm", "4": "lateral_ventricles"}}, {
        "template.nii.gz": Volume(image, fine.affine),
        "labels.nii.gz": Volume(labels, fine.affine),
    }


def _synthetic(spatial_dims: int) -> Callable[[int, int], FieldSet]:
    def build(subjects: int, seed: int) -> FieldSet:
        shape = (16, 16, 16) if spatial_dims == 3 else (24, 32)
        return synthetic_fields(subjects, spatial_dims, shape=shape, seed=seed)

    return build


RECIPES: dict[str, Recipe] = {
    "brain3d": Recipe(
        "brain3d",
        "3D conditional brain atlas (age, sex, ventricle volume) over the MNI ICBM152 2009a template; trained on the "
        "DiffDefAtlas 3D population model of template-to-subject velocity fields.",
        lambda subjects, seed: population3d_fields(subjects, seed),
        _brain3d_setup,
        subjects=1000,
        defaults={"autoencoder": {"steps": 1500, "batch_size": 4, "learning_rate": 1e-3}, "diffusion": {"steps": 2400, "batch_size": 16, "learning_rate": 1e-3}, "mp": {"steps": 30, "batch_size": 1, "learning_rate": 1e-4}},
        # One DDIM step from the zero latent: the denoiser's own estimate of the conditional mean latent at the highest
        # noise level. Measured against the population model's exact conditional mean it is closer than the 10-step
        # path from the same start (docs/generator.md, brain3d). Draws from the population (temperature > 0) keep 10.
        sampling={"steps": 1, "sample_steps": 10},
        trend=AGE_SEX_VENTRICLE_TREND,
    ),
    "oasis2d": Recipe(
        "oasis2d",
        "2D conditional atlas of OASIS-1 axial slices (age, sex, CDR, nWBV), trained on velocities fitted to the real "
        "OASIS-1 training split.",
        lambda subjects, seed: oasis2d_fields("train"),
        _oasis2d_setup,
        subjects=0,
        defaults={"autoencoder": {"steps": 1000, "batch_size": 8, "learning_rate": 2e-3}, "diffusion": {"steps": 1500, "batch_size": 32, "learning_rate": 1e-3}, "mp": {"steps": 40, "batch_size": 1, "learning_rate": 1e-4}},
        trend=OASIS_TREND,
    ),
    "synthetic2d": Recipe("synthetic2d", "synthetic 2D test model", _synthetic(2), _synthetic_setup, subjects=64,
                          defaults={"autoencoder": {"steps": 40, "batch_size": 8}, "diffusion": {"steps": 60, "batch_size": 16}, "mp": {"steps": 2, "batch_size": 1}}),
    "synthetic3d": Recipe("synthetic3d", "synthetic 3D test model", _synthetic(3), _synthetic_setup, subjects=32,
                          defaults={"autoencoder": {"steps": 20, "batch_size": 4}, "diffusion": {"steps": 40, "batch_size": 16}, "mp": {"steps": 2, "batch_size": 1}}),
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``."""
    if name not in RECIPES:
        raise DiffDefInputError(f"model {name!r}: no training recipe; expected one of {', '.join(RECIPES)}")
    return RECIPES[name]


def cached_fields(name: str, work_dir: str | Path, subjects: int | None = None, seed: int = 0) -> FieldSet:
    """The training fields of recipe ``name``, drawn once and cached as ``fields.npz`` in ``work_dir``."""
    import json


    r = recipe(name)
    path = Path(work_dir) / "fields.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            grid = Grid(tuple(meta["shape"]), np.array(meta["affine"]))
            specs = [ConditionSpec(**s) for s in meta["specs"]]
            conditions = {s.name: data[f"c_{s.name}"] for s in specs}
            return FieldSet(data["velocities"].astype(np.float32), conditions, grid, specs, meta["source"], meta["info"])
    fields = r.fields(subjects or r.subjects, seed)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    meta = {"shape": list(fields.grid.shape), "affine": fields.grid.affine.tolist(), "specs": [vars(s) for s in fields.specs], "source": fields.source, "info": fields.info}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            np.savez(stream, velocities=fields.velocities.astype(np.float16), meta=json.dumps(meta), **cast("dict[str, Any]", {f"c_{k}": v for k, v in fields.conditions.items()}))
    return cached_fields(name, work_dir)  # read back, so every stage sees exactly the stored (float16) fields


def draft_card(name: str, fields: FieldSet) -> tuple[ModelCard, dict[str, Any]]:
    """A new draft card for recipe ``name`` and the template files to write beside the exported model."""
    r = recipe(name)
    working, output, template, files = r.setup(fields)
    card = new_draft(name, fields, working, output, template, r.description, r.trend)
    card.sampling.update(r.sampling)
    return card, files
