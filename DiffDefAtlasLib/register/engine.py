"""``register_to_atlas``: affine pre-alignment, learned diffeomorphic registration, optional refinement, 2D and 3D.

Pipeline (every field in RAS mm, the library's convention ``warped(x) = moving(x + d(x))``):

1. the atlas is put on the network's working grid (2 mm in 3D), with a brain mask (a full-head atlas gets the
   template's brain, carried onto it);
2. the affine ``A`` (atlas -> moving points), unless ``affine=False``: Mattes MI, moments-initialised for a
   skull-stripped scan; a full-head scan is found by how much of it lies outside the atlas brain and is aligned by
   its deepbet brain (when installed) or from the top of the head (:mod:`.head`);
3. the moving scan is resampled through ``A`` (a head stripped by its brain), intensity-normalised and masked by
   the dilated atlas brain mask;
4. the network predicts a velocity and λ(x); the displacement ``u = exp(v)``; optional Adam refinement of ``v``;
5. the total displacement ``d(x) = A(x + u(x)) - x`` on the atlas grid warps the full-resolution scan; atlas labels
   are carried onto the scan through the exact inverse ``exp(-v)`` and ``A⁻¹``;
6. the result checks itself (brain NCC after the affine and after registration, folding, brain overlap) and a
   failed check raises instead of returning (:mod:`.quality`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..device import describe_device, run_with_cpu_fallback, select_device
from ..errors import DiffDefInputError
from ..imageio import Volume, check_image
from ..spatial import Grid, jacobian_determinant, jacobian_summary, resample_displacement, warp_image, warp_labels
from ..imaging.head import SKULL_THRESHOLD, Alignment, align_scan, brain_mask_from_template, skull_score
from ..imaging.intensity import normalise_intensity
from ..imaging.masks import brain_mask_from_image, dilate
from ..imaging.resampling import affine_displacement, compose_with_affine, resample, resample_image, to_tensor, working_grid_for
from ..metrics import dice_per_label
from .losses import masked_lncc
from .network import RegistrationNetwork, upsample_field
from .quality import QualityThresholds, brain_overlap, check_quality
from .refine import refine_velocity
from .weights import load_registration_network

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]

#: Margin (mm) by which the atlas brain mask is dilated before it masks the network's inputs.
INPUT_MASK_MARGIN_MM = 8.0


@contextmanager
def deterministic_cudnn(device: torch.device) -> Iterator[None]:
    """cuDNN's deterministic convolutions during a CUDA run (its fastest ones may sum in another order on every run),
    the previous setting restored after; nothing changes on the CPU."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    previous = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = previous


class RegistrationCancelled(RuntimeError):
    """Raised when the ``cancel`` callback of :func:`register_to_atlas` returns True."""


@dataclass
class RegistrationResult:
    """Output of :func:`register_to_atlas`.

    Attributes:
        warped: the moving scan in atlas space (atlas grid).
        displacement: ``(ndim, *shape)`` RAS mm on ``grid`` (atlas space -> moving space, affine included).
        grid: the atlas grid.
        jacobian: det J of ``x -> x + displacement(x)`` on the atlas grid.
        labels_on_moving: atlas labels carried onto the moving scan (nearest), when atlas labels were given.
        lambda_map: the network's regularisation weight λ(x) on the working grid.
        affine: the affine matrix (RAS, atlas -> moving points).
        summary: timings per stage, folding, similarity, std log det J, Dice per label.
    """

    warped: Volume
    displacement: np.ndarray
    grid: Grid
    jacobian: Volume
    labels_on_moving: Volume | None
    summary: dict
    lambda_map: Volume | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))


def prepare_network_inputs(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Intensity-normalised ``(fixed, moving)`` multiplied by the atlas brain mask dilated by 8 mm.

    The same function prepares training pairs, so the network sees what it was trained on.
    """
    margin = int(np.ceil(INPUT_MASK_MARGIN_MM / min(grid.spacing)))
    wide = dilate(mask, margin)
    fixed_n = normalise_intensity(fixed, mask) * wide
    moving_n = normalise_intensity(moving, wide) * wide
    return fixed_n, moving_n


def brain_ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Pearson correlation of two images inside ``mask`` (the "NCC in the brain" of the summary).

    Example:
        >>> x = torch.rand(1, 1, 8, 8)
        >>> round(brain_ncc(x, 2 * x + 1, None), 6)
        1.0
    """
    if mask is not None:
        inside = mask.expand_as(a) > 0
        a, b = a[inside], b[inside]
    a = a.double().flatten() - a.double().mean()
    b = b.double().flatten() - b.double().mean()
    denominator = float(torch.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def _label_volume(volume: Volume) -> Volume:
    array = np.asarray(volume.array)
    if not np.issubdtype(array.dtype, np.integer):
        array = np.rint(array)
    return Volume(array.astype(np.int64), volume.affine)


#: Largest share of distinct integer values (at most this many) for which an "image" is taken to be a label map.
LABEL_MAP_MAX_VALUES = 64
#: Affines of an image and its label map may differ by this much (mm, over the field of view) and still match.
GEOMETRY_TOLERANCE_MM = 0.5
#: A fixed image whose own brain mask is larger than this (mL) is a full head, not a skull-stripped atlas.
HEAD_VOLUME_ML = 2500.0


def looks_like_label_map(volume: Volume) -> bool:
    """True for an integer-valued image with few distinct values (a segmentation, not an intensity scan).

    Example:
        >>> looks_like_label_map(Volume(np.array([[0, 1], [2, 3]] * 4, np.float32), np.eye(3)))
        True
    """
    array = np.asarray(volume.array)
    sample = array.ravel()[:: max(1, array.size // 2_000_000)]
    if np.issubdtype(sample.dtype, np.floating) and not np.array_equal(sample, np.rint(sample)):
        return False
    return len(np.unique(sample)) <= LABEL_MAP_MAX_VALUES


def check_same_geometry(volume: Volume, reference: Volume, name: str, reference_name: str) -> None:
    """Refuse ``volume`` unless it has the shape of ``reference`` and the same voxel-to-world map (within
    :data:`GEOMETRY_TOLERANCE_MM` at the corners of the field of view)."""
    if volume.array.shape != reference.array.shape:
        raise DiffDefInputError(f"{name}: expected the shape of {reference_name} {reference.array.shape}, found {volume.array.shape}")
    n = reference.spatial_dims
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in reference.array.shape], indexing="ij")).reshape(n, -1).T
    offset = np.abs(volume.grid.voxel_to_world_points(corners) - reference.grid.voxel_to_world_points(corners)).max()
    if offset > GEOMETRY_TOLERANCE_MM:
        raise DiffDefInputError(
            f"{name}: its position in space differs from {reference_name} by up to {offset:.1f} mm (origin, spacing or "
            f"direction; at most {GEOMETRY_TOLERANCE_MM} mm allowed); resample it onto {reference_name} first"
        )


def _check_inputs(moving: Volume, atlas: Volume, atlas_labels: Volume | None, moving_labels: Volume | None) -> None:
    check_image(moving, "moving image")
    check_image(atlas, "atlas image", spatial_dims=moving.spatial_dims)
    if atlas.spatial_dims != moving.spatial_dims:
        raise DiffDefInputError(f"moving image is {moving.spatial_dims}D but the atlas is {atlas.spatial_dims}D")
    for name, image in (("moving image", moving), ("atlas image", atlas)):
        if looks_like_label_map(image):
            raise DiffDefInputError(
                f"{name}: it holds at most {LABEL_MAP_MAX_VALUES} distinct integer values, so it looks like a label map; "
                "give an intensity scan (label maps go with --fixed-labels / --moving-labels)"
            )
    for name, labels, image, image_name in (
        ("atlas labels", atlas_labels, atlas, "the atlas image"), ("moving labels", moving_labels, moving, "the moving image")
    ):
        if labels is not None:
            check_same_geometry(labels, image, name, image_name)


def register_to_atlas(
    moving: Volume,
    atlas: Volume,
    *,
    atlas_labels: Volume | None = None,
    moving_labels: Volume | None = None,
    refine: int = 0,
    affine: bool = True,
    device="auto",
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    atlas_mask: Volume | None = None,
    network: RegistrationNetwork | None = None,
    thresholds: QualityThresholds = QualityThresholds(),
    brain_extraction: str = "auto",
) -> RegistrationResult:
    """Register ``moving`` to ``atlas``: SimpleITK MI affine, then the learned SVF network (+ ``refine`` Adam steps).

    ``atlas_mask`` (optional) is the atlas brain mask; by default it is derived from the skull-stripped atlas, or
    for a full-head atlas carried from the bundled template. A full-head ``moving`` scan is found and handled
    (:func:`~DiffDefAtlasLib.imaging.head.align_scan`; ``brain_extraction`` "auto", "deepbet" or "template").
    The result checks itself against ``thresholds`` (:mod:`~DiffDefAtlasLib.register.quality`) and raises
    :class:`~DiffDefAtlasLib.register.quality.RegistrationQualityError` naming the failed figure.
    ``network`` overrides the bundled model (e.g. a freshly trained one). ``progress(fraction, message)`` reports
    progress; ``cancel()`` is polled between steps and raises :class:`RegistrationCancelled` when it returns True.

    Example:
        >>> from DiffDefAtlasLib.template import load_template
        >>> template = load_template("2mm")
        >>> result = register_to_atlas(read_image("scan.nii.gz"), template.t1, atlas_labels=template.labels)  # doctest: +SKIP
        >>> result.summary["jacobian"]["folding_ratio_nonpositive"]  # doctest: +SKIP
        0.0
    """

    def report(fraction: float, message: str) -> None:
        if cancel is not None and cancel():
            raise RegistrationCancelled("registration cancelled by the user")
        if progress is not None:
            progress(float(fraction), message)

    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise DiffDefInputError(f"refine: expected a whole number of steps >= 0, found {refine!r}")
    _check_inputs(moving, atlas, atlas_labels, moving_labels)
    ndim = atlas.spatial_dims
    timings: dict[str, float] = {}
    start = time.perf_counter()
    torch_device = select_device(device) if isinstance(device, str) else torch.device(device)

    report(0.0, "preparing the atlas")
    if network is None:
        network = load_registration_network(ndim, device="cpu")
    spacing_mm = float(network.config.working_spacing_mm)
    if network.config.spatial_dims != ndim:
        raise DiffDefInputError(f"registration network is {network.config.spatial_dims}D but the images are {ndim}D")
    wgrid = working_grid_for(atlas.grid, spacing_mm, network.config.shape_multiple)
    fixed_w = resample(atlas, wgrid)
    atlas_mask, mask_source = _atlas_brain_mask(atlas, atlas_mask, fixed_w, wgrid)
    mask_w = (resample(atlas_mask, wgrid, labels=True) > 0).float() if atlas_mask is not None else brain_mask_from_image(fixed_w)
    if float(mask_w.sum()) == 0:
        raise DiffDefInputError("atlas image: found no brain voxels (expected a skull-stripped atlas with positive intensities)")
    if mask_source == "template":
        fixed_w = fixed_w * mask_w  # a full-head atlas: its skull must not guide the network
    timings["prepare_s"] = time.perf_counter() - start

    fixed_volume, mask_volume = Volume(fixed_w[0, 0].numpy(), wgrid.affine), Volume(mask_w[0, 0].numpy(), wgrid.affine)
    if affine:
        report(0.05, "affine alignment")
        t0 = time.perf_counter()
        alignment = align_scan(fixed_volume, mask_volume, moving, brain_extraction=brain_extraction)
        timings["affine_s"] = time.perf_counter() - t0
    else:
        identity = np.eye(ndim + 1)
        outside = skull_score(moving, identity, mask_volume) if ndim == 3 else 0.0
        alignment = Alignment(identity, outside > SKULL_THRESHOLD, outside, "none")
    report(0.3, "deformable registration")

    def compute(dev: torch.device) -> tuple[RegistrationResult, dict[str, float]]:
        with deterministic_cudnn(dev):
            return _deformable(
                network.to(dev), moving, atlas, atlas_labels, moving_labels, atlas_mask, alignment, wgrid, fixed_w.to(dev),
                mask_w.to(dev), refine, dev, report, timings, start,
            )

    result, figures = run_with_cpu_fallback(compute, torch_device)
    result.summary["alignment"] = alignment.as_dict()
    result.summary["atlas_brain_mask"] = mask_source
    result.summary["quality"] = check_quality(figures, thresholds)
    report(1.0, "done")
    return result


def _atlas_brain_mask(atlas: Volume, atlas_mask: Volume | None, fixed_w: torch.Tensor, wgrid: Grid) -> tuple[Volume | None, str]:
    """The atlas brain mask and where it came from: ``"given"``, ``"image"`` (the skull-stripped atlas's own voxels,
    returned as None) or ``"template"`` (a full-head 3D atlas: the template brain carried onto it)."""
    if atlas_mask is not None:
        check_same_geometry(atlas_mask, atlas, "atlas mask", "the atlas image")
        return atlas_mask, "given"
    if atlas.spatial_dims == 3:
        own = brain_mask_from_image(fixed_w)
        volume_ml = float(own.sum()) * wgrid.voxel_volume / 1000.0
        if volume_ml > HEAD_VOLUME_ML:
            return brain_mask_from_template(atlas), "template"
    return None, "image"


@dataclass
class WorkingGridResult:
    """The network's stage on the working grid: its inputs, the velocity (refined when asked), λ, the displacement
    and the refinement losses."""

    fixed_in: torch.Tensor
    moving_in: torch.Tensor
    velocity: torch.Tensor
    lam: torch.Tensor
    displacement: torch.Tensor
    refine_losses: list[float]


@dataclass
class AtlasGridResult:
    """The total map on the atlas grid (affine included), the warped scan, det J and the similarity figures."""

    total: torch.Tensor
    warped: torch.Tensor
    jacobian: torch.Tensor
    jacobian_summary: dict
    similarity: dict[str, float]
    warped_working: torch.Tensor


def network_inputs(moving_t: torch.Tensor, moving: Volume, alignment: Alignment, wgrid: Grid, fixed_w: torch.Tensor, mask_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan on the working grid through the affine (a full head stripped by its brain), and the pair as the
    network sees it (:func:`prepare_network_inputs`): ``(fixed_in, moving_in)``."""
    device = moving_t.device
    moving_w = resample_image(moving_t, moving.grid, wgrid, alignment.matrix)
    if alignment.brain_mask is not None:  # a full-head scan stripped by its own extracted brain
        stripped = moving_t * torch.as_tensor(np.asarray(alignment.brain_mask.array, dtype=np.float32), device=device)[None, None]
        moving_w = resample_image(stripped, moving.grid, wgrid, alignment.matrix)
    elif alignment.has_skull:
        moving_w = moving_w * dilate(mask_w, 1)  # a full-head scan: the atlas brain carried by the affine strips it
    return prepare_network_inputs(fixed_w, moving_w, mask_w, wgrid)


def predict_on_working_grid(
    network: RegistrationNetwork, fixed_in: torch.Tensor, moving_in: torch.Tensor, mask_w: torch.Tensor, wgrid: Grid, refine: int,
    report: Callable[[float, str], None], timings: dict[str, float],
) -> WorkingGridResult:
    """The network's velocity and λ, ``refine`` Adam steps on the velocity when asked, and the displacement."""
    t0 = time.perf_counter()
    with torch.no_grad():
        displacement_w, velocity, lam = network.predict_displacement(moving_in, fixed_in, wgrid)
    if fixed_in.device.type == "cuda":
        torch.cuda.synchronize(fixed_in.device)
    timings["deformable_s"] = time.perf_counter() - t0
    history: list[float] = []
    if refine > 0:
        t0 = time.perf_counter()
        every = max(1, refine // 20)

        def on_step(step: int, loss: float) -> None:
            if step % every == 0 or step == refine - 1:
                report(0.4 + 0.4 * (step + 1) / refine, f"refinement step {step + 1}/{refine}")

        velocity, history = refine_velocity(network, velocity, lam, moving_in, fixed_in, mask_w, wgrid, steps=refine, step_callback=on_step)
        with torch.no_grad():
            displacement_w = network.integrate(velocity, wgrid)
        timings["refine_s"] = time.perf_counter() - t0
    return WorkingGridResult(fixed_in, moving_in, velocity, lam, displacement_w, history)


@torch.no_grad()
def compose_on_atlas_grid(
    stage: WorkingGridResult, moving_t: torch.Tensor, moving: Volume, atlas: Volume, atlas_mask: Volume | None, matrix: np.ndarray,
    wgrid: Grid, mask_w: torch.Tensor, timings: dict[str, float],
) -> AtlasGridResult:
    """``d(x) = A(x + u(x)) - x`` on the atlas grid, the full-resolution scan warped by it, det J, and the brain
    similarity figures on both grids."""
    t0 = time.perf_counter()
    device = moving_t.device
    warped_w = warp_image(stage.moving_in, stage.displacement, wgrid)
    lncc_w = -float(masked_lncc(warped_w, stage.fixed_in, mask_w))
    ncc_affine_w = brain_ncc(stage.moving_in, stage.fixed_in, mask_w)
    ncc_w = brain_ncc(warped_w, stage.fixed_in, mask_w)
    grid = atlas.grid
    deformable = stage.displacement if grid == wgrid else resample_displacement(stage.displacement, wgrid, grid)
    total = compose_with_affine(matrix, deformable, grid)
    warped = warp_image(moving_t, total, grid, moving.grid)
    jacobian = jacobian_determinant(total, grid)
    atlas_t = to_tensor(atlas, device)
    if atlas_mask is not None:
        mask = (resample(atlas_mask, grid, labels=True, device=device) > 0).float()
    elif grid == wgrid:
        mask = mask_w
    else:
        mask = brain_mask_from_image(atlas_t)
    similarity = {
        "ncc_brain": brain_ncc(warped, atlas_t, mask),
        "ncc_brain_working_grid": ncc_w,
        "ncc_brain_affine_only_working_grid": ncc_affine_w,
        "lncc_squared_brain_working_grid": lncc_w,
    }
    jac_summary = jacobian_summary(jacobian, grid, mask[:, 0])
    jac_summary["folding_ratio_nonpositive_all_voxels"] = float((jacobian <= 0).float().mean())
    timings["resample_s"] = time.perf_counter() - t0
    return AtlasGridResult(total, warped, jacobian, jac_summary, similarity, warped_w)


@torch.no_grad()
def carry_labels(
    network: RegistrationNetwork, stage: WorkingGridResult, composed: AtlasGridResult, matrix: np.ndarray, moving: Volume, atlas: Volume,
    atlas_labels: Volume, moving_labels: Volume | None, wgrid: Grid, device: torch.device, timings: dict[str, float],
) -> tuple[Volume, dict | None]:
    """The atlas labels on the scan through the exact inverse ``exp(-v)`` and ``A⁻¹``; with the scan's own labels,
    Dice per label after registration and after the affine alone (on the atlas grid)."""
    t0 = time.perf_counter()
    grid = atlas.grid
    inverse_w = network.integrate(-stage.velocity, wgrid)
    to_atlas = affine_displacement(np.linalg.inv(matrix), moving.grid, device=device)  # A^-1 y - y
    inverse_at = warp_image(inverse_w, to_atlas, moving.grid, wgrid, padding="border")
    labels_t = torch.as_tensor(_label_volume(atlas_labels).array, device=device)[None, None]
    carried = warp_labels(labels_t, to_atlas + inverse_at, moving.grid, atlas_labels.grid)
    labels_on_moving = Volume(carried[0, 0].cpu().numpy().astype(np.int32), moving.affine)
    timings["labels_s"] = time.perf_counter() - t0
    if moving_labels is None:
        return labels_on_moving, None
    moving_t = torch.as_tensor(_label_volume(moving_labels).array, device=device)[None, None]
    atlas_on_grid = atlas_labels.array if atlas_labels.grid == grid else resample(atlas_labels, grid, labels=True)[0, 0].numpy()
    warped_labels = warp_labels(moving_t, composed.total, grid, moving_labels.grid)[0, 0].cpu().numpy()
    affine_only = warp_labels(moving_t, affine_displacement(matrix, grid, device=device), grid, moving_labels.grid)[0, 0].cpu().numpy()
    dice = {
        "registered": dice_per_label(warped_labels, np.asarray(atlas_on_grid)),
        "affine_only": dice_per_label(affine_only, np.asarray(atlas_on_grid)),
    }
    return labels_on_moving, dice


def registration_summary(
    stage: WorkingGridResult, composed: AtlasGridResult, dice: dict | None, alignment: Alignment, wgrid: Grid, refine: int,
    device: torch.device, timings: dict[str, float],
) -> dict:
    """``summary.json`` of a registration (:func:`register_to_atlas` adds the quality record of :func:`quality_figures`)."""
    jac_summary, lam, history = composed.jacobian_summary, stage.lam, stage.refine_losses
    summary = {
        "device": describe_device(device),
        "spatial_dims": wgrid.spatial_dims,
        "working_grid": {"shape": list(wgrid.shape), "spacing_mm": list(wgrid.spacing)},
        "affine_matrix_ras": np.asarray(alignment.matrix).tolist(),
        "refine_steps": int(refine),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "similarity": composed.similarity,
        "jacobian": jac_summary,
        "folding_ratio": jac_summary["folding_ratio_nonpositive"],
        "log_detj_std_brain": jac_summary["log_detj_std"],
        "lambda": {"min": float(lam.min()), "mean": float(lam.mean()), "max": float(lam.max())},
    }
    if history:
        summary["refine_loss"] = {"first": history[0], "last": history[-1]}
    if dice is not None:
        summary["dice"] = dice
    return summary


def quality_figures(composed: AtlasGridResult, mask_w: torch.Tensor, alignment: Alignment) -> dict[str, float]:
    """The figures :func:`~DiffDefAtlasLib.register.quality.check_quality` reads: brain NCC after the affine and after
    registration, folding, and the brain overlap of the warped scan (its own brain when it has no skull or a deepbet
    mask) with the atlas brain ``mask_w``."""
    return {
        "affine_ncc": composed.similarity["ncc_brain_affine_only_working_grid"], "ncc": composed.similarity["ncc_brain"],
        "folding": composed.jacobian_summary["folding_ratio_nonpositive"],
        **brain_overlap(composed.warped_working, mask_w, own_brain=not alignment.has_skull or alignment.brain_mask is not None),
    }


def _deformable(
    network: RegistrationNetwork,
    moving: Volume,
    atlas: Volume,
    atlas_labels: Volume | None,
    moving_labels: Volume | None,
    atlas_mask: Volume | None,
    alignment: Alignment,
    wgrid: Grid,
    fixed_w: torch.Tensor,
    mask_w: torch.Tensor,
    refine: int,
    device: torch.device,
    report: Callable[[float, str], None],
    timings: dict[str, float],
    start: float,
) -> tuple[RegistrationResult, dict[str, float]]:
    """The stages after the affine, on one device: network (and refinement), composition on the atlas grid, labels;
    with the figures of the quality check."""
    t0 = time.perf_counter()
    moving_t = to_tensor(moving, device)  # converted once: the working-grid input and the full-resolution warp share it
    fixed_in, moving_in = network_inputs(moving_t, moving, alignment, wgrid, fixed_w, mask_w)
    inputs_s = time.perf_counter() - t0
    stage = predict_on_working_grid(network, fixed_in, moving_in, mask_w, wgrid, refine, report, timings)
    timings["deformable_s"] += inputs_s  # the deformable stage as before: the scan's way onto the working grid too
    report(0.85, "resampling the scan into atlas space")
    composed = compose_on_atlas_grid(stage, moving_t, moving, atlas, atlas_mask, alignment.matrix, wgrid, mask_w, timings)
    labels_on_moving, dice = None, None
    if atlas_labels is not None:
        report(0.9, "carrying atlas labels onto the scan")
        labels_on_moving, dice = carry_labels(network, stage, composed, alignment.matrix, moving, atlas, atlas_labels, moving_labels, wgrid, device, timings)
    lam_volume = Volume(upsample_field(stage.lam, network.config.downsample)[0, 0].cpu().numpy().astype(np.float32), wgrid.affine)
    timings["total_s"] = time.perf_counter() - start
    summary = registration_summary(stage, composed, dice, alignment, wgrid, refine, device, timings)
    return RegistrationResult(
        warped=Volume(composed.warped[0, 0].cpu().numpy().astype(np.float32), atlas.affine),
        displacement=composed.total[0].cpu().numpy().astype(np.float32),
        grid=atlas.grid,
        jacobian=Volume(composed.jacobian[0].cpu().numpy().astype(np.float32), atlas.affine),
        labels_on_moving=labels_on_moving,
        summary=summary,
        lambda_map=lam_volume,
        affine=np.asarray(alignment.matrix),
    ), quality_figures(composed, mask_w, alignment)
