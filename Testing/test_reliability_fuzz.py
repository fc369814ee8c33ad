"""Fuzzing the cohort table loader (issue 8, item 6) with hypothesis.

Properties: any bytes or text either load as a cohort or raise :class:`DiffDefInputError` with a one-line message
(never another exception); a table that loads survives a write/read round trip unchanged. The references are
Python's ``csv`` module (to build tables) and the loader itself re-reading what was written. The spatial core and the
image/field loaders are fuzzed in ``test_fuzz_spatial.py``.
"""

from __future__ import annotations

import csv
import io
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from DiffDefAtlasLib.data.cohort import parse_cohort, read_cohort, write_cohort
from DiffDefAtlasLib.errors import DiffDefInputError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

COLUMNS = ["subject_id", "image", "labels", "age", "sex", "cdr", "mmse", "ventricle_volume_ml", "site", "agee", "", " age "]
CELLS = st.one_of(
    st.sampled_from(["", "70", "-1", "1e3", "nan", "inf", "F", "m", "female", "x", "s1", "s2", "a/b", "..", "NA", "3.5", " 12 "]),
    st.text(max_size=8),
)


def _check_error(error: DiffDefInputError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)


@FUZZ
@given(payload=st.binary(max_size=600))
def test_random_bytes_load_or_fail_cleanly(tmp_path_factory, payload):
    """Reference: arbitrary bytes on disk; only a Cohort or a one-line DiffDefInputError may come out."""
    path = tmp_path_factory.mktemp("fuzz") / "cohort.csv"
    path.write_bytes(payload)
    try:
        read_cohort(path, check_files=False)
    except DiffDefInputError as error:
        _check_error(error)


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text_loads_or_fails_cleanly(text):
    """Reference: arbitrary unicode text (including NUL, quotes and line breaks inside cells)."""
    try:
        parse_cohort(text, check_files=False)
    except DiffDefInputError as error:
        _check_error(error)


@st.composite
def tables(draw):
    """CSV text built with the csv module: a header from plausible (and wrong) column names, rows of mixed cells."""
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELLS, min_size=len(header), max_size=len(header)), max_size=5))
    if draw(st.booleans()) and rows:  # sometimes a ragged row
        rows[-1] = rows[-1][:-1] or ["x", "y"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@FUZZ
@given(text=tables())
def test_structured_tables_round_trip_or_fail_cleanly(tmp_path_factory, text):
    """Reference: a table that loads, written back by write_cohort and read again, has the same subjects, image
    paths and condition values (NaN where missing); one that does not load gives a one-line DiffDefInputError."""
    try:
        cohort = parse_cohort(text, check_files=False, ignore_columns=["site"])
    except DiffDefInputError as error:
        _check_error(error)
        return
    folder = tmp_path_factory.mktemp("roundtrip")
    try:
        write_cohort(cohort, folder / "cohort.csv")
    except DiffDefInputError as error:  # e.g. statistics of a column without any value
        _check_error(error)
        return
    again = read_cohort(folder / "cohort.csv", check_files=False)
    assert again.subject_ids == cohort.subject_ids
    assert [s.image.name for s in again] == [s.image.name for s in cohort]
    assert again.condition_names == cohort.condition_names
    for a, b in zip(cohort, again):
        for name in cohort.condition_names:
            x, y = a.conditions[name], b.conditions[name]
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-5), (name, x, y)
