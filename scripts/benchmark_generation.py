#!/usr/bin/env python
"""Benchmark atlas generation: median wall time of repeated runs, per stage, and peak memory.

Usage:
    python scripts/benchmark_generation.py --model brain3d --repeats 7 [--device cpu|cuda] [--threads 2] [--steps N]

The first run (model loading, template reading, allocator warm-up) is reported separately and left out of the median.
Prints the median total (the 3D target: <= 2 s on 2 CPU cores, <= 0.2 s on a GPU), the median of each stage and the
peak resident memory (target <= 2 GB on CPU; GPU memory <= 4 GB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="brain3d")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model card's)")
    parser.add_argument("--set", dest="conditions", action="append", default=["age=70", "sex=F"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    import torch

    from DiffDefAtlasLib.generate import generate_atlas, load_generator
    from DiffDefAtlasLib.generate.cli import parse_conditions
    from DiffDefAtlasLib.provenance import peak_rss_mb

    if args.threads:
        torch.set_num_threads(args.threads)
    conditions = parse_conditions(args.conditions) if args.conditions else {}
    generator = load_generator(args.model, args.device)
    conditions = {k: v for k, v in conditions.items() if k in generator.card.condition_names}
    start = time.perf_counter()
    generate_atlas(args.model, conditions, seed=0, steps=args.steps, device=args.device)
    first = time.perf_counter() - start
    totals, stages = [], {}
    for seed in range(args.repeats):
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = generate_atlas(args.model, conditions, seed=seed, steps=args.steps, device=args.device)
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        totals.append(time.perf_counter() - start)
        for key, value in result.summary["timings_s"].items():
            stages.setdefault(key, []).append(value)
    report = {
        "model": args.model,
        "device": str(generator.device),
        "threads": torch.get_num_threads(),
        "steps": result.summary["steps"],
        "grid": result.summary["grid_shape"],
        "repeats": args.repeats,
        "first_run_s": round(first, 3),
        "median_total_s": round(statistics.median(totals), 3),
        "min_total_s": round(min(totals), 3),
        "median_stage_s": {k: round(statistics.median(v), 3) for k, v in stages.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if generator.device.type == "cuda":
        report["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
