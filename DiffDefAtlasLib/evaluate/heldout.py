"""Evaluation on held-out images without a known truth (the OASIS-1 2D validation split, or a cohort table).

For each target condition and each method, on the template grid, inside the template brain mask:

- folding ratios, smoothness (mean ``|grad det J|``) and sharpness of the atlas;
- centrality: every held-out image is registered (moving) to the atlas (fixed) with the bundled learned registration
  network (:func:`register_images`, the network and input preparation of
  :func:`~DiffDefAtlasLib.register.register_to_atlas`), and the norm of the Gaussian-weighted mean displacement, with
  weights from each subject's distance to the target in normalised condition space, is averaged over the brain;
- label areas (volumes in 3D) against the data trend: a linear regression on age and sex of the template labels
  warped by every training subject's fitted deformation (when training fields are given);
- per subject, the mean displacement norm of its registration to the atlas of its *own* conditions ("own-atlas
  deformation", lower = the atlas is closer to the subject), reported on the method's rows as mean over subjects.

Example:
    >>> result = evaluate_oasis_validation(default_oasis_methods(), ages=[65, 75, 85])  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..imageio import Volume
from ..spatial import Grid, jacobian_determinant, resample_displacement, vector_length, warp_image, warp_labels
from .metrics import centrality, label_volumes, regularity, sharpness, volume_errors, weighted_mean_displacement
from ..conditions.space import condition_weights, normalised_conditions
from .records import EvaluationResult, condition_label, mid_slice
from ..imaging.resampling import working_grid_for
from ..population.oasis2d import load_oasis_template, load_slices
from ..population.svf_fit import velocity_to_displacement
from ..register import load_registration_network
from ..register.engine import prepare_network_inputs
from ..train.data import oasis2d_fields
from .joint_template_network import train_joint_template_network
from .kernel_regression import KernelRegressionTemplate
from .methods import TemplateBaseline, diffdef_rows
from .template_network import TemplateNetworkSettings, train_template_network

METRICS = [
    "centrality_mm", "own_atlas_deformation_mm", "ventricle_trend_error", "tissue_trend_error",
    "folding_nonpositive_pct", "folding_negative_pct", "smoothness_grad_detj", "sharpness", "ventricle_size",
]
UNITS = {
    "centrality_mm": "mm", "own_atlas_deformation_mm": "mm, mean over held-out subjects", "ventricle_trend_error": "relative",
    "tissue_trend_error": "relative, mean of CSF/GM/WM", "folding_nonpositive_pct": "% voxels", "folding_negative_pct": "% voxels",
    "smoothness_grad_detj": "1/mm", "sharpness": "intensity/mm", "ventricle_size": "mm^2 (2D) or mL (3D)",
}
LABELS = {1: "csf", 2: "gm", 3: "wm", 4: "lateral_ventricles"}


def register_images(network, atlas: torch.Tensor, images: torch.Tensor, mask: torch.Tensor, grid: Grid, batch: int = 16) -> torch.Tensor:
    """Displacements ``(N, ndim, *grid.shape)`` (mm) registering ``images`` ``(N, 1, *shape)`` (moving) to ``atlas``
    ``(1 or N, 1, *shape)`` (fixed) with the learned network; images are assumed aligned already (no affine).

    Runs on the network's working grid (:func:`~DiffDefAtlasLib.imaging.resampling.working_grid_for`) and resamples
    the displacement back to ``grid`` when it differs.
    """
    wgrid = working_grid_for(grid, float(network.config.working_spacing_mm), network.config.shape_multiple)

    def to_work(x: torch.Tensor) -> torch.Tensor:
        if wgrid == grid:
            return x
        zero = torch.zeros(x.shape[0], grid.spatial_dims, *wgrid.shape)
        return warp_image(x, zero, wgrid, moving_grid=grid)

    atlas_w, images_w, mask_w = to_work(atlas), to_work(images), (to_work(mask.float()) > 0.5).float()
    out = []
    with torch.no_grad():
        for start in range(0, len(images_w), batch):
            moving = images_w[start : start + batch]
            fixed = atlas_w if atlas_w.shape[0] == 1 else atlas_w[start : start + batch]
            fixed = fixed.expand(len(moving), *fixed.shape[1:])
            fixed_in, moving_in = [], []
            for i in range(len(moving)):
                f, m = prepare_network_inputs(fixed[i : i + 1], moving[i : i + 1], mask_w, wgrid)
                fixed_in.append(f)
                moving_in.append(m)
            displacement, _, _ = network.predict_displacement(torch.cat(moving_in), torch.cat(fixed_in), wgrid)
            out.append(displacement if wgrid == grid else resample_displacement(displacement, wgrid, grid))
    return torch.cat(out)


def label_trend_model(label_areas: dict[str, np.ndarray], ages: np.ndarray, sexes: np.ndarray) -> Callable[[float, float], dict[str, float]]:
    """Least-squares ``area ~ 1 + age + sex`` per label; returns ``predict(age, sex_code) -> {label: area}``.

    Example:
        >>> f = label_trend_model({"v": np.array([1.0, 2.0, 3.0, 5.0])}, np.array([0.0, 1.0, 2.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]))
        >>> round(f(3.0, 0.0)["v"], 6), round(f(0.0, 1.0)["v"], 6)
        (4.0, 5.0)
    """
    design = np.stack([np.ones_like(ages), ages, sexes], axis=1).astype(np.float64)
    coefficients = {name: np.linalg.lstsq(design, np.asarray(values, np.float64), rcond=None)[0] for name, values in label_areas.items()}
    return lambda age, sex: {name: float(c @ np.array([1.0, age, sex])) for name, c in coefficients.items()}


def warped_label_sizes(labels: torch.Tensor, velocities: np.ndarray, velocity_grid: Grid, grid: Grid, names: dict[int, str]) -> dict[str, np.ndarray]:
    """Sizes of the template labels warped by each ``exp(v_i)`` (nearest), per label name: ``{name: (N,)}``."""
    sizes: dict[str, list[float]] = {name: [] for name in names.values()}
    with torch.no_grad():
        for start in range(0, len(velocities), 16):
            v = torch.from_numpy(np.ascontiguousarray(velocities[start : start + 16], dtype=np.float32))
            u = velocity_to_displacement(v, velocity_grid, grid)
            warped = warp_labels(labels.expand(len(v), *labels.shape[1:]), u.double(), grid)
            for item in warped:
                for name, value in label_volumes(item[0].numpy(), grid, names).items():
                    sizes[name].append(value)
    return {k: np.array(v) for k, v in sizes.items()}


@dataclass
class HeldoutImages:
    """The template, its brain mask and labels as tensors on the template grid, and the held-out images there."""

    grid: Grid
    brain: np.ndarray
    mask: torch.Tensor
    template: torch.Tensor
    labels: torch.Tensor
    images: torch.Tensor


def heldout_images(template: Volume, mask: Volume, labels: Volume, images: torch.Tensor) -> HeldoutImages:
    """The inputs of :func:`evaluate_heldout` as tensors (images ``(N, 1, *shape)`` already on the template grid)."""
    brain = np.asarray(mask.array) > 0
    return HeldoutImages(
        grid=template.grid,
        brain=brain,
        mask=torch.from_numpy(brain.astype(np.float32))[None, None],
        template=torch.from_numpy(np.array(template.array, dtype=np.float32))[None, None],
        labels=torch.from_numpy(np.array(labels.array, dtype=np.int64))[None, None],
        images=images,
    )


def data_trend(data: HeldoutImages, trend_fields, result: EvaluationResult) -> Callable[[float, float], dict[str, float]]:
    """The training data's label-size trend (least squares on age and sex of the template labels warped by each
    training subject's fitted deformation); records its points and a note in ``result``."""
    sizes = warped_label_sizes(data.labels, trend_fields.velocities, trend_fields.grid, data.grid, LABELS)
    ages = np.asarray(trend_fields.conditions["age"], np.float64)
    sex_codes = np.asarray(trend_fields.conditions["sex"], np.float64)
    result.data_points = {"age": ages.tolist(), "sex": ["F" if s == 0 else "M" for s in sex_codes], "ventricle": sizes["lateral_ventricles"].tolist(),
                          "units": "mm^2" if data.grid.spatial_dims == 2 else "mL"}
    result.notes.append(f"data trend: template labels warped by the {len(ages)} training subjects' fitted deformations, least squares on age and sex")
    return label_trend_model(sizes, ages, sex_codes)


@torch.no_grad()
def own_atlas_deformation(method, subject_conditions: Sequence[dict[str, Any]], data: HeldoutImages, network) -> float:
    """Mean over the held-out images of the deformation (mm, in the brain) that registers each to the atlas of its
    own conditions."""
    grid = data.grid
    own_atlases = [warp_image(data.template, method.displacement(conditions, grid).float(), grid) for conditions in subject_conditions]
    d_own = register_images(network, torch.cat(own_atlases), data.images, data.mask, grid)
    return float(np.mean([float(vector_length(d)[torch.from_numpy(data.brain)].mean()) for d in d_own]))


def score_target(
    method, target: dict[str, Any], data: HeldoutImages, network, weights: np.ndarray, own: float,
    predict: Callable[[float, float], dict[str, float]] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics row of one method at one target condition, and the atlas and Jacobian mid-slices for the figures."""
    grid, brain = data.grid, data.brain
    with torch.no_grad():
        u = method.displacement(target, grid).float()
        atlas = warp_image(data.template, u, grid)
        warped_labels = warp_labels(data.labels, u.double(), grid)[0, 0].numpy()
        d = register_images(network, atlas, data.images, data.mask, grid)
    sizes_now = label_volumes(warped_labels, grid, LABELS)
    row: dict[str, Any] = {"method": method.name, **target}
    row["centrality_mm"] = centrality(weighted_mean_displacement(d.double(), weights), brain) if weights.sum() > 1e-9 else float("nan")
    row["own_atlas_deformation_mm"] = own
    if predict is not None:
        expected = predict(float(target["age"]), 0.0 if str(target.get("sex", "F")).upper() == "F" else 1.0)
        errors = volume_errors(sizes_now, expected)
        row["ventricle_trend_error"] = errors["lateral_ventricles"]
        row["tissue_trend_error"] = float(np.mean([errors[k] for k in ("csf", "gm", "wm")]))
    else:
        row["ventricle_trend_error"] = row["tissue_trend_error"] = float("nan")
    reg = regularity(u, grid, brain)
    row["folding_nonpositive_pct"] = 100.0 * reg["folding_nonpositive"]
    row["folding_negative_pct"] = 100.0 * reg["folding_negative"]
    row["smoothness_grad_detj"] = reg["smoothness_grad_detj"]
    atlas_np = atlas[0, 0].numpy()
    row["sharpness"] = sharpness(atlas_np, grid, brain)
    row["ventricle_size"] = sizes_now["lateral_ventricles"]
    slices = {"atlas": mid_slice(atlas_np), "jacobian": mid_slice(jacobian_determinant(u.double(), grid)[0].numpy())}
    return row, slices


def evaluate_heldout(
    methods: Sequence[Any],
    template: Volume,
    mask: Volume,
    labels: Volume,
    images: torch.Tensor,
    subject_conditions: Sequence[dict[str, Any]],
    specs: Sequence[Any],
    targets: Sequence[dict[str, Any]],
    network,
    sigma: float = 0.15,
    trend_fields=None,
    name: str = "heldout",
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score ``methods`` at every target condition on held-out ``images`` (see the module docstring).

    ``images`` ``(N, 1, *shape)`` lie on the template grid; ``subject_conditions`` hold each image's conditions;
    ``specs`` define the normalised condition space of the weights (conditions set in a target only).
    """
    started = time.perf_counter()
    data = heldout_images(template, mask, labels, images)
    result = EvaluationResult(name, metric_names=list(METRICS), units=dict(UNITS))
    result.methods = {m.name: m.description for m in methods}
    result.notes.append(
        f"{len(images)} held-out images registered to every atlas with the bundled learned {data.grid.spatial_dims}D registration network "
        f"(no affine: images already template-aligned); centrality weights Gaussian in normalised condition space, sigma {sigma:g}"
    )
    subject_points = np.stack([normalised_conditions(specs, c) for c in subject_conditions])
    predict = data_trend(data, trend_fields, result) if trend_fields is not None else None
    for method in methods:
        if progress:
            progress(f"{name} {method.name}: own-condition atlases")
        own = own_atlas_deformation(method, subject_conditions, data, network)
        for target in targets:
            label = condition_label(target)
            if progress:
                progress(f"{name} {method.name} {label}")
            weights = condition_weights(subject_points, normalised_conditions(specs, target), sigma)
            row, slices = score_target(method, target, data, network, weights, own, predict)
            result.rows.append(row)
            result.slices[(method.name, label)] = slices
    result.seconds = time.perf_counter() - started
    return result


def oasis_validation_inputs():
    """The OASIS axial template (image, mask, labels), validation slices ``(30, 1, 176, 208)``, their conditions, the
    training fields and the condition specs (age, sex). Needs ``../shared/data`` (or the fields cache)."""
    template, mask, labels = load_oasis_template()
    validation = oasis2d_fields("validation")
    train = oasis2d_fields("train")
    ids = validation.info["subjects"]
    images = load_slices(ids)
    specs = [s for s in train.specs if s.name in ("age", "sex")]
    conditions = [
        {"age": float(validation.conditions["age"][i]), "sex": "F" if validation.conditions["sex"][i] == 0 else "M"} for i in range(len(ids))
    ]
    return template, mask, labels, images, conditions, train, specs


def joint_oasis_template_network(train, settings=None):
    """The conditional template network trained jointly with the bundled 2D registration network on the OASIS
    training split's slices (images and (age, sex) only; :mod:`.joint_template_network`)."""
    template, mask, _ = load_oasis_template()
    image = torch.from_numpy(np.asarray(template.array, dtype=np.float32))[None, None]
    brain = torch.from_numpy((np.asarray(mask.array) > 0).astype(np.float32))[None, None]
    specs = [s for s in train.specs if s.name in ("age", "sex")]
    conditions = {s.name: np.asarray(train.conditions[s.name], dtype=np.float64) for s in specs}
    return train_joint_template_network(load_slices(train.info["subjects"]), image, brain, conditions, specs, template.grid, settings=settings)


def default_oasis_methods(network_steps: int = 300, variant: str | None = None) -> list[Any]:
    """Template, kernel regression and template network on the OASIS training fields, the template network trained
    jointly with registration on the training slices, the bundled ``oasis2d`` generator, its other MP variant (given
    its model folder) and its no-integration proxy."""
    train = oasis2d_fields("train")
    methods: list[Any] = [
        TemplateBaseline(),
        KernelRegressionTemplate.from_fields(train, sigma=0.1, condition_names=("age", "sex")),
        train_template_network(train, TemplateNetworkSettings(steps=network_steps), condition_names=("age", "sex")),
        joint_oasis_template_network(train),
        *diffdef_rows("oasis2d", variant),
    ]
    return methods


def evaluate_oasis_validation(methods: Sequence[Any], ages: Sequence[float] = (65, 75, 85), sexes: Sequence[str] = ("F", "M"), sigma: float = 0.15, progress=None) -> EvaluationResult:
    """:func:`evaluate_heldout` on the 30 OASIS validation slices with the bundled 2D registration network."""
    template, mask, labels, images, conditions, train, specs = oasis_validation_inputs()
    network = load_registration_network(2, "cpu")
    targets = [{"age": float(a), "sex": s} for s in sexes for a in ages]
    result = evaluate_heldout(methods, template, mask, labels, images, conditions, specs, targets, network, sigma, train, "oasis-validation", progress)
    result.notes.insert(0, f"conditions: ages {', '.join(f'{a:g}' for a in ages)} x sexes {', '.join(sexes)} (CDR and nWBV unset); OASIS axial template grid 176x208, 1 mm")
    return result
