"""IXI tissue maps on the working grid and their quality check (needs ../shared/data)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from DiffDefAtlasLib.population.ixi_fields import QC_MIN_CORRELATION
from DiffDefAtlasLib.population.ixi_maps import load_subject_maps, template_correlation

pytestmark = pytest.mark.data


def _subject(shared_data, subject_id):
    from DiffDefAtlasLib.data.ixi import ixi_subjects

    return next(s for s in ixi_subjects(data_dir=shared_data) if s.subject_id == subject_id)


def test_working_grid_maps_keep_tissue_volumes(shared_data):
    """Reference: voxel counts of the FAST segmentation read with nibabel. Averaging onto the 2 mm grid must keep each
    class's volume (the brain lies inside the working grid's field of view)."""
    subject = _subject(shared_data, "IXI089")
    maps = load_subject_maps(subject)
    assert maps.kind == "seg" and maps.channels == ("csf", "gm", "wm")
    seg = np.asarray(nib.load(subject.files["seg"]).dataobj)
    for channel, label in enumerate((1, 2, 3)):
        expected = float((seg == label).sum()) / 1000.0  # 1 mm voxels, mL
        found = float(maps.maps[0, channel].sum()) * 8.0 / 1000.0
        assert found == pytest.approx(expected, rel=0.01), (label, found, expected)
    assert float(maps.maps.max()) <= 1.0 + 1e-6


def test_quality_check_flags_a_map_stored_upside_down(shared_data):
    """Reference: visual inspection (docs/population_model.md): IXI611's segmentation is stored upside down and cut off,
    IXI089's is a normal MNI-space map."""
    assert template_correlation(load_subject_maps(_subject(shared_data, "IXI089"))) >= QC_MIN_CORRELATION
    assert template_correlation(load_subject_maps(_subject(shared_data, "IXI611"))) < QC_MIN_CORRELATION
