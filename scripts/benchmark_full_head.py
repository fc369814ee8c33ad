"""Full-head scans against their skull-stripped twins, timed as the user waits: ``diffdef-atlas register`` from start
to exit, median of ``--repeats`` runs, with the brain NCC the command reports.

Cases (built from ../shared/data, see Testing/heads.py): the real IXI259 T1 skull-stripped and with a head added
back from BrainWeb labels (deepbet brain extraction when installed, and the template-brain path), and a BrainWeb
head with a neck beside its stripped twin.

    python scripts/benchmark_full_head.py --fixed template1mm/t1.nii.gz --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))


def _run(moving: Path, fixed: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    command = [sys.executable, "-m", "DiffDefAtlasLib.cli.main", "register", "--moving", str(moving), "--fixed", str(fixed),
               "--out", str(out), "--device", "cpu", "--overwrite", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return seconds, {"exit": done.returncode, "error": done.stderr.strip().splitlines()[-1]}
    summary = json.loads((out / "summary.json").read_text())
    return seconds, {"exit": 0, "ncc_brain": summary["similarity"]["ncc_brain"], "method": summary["alignment"]["method"]}


def main() -> int:
    from DiffDefAtlasLib.imageio import read_image, write_image
    from DiffDefAtlasLib.imaging.head import deepbet_available
    from DiffDefAtlasLib.resources import shared_data_dir

    from heads import brainweb_head, ixi_with_head

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixed", type=Path, required=True, help="the atlas / template T1 to register to")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        print("../shared/data is absent; nothing to measure")
        return 1
    work = Path(tempfile.mkdtemp(prefix="full_head_"))
    ixi = read_image(data / "ixi_3d" / "t1" / "IXI259_t1.nii.gz")
    head, brain, _ = brainweb_head()
    inputs = {
        "IXI259 stripped": write_image(ixi, work / "ixi.nii.gz"),
        "IXI259 + head": write_image(ixi_with_head(ixi), work / "ixi_head.nii.gz"),
        "BrainWeb stripped": write_image(brain, work / "bw_brain.nii.gz"),
        "BrainWeb head + neck": write_image(head, work / "bw_head.nii.gz"),
    }
    cases = [(name, path, []) for name, path in inputs.items()]
    if deepbet_available():
        cases += [(f"{name} (template brain)", inputs[name], ["--brain-extraction", "template"]) for name in ("IXI259 + head", "BrainWeb head + neck")]
    print("| scan | exit | brain NCC | affine path | median s (of %d) |" % args.repeats)
    print("|---|---|---|---|---|")
    for name, path, extra in cases:
        times, figures = [], {}
        for _ in range(args.repeats):
            seconds, figures = _run(path, args.fixed, work / "out", extra)
            times.append(seconds)
        ncc = f"{figures['ncc_brain']:.3f}" if "ncc_brain" in figures else figures.get("error", "")
        print(f"| {name} | {figures['exit']} | {ncc} | {figures.get('method', '')} | {statistics.median(times):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
