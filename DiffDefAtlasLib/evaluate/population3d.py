"""Evaluation against the 3D population model, whose conditional-mean atlas is known exactly.

For each condition ``(age, sex)`` and each method, on the 2 mm working grid, inside the template brain mask:

- endpoint error of the deformation against ``exp(E[v | age, sex])``, label Dice against the truth's warped labels,
  relative error of the ventricle and tissue volumes against the truth's;
- folding ratios and smoothness (mean ``|grad det J|``), sharpness of the warped T1;
- centrality: ``K`` subjects drawn from the model near the condition (ages Gaussian around it, same sex) are
  registered to the atlas *exactly* (their deformations are known, so no registration error enters), and the norm of
  their Gaussian-weighted mean displacement is averaged over the brain (:func:`.metrics.exact_neighbourhood_mean_displacement`);
- the ventricle volume, for the volume-against-age figure, with the model's sampled subjects as data.

Example:
    >>> result = evaluate_population3d(default_population_methods(), ages=[30, 50, 70])  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence, cast

import numpy as np
import torch

from ..spatial import jacobian_determinant, warp_image, warp_labels
from .metrics import (
    centrality,
    dice_per_label,
    endpoint_error,
    exact_neighbourhood_mean_displacement,
    label_volumes,
    regularity,
    sharpness,
    volume_errors,
)
from .records import EvaluationResult, condition_label, mid_slice
from ..generate.model_card import ConditionSpec
from ..population import load_population_model
from ..population.svf_fit import velocity_to_displacement
from ..template import LABEL_NAMES, LATERAL_VENTRICLES, load_template, working_grid
from ..train.data import FieldSet, ventricle_volumes_ml
from .kernel_regression import KernelRegressionTemplate
from .methods import PopulationTruth, TemplateBaseline, diffdef_rows
from .template_network import TemplateNetworkSettings, train_template_network

METRICS = [
    "epe_mean_mm", "epe_p95_mm", "dice_mean", "dice_ventricles", "ventricle_volume_error", "tissue_volume_error",
    "centrality_mm", "folding_nonpositive_pct", "folding_negative_pct", "smoothness_grad_detj", "sharpness", "ventricle_ml",
]
UNITS = {
    "epe_mean_mm": "mm", "epe_p95_mm": "mm", "dice_mean": "", "dice_ventricles": "", "ventricle_volume_error": "relative",
    "tissue_volume_error": "relative, mean of CSF/GM/WM", "centrality_mm": "mm", "folding_nonpositive_pct": "% voxels",
    "folding_negative_pct": "% voxels", "smoothness_grad_detj": "1/mm", "sharpness": "intensity/mm", "ventricle_ml": "mL",
}


def population_training_fields(count: int = 300, seed: int = 1):
    """``count`` subjects of the population model as a field set with conditions age and sex (the baselines' data)."""
    model = load_population_model()
    samples = model.sample(count, seed, measure=False)
    specs = [
        ConditionSpec("age", "continuous", *cast("tuple[float, float]", model.condition_ranges["age"]), "years"),
        ConditionSpec("sex", "categorical", choices=["F", "M"]),
    ]
    conditions = {"age": np.array([s.age for s in samples]), "sex": np.array([0.0 if s.sex == "F" else 1.0 for s in samples])}
    velocities = np.stack([s.velocity for s in samples]).astype(np.float32)
    return FieldSet(velocities, conditions, model.grid, specs, "population3d", {"seed": seed, "count": count})


def _neighbour_inverse_mean(model, age: float, sex: str, count: int, sigma_years: float, seed: int, grid) -> tuple[torch.Tensor, np.ndarray]:
    """Weighted mean of ``exp(-v_i)`` of ``count`` sampled subjects near ``(age, sex)``; returns it and the weights."""
    low, high = model.condition_ranges["age"]
    rng = np.random.default_rng([seed, int(round(age * 10)), 0 if sex == "F" else 1])
    ages = np.clip(age + sigma_years * rng.standard_normal(count), low, high)
    samples = model.sample(count, seed + 1000 + int(round(age * 10)), ages=list(ages), sexes=sex, measure=False)
    weights = np.exp(-((ages - age) ** 2) / (2 * sigma_years**2))
    weights = weights / weights.sum()
    total = None
    with torch.no_grad():
        for w, sample in zip(weights, samples):
            inverse = velocity_to_displacement(-torch.from_numpy(sample.velocity)[None], model.grid, grid)
            total = inverse * float(w) if total is None else total + inverse * float(w)
    return cast(torch.Tensor, total), weights


def evaluate_population3d(
    methods: Sequence[Any],
    ages: Sequence[float] = (30, 40, 50, 60, 70),
    sexes: Sequence[str] = ("F", "M"),
    neighbours: int = 8,
    sigma_years: float = 5.0,
    data_subjects: int = 40,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score ``methods`` at every ``(age, sex)`` against the population model's truth (see the module docstring)."""
    started = time.perf_counter()
    model = load_population_model()
    grid = working_grid()
    template = load_template("2mm")
    mask = np.asarray(template.brain_mask.array) > 0
    t1 = torch.from_numpy(np.array(template.t1.array, dtype=np.float32))[None, None]
    labels = torch.from_numpy(np.array(template.labels.array, dtype=np.int64))[None, None]
    names = {k: v for k, v in LABEL_NAMES.items() if k != 0}
    truth_method = PopulationTruth(model)
    result = EvaluationResult("population3d", metric_names=list(METRICS), units=dict(UNITS))
    result.methods = {m.name: m.description for m in methods}
    result.notes += [
        f"conditions: ages {', '.join(f'{a:g}' for a in ages)} x sexes {', '.join(sexes)} (ventricle volume unset); 2 mm working grid, template brain mask",
        f"centrality: {neighbours} subjects sampled from the population model per condition (ages ~ N(age, {sigma_years:g} y), same sex), "
        "registered to the atlas exactly with their known deformations, Gaussian-weighted",
        "truth: the population model's exact conditional-mean deformation exp(E[v | age, sex])",
    ]
    for sex in sexes:
        for age in ages:
            conditions = {"age": float(age), "sex": sex}
            label = condition_label(conditions)
            if progress:
                progress(f"population3d {label}")
            with torch.no_grad():
                truth = truth_method.displacement(conditions, grid)
                truth_labels = warp_labels(labels, truth.double(), grid)[0, 0].numpy()
                truth_volumes = label_volumes(truth_labels, grid, names)
                inverse_mean, _ = _neighbour_inverse_mean(model, float(age), sex, neighbours, sigma_years, seed, grid)
                for method in methods:
                    u = method.displacement(conditions, grid).float()
                    warped_labels = warp_labels(labels, u.double(), grid)[0, 0].numpy()
                    atlas = warp_image(t1, u, grid)[0, 0].numpy()
                    volumes = label_volumes(warped_labels, grid, names)
                    errors = volume_errors(volumes, truth_volumes)
                    dice = dice_per_label(warped_labels, truth_labels)
                    epe = endpoint_error(u[0].numpy(), truth[0].numpy(), mask)
                    reg = regularity(u, grid, mask)
                    mean_d = exact_neighbourhood_mean_displacement(u.double(), inverse_mean.double(), grid)
                    result.rows.append(
                        {
                            "method": method.name,
                            **conditions,
                            "epe_mean_mm": epe["mean"],
                            "epe_p95_mm": epe["p95"],
                            "dice_mean": dice["mean"],
                            "dice_ventricles": dice.get(str(LATERAL_VENTRICLES), float("nan")),
                            "ventricle_volume_error": errors["lateral_ventricles"],
                            "tissue_volume_error": float(np.mean([errors[k] for k in ("csf", "gm", "wm")])),
                            "centrality_mm": centrality(mean_d, mask),
                            "folding_nonpositive_pct": 100.0 * reg["folding_nonpositive"],
                            "folding_negative_pct": 100.0 * reg["folding_negative"],
                            "smoothness_grad_detj": reg["smoothness_grad_detj"],
                            "sharpness": sharpness(atlas, grid, mask),
                            "ventricle_ml": volumes["lateral_ventricles"],
                            "ventricle_ml_truth": truth_volumes["lateral_ventricles"],
                        }
                    )
                    result.slices[(method.name, label)] = {"atlas": mid_slice(atlas), "jacobian": mid_slice(jacobian_determinant(u.double(), grid)[0].numpy())}
    # data for the trend figure: sampled subjects' own ventricle volumes
    samples = model.sample(data_subjects, seed + 7, measure=False)
    velocities = np.stack([s.velocity for s in samples])
    data_volumes: list[float] = []
    for start in range(0, len(velocities), 8):
        data_volumes.extend(ventricle_volumes_ml(model, velocities[start : start + 8]).tolist())
    result.data_points = {"age": [s.age for s in samples], "sex": [s.sex for s in samples], "ventricle": data_volumes, "units": "mL"}
    result.seconds = time.perf_counter() - started
    return result


def default_population_methods(network_steps: int = 300, training_subjects: int = 300, include_no_integration: bool = True, variant: str | None = None) -> list[Any]:
    """Template, kernel regression, template network (trained or cached), Diff-Def ``brain3d`` (its other MP variant
    from the model folder ``variant``, and its no-integration proxy), each as an :class:`~.methods.AtlasMethod`."""
    fields = population_training_fields(training_subjects)
    methods: list[Any] = [
        TemplateBaseline(),
        KernelRegressionTemplate.from_fields(fields, sigma=0.1),
        train_template_network(fields, TemplateNetworkSettings(steps=network_steps)),
        *diffdef_rows("brain3d", variant, include_no_integration),
    ]
    methods.append(PopulationTruth(load_population_model()))
    return methods
