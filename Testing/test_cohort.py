"""Cohort tables: validation errors, round trip, condition normalisation statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from DiffDefAtlasLib.data.cohort import Cohort, Subject, parse_cohort, read_cohort, stats_path_for, write_cohort
from DiffDefAtlasLib.conditions.columns import ColumnSpec, ConditionStats, KNOWN_CONDITIONS
from DiffDefAtlasLib.errors import DiffDefInputError


@pytest.fixture()
def folder(tmp_path):
    """A folder with three (dummy) image files and one label file; the cohort only checks that files exist."""
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "img" / f"{name}.nii.gz").write_bytes(b"x")
    (tmp_path / "img" / "a_seg.nii.gz").write_bytes(b"x")
    return tmp_path


def _write(folder, text):
    path = folder / "cohort.csv"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = (
    "subject_id,image,labels,age,sex,ventricle_volume_ml\n"
    "a,img/a.nii.gz,img/a_seg.nii.gz,71.5,F,20.0\n"
    "b,img/b.nii.gz,,60,M,\n"
    "c,img/c.nii.gz,,80,f,35.5\n"
)


def test_read_valid_cohort_resolves_paths_and_parses_conditions(folder):
    """Reference: the hand-written table above (paths relative to the CSV folder, F=0/M=1, empty cell = NaN)."""
    cohort = read_cohort(_write(folder, GOOD))
    assert cohort.subject_ids == ["a", "b", "c"]
    assert cohort.condition_names == ["age", "sex", "ventricle_volume_ml"]
    assert cohort["a"].image == folder / "img" / "a.nii.gz"
    assert cohort["a"].labels == folder / "img" / "a_seg.nii.gz"
    assert cohort["b"].labels is None
    matrix = cohort.condition_matrix()
    np.testing.assert_array_equal(matrix[:, 0], [71.5, 60.0, 80.0])
    np.testing.assert_array_equal(matrix[:, 1], [0.0, 1.0, 0.0])
    assert math.isnan(matrix[1, 2]) and matrix[2, 2] == 35.5


def test_round_trip_and_stats_file(folder, tmp_path):
    """Reference: the cohort read back after writing equals the original; the stats JSON equals numpy's statistics."""
    cohort = read_cohort(_write(folder, GOOD))
    out = write_cohort(cohort, folder / "copy" / "cohort_copy.csv")
    assert not (folder / "copy" / "img").exists()  # paths point back to the original files
    again = read_cohort(out)
    assert again.subject_ids == cohort.subject_ids
    assert [s.image for s in again] == [s.image for s in cohort]
    assert [s.labels for s in again] == [s.labels for s in cohort]
    np.testing.assert_array_equal(np.isnan(again.condition_matrix()), np.isnan(cohort.condition_matrix()))
    np.testing.assert_allclose(np.nan_to_num(again.condition_matrix()), np.nan_to_num(cohort.condition_matrix()))

    stats = ConditionStats.from_json(stats_path_for(out))
    ages = np.array([71.5, 60.0, 80.0])
    assert stats.ranges["age"].mean == pytest.approx(ages.mean())
    assert stats.ranges["age"].std == pytest.approx(ages.std())
    assert (stats.ranges["age"].min, stats.ranges["age"].max) == (60.0, 80.0)
    vent = np.array([20.0, 35.5])  # the missing value is ignored
    assert stats.ranges["ventricle_volume_ml"].count == 2
    assert stats.ranges["ventricle_volume_ml"].mean == pytest.approx(vent.mean())
    json.loads(stats_path_for(out).read_text())  # valid JSON


def test_relative_paths_are_written_relative_when_inside(folder):
    """Reference: the CSV text itself: files under the CSV's folder are written relative to it."""
    cohort = read_cohort(_write(folder, GOOD))
    out = write_cohort(cohort, folder / "same.csv")
    text = out.read_text()
    assert "img/a.nii.gz" in text and str(folder) not in text


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_normalise_denormalise(method):
    """Reference: the textbook formulas (x - min) / (max - min) and (x - mean) / std computed with numpy."""
    values = np.array([55.0, 60.0, 72.0, 90.0])
    stats = ConditionStats.from_values({"age": values}, method=method)
    normalised = stats.normalise({"age": values})["age"]
    expected = (values - values.min()) / np.ptp(values) if method == "minmax" else (values - values.mean()) / values.std()
    np.testing.assert_allclose(normalised, expected)
    np.testing.assert_allclose(stats.denormalise({"age": normalised})["age"], values)
    assert isinstance(stats.normalise({"age": 60.0})["age"], float)
    restored = ConditionStats.from_json(stats.to_json())
    assert restored.method == method and restored.ranges == stats.ranges


def test_check_in_range_and_unknown_condition():
    """Reference: the trained range [60, 80]."""
    stats = ConditionStats.from_values({"age": [60.0, 80.0]})
    stats.check_in_range({"age": 70.0})
    with pytest.raises(DiffDefInputError, match=r"outside the trained range \[60, 80\]"):
        stats.check_in_range({"age": 81.0})
    stats.check_in_range({"age": 81.0}, tolerance=0.1)
    with pytest.raises(DiffDefInputError, match="unknown condition 'mmse'"):
        stats.normalise({"mmse": 1.0})


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the table is empty"),
        ("subject_id,image,age\n", "header but no subjects"),
        ("subject_id,age\na,70\n", "missing required column 'image'"),
        ("image,age\nimg/a.nii.gz,70\n", "missing required column 'subject_id'"),
        ("subject_id,image,agee\na,img/a.nii.gz,70\n", "unknown condition column 'agee' \\(did you mean 'age'\\?\\)"),
        ("subject_id,image,site\na,img/a.nii.gz,Guys\n", "unknown condition column 'site'"),
        ("subject_id,image,age\na,img/a.nii.gz,seventy\n", "row 2: column 'age' expected a number \\(years\\), found 'seventy'"),
        ("subject_id,image,age\na,img/a.nii.gz,250\n", "column 'age' expected a value in \\[0, 120\\], found 250"),
        ("subject_id,image,sex\na,img/a.nii.gz,X\n", "column 'sex' expected one of F, M, female, male, found 'X'"),
        ("subject_id,image\na,img/a.nii.gz\na,img/b.nii.gz\n", "row 3: duplicate subject_id 'a' \\(first in row 2\\)"),
        ("subject_id,image\na,img/missing.nii.gz\n", "row 2: image file not found: .*missing.nii.gz"),
        ("subject_id,image,labels\na,img/a.nii.gz,img/nolabels.nii.gz\n", "row 2: labels file not found: .*nolabels.nii.gz"),
        ("subject_id,image\na,\n", "row 2: empty image path"),
        ("subject_id,image\n,img/a.nii.gz\n", "row 2: empty subject_id"),
        ("subject_id,image\na/b,img/a.nii.gz\n", "must be usable as a folder name"),
        ("subject_id,image,age\na,img/a.nii.gz\n", "row 2: expected 3 cells, found 2"),
        ("subject_id,image,age,age\na,img/a.nii.gz,1,2\n", "column 'age' appears twice"),
    ],
)
def test_validation_errors(folder, text, message):
    """Reference: each message names the file/row and what was expected versus found."""
    with pytest.raises(DiffDefInputError, match=message) as info:
        read_cohort(_write(folder, text))
    assert "cohort.csv" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_table_and_binary_file(tmp_path):
    """Reference: the file system (absent file) and a non-UTF-8 byte string."""
    with pytest.raises(DiffDefInputError, match="cohort table not found"):
        read_cohort(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DiffDefInputError, match="expected a UTF-8 CSV"):
        read_cohort(tmp_path / "bin.csv")


def test_declared_and_ignored_columns(folder):
    """Reference: the table's own values: a declared column is parsed as numeric, an ignored one is dropped."""
    text = "subject_id,image,site,score\na,img/a.nii.gz,Guys,3.5\nb,img/b.nii.gz,HH,4\n"
    cohort = read_cohort(_write(folder, text), extra_conditions={"score": "numeric"}, ignore_columns=["site"])
    assert cohort.condition_names == ["score"]
    np.testing.assert_array_equal(cohort.condition_matrix()[:, 0], [3.5, 4.0])
    with pytest.raises(DiffDefInputError, match="kind must be"):
        read_cohort(_write(folder, text), extra_conditions={"score": "text"}, ignore_columns=["site"])
    spec = ColumnSpec("scanner", "categorical", categories={"1.5T": 0.0, "3T": 1.0})
    text = "subject_id,image,scanner\na,img/a.nii.gz,3T\n"
    assert read_cohort(_write(folder, text), extra_conditions={"scanner": spec})["a"].conditions["scanner"] == 1.0


def test_parse_without_file_checks_and_subset():
    """Reference: the text itself; ``check_files=False`` accepts paths that do not exist."""
    cohort = parse_cohort("subject_id,image,age\nx,nowhere.nii.gz,50\ny,b.nii.gz,60\n", check_files=False)
    assert cohort.subset(["y"]).subject_ids == ["y"]
    assert isinstance(cohort, Cohort) and isinstance(cohort.subjects[0], Subject)


def test_known_conditions_cover_the_brief():
    """Reference: the issue's list of conditions (age, sex, CDR, MMSE, eTIV, nWBV, ventricular volume)."""
    for name in ("age", "sex", "cdr", "mmse", "etiv", "nwbv", "ventricle_volume_ml"):
        assert name in KNOWN_CONDITIONS
    with pytest.raises(DiffDefInputError, match="no values"):
        ConditionStats.from_values({"age": [math.nan]})
    with pytest.raises(DiffDefInputError, match="expected"):
        ConditionStats.from_json('{"wrong": 1}')
