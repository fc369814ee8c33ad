"""Labelled subjects from the shared data: SynthSeg and BrainWeb label maps, the VoxelMorph test subject and ``bert``.

Each is a :class:`LabelledSubject`: an integer label :class:`~DiffDefAtlasLib.imageio.Volume` in its own convention
(see :mod:`~DiffDefAtlasLib.data.labelmaps`), with the T1 image when the source has one. Feed the labels to
:func:`~DiffDefAtlasLib.data.synthesis.synthesise_image` to get labelled T1-like images, and convert them with
:func:`~DiffDefAtlasLib.data.labelmaps.to_diffdef_labels` for Dice.

Geometry notes:

- The VoxelMorph test volume stores an identity affine, but its axes are i -> Left, j -> Inferior, k -> Anterior
  (LIA, a crop of FreeSurfer's conformed space). :func:`voxelmorph_affine` gives the corrected 1 mm LIA affine,
  centred on the volume (the crop offset is unknown).
- ``bert`` is FreeSurfer MGH (``.mgz``), read with nibabel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import DiffDefInputError
from ..imageio import Volume, read_image
from ..resources import missing_data_message, shared_data_dir
from .labelmaps import as_label_array

SOURCES = ("synthseg", "brainweb", "voxelmorph", "bert")


@dataclass(frozen=True)
class LabelMapInfo:
    """Where a labelled subject lives: ``name``, ``source``, label file, label ``convention``, optional image file."""

    name: str
    source: str
    labels_path: Path
    convention: str
    image_path: Path | None = None


@dataclass
class LabelledSubject:
    """A label map (int32 :class:`Volume`, ``convention`` ids) and, when available, its T1 image."""

    name: str
    labels: Volume
    convention: str
    image: Volume | None = None


def _data_dir(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir is not None else shared_data_dir()
    if path is None or not Path(path).is_dir():
        raise DiffDefInputError(missing_data_message("shared data folder", "README.md", data_dir))
    return Path(path)


def list_label_maps(source: str | None = None, data_dir: str | Path | None = None) -> list[LabelMapInfo]:
    """Labelled subjects available in the shared data, optionally of one ``source`` (see :data:`SOURCES`).

    Example:
        >>> [m.name for m in list_label_maps("voxelmorph")]  # doctest: +SKIP
        ['voxelmorph_test']
    """
    if source is not None and source not in SOURCES:
        raise DiffDefInputError(f"unknown label-map source {source!r}; expected one of {', '.join(SOURCES)}")
    root = _data_dir(data_dir)
    found: list[LabelMapInfo] = []
    if source in (None, "synthseg"):
        for path in sorted((root / "synthseg_labels").glob("training_seg_*.nii.gz")):
            found.append(LabelMapInfo(f"synthseg_{path.name[len('training_seg_'):-7]}", "synthseg", path, "aseg"))
    if source in (None, "brainweb"):
        for path in sorted((root / "brainweb").glob("subject*_crisp_1mm.nii.gz")):
            found.append(LabelMapInfo(f"brainweb_{path.name[7:9]}", "brainweb", path, "brainweb"))
    if source in (None, "voxelmorph"):
        seg = root / "voxelmorph_test" / "test_seg.nii.gz"
        if seg.is_file():
            found.append(LabelMapInfo("voxelmorph_test", "voxelmorph", seg, "aseg", root / "voxelmorph_test" / "test_vol.nii.gz"))
    if source in (None, "bert"):
        aseg = root / "freesurfer_bert" / "aseg.mgz"
        if aseg.is_file():
            found.append(LabelMapInfo("bert", "bert", aseg, "aseg", root / "freesurfer_bert" / "norm.mgz"))
    return found


def voxelmorph_affine(shape: tuple[int, int, int] = (160, 192, 224)) -> np.ndarray:
    """Corrected voxel-to-RAS affine of the VoxelMorph test volume: 1 mm, LIA, centred on the volume.

    Example:
        >>> import nibabel as nib
        >>> nib.aff2axcodes(voxelmorph_affine())
        ('L', 'I', 'A')
    """
    affine = np.zeros((4, 4))
    affine[0, 0] = -1.0  # i -> Left
    affine[2, 1] = -1.0  # j -> Inferior
    affine[1, 2] = 1.0  # k -> Anterior
    affine[3, 3] = 1.0
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _read_mgz(path: Path, dtype) -> Volume:
    import nibabel as nib

    try:
        image = cast("nib.MGHImage", nib.load(str(path)))
        return Volume(np.asarray(image.dataobj).astype(dtype), image.affine)
    except Exception as error:  # nibabel raises many types for corrupt files
        raise DiffDefInputError(f"{path}: cannot read MGH image ({error})") from error


def _read(path: Path, *, labels: bool) -> Volume:
    if path.suffix == ".mgz":
        volume = _read_mgz(path, np.int32 if labels else np.float32)
    else:
        volume = read_image(path, dtype=None if labels else np.float32)
    if labels:
        volume = Volume(as_label_array(volume.array, str(path)), volume.affine)
    return volume


def load_label_map(info: LabelMapInfo, *, with_image: bool = True) -> LabelledSubject:
    """Load one labelled subject (labels as int32; the image as float32 when it exists and ``with_image``).

    Example:
        >>> subject = load_label_map(list_label_maps("bert")[0])  # doctest: +SKIP
        >>> subject.labels.array.shape  # doctest: +SKIP
        (256, 256, 256)
    """
    labels = _read(info.labels_path, labels=True)
    image = _read(info.image_path, labels=False) if with_image and info.image_path is not None else None
    if info.source == "voxelmorph":
        affine = voxelmorph_affine(labels.array.shape)
        labels = Volume(labels.array, affine)
        if image is not None:
            image = Volume(image.array, affine)
    return LabelledSubject(info.name, labels, info.convention, image)
