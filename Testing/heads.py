"""Full-head T1-like scans made from the shared data, for the registration tests.

- :func:`brainweb_head`: a BrainWeb subject's 12 crisp labels (skull, scalp, fat, muscle, dura...) synthesised into a
  T1-like head with a noisy (Rician) background, a neck added below the field of view (the labels of its lowest
  slice carried down 90 mm, brain tissue there made muscle), then moved by a known rotation and shift. Its
  skull-stripped twin keeps only CSF, GM, WM and vessels on the same grid. A real head scan reaches the shoulders:
  the neck is what puts the head's centre of mass far below the brain's, which is what broke the moments affine.
- :func:`ixi_with_head`: a skull-stripped IXI T1 with a head added back from a BrainWeb subject's labels, placed by
  an affine registration of that subject's brain to the IXI brain.
"""

from __future__ import annotations

import numpy as np

from DiffDefAtlasLib.imageio import Volume

BRAIN_LABELS = (1, 2, 3, 8)  # BrainWeb CSF, GM, WM, vessels


def _motion(degrees: float, shift_mm) -> np.ndarray:
    angle = np.deg2rad(degrees)
    motion = np.eye(4)
    motion[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    motion[:3, 3] = shift_mm
    return motion


def _head_labels(index: int, neck_mm: int) -> Volume:
    from DiffDefAtlasLib.data.label_datasets import list_label_maps, load_label_map

    subject = load_label_map(list_label_maps("brainweb")[index], with_image=False)
    labels = np.asarray(subject.labels.array)
    bottom = labels[:, :, :1].copy()
    bottom[np.isin(bottom, BRAIN_LABELS + (10,))] = 5  # no brain or dura in the neck: muscle
    with_neck = np.concatenate([np.repeat(bottom, neck_mm, axis=2), labels], axis=2)
    affine = subject.labels.affine.copy()
    affine[:3, 3] -= affine[:3, 2] * neck_mm
    return Volume(with_neck, affine)


def brainweb_head(index: int = 3, seed: int = 1, neck_mm: int = 90, degrees: float = 15.0, shift_mm=(-8.0, 15.0, 45.0)):
    """(head, skull-stripped brain, labels) of BrainWeb subject ``index`` as described in the module docstring."""
    from DiffDefAtlasLib.data.synthesis import synthesise_image

    labels = _head_labels(index, neck_mm)
    array = np.asarray(labels.array)
    rng = np.random.default_rng(seed)
    image = np.asarray(synthesise_image(labels, "brainweb", seed=seed).image.array, np.float32)
    noise = np.abs(rng.normal(0, 0.03, array.shape) + 1j * rng.normal(0, 0.03, array.shape)).astype(np.float32)
    head = np.where(array == 0, noise, image) * 800.0
    affine = _motion(degrees, shift_mm) @ labels.affine
    brain = head * np.isin(array, BRAIN_LABELS)
    return Volume(head, affine), Volume(brain.astype(np.float32), affine), Volume(array.astype(np.int16), affine)


def ixi_with_head(ixi: Volume, index: int = 3, seed: int = 1) -> Volume:
    """``ixi`` (skull-stripped) with the non-brain tissue of BrainWeb subject ``index`` around it (noisy background)."""
    from scipy.ndimage import binary_dilation

    from DiffDefAtlasLib.imaging.affine import affine_register
    from DiffDefAtlasLib.imaging.resampling import resample

    head, brain, labels = brainweb_head(index, seed, neck_mm=60, degrees=0.0, shift_mm=(0.0, 0.0, 0.0))
    matrix = affine_register(ixi, brain)  # IXI points -> BrainWeb points
    outside = Volume(np.where(np.asarray(labels.array) == 0, 0.0, np.asarray(head.array)).astype(np.float32), head.affine)
    on_ixi = resample(outside, ixi.grid, matrix)[0, 0].numpy()
    array = np.asarray(ixi.array, np.float32)
    top = np.percentile(array[array > 0], 99)
    scale = top / np.percentile(np.asarray(head.array)[np.asarray(labels.array) == 3], 50)
    inside = binary_dilation(array > 0, iterations=1)
    combined = np.where(inside, array, on_ixi * scale * 0.9)
    rng = np.random.default_rng(seed)
    combined = combined + np.abs(rng.normal(0, 0.02 * top, combined.shape)) * (combined == 0)
    return Volume(combined.astype(np.float32), ixi.affine)


def smooth_blob(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth positive blob (a skull-stripped "brain", 0-100) filling about 70 % of a grid of ``shape``."""
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    radius = np.sqrt((((index - (np.asarray(shape) - 1) / 2.0) / (0.35 * np.asarray(shape))) ** 2).sum(-1))
    return np.clip(1.2 - radius, 0, 1).astype(np.float32) * 100
