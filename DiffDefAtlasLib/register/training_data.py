"""Training pairs for the registration network, on the working grid.

3D: every moving subject is affinely aligned to the 2 mm template once (SimpleITK MI) and cached as an ``.npz``:

- label maps (SynthSeg, BrainWeb): a new T1-like image is synthesised from the labels at every draw (SynthSeg style,
  :func:`DiffDefAtlasLib.data.synthesis.synthesise_image`), so the network sees varied contrasts, skulls and bias
  fields, and the labels supervise a Dice term;
- real IXI T1 volumes: similarity only.

Each draw also deforms the moving subject by a random smooth diffeomorphism, and sometimes the template too (the
generator's atlases are deformed templates). 2D: OASIS axial slices (atlas-registered already) against their mean.

Held out for evaluation (never drawn): ``bert``, ``voxelmorph_test``, the last 4 SynthSeg and the last 4 BrainWeb maps,
and the OASIS validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..imageio import read_image, Volume
from ..spatial import Grid, integrate_velocity, warp_image, warp_labels
from .network import coarse_grid, upsample_field
from ..data.ixi import ixi_subjects
from ..data.label_datasets import list_label_maps, load_label_map
from ..data.labelmaps import class_lookup, has_ventricles, merge_ventricles_into_csf, to_diffdef_labels
from ..data.oasis import load_oasis_slice
from ..data.synthesis import synthesise_image
from ..imaging.affine import AffineSettings, affine_register
from ..imaging.intensity import normalise_intensity
from ..imaging.masks import dilate
from ..imaging.resampling import resample
from ..template import load_template

HELD_OUT_PER_SOURCE = 4
#: Initial head pitches tried by the affine step when caching (some SynthSeg heads are tilted by ~30 degrees).
MULTI_START_PITCH_DEG = (-30.0, 0.0, 30.0)
N_CLASSES = 5


@dataclass
class CachedSubject:
    """A subject on the working grid: an ``image`` (float32) or ``labels`` (int32, ``convention``), or both."""

    name: str
    source: str
    image: np.ndarray | None
    labels: np.ndarray | None
    convention: str | None


def split_label_maps(infos) -> tuple[list, list]:
    """``(train, held_out)`` label-map infos: per source the last 4 are held out; ``bert`` and VoxelMorph always are."""
    train, held = [], []
    for source in ("synthseg", "brainweb"):
        members = sorted((i for i in infos if i.source == source), key=lambda i: i.name)
        train += members[:-HELD_OUT_PER_SOURCE]
        held += members[-HELD_OUT_PER_SOURCE:]
    held += [i for i in infos if i.source in ("voxelmorph", "bert")]
    return train, held


def tissue_contrast_image(classes: np.ndarray) -> np.ndarray:
    """A deterministic T1-like image from library classes (non-brain = 0), for affine alignment of label maps."""
    lut = {-1: 0.0, 0: 0.0, 1: 0.25, 2: 0.55, 3: 0.85, 4: 0.2}
    out = np.zeros(classes.shape, np.float32)
    for c, value in lut.items():
        out[classes == c] = value
    return out


def cache_subjects(cache_dir: str | Path, log=print) -> list[Path]:
    """Affinely align the training subjects (IXI T1s and training label maps) to the 2 mm template and cache them.

    Existing cache files are kept (the step is resumable). Returns the cache files.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    template = load_template("2mm")
    grid = template.grid
    train, _ = split_label_maps(list_label_maps())
    settings = AffineSettings(initial_pitch_deg=MULTI_START_PITCH_DEG)
    out = []
    for info in train:
        target = cache / f"{info.name}.npz"
        out.append(target)
        if target.is_file():
            continue
        subject = load_label_map(info, with_image=False)
        classes = class_lookup(subject.labels.array, info.convention)
        contrast = Volume(tissue_contrast_image(classes), subject.labels.affine)
        matrix = affine_register(template.t1, contrast, fixed_mask=template.brain_mask, settings=settings)
        labels = resample(subject.labels, grid, matrix, labels=True)[0, 0].numpy().astype(np.int32)
        with atomic_path(target) as tmp:
            np.savez_compressed(tmp, labels=labels, convention=info.convention, source=info.source, matrix=matrix)
        log(f"cached {info.name}")
    for ixi_subject in ixi_subjects("t1"):
        target = cache / f"{ixi_subject.subject_id}.npz"
        out.append(target)
        if target.is_file():
            continue
        t1 = read_image(ixi_subject.files["t1"])
        matrix = affine_register(template.t1, t1, fixed_mask=template.brain_mask, settings=settings)
        image = resample(t1, grid, matrix)[0, 0].numpy().astype(np.float32)
        with atomic_path(target) as tmp:
            np.savez_compressed(tmp, image=image, source="ixi", matrix=matrix)
        log(f"cached {ixi_subject.subject_id}")
    return out


def load_cached(paths) -> list[CachedSubject]:
    """Read cache files written by :func:`cache_subjects`."""
    subjects = []
    for path in paths:
        with np.load(path) as data:
            subjects.append(
                CachedSubject(
                    Path(path).stem.replace(".npz", ""),
                    str(data["source"]),
                    data["image"] if "image" in data else None,
                    data["labels"] if "labels" in data else None,
                    str(data["convention"]) if "convention" in data else None,
                )
            )
    return subjects


def random_velocity(grid: Grid, amplitude_mm: float, generator: torch.Generator, control_spacing: int = 8) -> torch.Tensor:
    """A smooth random velocity ``(1, ndim, *shape)`` on ``grid``: Gaussian values on a control grid, upsampled."""
    n = grid.spatial_dims
    control = tuple(max(2, s // control_spacing) for s in grid.shape)
    values = torch.randn((1, n, *control), generator=generator) * amplitude_mm
    mode = "bilinear" if n == 2 else "trilinear"
    return F.interpolate(values, size=grid.shape, mode=mode, align_corners=True)


def random_displacement(grid: Grid, amplitude_mm: float, generator: torch.Generator, downsample: int = 2) -> torch.Tensor:
    """A random diffeomorphic displacement on ``grid`` (velocity on a coarse grid, integrated, upsampled)."""
    field_grid = coarse_grid(grid, downsample)
    velocity = random_velocity(field_grid, amplitude_mm, generator)
    return upsample_field(integrate_velocity(velocity, field_grid), downsample)


def one_hot(classes: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """``(B, 1, *shape)`` integer classes to a float one-hot ``(B, n_classes, *shape)``."""
    moved = F.one_hot(classes[:, 0].long().clamp(0, n_classes - 1), n_classes)
    return moved.movedim(-1, 1).float()


@dataclass
class Pair:
    """One training pair on the working grid: raw moving/fixed intensities, fixed brain mask, optional one-hot labels."""

    moving: torch.Tensor
    fixed: torch.Tensor
    mask: torch.Tensor
    moving_onehot: torch.Tensor | None
    fixed_onehot: torch.Tensor | None


class TemplatePairSampler:
    """Draw 3D training pairs: a cached subject (synthesised or real) against the (sometimes deformed) template."""

    def __init__(self, subjects: list[CachedSubject], seed: int = 0, real_fraction: float = 0.3, moving_deform_mm: float = 3.0,
                 fixed_deform_fraction: float = 0.3, fixed_deform_mm: float = 2.0, template_fraction: float = 0.0) -> None:

        template = load_template("2mm")
        self.grid = template.grid
        self.template = torch.as_tensor(np.array(template.t1.array, np.float32))[None, None]
        self.template_labels = torch.as_tensor(np.array(template.labels.array, np.int64))[None, None]
        self.template_mask = torch.as_tensor(np.array(template.brain_mask.array, np.float32))[None, None]
        self.labelled = [s for s in subjects if s.labels is not None]
        self.real = [s for s in subjects if s.image is not None]
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.real_fraction = real_fraction if self.real else 0.0
        self._wanted_real_fraction = real_fraction
        self.moving_deform_mm = moving_deform_mm
        self.fixed_deform_fraction = fixed_deform_fraction
        self.fixed_deform_mm = fixed_deform_mm
        self.template_fraction = template_fraction
        self.cache_dir: Path | None = None
        self.draws = 0

    def watch(self, cache_dir: str | Path) -> None:
        """Pick up subjects added to ``cache_dir`` while training runs (checked every 100 draws)."""
        self.cache_dir = Path(cache_dir)

    def _rescan(self) -> None:
        assert self.cache_dir is not None  # called only once watch() has set it
        known = {s.name for s in self.labelled + self.real}
        new = [p for p in sorted(self.cache_dir.glob("*.npz")) if p.stem not in known and not p.name.startswith(".")]
        for subject in load_cached(new):
            (self.labelled if subject.labels is not None else self.real).append(subject)
        if self.real and self.real_fraction == 0.0:
            self.real_fraction = self._wanted_real_fraction

    def _fixed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fixed, labels, mask = self.template, self.template_labels, self.template_mask
        if self.rng.random() < self.fixed_deform_fraction:
            u = random_displacement(self.grid, self.rng.uniform(0.5, 1.0) * self.fixed_deform_mm, self.generator)
            fixed = warp_image(fixed, u, self.grid)
            labels = warp_labels(labels, u, self.grid)
            mask = (warp_labels(mask.long(), u, self.grid) > 0).float()
        return fixed, labels, mask

    def sample(self) -> Pair:
        """One pair (batch of 1)."""
        if self.cache_dir is not None and self.draws % 100 == 0:
            self._rescan()
        self.draws += 1

        fixed, fixed_labels, mask = self._fixed()
        if self.template_fraction > 0 and self.rng.random() < self.template_fraction:
            return self._template_pair(fixed, fixed_labels, mask)
        u = random_displacement(self.grid, self.rng.uniform(0.3, 1.0) * self.moving_deform_mm, self.generator)
        if self.rng.random() < self.real_fraction:
            subject = self.real[self.rng.integers(len(self.real))]
            image = torch.as_tensor(subject.image)[None, None]
            moving = warp_image(image, u, self.grid)
            gamma = float(np.exp(self.rng.normal(0.0, 0.2)))
            moving = moving.clamp_min(0) ** gamma
            return Pair(moving, fixed, mask, None, None)
        subject = self.labelled[self.rng.integers(len(self.labelled))]
        assert subject.labels is not None and subject.convention is not None  # labelled subjects carry both
        labels = warp_labels(torch.as_tensor(subject.labels.astype(np.int64))[None, None], u, self.grid)[0, 0].numpy()
        synth = synthesise_image(
            labels, subject.convention, seed=int(self.rng.integers(2**31)), blur_sigma_mm=float(self.rng.uniform(0.0, 1.0)),
            bias_strength=float(self.rng.uniform(0.0, 0.4)), noise_std=float(self.rng.uniform(0.0, 0.04)),
        )
        moving = torch.as_tensor(np.asarray(synth.image, np.float32))[None, None]
        classes = to_diffdef_labels(labels, subject.convention)
        fixed_classes = fixed_labels
        if not has_ventricles(subject.convention):
            fixed_classes = torch.as_tensor(merge_ventricles_into_csf(fixed_labels[0, 0].numpy()).astype(np.int64))[None, None]
        return Pair(moving, fixed, mask, one_hot(torch.as_tensor(classes.astype(np.int64))[None, None]), one_hot(fixed_classes))

    def _template_pair(self, fixed: torch.Tensor, fixed_labels: torch.Tensor, mask: torch.Tensor) -> Pair:
        """The template itself, deformed by anything from nothing to ``moving_deform_mm``, as the moving image; half of
        the time with a bright shell outside the brain (starting 1-3 voxels out, 2-4 voxels thick). Atlases are
        template-contrast images too, and without such pairs the network moved the template onto itself by 1.5 mm."""
        u = random_displacement(self.grid, self.rng.uniform(0.0, 1.0) * self.moving_deform_mm, self.generator)
        image = self.template
        if self.rng.random() < 0.5:  # a bright shell outside the brain, as a skull left by skull stripping would be
            inner = int(self.rng.integers(1, 4))
            shell = dilate(self.template_mask, inner + int(self.rng.integers(2, 5))) - dilate(self.template_mask, inner)
            image = torch.where(shell > 0, torch.full_like(image, float(self.rng.uniform(0.3, 1.2)) * float(image.max())), image)
        moving = warp_image(image, u, self.grid)
        labels = warp_labels(self.template_labels, u, self.grid)
        return Pair(moving, fixed, mask, one_hot(labels), one_hot(fixed_labels))


def oasis_template_2d(subject_ids: list[str]) -> Volume:
    """The 2D template: the mean of intensity-normalised OASIS axial slices (1 mm, 176 x 208)."""
    total = None
    affine = None
    for sid in subject_ids:
        volume = load_oasis_slice(sid, "axial")
        image = normalise_intensity(torch.as_tensor(volume.array)[None, None])[0, 0].numpy()
        total = image if total is None else total + image
        affine = volume.affine
    return Volume((cast(np.ndarray, total) / len(subject_ids)).astype(np.float32), cast(np.ndarray, affine))


class OasisPairSampler:
    """Draw 2D training pairs: an OASIS training slice (randomly deformed, gamma-augmented) against the 2D template."""

    def __init__(self, slices: list[np.ndarray], template: Volume, mask: np.ndarray, seed: int = 0, deform_mm: float = 3.0) -> None:
        self.slices = slices
        self.grid = template.grid
        self.template = torch.as_tensor(template.array)[None, None]
        self.mask = torch.as_tensor(mask.astype(np.float32))[None, None]
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.deform_mm = deform_mm

    def sample(self) -> Pair:
        """One pair (batch of 1)."""
        image = torch.as_tensor(self.slices[self.rng.integers(len(self.slices))])[None, None]
        u = random_displacement(self.grid, self.rng.uniform(0.3, 1.0) * self.deform_mm, self.generator)
        moving = warp_image(image, u, self.grid).clamp_min(0) ** float(np.exp(self.rng.normal(0.0, 0.15)))
        return Pair(moving, self.template, self.mask, None, None)
