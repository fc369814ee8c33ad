#!/usr/bin/env python
"""Soak test of the generator: many atlases with random conditions in one process, resident memory over iterations.

Usage:
    python scripts/soak_generate.py --model brain3d --iterations 200 [--device cpu|cuda] [--report soak.json]
    python scripts/soak_generate.py --synthetic brain3d --iterations 200   # untrained, on the brain3d grids
    python scripts/soak_generate.py --synthetic 3d --iterations 200        # untrained, small synthetic 3D model

Each iteration draws random conditions from the model card (each condition unset with probability 0.2, continuous
ones uniform over the trained range, categorical ones uniformly), a random seed and a random temperature in [0, 1],
generates the atlas through :func:`DiffDefAtlasLib.generate.generate_atlas` and writes its files into one scratch
folder (``--files all``: those of ``generate`` but the preview; ``minimal``: atlas and labels). It checks every
result: atlas, displacement and Jacobian finite, labels among the template's, folding ratio (det J <= 0 on the working
grid) at most ``--max-folding``.

Memory: the resident set size (RSS) is read after every iteration (after ``malloc_trim`` where glibc has it). Single
readings jump by tens of MiB with the 1 mm volumes that happen to be held by the allocator, but live memory sets a
floor that a leak raises. Growth is the lowest RSS of the last 20 iterations minus the lowest RSS of the 20 iterations
after ``--warmup`` (model loading, template caching and the allocators' pools come first); it must stay below
``--max-growth-mb``. The least-squares trend and the medians are reported as well.

Exit status 0 when every atlas is valid and memory does not grow, else 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_synthetic_model(folder: Path, kind: str) -> Path:
    """An untrained generator saved like a bundled one (conditions age 40-80 and sex F/M).

    ``kind``: ``"2d"`` or ``"3d"`` (the small synthetic recipes) or ``"brain3d"`` (the grids of the bundled 3D model:
    4 mm velocities, the 2 mm working grid, the 1 mm MNI template; the same work per atlas as the real model).
    """
    import torch

    from DiffDefAtlasLib.generate import save_model
    from DiffDefAtlasLib.generate.networks import build_generator_network
    from DiffDefAtlasLib.imageio import write_image
    from DiffDefAtlasLib.train.data import synthetic_fields
    from DiffDefAtlasLib.train.recipes import draft_card

    if kind == "brain3d":
        from DiffDefAtlasLib.template import template_grid, working_grid
        from DiffDefAtlasLib.train.stages import new_draft

        fields = synthetic_fields(16, 3, grid=working_grid().zoomed(2.0), seed=0)
        card = new_draft("soak_brain3d", fields, working_grid(), template_grid("1mm"), {"kind": "mni152"}, "untrained (soak test)")
        files = {}
    else:
        spatial_dims = int(kind[0])
        fields = synthetic_fields(16, spatial_dims, shape=(16, 16, 16) if spatial_dims == 3 else (24, 32), seed=0)
        card, files = draft_card(f"synthetic{spatial_dims}d", fields)
        card.name = f"soak{kind}"
    torch.manual_seed(0)
    network = build_generator_network(card)
    folder.mkdir(parents=True, exist_ok=True)
    for filename, volume in files.items():
        write_image(volume, folder / filename)
    save_model(card, network, folder)
    return folder


def random_conditions(card, rng) -> dict:
    """Random conditions of ``card``: each unset with probability 0.2, else uniform over its trained range/choices."""
    conditions = {}
    for spec in card.conditions:
        if rng.random() < 0.2:
            continue
        if spec.kind == "categorical":
            conditions[spec.name] = spec.choices[int(rng.integers(len(spec.choices)))]
        else:
            conditions[spec.name] = round(float(rng.uniform(spec.minimum, spec.maximum)), 3)
    return conditions


def check_result(result, label_values: set[int], max_folding: float) -> list[str]:
    """Problems of one generated atlas (empty when it is valid)."""
    import numpy as np

    problems = []
    for name, array in (("atlas", result.atlas.array), ("displacement", result.displacement), ("jacobian", result.jacobian.array)):
        if not np.isfinite(array).all():
            problems.append(f"{name} has non-finite values")
    extra = set(np.unique(result.labels.array).tolist()) - label_values
    if extra:
        problems.append(f"labels {sorted(extra)} not in the template")
    folding = result.summary["folding_ratio_nonpositive"]
    if not folding <= max_folding:
        problems.append(f"folding ratio {folding:.2e} > {max_folding:.0e}")
    return problems


def trim_heap() -> bool:
    """Give freed heap memory back to the system (glibc ``malloc_trim``) so the RSS reflects live memory; False where
    unavailable."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def slope_times_count(values: list[float]) -> float:
    """Least-squares slope of ``values`` over their index, times their number: the trend's total rise."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2.0, statistics.fmean(values)
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    sxy = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return sxy / sxx * n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brain3d", help="bundled model name or model folder (default brain3d)")
    parser.add_argument("--synthetic", choices=("2d", "3d", "brain3d"),
                        help="use an untrained model instead: small synthetic 2D/3D, or on the bundled brain3d grids")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="iterations before the memory baseline (default 20)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model card's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random conditions")
    parser.add_argument("--max-growth-mb", type=float, default=64.0, help="allowed RSS growth after warm-up (default 64 MiB)")
    parser.add_argument("--max-folding", type=float, default=1e-3, help="allowed folding ratio per atlas (default 1e-3)")
    parser.add_argument("--files", choices=("all", "minimal"), default="all",
                        help="files written per atlas: all of `generate`'s but the preview, or the atlas and labels only")
    parser.add_argument("--every", type=int, default=10, help="print a line every N iterations (default 10)")
    parser.add_argument("--report", help="write the figures and the RSS trace to this JSON file")
    args = parser.parse_args(argv)
    if args.warmup >= args.iterations:
        parser.error("--warmup must be smaller than --iterations")

    import numpy as np
    import torch

    from DiffDefAtlasLib.generate import generate_atlas, load_generator
    from DiffDefAtlasLib.generate.atlas import template_images
    from DiffDefAtlasLib.generate.cli import write_atlas_files
    from DiffDefAtlasLib.provenance import current_rss_mb, environment_info, peak_rss_mb

    if current_rss_mb() is None:
        print("soak: the resident memory cannot be read on this platform (needs /proc)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="diffdef_soak_"))
    model = str(build_synthetic_model(scratch / "model", args.synthetic)) if args.synthetic else args.model
    generator = load_generator(model, args.device)
    label_values = {int(v) for v in np.unique(template_images(generator.card).labels.array)}
    rng = np.random.default_rng(args.seed)
    out = scratch / "atlas"
    out.mkdir()
    trace, times, invalid = [], [], []
    print(f"soak: {args.iterations} atlases of {generator.card.name} ({generator.card.spatial_dims}D) on {args.device}; "
          f"RSS at start {current_rss_mb():.0f} MiB")
    for iteration in range(args.iterations):
        conditions = random_conditions(generator.card, rng)
        seed = int(rng.integers(0, 2**31 - 1))
        temperature = round(float(rng.uniform(0.0, 1.0)), 3)
        start = time.perf_counter()
        result = generate_atlas(model, conditions, seed=seed, steps=args.steps, device=args.device, temperature=temperature)
        write_atlas_files(result, out, preview=False, minimal=args.files == "minimal")
        times.append(time.perf_counter() - start)
        problems = check_result(result, label_values, args.max_folding)
        if problems:
            invalid.append({"iteration": iteration, "conditions": conditions, "seed": seed, "problems": problems})
        del result
        trimmed = trim_heap()
        trace.append(round(current_rss_mb(), 2))
        if (iteration + 1) % args.every == 0 or iteration + 1 == args.iterations:
            print(f"  iteration {iteration + 1:4d}  RSS {trace[-1]:8.1f} MiB  {times[-1]:6.3f} s  invalid so far {len(invalid)}", flush=True)

    window = max(1, min(20, (args.iterations - args.warmup) // 2))
    baseline = min(trace[args.warmup : args.warmup + window])
    end = min(trace[-window:])
    growth = end - baseline
    trend = slope_times_count(trace[args.warmup:])
    report = {
        "model": generator.card.name,
        "spatial_dims": generator.card.spatial_dims,
        "synthetic_untrained": bool(args.synthetic),
        "iterations": args.iterations,
        "files": args.files,
        "warmup": args.warmup,
        "rss_window": window,
        "rss_after_warmup_mb": round(baseline, 2),
        "rss_end_mb": round(end, 2),
        "rss_max_after_warmup_mb": max(trace[args.warmup:]),
        "rss_growth_mb": round(growth, 2),
        "rss_trend_mb": round(trend, 2),
        "rss_median_after_warmup_mb": statistics.median(trace[args.warmup : args.warmup + window]),
        "rss_median_end_mb": statistics.median(trace[-window:]),
        "heap_trimmed": trimmed,
        "max_growth_mb": args.max_growth_mb,
        "peak_rss_mb": peak_rss_mb(),
        "median_s": round(statistics.median(times), 4),
        "invalid": invalid,
        "rss_trace_mb": trace,
        "environment": environment_info(args.device),
    }
    ok = not invalid and growth <= args.max_growth_mb
    print(f"soak: RSS after warm-up {baseline:.1f} MiB, at the end {end:.1f} MiB (lowest of {window} iterations; growth {growth:+.1f} MiB, "
          f"allowed {args.max_growth_mb:g}; trend {trend:+.1f} MiB); {len(invalid)} invalid atlases; "
          f"median {report['median_s']:.3f} s per atlas -> {'PASS' if ok else 'FAIL'}")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
