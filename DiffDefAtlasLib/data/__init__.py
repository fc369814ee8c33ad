"""Cohorts, preprocessing, measurements and the real datasets.

Modules (import them directly; this package only re-exports the light, most used names):

- the cohort's condition columns (age, sex, volumes...) and :class:`ConditionStats` (normalisation, ranges) live in
  :mod:`DiffDefAtlasLib.conditions.columns`, re-exported here;
- :mod:`.cohort`: cohort CSV tables (:func:`read_cohort`, :func:`write_cohort`);
- :mod:`.preprocess`: one scan onto the working grid (reorient, N4, MI affine, skull stripping, normalisation);
- :mod:`.prepare`: a whole cohort with a cache and a failure report (:func:`~.prepare.prepare_cohort`);
  :mod:`.prepare_cli` is the ``diffdef-atlas prepare`` subcommand;
- :mod:`.measure`: tissue and ventricle volumes (mL);
- :mod:`.labelmaps`: label conventions (FAST, FreeSurfer aseg/SynthSeg, BrainWeb) to the library's 0-4 classes;
- :mod:`.synthesis`: SynthSeg-style T1-like images from label maps;
- :mod:`.oasis`, :mod:`.ixi`, :mod:`.label_datasets`: adapters for the shared data (``../shared/data``).
"""

from ..conditions.columns import KNOWN_CONDITIONS, ColumnSpec, ConditionStats
from .cohort import Cohort, Subject, read_cohort, stats_path_for, write_cohort
from .labelmaps import CONVENTIONS, has_ventricles, merge_ventricles_into_csf, to_diffdef_labels
from .measure import propagated_volumes, tissue_volumes
from .synthesis import synthesise_image

__all__ = [
    "CONVENTIONS",
    "Cohort",
    "ColumnSpec",
    "ConditionStats",
    "KNOWN_CONDITIONS",
    "Subject",
    "has_ventricles",
    "merge_ventricles_into_csf",
    "propagated_volumes",
    "read_cohort",
    "stats_path_for",
    "synthesise_image",
    "tissue_volumes",
    "to_diffdef_labels",
    "write_cohort",
]
