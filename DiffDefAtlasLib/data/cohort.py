"""Cohort tables: one CSV row per subject with an image path, optional labels and condition columns.

Format (UTF-8 CSV with a header row)::

    subject_id,image,labels,age,sex,ventricle_volume_ml
    sub-01,images/sub-01_T1w.nii.gz,,71.2,F,28.4

- ``subject_id`` (required, unique) and ``image`` (required) are reserved; ``labels`` is optional (a cell may be empty).
- Relative paths are relative to the CSV's folder.
- Every other column is a condition and must be known (:data:`~DiffDefAtlasLib.conditions.columns.KNOWN_CONDITIONS`),
  declared through ``extra_conditions``, or listed in ``ignore_columns``. An empty cell is a missing value.
- Normalisation statistics are written next to the table as ``<name>_condition_stats.json``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..atomic import write_text_atomic
from ..errors import DiffDefInputError
from ..conditions.columns import ColumnSpec, ConditionStats, condition_spec

RESERVED_COLUMNS = ("subject_id", "image", "labels")


@dataclass
class Subject:
    """One cohort row: absolute image path, optional label path and condition values (NaN = missing)."""

    subject_id: str
    image: Path
    labels: Path | None = None
    conditions: dict[str, float] = field(default_factory=dict)


@dataclass
class Cohort:
    """A validated cohort table.

    Example:
        >>> cohort = read_cohort("cohort.csv")  # doctest: +SKIP
        >>> cohort.condition_names, len(cohort)  # doctest: +SKIP
        (['age', 'sex'], 6)
    """

    subjects: list[Subject]
    condition_names: list[str]
    specs: dict[str, ColumnSpec] = field(default_factory=dict)
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self):
        return iter(self.subjects)

    def __getitem__(self, subject_id: str) -> Subject:
        for subject in self.subjects:
            if subject.subject_id == subject_id:
                return subject
        raise KeyError(subject_id)

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.subjects]

    def condition_matrix(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Conditions as a ``(n_subjects, n_conditions)`` float array (NaN = missing)."""
        names = list(names or self.condition_names)
        return np.array([[s.conditions.get(n, math.nan) for n in names] for s in self.subjects], dtype=np.float64).reshape(
            len(self.subjects), len(names)
        )

    def stats(self, method: str = "minmax") -> ConditionStats:
        """Normalisation statistics of the conditions over this cohort (columns without any value are left out)."""
        matrix = self.condition_matrix()
        columns = {n: matrix[:, i] for i, n in enumerate(self.condition_names) if np.isfinite(matrix[:, i]).any()}
        return ConditionStats.from_values(columns, method)

    def subset(self, subject_ids: Iterable[str]) -> "Cohort":
        """A cohort with only ``subject_ids`` (in this cohort's order)."""
        keep = set(subject_ids)
        return replace(self, subjects=[s for s in self.subjects if s.subject_id in keep])


def stats_path_for(csv_path: str | Path) -> Path:
    """Where the condition statistics of a cohort CSV live: ``<stem>_condition_stats.json`` beside it."""
    path = Path(csv_path)
    return path.with_name(f"{path.stem}_condition_stats.json")


def _printable(text: str) -> str:
    """``text`` as is, or with control characters escaped (a message must stay on one line)."""
    return text if text.isprintable() else repr(text)[1:-1]


def _resolve(cell: str, base: Path, *, what: str, where: str, check: bool) -> Path:
    path = Path(cell.strip()).expanduser()
    if not path.is_absolute():
        path = base / path
    if check and not path.is_file():
        raise DiffDefInputError(f"{where}: {what} file not found: {_printable(str(path))}")
    return path


def read_cohort(
    csv_path: str | Path,
    *,
    extra_conditions: Mapping[str, ColumnSpec | str] | None = None,
    ignore_columns: Iterable[str] = (),
    check_files: bool = True,
) -> Cohort:
    """Read and validate a cohort CSV; every problem raises :class:`DiffDefInputError` naming the file and row.

    ``extra_conditions`` declares columns beyond the known ones (a :class:`ColumnSpec`, or ``"numeric"``);
    ``ignore_columns`` lists columns to skip (e.g. ``site``).

    Example:
        >>> cohort = read_cohort("cohort.csv", ignore_columns=["site"])  # doctest: +SKIP
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DiffDefInputError(f"{csv_path}: cohort table not found")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DiffDefInputError(f"{csv_path}: expected a UTF-8 CSV text file, found binary data") from None
    return parse_cohort(
        text, base_dir=csv_path.parent, name=str(csv_path), extra_conditions=extra_conditions,
        ignore_columns=ignore_columns, check_files=check_files, source=csv_path,
    )


def parse_cohort(
    text: str,
    *,
    base_dir: str | Path = ".",
    name: str = "cohort",
    extra_conditions: Mapping[str, ColumnSpec | str] | None = None,
    ignore_columns: Iterable[str] = (),
    check_files: bool = True,
    source: Path | None = None,
) -> Cohort:
    """Parse cohort CSV ``text`` (see :func:`read_cohort`); relative paths resolve against ``base_dir``."""
    base = Path(base_dir)
    extra = {k: (v if isinstance(v, ColumnSpec) else ColumnSpec(k, str(v))) for k, v in (extra_conditions or {}).items()}
    for spec in extra.values():
        if spec.kind not in ("numeric", "categorical"):
            raise DiffDefInputError(f"declared condition '{spec.name}': kind must be 'numeric' or 'categorical', found {spec.kind!r}")
    ignored = set(ignore_columns)
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if any(cell.strip() for cell in row)]
    except csv.Error as error:  # e.g. a stray carriage return or a field beyond csv's size limit
        raise DiffDefInputError(f"{name}: not a valid CSV table ({error})") from None
    if not rows:
        raise DiffDefInputError(f"{name}: the table is empty; expected a header row with subject_id,image,...")
    header = [h.strip() for h in rows[0]]
    for required in ("subject_id", "image"):
        if required not in header:
            raise DiffDefInputError(f"{name}: missing required column '{required}'; found columns {', '.join(map(_printable, header))}")
    seen_cols = set()
    for col in header:
        if col in seen_cols:
            raise DiffDefInputError(f"{name}: column {col!r} appears twice in the header")
        seen_cols.add(col)
    condition_names = [h for h in header if h not in RESERVED_COLUMNS and h not in ignored]
    specs = {}
    for col in condition_names:
        try:
            specs[col] = condition_spec(col, extra)
        except DiffDefInputError as exc:
            raise DiffDefInputError(f"{name}: {exc}") from None
    if len(rows) == 1:
        raise DiffDefInputError(f"{name}: the table has a header but no subjects")

    subjects: list[Subject] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        where = f"{name} row {number}"
        if len(row) != len(header):
            raise DiffDefInputError(f"{where}: expected {len(header)} cells, found {len(row)}")
        cells = dict(zip(header, row))
        sid = cells["subject_id"].strip()
        if not sid:
            raise DiffDefInputError(f"{where}: empty subject_id")
        if any(ch in sid for ch in '/\\:*?"<>|') or sid in (".", "..") or not sid.isprintable():
            raise DiffDefInputError(f"{where}: subject_id {sid!r} must be usable as a folder name (no / \\ : * ? \" < > | or control characters)")
        if sid in seen:
            raise DiffDefInputError(f"{where}: duplicate subject_id {sid!r} (first in row {seen[sid]})")
        seen[sid] = number
        if not cells["image"].strip():
            raise DiffDefInputError(f"{where}: empty image path for subject {sid!r}")
        image = _resolve(cells["image"], base, what="image", where=where, check=check_files)
        labels = None
        if cells.get("labels", "").strip():
            labels = _resolve(cells["labels"], base, what="labels", where=where, check=check_files)
        conditions = {col: specs[col].parse(cells[col], where=where) for col in condition_names}
        subjects.append(Subject(sid, image, labels, conditions))
    return Cohort(subjects, condition_names, specs, source)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def write_cohort(cohort: Cohort, csv_path: str | Path, *, stats: ConditionStats | None = None) -> Path:
    """Write ``cohort`` as CSV (paths relative to its folder when inside it) plus its condition statistics JSON.

    Returns the CSV path. The statistics default to ``cohort.stats()`` when the cohort has conditions.

    Example:
        >>> write_cohort(cohort, "out/cohort.csv")  # doctest: +SKIP
    """
    csv_path = Path(csv_path)
    base = csv_path.parent
    has_labels = any(s.labels is not None for s in cohort.subjects)
    header = ["subject_id", "image"] + (["labels"] if has_labels else []) + list(cohort.condition_names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for s in cohort.subjects:
        row = [s.subject_id, _relative(s.image, base)]
        if has_labels:
            row.append(_relative(s.labels, base) if s.labels is not None else "")
        for col in cohort.condition_names:
            spec = cohort.specs.get(col) or condition_spec(col, cohort.specs)
            row.append(spec.format(s.conditions.get(col, math.nan)))
        writer.writerow(row)
    write_text_atomic(csv_path, buffer.getvalue())
    if cohort.condition_names:
        (stats or cohort.stats()).to_json(stats_path_for(csv_path))
    return csv_path
