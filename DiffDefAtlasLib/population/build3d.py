"""Build the 3D population model from the fitted IXI fields, and measure its age trends next to the real data's.

Regression design (one row per IXI subject): ``age - age_ref``, ``sex`` (F = 0, M = 1) and, as nuisance covariates,
indicators of the map the fit used (``pve_gm``, ``pve_wm``; the FAST segmentation is the reference). A fit to a single
partial-volume class constrains the deformation less than a fit to three tissue classes; the indicators absorb that
systematic difference, and the model keeps the segmentation-referenced mean. Only the age and sex fields are stored.
"""

from __future__ import annotations

import math
import platform
import time
from typing import Any, cast

import numpy as np
import torch

from ..data.ixi import fit_trend, ixi_tissue_measurements
from ..template import load_template, template_info, working_grid
from .ixi_fields import QC_MIN_CORRELATION, IxiFieldSet
from .model import PopulationModel
from .regression import fit_linear_gaussian
from .svf_fit import velocity_to_displacement
from .volumes import warped_label_volumes_ml
from ..spatial import resample_displacement

NUISANCE_KINDS = ("pve_gm", "pve_wm")
#: Volumes compared in the trend table (warped template labels): key -> description.
MODEL_VOLUMES = {
    "lateral_ventricles": "lateral ventricles (label 4)",
    "total_csf": "all CSF (labels 1 + 4)",
    "gm": "grey matter (label 2)",
    "wm": "white matter (label 3)",
}


def design_matrix(fields: IxiFieldSet, age_reference: float, kind_covariates: bool = True) -> tuple[np.ndarray, list[str]]:
    """Covariates ``(N, P)`` (age centred, sex, map-kind indicators) and their names."""
    columns = [fields.ages - age_reference, fields.sexes]
    names = ["age", "sex"]
    if kind_covariates:
        for kind in NUISANCE_KINDS:
            indicator = np.array([1.0 if k == kind else 0.0 for k in fields.kinds])
            if indicator.any():
                columns.append(indicator)
                names.append(f"kind_{kind}")
    return np.stack(columns, axis=1), names


def build_population_model(fields: IxiFieldSet, n_components: int = 10, kind_covariates: bool = True) -> tuple[PopulationModel, dict]:
    """Fit the linear-Gaussian model to the IXI velocities; returns the model and a description for the model card."""
    age_reference = float(np.round(fields.ages.mean(), 2))
    covariates, names = design_matrix(fields, age_reference, kind_covariates)
    flat = fields.velocities.reshape(len(fields.velocities), -1).astype(np.float64)
    fit = fit_linear_gaussian(flat, covariates, n_components)
    shape = fields.velocities.shape[1:]
    model = PopulationModel(
        intercept=fit.intercept.reshape(shape),
        age_slope=fit.coefficients[0].reshape(shape),
        sex_effect=fit.coefficients[1].reshape(shape),
        modes=fit.modes.reshape(n_components, *shape),
        grid=fields.grid,
        age_reference=age_reference,
        age_range=(float(fields.ages.min()), float(fields.ages.max())),
    )
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))  # noqa: E731
    description = {
        "regression": {
            "covariates": names,
            "stored": ["age", "sex"],
            "reference": "FAST segmentation fits (kind_* indicators are nuisance covariates, not stored)",
            "age_reference": age_reference,
            "rms_mm": {"intercept": rms(fit.intercept), **{f"{n}_coefficient": rms(c) for n, c in zip(names, fit.coefficients)}},
            "age_effect_over_range_rms_mm": rms(fit.coefficients[0]) * float(fields.ages.max() - fields.ages.min()),
        },
        "residual_model": {
            "n_components": n_components,
            "sigmas": [float(s) for s in fit.sigmas],
            "explained_variance_ratio": [round(float(r), 4) for r in fit.explained_variance_ratio],
            "explained_variance_total": round(float(fit.explained_variance_ratio.sum()), 4),
            "residual_rms_mm": math.sqrt(fit.residual_variance / flat.shape[1]),
        },
    }
    return model, description


def _displacements(model: PopulationModel, velocities: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(velocities, dtype=np.float32))
    with torch.no_grad():
        return velocity_to_displacement(tensor, model.grid, working_grid())


def fitted_volumes(model: PopulationModel, fields: IxiFieldSet) -> list[dict[str, float]]:
    """Warped-template volumes of each real subject's own fitted field (the model's measurement on real subjects)."""
    labels = load_template("2mm").labels
    out = []
    for velocity in fields.velocities:
        out.extend(warped_label_volumes_ml(_displacements(model, velocity[None]), working_grid(), labels))
    return out


def _trend(ages, values) -> dict:
    trend = fit_trend(ages, values)
    return {"slope_per_year": trend.slope, "r": trend.r, "p_value": trend.p_value, "n": trend.n, "mean": float(np.mean(values))}


def _adjusted_trend(values: np.ndarray, covariates: np.ndarray) -> dict:
    """Age coefficient (column 0) of the least-squares fit of ``values`` on an intercept and ``covariates``, with its
    standard error: the slope with sex and map type held fixed, as in the model's regression."""
    design = np.concatenate([np.ones((len(values), 1)), covariates], axis=1)
    beta, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ beta
    dof = len(values) - design.shape[1]
    covariance = np.linalg.inv(design.T @ design) * float(residual @ residual) / dof
    return {"slope_per_year": float(beta[1]), "standard_error": float(np.sqrt(covariance[1, 1])), "n": len(values), "mean": float(np.mean(values))}


def real_map_trends(data_dir=None) -> dict:
    """Age trends of volumes measured directly on the IXI maps (FAST segmentations, PVE sums): ``data.ixi`` measurements."""
    rows = ixi_tissue_measurements(data_dir)
    trends = {}
    for key, description in (
        ("central_csf_ml", "FAST CSF in the MNI ventricle box (ventricle proxy)"),
        ("csf_volume_ml", "FAST CSF"),
        ("gm_volume_ml", "FAST GM"),
        ("wm_volume_ml", "FAST WM"),
        ("gm_fraction", "FAST GM / (CSF + GM + WM)"),
        ("gm_pve_ml", "GM partial-volume sum"),
        ("wm_pve_ml", "WM partial-volume sum"),
    ):
        pairs = [(float(r["age"]), float(r[key])) for r in rows if key in r]
        if len(pairs) >= 3:
            ages, values = zip(*pairs)
            trends[key] = {"description": description, **_trend(ages, values)}
    return trends


def fitted_field_trends(model: PopulationModel, fields: IxiFieldSet) -> dict:
    """Age trends of the warped-template volumes of the real subjects' own fitted fields.

    ``all``: plain regression on age over every subject; ``seg``: the FAST-segmentation subjects only (the model's
    reference map type); ``adjusted``: the age coefficient with sex and map type as covariates (the model's design).
    """
    volumes = fitted_volumes(model, fields)
    covariates, _ = design_matrix(fields, 0.0)
    seg = np.array([k == "seg" for k in fields.kinds])
    out: dict = {"all": {}, "seg": {}, "adjusted": {}, "per_subject": {}}
    for key in MODEL_VOLUMES:
        values = np.array([v[key] for v in volumes])
        out["all"][key] = _trend(fields.ages, values)
        out["seg"][key] = _trend(fields.ages[seg], values[seg])
        out["adjusted"][key] = _adjusted_trend(values, covariates)
        out["per_subject"][key] = [round(float(v), 3) for v in values]
    out["per_subject"]["subject_ids"] = list(fields.subject_ids)
    return out


def model_sample_trends(model: PopulationModel, n_samples: int = 500, seed: int = 0, progress: bool = True) -> dict:
    """Age trends of the warped-template volumes of ``n_samples`` model samples (ages uniform, F/M equally likely)."""
    from tqdm import tqdm

    ages, volumes = [], []
    chunk = 25
    bar = tqdm(total=n_samples, desc="model samples", disable=not progress)
    for start in range(0, n_samples, chunk):
        for sample in model.sample(min(chunk, n_samples - start), seed=seed + start):
            ages.append(sample.age)
            volumes.append(sample.tissue_volumes_ml)
        bar.update(min(chunk, n_samples - start))
    bar.close()
    out: dict[str, Any] = {key: _trend(ages, [v[key] for v in volumes]) for key in MODEL_VOLUMES}
    out["n_samples"] = n_samples
    out["seed"] = seed
    return out


def model_mean_trends(model: PopulationModel, points: int = 6) -> dict:
    """Volumes of the exact conditional-mean deformation at ``points`` ages across the range, for F and M."""
    lo, hi = model.condition_ranges["age"]
    grid_ages = [float(a) for a in np.linspace(lo, hi, points)]
    out: dict[str, dict[str, Any]] = {}
    for sex in ("F", "M"):
        mean_volumes = [model.label_volumes_ml(model.mean_velocity(a, sex)) for a in grid_ages]
        out[sex] = {"ages": grid_ages, **{key: [round(v[key], 3) for v in mean_volumes] for key in MODEL_VOLUMES}}
        for key in MODEL_VOLUMES:
            out[sex][f"{key}_slope_per_year"] = float(np.polyfit(grid_ages, [v[key] for v in mean_volumes], 1)[0])
    return out


def measure_trends(model: PopulationModel, fields: IxiFieldSet | None = None, n_samples: int = 500, seed: int = 0, data_dir=None, progress: bool = True) -> dict:
    """All trends for the model card and the table: real maps and fitted fields (when ``fields`` is given), model
    samples and the model's conditional means."""
    started = time.perf_counter()
    trends: dict = {}
    if fields is not None:
        trends["real_maps"] = real_map_trends(data_dir)
        trends["fitted_fields"] = fitted_field_trends(model, fields)
    trends["model_samples"] = model_sample_trends(model, n_samples, seed, progress)
    trends["model_mean"] = model_mean_trends(model)
    trends["seconds"] = round(time.perf_counter() - started, 1)
    return trends


def trend_table(trends: dict) -> str:
    """A Markdown table of the trends from :func:`measure_trends`: slope (mL/yr), r and mean per source."""
    lines = ["| volume | source | n | slope (mL/yr) | r | mean (mL) |", "|---|---|---|---|---|---|"]

    def row(name: str, source: str, entry: dict) -> None:
        r = f"{entry['r']:+.2f}" if "r" in entry else "—"
        slope = f"{entry['slope_per_year']:+.3f}"
        if "standard_error" in entry:
            slope += f" ± {entry['standard_error']:.3f}"
        lines.append(f"| {name} | {source} | {entry['n']} | {slope} | {r} | {entry['mean']:.1f} |")

    real = trends.get("real_maps", {})
    fitted = trends.get("fitted_fields", {})
    samples = trends.get("model_samples", {})
    means = trends.get("model_mean", {})
    pairs = {"lateral_ventricles": ["central_csf_ml"], "total_csf": ["csf_volume_ml"], "gm": ["gm_volume_ml", "gm_pve_ml"], "wm": ["wm_volume_ml", "wm_pve_ml"]}
    for key, description in MODEL_VOLUMES.items():
        for real_key in pairs[key]:
            if real_key in real:
                row(description, f"real IXI maps: {real[real_key]['description']}", real[real_key])
        if fitted:
            row(description, "real IXI subjects, own fitted field: all", fitted["all"][key])
            row(description, "real IXI subjects, own fitted field: FAST-segmentation subjects", fitted["seg"][key])
            row(description, "real IXI subjects, own fitted field: adjusted for sex and map type (± SE)", fitted["adjusted"][key])
        if key in samples:
            row(description, f"population model: {samples['n_samples']} samples", samples[key])
        if means:
            slopes = ", ".join(f"{sex} {means[sex][key + '_slope_per_year']:+.3f}" for sex in ("F", "M"))
            values = ", ".join(f"{sex} {means[sex][key][0]:.1f} → {means[sex][key][-1]:.1f}" for sex in ("F", "M"))
            lines.append(f"| {description} | population model: conditional-mean atlas ({values} mL over the age range) | — | {slopes} | — | — |")
    if "gm_fraction" in real:
        entry = real["gm_fraction"]
        lines.append(f"| GM fraction | real IXI maps: {entry['description']} | {entry['n']} | {entry['slope_per_year']:+.5f} /yr | {entry['r']:+.2f} | {entry['mean']:.3f} |")
    return "\n".join(lines)


def provenance(fields: IxiFieldSet, fitted: IxiFieldSet | None = None) -> dict:
    """The data part of the model card: IXI ids, ages, sexes, sites, map kinds, fit losses and the quality check.

    ``fields`` are the subjects the model uses, ``fitted`` all that were fitted (to list the excluded ones).
    """
    fitted = fields if fitted is None else fitted
    used = set(fields.subject_ids)
    return {
        "source": "IXI (brain-development.org, CC BY-SA 3.0): FSL FAST segmentations and GM/WM partial-volume maps in FSL MNI152 "
        "1 mm space after affine normalisation (shared data ixi_3d, from GitHub charliepublic/BrainAge)",
        "acknowledgement": "IXI project, Imperial College London, EPSRC GR/S21533/02",
        "template": template_info()["name"],
        "subjects": [
            {"id": s, "age": float(a), "sex": "M" if x else "F", "site": site, "map": k, "fit_loss": round(float(loss), 6), "template_correlation": round(float(c), 3)}
            for s, a, x, site, k, loss, c in zip(
                fields.subject_ids, fields.ages, fields.sexes, fields.sites, fields.kinds, fields.data_loss, fields.template_correlation
            )
        ],
        "n_subjects": len(fields.subject_ids),
        "maps": {kind: fields.kinds.count(kind) for kind in sorted(set(fields.kinds))},
        "sexes": {"F": int((fields.sexes == 0).sum()), "M": int((fields.sexes == 1).sum())},
        "quality_check": {
            "rule": f"Pearson correlation of the subject's tissue maps with the template's probabilities >= {QC_MIN_CORRELATION}",
            "excluded": [
                {"id": s, "map": k, "template_correlation": round(float(c), 3)}
                for s, k, c in zip(fitted.subject_ids, fitted.kinds, fitted.template_correlation)
                if s not in used
            ],
        },
        "fit_seconds_median": float(np.median(fitted.seconds)),
        "built_with": {"python": platform.python_version(), "torch": torch.__version__},
    }


def fit_consistency(model: PopulationModel, fields: IxiFieldSet) -> dict:
    """How far the fits' own deformation (integrated on the 4 mm grid, 5 steps) is from the model's definition of exp(v)."""
    work = working_grid()
    mask = torch.from_numpy(load_template("2mm").brain_mask.array > 0)
    errors = []
    with torch.no_grad():
        for velocity in fields.velocities:
            v = torch.from_numpy(velocity[None])
            canonical = velocity_to_displacement(v, model.grid, work)
            fitted = resample_displacement(velocity_to_displacement(v, model.grid, model.grid, steps=5), model.grid, work)
            errors.append(float((canonical - fitted).norm(dim=1)[0][mask].mean()))
    return {"mean_endpoint_difference_mm": float(np.mean(errors)), "max_subject_mean_mm": float(np.max(errors))}


def weights_precision(model: PopulationModel) -> dict:
    """Largest difference (mm) between mean displacements from float32 and float16 parameters, over ages and sexes."""
    half = PopulationModel(
        *cast("tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]", tuple(np.asarray(a, dtype=np.float16).astype(np.float32) for a in (model.intercept, model.age_slope, model.sex_effect, model.modes))),
        model.grid,
        model.age_reference,
        model.condition_ranges["age"],
    )
    lo, hi = model.condition_ranges["age"]
    worst_velocity = worst_displacement = 0.0
    for age in (lo, (lo + hi) / 2, hi):
        for sex in ("F", "M"):
            worst_velocity = max(worst_velocity, float(np.abs(model.mean_velocity(age, sex) - half.mean_velocity(age, sex)).max()))
            worst_displacement = max(
                worst_displacement, float(np.abs(model.mean_displacement(age, sex) - half.mean_displacement(age, sex)).max())
            )
    mode_error = float(np.abs(model.modes - half.modes).max())
    return {"max_abs_velocity_error_mm": worst_velocity, "max_abs_displacement_error_mm": worst_displacement, "max_abs_mode_error_mm": mode_error}
