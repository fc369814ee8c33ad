"""The two reference evaluations on a single condition (slow): the 3D population model's truth scores perfectly
against itself, and the OASIS held-out path runs on the real validation slices."""

from __future__ import annotations

import numpy as np
import pytest

from DiffDefAtlasLib.evaluate.kernel_regression import KernelRegressionTemplate
from DiffDefAtlasLib.evaluate.methods import PopulationTruth, TemplateBaseline


@pytest.mark.slow
def test_population3d_truth_is_perfect_and_kernel_regression_beats_template():
    """Reference: the population model's exact conditional mean (EPE 0, Dice 1, volume error 0 against itself)."""
    from DiffDefAtlasLib.evaluate.population3d import evaluate_population3d, population_training_fields
    from DiffDefAtlasLib.population import load_population_model

    fields = population_training_fields(60)
    methods = [TemplateBaseline(), KernelRegressionTemplate.from_fields(fields, sigma=0.15), PopulationTruth(load_population_model())]
    result = evaluate_population3d(methods, ages=[60], sexes=["M"], neighbours=2, data_subjects=3)
    rows = {r["method"]: r for r in result.rows}
    truth = rows["truth"]
    assert truth["epe_mean_mm"] == 0.0 and truth["dice_mean"] == 1.0 and truth["ventricle_volume_error"] == 0.0
    assert truth["folding_nonpositive_pct"] == 0.0
    assert rows["kernel-regression"]["epe_mean_mm"] < 0.5 * rows["template"]["epe_mean_mm"]
    assert rows["kernel-regression"]["centrality_mm"] < rows["template"]["centrality_mm"]
    assert len(result.data_points["ventricle"]) == 3 and np.all(np.isfinite(result.data_points["ventricle"]))


@pytest.mark.slow
@pytest.mark.data
def test_oasis_validation_runs_on_real_slices(shared_data):
    """The held-out OASIS path: 30 validation slices, the template row has no folding and a finite centrality."""
    from DiffDefAtlasLib.evaluate.heldout import evaluate_oasis_validation

    result = evaluate_oasis_validation([TemplateBaseline()], ages=[75], sexes=["F"])
    (row,) = result.rows
    assert row["folding_nonpositive_pct"] == 0.0 and 0.0 < row["centrality_mm"] < 5.0
    assert 0.0 <= row["ventricle_trend_error"] < 1.0 and len(result.data_points["age"]) == 120
