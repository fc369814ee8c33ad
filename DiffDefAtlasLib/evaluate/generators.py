"""Checks of the bundled generators against independent truth.

- :func:`evaluate_brain3d`: against the 3D population model's exact conditional-mean deformation
  (``exp(E[v | age, sex])``) over its age range and both sexes (ventricle volume left unset): endpoint error in the
  brain, ventricle Dice and volume error, folding, and the ventricle-volume trend with age against the trend of the
  training data.
- :func:`evaluate_oasis2d`: held-out OASIS subjects registered (instance optimisation) to the atlas of their own
  conditions, to the unconditional template and to the atlas of an age 20 years off; the mean displacement norm of
  each registration.

Example:
    >>> report = evaluate_brain3d(ages=(50, 70))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, cast

import numpy as np
import torch
from ..generate.atlas import template_images
from ..generate.bundled import load_generator
from ..imageio import Volume
from ..metrics import dice_per_class
from ..population import load_population_model
from ..population.oasis2d import load_oasis_template, load_slices, register_batch
from ..population.svf_fit import velocity_to_displacement
from ..spatial import folding_ratio, jacobian_determinant, vector_length, warp_labels
from ..template import LATERAL_VENTRICLES, load_template, working_grid
from ..train.data import oasis2d_fields
from .metrics import endpoint_error, trend_slope


def evaluate_brain3d(model: str = "brain3d", ages: Sequence[float] | None = None, sexes: Sequence[str] = ("F", "M"), steps: int | None = None) -> dict[str, Any]:
    """Compare generated atlases with the population model's conditional means on the 2 mm working grid."""
    generator = load_generator(model, "cpu")
    result = score_against_population_mean(
        lambda age, sex: generator.sample_velocity({"age": float(age), "sex": sex}, steps=steps), ages, sexes, integrate=generator.velocity_to_displacement
    )
    return {"model": str(model), **result}


def score_against_population_mean(
    velocity_of: Callable[[float, str], torch.Tensor],
    ages: Sequence[float] | None = None,
    sexes: Sequence[str] = ("F", "M"),
    integrate: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Score any source of 3D velocities on the population model's 4 mm grid, ``velocity_of(age, sex) -> (1, 3, 40,
    48, 40)`` in mm, against the exact conditional means: per condition and summarised as in :func:`evaluate_brain3d`
    (which is this for a generator). ``integrate(velocity, grid)`` turns a velocity into the displacement on the
    working grid (default: the population model's own ``exp``). Lets a diagnosis score one part of the pipeline
    alone (an autoencoder, a sampler)."""
    population = load_population_model()
    grid = working_grid()
    template = load_template("2mm")
    mask = np.asarray(template.brain_mask.array) > 0
    labels = torch.from_numpy(np.array(template.labels.array, dtype=np.uint8))[None, None]
    low, high = population.condition_ranges["age"]
    ages = list(ages) if ages is not None else list(np.linspace(low, high, 5))
    rows: list[dict[str, Any]] = []
    for sex in sexes:
        for age in ages:
            with torch.no_grad():
                velocity = velocity_of(float(age), sex)
                u = integrate(velocity, grid).cpu() if integrate else velocity_to_displacement(velocity.float().cpu(), population.grid, grid)
            truth = torch.from_numpy(population.mean_displacement(float(age), sex, grid))[None]
            epe = endpoint_error(u[0], truth[0], mask)
            gen_labels = warp_labels(labels, u, grid)[0, 0].numpy()
            true_labels = warp_labels(labels, truth, grid)[0, 0].numpy()
            gen_v = gen_labels == LATERAL_VENTRICLES
            true_v = true_labels == LATERAL_VENTRICLES
            voxel_ml = grid.voxel_volume / 1000.0
            rows.append(
                {
                    "age": float(age),
                    "sex": sex,
                    "epe_mean_mm": epe["mean"],
                    "epe_p95_mm": epe["p95"],
                    "ventricle_dice": dice_per_class(gen_labels, true_labels, classes=(LATERAL_VENTRICLES,))[LATERAL_VENTRICLES],
                    "ventricle_ml": float(gen_v.sum() * voxel_ml),
                    "ventricle_ml_truth": float(true_v.sum() * voxel_ml),
                    "ventricle_volume_error": float(abs(gen_v.sum() - true_v.sum()) / max(true_v.sum(), 1)),
                    "folding_ratio": folding_ratio(jacobian_determinant(u, grid))["nonpositive"],
                }
            )

    def slopes(key: str) -> dict[str, float]:
        return {sex: trend_slope([r["age"] for r in rows if r["sex"] == sex], [r[key] for r in rows if r["sex"] == sex]) for sex in sexes}

    slope_gen, truth_slope = slopes("ventricle_ml"), slopes("ventricle_ml_truth")
    return {
        "conditions": rows,
        "epe_mean_mm": float(np.mean([r["epe_mean_mm"] for r in rows])),
        "epe_max_mm": float(np.max([r["epe_mean_mm"] for r in rows])),
        "ventricle_dice_min": float(np.min([r["ventricle_dice"] for r in rows])),
        "ventricle_dice_mean": float(np.mean([r["ventricle_dice"] for r in rows])),
        "ventricle_volume_error_max": float(np.max([r["ventricle_volume_error"] for r in rows])),
        "folding_ratio_max": float(np.max([r["folding_ratio"] for r in rows])),
        "ventricle_ml_per_year": slope_gen,
        "ventricle_ml_per_year_truth": truth_slope,
    }


def evaluate_oasis2d(model: str = "oasis2d", age_offset: float = 20.0, steps: int | None = None) -> dict[str, Any]:
    """Held-out OASIS validation subjects registered to (a) the atlas of their own conditions, (b) the unconditional
    atlas (no condition set), (c) the bundled template itself and (d) the atlas of their age +/- ``age_offset``
    (the direction that stays in range, extrapolating only if neither does). Returns the mean displacement norm (mm,
    inside the template brain mask) of each, per subject and on average. Needs ``../shared/data``."""
    generator = load_generator(model, "cpu")
    card = generator.card
    validation = oasis2d_fields("validation")
    ids = validation.info["subjects"]
    images = load_slices(ids)
    template, mask, _ = load_oasis_template()
    brain = torch.from_numpy(np.asarray(mask.array) > 0)
    age_spec = card.condition("age")
    atlases: dict[str, list[torch.Tensor]] = {"own": [], "unconditional": [], "template": [], "age_off": []}
    uncond = torch.from_numpy(generator.generate({}, steps=steps).atlas.array)[None, None]
    base = torch.from_numpy(np.asarray(template.array, dtype=np.float32))[None, None]
    offsets = []
    for i in range(len(ids)):
        own = {spec.name: float(validation.conditions[spec.name][i]) if spec.kind == "continuous" else cast("list[str]", spec.choices)[int(validation.conditions[spec.name][i])] for spec in card.conditions if np.isfinite(validation.conditions[spec.name][i])}
        for name, value in list(own.items()):
            spec = card.condition(name)
            if spec.kind == "continuous":
                own[name] = float(np.clip(value, spec.minimum, spec.maximum))
        age = cast(float, own["age"])
        off = age + age_offset if age + age_offset <= cast(float, age_spec.maximum) else age - age_offset
        offsets.append(off)
        atlases["own"].append(torch.from_numpy(generator.generate(own, steps=steps).atlas.array)[None, None])
        atlases["age_off"].append(torch.from_numpy(generator.generate({**own, "age": off}, steps=steps, allow_extrapolation=True).atlas.array)[None, None])
        atlases["unconditional"].append(uncond)
        atlases["template"].append(base)
    result: dict[str, Any] = {"model": str(model), "subjects": ids, "age_offset_used": offsets}
    for key, stack in atlases.items():
        # one batched instance-optimisation fit per kind of atlas (the population helper's OASIS settings)
        velocity, _ = register_batch(torch.cat(stack), images, chunk=len(ids))
        u = velocity_to_displacement(velocity, validation.grid, card.grid("output"))
        norms = [float(vector_length(u[i])[brain].mean()) for i in range(len(ids))]
        result[f"mean_displacement_{key}_mm"] = float(np.mean(norms))
        result[f"per_subject_{key}_mm"] = norms
    own_norms = np.array(result["per_subject_own_mm"])
    result["own_better_than_unconditional"] = float(np.mean(own_norms < np.array(result["per_subject_unconditional_mm"])))
    result["own_better_than_template"] = float(np.mean(own_norms < np.array(result["per_subject_template_mm"])))
    result["own_better_than_age_off"] = float(np.mean(own_norms < np.array(result["per_subject_age_off_mm"])))
    return result


def ventricle_trends(model: str, fields, ages: Sequence[float] | None = None, max_subjects: int = 200) -> dict[str, Any]:
    """Ventricle volume (mL; mm^2 in 2D) against age: of the generated atlases (other conditions unset, per sex) and of
    the training subjects (the template labels warped by each subject's own exp(v)); least-squares slopes per year."""
    generator = load_generator(model, "cpu")
    card = generator.card
    spec = card.condition("age")
    ages = list(ages) if ages is not None else list(np.linspace(cast(float, spec.minimum), cast(float, spec.maximum), 5))
    atlas = {}
    for sex in ("F", "M"):
        volumes = []
        for age in ages:
            result = generator.generate({"age": float(age), "sex": sex})
            volumes.append(float((result.labels.array == LATERAL_VENTRICLES).sum() * result.grid.voxel_volume / (1000.0 if card.spatial_dims == 3 else 1.0)))
        atlas[sex] = {"ages": [float(a) for a in ages], "volumes": volumes, "slope_per_year": trend_slope(ages, volumes)}
    labels_volume: Volume = template_images(card).labels
    grid = labels_volume.grid
    labels = torch.from_numpy(np.array(labels_volume.array, dtype=np.uint8))[None, None]
    subjects = np.arange(min(len(fields), max_subjects))
    measured: list[float] = []
    for start in range(0, len(subjects), 8):
        index = subjects[start : start + 8]
        with torch.no_grad():
            v = torch.from_numpy(np.asarray(fields.velocities[index], dtype=np.float32))
            u = generator.velocity_to_displacement(v, grid)
            warped = warp_labels(labels.expand(len(index), -1, *labels.shape[2:]), u, grid)
        scale = grid.voxel_volume / (1000.0 if card.spatial_dims == 3 else 1.0)
        measured.extend(float((w == LATERAL_VENTRICLES).sum()) * scale for w in warped)
    subject_ages = np.asarray(fields.conditions["age"], dtype=np.float64)[subjects]
    sexes = np.asarray(fields.conditions["sex"])[subjects]
    data = {}
    for code, sex in ((0.0, "F"), (1.0, "M")):
        keep = sexes == code
        if keep.sum() > 2:
            data[sex] = {"subjects": int(keep.sum()), "slope_per_year": trend_slope(subject_ages[keep], np.asarray(measured)[keep])}
    data["all"] = {"subjects": len(measured), "slope_per_year": trend_slope(subject_ages, measured)}
    return {"units": "mL" if card.spatial_dims == 3 else "mm^2", "atlas": atlas, "training_data": data}
