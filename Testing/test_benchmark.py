"""``diffdef-atlas benchmark`` with tiny settings: the printed report and the JSON structure (not the timings)."""

from __future__ import annotations

import json

import pytest
import torch

from DiffDefAtlasLib.benchmark.timing import measure, summarise
from DiffDefAtlasLib.cli.main import main


def test_summarise_statistics():
    """Reference: hand-computed median and quartiles."""
    t = summarise([4.0, 1.0, 3.0, 2.0, 5.0], first=9.0)
    assert (t.median, t.q1, t.q3, t.minimum, t.maximum, t.runs, t.first) == (3.0, 2.0, 4.0, 1.0, 5.0, 5, 9.0)
    calls = []
    assert measure(lambda: calls.append(1), repeats=3, warmup=2).runs == 3 and len(calls) == 5


def test_benchmark_command_tiny_model(tmp_path, capsys):
    """Generation, training and grid suites on the tiny 2D model, one timed run each: structure of the JSON."""
    from modelfactory import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        code = main(["benchmark", "--model", str(folder), "--suites", "generation,training,grid", "--repeats", "1", "--threads", "1", "--train-steps", "1",
                     "--train-stages", "autoencoder,diffusion", "--spacings", "4,2", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)  # --threads sets the process-wide value
    assert code == 0
    printed = capsys.readouterr().out
    assert "generation (cpu" in printed and "training throughput" in printed and "median" in printed
    report = json.loads(out.read_text())
    gen = report["generation"]["cpu"]
    assert set(gen["timing"]) >= {"median", "q1", "q3", "minimum", "maximum", "runs", "first"} and gen["timing"]["runs"] == 1
    assert gen["peak_rss_mb"] > 0
    assert set(report["training"]) >= {"autoencoder", "diffusion"} and report["training"]["diffusion"]["samples_per_s"] > 0
    rows = report["grid"]["cpu"]["rows"]
    assert [r["spacing_mm"] for r in rows] == [4.0, 2.0]
    assert rows[0]["voxels"] < rows[1]["voxels"]
    ratio_key = next(k for k in rows[1] if k.startswith("ratio_to_"))
    assert rows[1][ratio_key] == pytest.approx(1.0)  # the model's own 2 mm working spacing is the reference


def test_benchmark_and_evaluate_reject_bad_arguments(tmp_path, capsys):
    """One-line errors (exit status 2) for an unknown suite and an unknown cohort."""
    assert main(["benchmark", "--model", "brain3d", "--suites", "nonsense"]) == 2
    assert "unknown nonsense" in capsys.readouterr().err
    assert main(["evaluate", "--model", "brain3d", "--cohort", "nonsense", "--out", str(tmp_path / "o")]) == 2
    assert "--cohort" in capsys.readouterr().err
