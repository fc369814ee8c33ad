"""Soak test (issue 8, item 7; slow target: ``python -m pytest -m slow Testing/test_soak.py``).

200 atlases with random conditions, seeds and temperatures in one process, through ``scripts/soak_generate.py``
(each atlas and its labels written to disk). Every atlas must be valid (finite atlas, displacement and Jacobian;
labels among the template's; folding ratio at most 1e-3) and the resident memory must not grow after 20 warm-up
iterations: the lowest RSS of the last 20 iterations may exceed the lowest RSS of the 20 after warm-up by at most
64 MiB (a leak raises that floor; one leaked 1 mm displacement field is 55 MiB). The reference for memory is the
kernel's own count (``/proc/self/statm``). Takes about 200 x the time of one atlas (minutes on 2 cores). Uses the bundled ``brain3d`` model when it is there, else an untrained generator on the same grids (4 mm velocities,
2 mm working grid, 1 mm MNI template): the same code path and the same work per atlas.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak_generate.py"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read the resident memory")
def test_two_hundred_atlases_in_one_process(tmp_path):
    from DiffDefAtlasLib.generate import list_models

    model = ["--model", "brain3d"] if "brain3d" in [card.name for card in list_models()] else ["--synthetic", "brain3d"]
    report_path = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *model, "--iterations", "200", "--warmup", "20", "--device", "cpu", "--threads", "2",
         "--max-growth-mb", "64", "--max-folding", "1e-3", "--every", "50", "--files", "minimal", "--report", str(report_path)],
        capture_output=True, text=True, timeout=3600,
    )
    assert report_path.is_file(), result.stderr
    report = json.loads(report_path.read_text())
    assert report["iterations"] == 200 and len(report["rss_trace_mb"]) == 200
    assert report["invalid"] == []
    assert report["rss_growth_mb"] <= 64
    assert result.returncode == 0, result.stdout + result.stderr
