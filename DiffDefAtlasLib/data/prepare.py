"""Batch preprocessing of a cohort onto the template's working grid, with a cache and a failure report.

``prepare_cohort(cohort.csv, OUT)`` writes, per subject that succeeds::

    OUT/<subject_id>/image.nii.gz       normalised scan on the 2 mm working grid
    OUT/<subject_id>/brain_mask.nii.gz  brain mask used (template mask after skull stripping, else the scan's own)
    OUT/<subject_id>/labels.nii.gz      labels converted to 0-4 classes (only when the row has labels)
    OUT/<subject_id>/prepare.json       cache key, settings, registration matrix, skull decision, volumes, timings

and ``OUT/cohort_prepared.csv`` (+ ``cohort_prepared_condition_stats.json``) listing the prepared subjects, and
``OUT/prepare_report.json`` (prepared / cached / failed subjects with the reason).

The cache key hashes the input file contents (image and labels), the settings, the template description and the
preprocessing version: a re-run skips subjects whose key is unchanged and whose outputs exist. A subject that fails
is reported and skipped; the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..atomic import write_text_atomic
from ..errors import DiffDefInputError
from ..imageio import read_image, write_image
from .cohort import Cohort, Subject, read_cohort, write_cohort
from ..conditions.columns import ColumnSpec, condition_spec
from .measure import VOLUME_KEYS, propagated_volumes, tissue_volumes
from .preprocess import PrepareSettings, PreparedSubject, preprocess_volume
from ..resources import resource_path
from ..template import load_template

PREPARED_CSV = "cohort_prepared.csv"
REPORT_JSON = "prepare_report.json"
SUBJECT_JSON = "prepare.json"


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_cohort`: subject ids ``prepared`` (computed now), ``cached`` (skipped) and
    ``failed`` (id -> one-line reason), ``seconds`` per computed subject, and the written ``csv_path``."""

    prepared: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    csv_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when no subject failed."""
        return not self.failed

    def summary(self) -> str:
        """One line per outcome, e.g. for the command line."""
        lines = [f"prepared {len(self.prepared)}, cached {len(self.cached)}, failed {len(self.failed)}"]
        if self.seconds:
            lines.append(f"median {float(np.median(list(self.seconds.values()))):.1f} s per computed subject")
        lines += [f"FAILED {sid}: {reason}" for sid, reason in self.failed.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "prepared": self.prepared,
            "cached": self.cached,
            "failed": self.failed,
            "seconds": self.seconds,
            "csv": str(self.csv_path) if self.csv_path else None,
        }


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (of every file, in name order, for a DICOM folder)."""
    digest = hashlib.sha256()
    paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in paths:
        with open(p, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_key(subject: Subject, settings: PrepareSettings, labels_convention: str) -> str:
    """The cache key of one subject: hash of input contents, settings, template description and version."""
    parts = {
        "image": file_digest(subject.image),
        "labels": file_digest(subject.labels) if subject.labels is not None else None,
        "labels_convention": labels_convention if subject.labels is not None else None,
        "settings": settings.as_dict(),
        "template": hashlib.sha256(resource_path("template", "template.json").read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _outputs(folder: Path, has_labels: bool) -> list[Path]:
    names = ["image.nii.gz", "brain_mask.nii.gz"] + (["labels.nii.gz"] if has_labels else [])
    return [folder / n for n in names]


def _cached_record(folder: Path, key: str, has_labels: bool) -> dict | None:
    record_path = folder / SUBJECT_JSON
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("key") != key or not all(p.is_file() for p in _outputs(folder, has_labels)):
        return None
    return record


def subject_volumes(prepared: PreparedSubject, labels_native=None, template=None) -> dict[str, float]:
    """Volumes (mL, fractions) of a prepared subject: from its native labels when given, else propagated template labels."""
    if labels_native is not None:
        return tissue_volumes(labels_native, prepared.label_convention or "diffdef")

    template = template or load_template("2mm")
    return propagated_volumes(template.labels, prepared.matrix)


def prepare_subject(
    subject: Subject, folder: Path, settings: PrepareSettings, *, labels_convention: str = "auto", template=None, key: str = ""
) -> dict:
    """Preprocess one subject into ``folder`` and return its record (also written as ``prepare.json``)."""
    image = read_image(subject.image)
    labels = read_image(subject.labels, dtype=None) if subject.labels is not None else None
    prepared = preprocess_volume(
        image, labels, template=template, settings=settings, labels_convention=labels_convention, name=str(subject.image)
    )
    if labels is not None:
        from ..imageio import Volume

        labels = Volume(np.rint(labels.array).astype(np.int32), labels.affine)
    volumes = subject_volumes(prepared, labels, template)
    write_image(prepared.image, folder / "image.nii.gz")
    write_image(prepared.brain_mask, folder / "brain_mask.nii.gz")
    if prepared.labels is not None:
        write_image(prepared.labels, folder / "labels.nii.gz")
    record = {
        "key": key,
        "subject_id": subject.subject_id,
        "source_image": str(subject.image),
        "source_labels": str(subject.labels) if subject.labels is not None else None,
        "labels_convention": prepared.label_convention,
        "settings": settings.as_dict(),
        "template_to_subject_ras": prepared.matrix.tolist(),
        "skull_stripped": prepared.skull_stripped,
        "outside_brain_fraction": prepared.outside_fraction,
        "volumes": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in volumes.items()},
        "volumes_from": "labels" if labels is not None else "template labels through the affine registration",
        "timings_s": prepared.timings,
    }
    write_text_atomic(folder / SUBJECT_JSON, json.dumps(record, indent=2) + "\n")
    return record


def prepare_cohort(
    cohort_csv: str | Path | Cohort,
    out_dir: str | Path,
    *,
    n4: bool = False,
    skull_strip: str = "auto",
    progress: bool = True,
    labels_convention: str = "auto",
    add_measured: Sequence[str] = (),
    extra_conditions: Mapping[str, ColumnSpec | str] | None = None,
    ignore_columns: Iterable[str] = (),
    settings: PrepareSettings | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> PrepareReport:
    """Preprocess every subject of a cohort onto the working grid (see the module docstring for the outputs).

    ``add_measured`` names volume conditions (e.g. ``"ventricle_volume_ml"``) to add to the prepared table from each
    subject's measurements, unless the input table already has that column. ``settings`` (a full
    :class:`PrepareSettings`) replaces ``n4`` and ``skull_strip``. ``on_progress(fraction, message)`` is called after
    each subject. A subject that fails is recorded in the report and left out of the prepared table. Scans must be 3D
    (the OASIS slices are atlas-registered already and need no preparation).

    Example:
        >>> report = prepare_cohort("cohort.csv", "cache", skull_strip="auto")  # doctest: +SKIP
        >>> report.ok, report.csv_path.name  # doctest: +SKIP
        (True, 'cohort_prepared.csv')
    """
    from tqdm import tqdm

    cohort = cohort_csv if isinstance(cohort_csv, Cohort) else read_cohort(
        cohort_csv, extra_conditions=extra_conditions, ignore_columns=ignore_columns
    )
    for name in add_measured:
        if name not in VOLUME_KEYS:
            raise DiffDefInputError(f"add_measured: {name!r} is not a measured volume; expected one of {', '.join(VOLUME_KEYS)}")
    settings = settings or PrepareSettings(n4=n4, skull_strip=skull_strip)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = PrepareReport()
    records: dict[str, dict] = {}
    template = None
    bar = tqdm(cohort.subjects, desc="prepare", unit="subject", disable=not progress)
    for index, subject in enumerate(bar):
        folder = out / subject.subject_id
        bar.set_postfix_str(subject.subject_id)
        try:
            key = cache_key(subject, settings, labels_convention)
            record = _cached_record(folder, key, subject.labels is not None)
            if record is not None:
                report.cached.append(subject.subject_id)
            else:
                if template is None:
                    from ..template import load_template

                    template = load_template(settings.resolution)
                start = time.perf_counter()
                record = prepare_subject(subject, folder, settings, labels_convention=labels_convention, template=template, key=key)
                report.seconds[subject.subject_id] = time.perf_counter() - start
                report.prepared.append(subject.subject_id)
            records[subject.subject_id] = record
        except Exception as error:  # one bad subject must not stop the batch
            report.failed[subject.subject_id] = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not isinstance(error, (DiffDefInputError, OSError)):
                report.failed[subject.subject_id] = f"{type(error).__name__}: {report.failed[subject.subject_id]}"
        if on_progress is not None:
            on_progress((index + 1) / len(cohort.subjects), subject.subject_id)
    bar.close()

    if records:
        report.csv_path = _write_prepared_table(cohort, records, out, add_measured)
    write_text_atomic(out / REPORT_JSON, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _write_prepared_table(cohort: Cohort, records: dict[str, dict], out: Path, add_measured: Sequence[str]) -> Path:
    names = list(cohort.condition_names)
    specs = dict(cohort.specs)
    for name in add_measured:
        if name not in names:
            names.append(name)
            specs[name] = condition_spec(name)
    subjects = []
    for subject in cohort.subjects:
        record = records.get(subject.subject_id)
        if record is None:
            continue
        folder = out / subject.subject_id
        conditions = dict(subject.conditions)
        for name in add_measured:
            if name not in cohort.condition_names:
                value = record["volumes"].get(name)
                conditions[name] = math.nan if value is None else float(value)
        labels = folder / "labels.nii.gz" if subject.labels is not None else None
        subjects.append(Subject(subject.subject_id, folder / "image.nii.gz", labels, conditions))
    prepared = Cohort(subjects, names, specs, out / PREPARED_CSV)
    return write_cohort(prepared, out / PREPARED_CSV)
