"""OASIS-1 axial slices: an unbiased 2D template built from the training split, and template-to-subject fields.

Geometry: the slices' own 1 mm grid (176 x 208, :func:`DiffDefAtlasLib.data.oasis.oasis_affine`, world axes R, A).
The split is the data package's fixed split (:func:`DiffDefAtlasLib.data.oasis.split_subjects`: stratified by age
decade, hashed ids; 120 train / 30 validation).

Template (:func:`build_oasis_template`, bundled in ``Resources/templates2d/``):

1. intensities are normalised per slice (divided by the 90th percentile of its brain pixels);
2. round 0 takes the plain mean of the training slices (they are already atlas-registered);
3. each round fits a velocity ``v_i`` per training slice (template -> subject, :func:`~.svf_fit.fit_velocity`),
   averages the slices brought into template space by ``exp(-v_i)``, and re-centres the average by warping it with
   ``exp(mean v)``: with ``subject = template o exp(v)``, this new template has subject velocities of mean ~0
   (log-Euclidean approximation), so it sits at the centre of the training population;
4. the brain mask is the majority vote of the subjects' masks (pixels > 0.05) in template space, holes filled;
5. labels (0 background, 1 CSF, 2 GM, 3 WM, 4 lateral ventricles) come from 3-class k-means of the template
   intensities inside the mask; the lateral ventricles are the dark (CSF-class) connected components that reach a
   central seed box, closed and hole-filled inside a central search box.

Fields (:func:`build_oasis_fields`): every subject (train and validation) is registered to the bundled template
and the velocities on the 2 mm grid (88 x 104) are cached with the conditions; they are the training data of the
``oasis2d`` generator.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np
import torch
from scipy import ndimage

from ..atomic import atomic_path, write_text_atomic
from ..data.oasis import CONDITIONS, load_oasis_slice, oasis_affine, read_oasis_table, split_subjects
from ..errors import DiffDefInputError
from ..imageio import Volume, read_image, write_image
from ..resources import resource_path
from ..spatial import Grid, warp_image, warp_labels
from ..checksum import file_sha256
from .cache import cache_root, settings_key
from .svf_fit import FitSettings, fit_velocity, velocity_to_displacement
from ..conditions.columns import KNOWN_CONDITIONS
from ..data.ixi import fit_trend

TEMPLATE_FOLDER = "templates2d"
TEMPLATE_FILES = {
    "image": "oasis_axial_template.nii.gz",
    "mask": "oasis_axial_mask.nii.gz",
    "labels": "oasis_axial_labels.nii.gz",
    "info": "oasis_axial_template.json",
}
#: Velocity grid: twice the pixel spacing (2 mm, 88 x 104).
VELOCITY_FACTOR = 2
FIELD_SETTINGS = FitSettings(
    levels=(4, 2),
    iterations=(50, 50),
    velocity_factor=VELOCITY_FACTOR,
    learning_rates=(0.4, 0.1),
    bending_weight=0.5,
    diffusion_weight=0.0005,
    integration_steps=5,
)
FOREGROUND_THRESHOLD = 0.05
#: Boxes in world mm (x: right, y: anterior) for the ventricle label of the template.
VENTRICLE_SEARCH_BOX = {"x": (-30.0, 30.0), "y": (-55.0, 45.0)}
VENTRICLE_SEED_BOX = {"x": (-12.0, 12.0), "y": (-10.0, 30.0)}
MAX_VENTRICLE_HOLE_MM2 = 30.0
FIELDS_VERSION = 1


def image_grid() -> Grid:
    """The 1 mm grid of the OASIS axial slices (176 x 208)."""
    return Grid((176, 208), oasis_affine("axial"))


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """Divide a slice by the 90th percentile of its foreground pixels (> 0.05), so tissue contrast is comparable.

    Example:
        >>> normalise_intensity(np.array([0.0, 0.5, 0.5, 0.5, 0.5])).tolist()
        [0.0, 1.0, 1.0, 1.0, 1.0]
    """
    foreground = image[image > FOREGROUND_THRESHOLD]
    if foreground.size == 0:
        raise DiffDefInputError("OASIS slice: no foreground pixels (all below 0.05)")
    return (image / np.percentile(foreground, 90)).astype(np.float32)


def load_slices(subject_ids: list[str], data_dir: str | Path | None = None) -> torch.Tensor:
    """Normalised axial slices ``(N, 1, 176, 208)``."""
    return torch.from_numpy(np.stack([normalise_intensity(load_oasis_slice(s, "axial", data_dir).array) for s in subject_ids]))[:, None]


def register_batch(
    template: torch.Tensor,
    images: torch.Tensor,
    settings: FitSettings = FIELD_SETTINGS,
    chunk: int = 30,
    grid: Grid | None = None,
    progress: Callable | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Fit template-to-subject velocities for ``images`` ``(N, 1, *shape)`` on ``grid`` (default: the OASIS slice grid),
    ``chunk`` at a time; returns ``(velocities, data losses)``."""
    grid = image_grid() if grid is None else grid
    velocities, losses = [], []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        velocity, _, info = fit_velocity(template, part, grid, settings)
        velocities.append(velocity)
        losses.extend(info["data_loss"])
        if progress is not None:
            progress(len(part))
    return torch.cat(velocities), np.array(losses)


def _kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 50) -> np.ndarray:
    centres = np.percentile(values, np.linspace(10, 90, k))
    for _ in range(iterations):
        assignment = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        new = np.array([values[assignment == c].mean() if np.any(assignment == c) else centres[c] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def _box_mask(grid: Grid, box: dict) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), axis=-1).astype(np.float64)
    xy = grid.voxel_to_world_points(idx)
    return (xy[..., 0] >= box["x"][0]) & (xy[..., 0] <= box["x"][1]) & (xy[..., 1] >= box["y"][0]) & (xy[..., 1] <= box["y"][1])


def derive_labels(image: np.ndarray, mask: np.ndarray, grid: Grid) -> tuple[np.ndarray, dict]:
    """Labels 0-4 of a 2D template from its intensities (k-means tissue classes, central dark components as ventricles)."""
    inside = mask.astype(bool)
    centres = _kmeans_1d(image[inside].astype(np.float64))
    classes = np.argmin(np.abs(image[..., None] - centres), axis=-1) + 1  # 1 CSF (dark), 2 GM, 3 WM (bright)
    labels = np.where(inside, classes, 0).astype(np.uint8)
    dark = (labels == 1) & _box_mask(grid, VENTRICLE_SEARCH_BOX)
    components, count = ndimage.label(dark)
    seeds = np.unique(components[_box_mask(grid, VENTRICLE_SEED_BOX) & dark])
    ventricles = np.isin(components, seeds[seeds > 0])
    ventricles = ndimage.binary_closing(ventricles, iterations=1)
    holes, n_holes = ndimage.label(ndimage.binary_fill_holes(ventricles) & ~ventricles)
    if n_holes:
        hole_areas = ndimage.sum(np.ones_like(holes), holes, range(1, n_holes + 1)) * grid.voxel_volume
        ventricles |= np.isin(holes, 1 + np.flatnonzero(hole_areas <= MAX_VENTRICLE_HOLE_MM2))
    ventricles &= inside & _box_mask(grid, VENTRICLE_SEARCH_BOX)
    labels[ventricles] = 4
    info = {
        "method": "3-class k-means of template intensities inside the mask (1 CSF, 2 GM, 3 WM); lateral ventricles (4): "
        "CSF-class connected components inside the search box that reach the seed box, binary closing (1 iteration), "
        f"holes up to {MAX_VENTRICLE_HOLE_MM2:g} mm^2 filled, kept inside the mask and search box. On the averaged slice the "
        "label covers the frontal horns, the atria and the dark midline CSF between them (the septum is not resolved)",
        "kmeans_centres": [round(float(c), 4) for c in centres],
        "search_box_mm": VENTRICLE_SEARCH_BOX,
        "seed_box_mm": VENTRICLE_SEED_BOX,
        "areas_mm2": {name: float((labels == value).sum()) * grid.voxel_volume for value, name in enumerate(("background", "csf", "gm", "wm", "lateral_ventricles"))},
    }
    return labels, info


def _warp(images: torch.Tensor, displacement: torch.Tensor, grid: Grid) -> torch.Tensor:
    with torch.no_grad():
        return warp_image(images, displacement, grid)


def unbiased_template(
    images: torch.Tensor,
    grid: Grid,
    rounds: int,
    settings: FitSettings = FIELD_SETTINGS,
    progress: Callable | None = None,
    initial: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Iterative unbiased template of ``images`` ``(N, 1, *grid.shape)``: register, average, re-centre, ``rounds`` times.

    The start is ``initial`` when given, else the plain mean. Each round fits template-to-subject velocities ``v_i``, averages the images brought
    into template space by ``exp(-v_i)`` and warps that average by ``exp(mean v)``, so that the subjects' velocities
    relative to the new template have mean ~0. Returns ``(template (1, 1, *shape), last velocities, history)``.

    Example:
        >>> template, velocities, history = unbiased_template(images, image_grid(), rounds=3)  # doctest: +SKIP
    """
    velocity_grid = grid.zoomed(settings.velocity_factor)
    template = images.mean(0, keepdim=True) if initial is None else initial
    history: list[dict] = []
    velocities = torch.zeros(len(images), grid.spatial_dims, *velocity_grid.shape)
    for round_index in range(rounds):
        velocities, losses = register_batch(template, images, settings, grid=grid, progress=progress)
        with torch.no_grad():
            to_template = velocity_to_displacement(-velocities, velocity_grid, grid)
            average = _warp(images, to_template, grid).mean(0, keepdim=True)
            mean_velocity = velocities.mean(0, keepdim=True)
            new_template = _warp(average, velocity_to_displacement(mean_velocity, velocity_grid, grid), grid)
        history.append(
            {
                "round": round_index + 1,
                "mean_data_loss": float(losses.mean()),
                "mean_velocity_norm_mm": float(mean_velocity.norm(dim=1).mean()),
                "mean_subject_velocity_norm_mm": float(velocities.norm(dim=1).mean()),
                "template_change_rms": float(((new_template - template) ** 2).mean().sqrt()),
            }
        )
        template = new_template
    return template, velocities, history


def build_oasis_template(rounds: int = 4, data_dir: str | Path | None = None, progress: bool = True) -> tuple[Volume, Volume, Volume, dict]:
    """Build the unbiased axial template from the training split; returns ``(image, mask, labels, info)``.

    Takes a few minutes on two CPU cores (rounds x 120 registrations, run as batches).

    Example:
        >>> image, mask, labels, info = build_oasis_template()  # doctest: +SKIP
    """
    from tqdm import tqdm

    grid = image_grid()
    rows = read_oasis_table(data_dir)
    split = split_subjects({r["subject_id"]: float(r["age"]) for r in rows})
    train_ids = sorted(s for s, part in split.items() if part == "train")
    images = load_slices(train_ids, data_dir)
    started = time.perf_counter()
    bar = tqdm(total=rounds * len(train_ids), desc="OASIS template", disable=not progress)
    template, velocities, history = unbiased_template(images, grid, rounds, FIELD_SETTINGS, progress=bar.update)
    bar.close()
    with torch.no_grad():
        # the subjects' masks in the frame of the last registration, re-centred like the template
        velocity_grid = grid.zoomed(FIELD_SETTINGS.velocity_factor)
        to_template = velocity_to_displacement(-velocities, velocity_grid, grid)
        masks = _warp((images > FOREGROUND_THRESHOLD).float(), to_template, grid).mean(0, keepdim=True)
        recentre = velocity_to_displacement(velocities.mean(0, keepdim=True), velocity_grid, grid)
        mask_average = _warp(masks, recentre, grid)[0, 0].numpy()
    mask = ndimage.binary_fill_holes(mask_average >= 0.5)
    components, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, components, range(1, count + 1))
        mask = components == (1 + int(np.argmax(sizes)))
    image = np.where(mask, template[0, 0].numpy(), 0.0).astype(np.float32)
    labels, label_info = derive_labels(image, mask, grid)
    info = {
        "name": "OASIS-1 axial unbiased template (training split)",
        "data": "OASIS-1 cross-sectional axial slices (shared data oasis1_2d), training split of DiffDefAtlasLib.data.oasis",
        "training_subjects": train_ids,
        "rounds": rounds,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
        "fit_settings": dataclasses.asdict(FIELD_SETTINGS),
        "intensity": "each slice divided by the 90th percentile of its pixels > 0.05 (JPEG values in [0, 1]) before averaging",
        "mask": "majority vote (>= 0.5) of the subjects' masks (pixels > 0.05) brought into template space, holes filled, largest component",
        "labels": label_info,
        "grid": {"shape": list(grid.shape), "affine": grid.affine.tolist()},
        "acknowledgement": "Data were provided by OASIS: Cross-Sectional: Principal Investigators: D. Marcus, R. Buckner, "
        "J. Csernansky, J. Morris; P50 AG05681, P01 AG03991, P01 AG026276, R01 AG021910, P20 MH071616, U24 RR021382",
    }
    return Volume(image, grid.affine), Volume(mask.astype(np.uint8), grid.affine), Volume(labels, grid.affine), info


def save_oasis_template(image: Volume, mask: Volume, labels: Volume, info: dict, folder: str | Path) -> Path:
    """Write the template, mask and labels (2D NIfTI) and the JSON description (with checksums) into ``folder``."""
    folder = Path(folder)
    write_image(image, folder / TEMPLATE_FILES["image"])
    write_image(mask, folder / TEMPLATE_FILES["mask"])
    write_image(labels, folder / TEMPLATE_FILES["labels"])
    info = dict(info)
    info["files"] = {key: TEMPLATE_FILES[key] for key in ("image", "mask", "labels")}
    info["sha256"] = {key: file_sha256(folder / TEMPLATE_FILES[key]) for key in ("image", "mask", "labels")}
    return write_text_atomic(folder / TEMPLATE_FILES["info"], json.dumps(info, indent=1) + "\n")


def relabel_oasis_template(folder: str | Path) -> dict:
    """Recompute the labels of a saved template from its image and mask (:func:`derive_labels`); rewrites labels and JSON."""
    folder = Path(folder)
    image = read_image(folder / TEMPLATE_FILES["image"])
    mask = read_image(folder / TEMPLATE_FILES["mask"], dtype=np.uint8)
    labels, label_info = derive_labels(image.array, mask.array, image.grid)
    info = json.loads((folder / TEMPLATE_FILES["info"]).read_text(encoding="utf-8"))
    info["labels"] = label_info
    save_oasis_template(image, mask, Volume(labels, image.affine), info, folder)
    return label_info


def load_oasis_template() -> tuple[Volume, Volume, Volume]:
    """The bundled OASIS axial template: ``(image float32, brain mask uint8, labels uint8 0-4)`` on the 176 x 208 grid.

    Example:
        >>> image, mask, labels = load_oasis_template()
        >>> image.array.shape, int(labels.array.max())
        ((176, 208), 4)
    """
    image = read_image(resource_path(TEMPLATE_FOLDER, TEMPLATE_FILES["image"]))
    mask = read_image(resource_path(TEMPLATE_FOLDER, TEMPLATE_FILES["mask"]), dtype=np.uint8)
    labels = read_image(resource_path(TEMPLATE_FOLDER, TEMPLATE_FILES["labels"]), dtype=np.uint8)
    return image, mask, labels


def oasis_template_info() -> dict:
    """The bundled template's JSON description (method, training subjects, rounds, label areas, checksums)."""
    return json.loads(resource_path(TEMPLATE_FOLDER, TEMPLATE_FILES["info"]).read_text(encoding="utf-8"))


@dataclass
class OasisFieldSet:
    """Template-to-subject velocities of the OASIS axial slices.

    Attributes:
        subject_ids: ``N`` ids, sorted.
        velocities: ``(N, 2, 88, 104)`` float32, RAS mm, on ``grid`` (2 mm); ``exp(v)`` on ``image_grid`` warps the
            template into the subject (:func:`~.svf_fit.velocity_to_displacement`).
        grid: the velocity grid; ``image_grid``: the 1 mm template grid.
        conditions: name -> ``(N,)`` float array (age, sex F=0/M=1, cdr, mmse, etiv, nwbv).
        split: ``(N,)`` ``"train"`` / ``"validation"``.
        data_loss: final mean squared intensity difference per subject.
    """

    subject_ids: list[str]
    velocities: np.ndarray
    grid: Grid
    image_grid: Grid
    conditions: dict[str, np.ndarray]
    split: np.ndarray
    data_loss: np.ndarray

    def subset(self, part: str) -> "OasisFieldSet":
        """Only the ``"train"`` or ``"validation"`` subjects."""
        if part not in ("train", "validation"):
            raise DiffDefInputError(f"split must be 'train' or 'validation', found {part!r}")
        keep = self.split == part
        return OasisFieldSet(
            [s for s, k in zip(self.subject_ids, keep) if k],
            self.velocities[keep],
            self.grid,
            self.image_grid,
            {name: values[keep] for name, values in self.conditions.items()},
            self.split[keep],
            self.data_loss[keep],
        )


def _fields_path(cache_dir: str | Path | None) -> Path:
    template_digest = file_sha256(resource_path(TEMPLATE_FOLDER, TEMPLATE_FILES["image"]))[:16]
    key = settings_key({"version": FIELDS_VERSION, "settings": dataclasses.asdict(FIELD_SETTINGS), "template": template_digest})
    return cache_root(cache_dir) / "oasis2d" / f"fields-{key}.npz"


def build_oasis_fields(cache_dir: str | Path | None = None, data_dir: str | Path | None = None, progress: bool = True) -> OasisFieldSet:
    """Template-to-subject velocities of every OASIS subject, from the cache when present, else computed (needs the data).

    The cache file name depends on the fit settings and the bundled template's checksum, so a new template refits.

    Example:
        >>> fields = build_oasis_fields()  # doctest: +SKIP
        >>> fields.velocities.shape, fields.subset("train").velocities.shape[0]  # doctest: +SKIP
        ((150, 2, 88, 104), 120)
    """
    from tqdm import tqdm

    path = _fields_path(cache_dir)
    grid = image_grid()
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return OasisFieldSet(
                [str(s) for s in stored["subject_ids"]],
                stored["velocities"],
                grid.zoomed(VELOCITY_FACTOR),
                grid,
                {name: stored[f"condition_{name}"] for name in CONDITIONS},
                stored["split"].astype(str),
                stored["data_loss"],
            )
    rows = sorted(read_oasis_table(data_dir), key=lambda r: r["subject_id"])
    ids = [r["subject_id"] for r in rows]
    split = split_subjects({r["subject_id"]: float(r["age"]) for r in rows})
    template, _, _ = load_oasis_template()
    template_tensor = torch.from_numpy(np.asarray(template.array, dtype=np.float32))[None, None]
    bar = tqdm(total=len(ids), desc="OASIS fields", disable=not progress)
    velocities, losses = register_batch(template_tensor, load_slices(ids, data_dir), progress=bar.update)
    bar.close()

    conditions = {name: np.array([KNOWN_CONDITIONS[name].parse(r[name], where=f"OASIS {r['subject_id']}") for r in rows]) for name in CONDITIONS}
    fields = OasisFieldSet(ids, velocities.numpy().astype(np.float32), grid.zoomed(VELOCITY_FACTOR), grid, conditions, np.array([split[s] for s in ids]), losses)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                subject_ids=np.array(ids),
                velocities=fields.velocities,
                split=fields.split,
                data_loss=losses,
                **cast("dict[str, Any]", {f"condition_{name}": values for name, values in conditions.items()}),
            )
    return fields


def warped_ventricle_areas(fields: OasisFieldSet) -> np.ndarray:
    """Area (mm^2) of the template's ventricle label warped by each subject's ``exp(v)`` (nearest, on the 1 mm grid)."""
    _, _, labels = load_oasis_template()
    label_tensor = torch.from_numpy(labels.array.astype(np.int64))[None, None]
    areas = []
    with torch.no_grad():
        for start in range(0, len(fields.velocities), 25):
            velocity = torch.from_numpy(np.ascontiguousarray(fields.velocities[start : start + 25]))
            displacement = velocity_to_displacement(velocity, fields.grid, fields.image_grid)
            warped = warp_labels(label_tensor.expand(len(velocity), -1, -1, -1), displacement.double(), fields.image_grid)
            areas.extend(((warped == 4).flatten(1).sum(1).double() * fields.image_grid.voxel_volume).tolist())
    return np.array(areas)


def ventricle_trend_report(fields: OasisFieldSet, data_dir: str | Path | None = None) -> dict[str, dict]:
    """Age trends of the ventricle area: template labels warped by the fitted fields, and the slices' central dark area.

    Returns ``{name: {"slope_per_year", "percent_per_year", "r", "n"}}`` (the dark-area proxy only when the data is there).
    """
    ages = fields.conditions["age"]
    measures = {"fitted_fields_ventricle_area_mm2": warped_ventricle_areas(fields)}
    try:
        from ..data.oasis import central_dark_area

        measures["slices_central_dark_area_mm2"] = np.array([central_dark_area(load_oasis_slice(s, "axial", data_dir)) for s in fields.subject_ids])
    except (ImportError, DiffDefInputError):
        pass
    report = {}
    for name, values in measures.items():
        trend = fit_trend(ages, values)
        report[name] = {"slope_per_year": trend.slope, "percent_per_year": 100.0 * trend.slope / float(np.mean(values)), "r": trend.r, "n": trend.n}
    return report
