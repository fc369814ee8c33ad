"""``diffdef-atlas benchmark``: generation and registration latency, training throughput, latency against grid size.

Every figure is the median (with quartiles and range) of repeated runs in one process, after a warm-up call;
comparisons are ratios within the same run. Peak memory is the process's peak RSS (and GPU peak allocation on CUDA).

Example:
    diffdef-atlas benchmark --suites generation,grid --repeats 5 --json bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DiffDefInputError
from . import suites
from ..device import select_device
from ..generate.bundled import resolve_model

SUITES = ("generation", "registration", "training", "grid")


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``benchmark`` subcommand."""
    parser.add_argument("--model", default="brain3d", help="generator name or model folder (default brain3d)")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated subset of {', '.join(SUITES)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement after one warm-up (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: generation also runs on CUDA when given or available with auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps for generation (default: the model card's)")
    parser.add_argument("--refine", type=int, default=50, help="refinement steps of the second registration timing (default 50)")
    parser.add_argument("--train-steps", type=int, default=3, help="timed optimiser steps per training stage (default 3)")
    parser.add_argument("--train-stages", default="autoencoder,diffusion,mp", help="training stages to time")
    parser.add_argument("--spacings", default="3,2,1.5", help="working-grid spacings in mm for the grid suite (default 3,2,1.5)")
    parser.add_argument("--json", help="also write the results to this JSON file")


def _line(name: str, timing: dict) -> str:
    return f"  {name:34s} median {timing['median']:.4f} s  IQR [{timing['q1']:.4f}, {timing['q3']:.4f}]  range [{timing['minimum']:.4f}, {timing['maximum']:.4f}]  n={timing['runs']}"


def _print_generation(generation: dict) -> None:
    for device, gen in generation.items():
        if isinstance(gen, dict):
            memory = f"peak RSS {gen['peak_rss_mb']} MB" + (f", GPU peak {gen['gpu_peak_mb']} MB" if "gpu_peak_mb" in gen else "")
            print(f"generation ({device}, {gen['steps']} DDIM steps, output {'x'.join(map(str, gen['output_grid']))}); {memory}")
            print(_line("atlas", gen["timing"]), flush=True)
    if "cpu_over_gpu" in generation:
        print(f"  ratio CPU/GPU: {generation['cpu_over_gpu']}", flush=True)


def _print_registration(reg: dict) -> None:
    print(f"registration ({reg['spatial_dims']}D, atlas grid {'x'.join(map(str, reg['grid']))}); peak RSS {reg['peak_rss_mb']} MB")
    for key, value in reg.items():
        if isinstance(value, dict) and "median" in value:
            print(_line(key, value))
    if "refine_over_learned" in reg:
        print(f"  ratio refine/learned: {reg['refine_over_learned']}", flush=True)


def _print_training(tr: dict) -> None:
    print(f"training throughput (CPU, {tr['threads']} threads); peak RSS {tr['peak_rss_mb']} MB")
    for stage in ("autoencoder", "diffusion", "mp"):
        if stage in tr:
            print(_line(f"{stage} step (batch {tr[stage]['batch_size']})", tr[stage]["timing"]) + f"  {tr[stage]['samples_per_s']} samples/s", flush=True)


def _print_grid(grids: dict) -> None:
    for device, grid in grids.items():
        print(f"integration + template warp against grid spacing ({device}); peak RSS {grid['peak_rss_mb']} MB")
        for row in grid["rows"]:
            key = next((k for k in row if k.startswith("ratio_to_")), None)
            name = f"{row['spacing_mm']:g} mm ({'x'.join(map(str, row['grid']))})"
            print(_line(name, row["timing"]) + (f"  x{row[key]} of {key[9:]}" if key else ""), flush=True)


def run_benchmark(args: argparse.Namespace) -> int:
    """Run the chosen suites; print a readable summary and the JSON."""
    import torch


    chosen = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        raise DiffDefInputError(f"--suites: unknown {', '.join(unknown)}; expected some of {', '.join(SUITES)}")
    if args.repeats < 1:
        raise DiffDefInputError(f"--repeats: expected at least 1, found {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    card = resolve_model(args.model)
    devices = ["cpu"]
    if args.device != "cpu":
        resolved = str(select_device(args.device))
        if resolved.startswith("cuda"):
            devices.append(resolved)
    report: dict = {"model": card.name, "threads": torch.get_num_threads(), "repeats": args.repeats, "devices": devices}
    print(f"diffdef-atlas benchmark: model {card.name}, {report['threads']} CPU threads, {args.repeats} timed runs each (after 1 warm-up)", flush=True)
    if "generation" in chosen:
        report["generation"] = {d: suites.generation_latency(args.model, d, args.repeats, args.steps) for d in devices}
        if len(devices) > 1:
            report["generation"]["cpu_over_gpu"] = round(report["generation"]["cpu"]["timing"]["median"] / report["generation"][devices[1]]["timing"]["median"], 2)
        _print_generation(report["generation"])
    if "registration" in chosen:
        reg = suites.registration_latency(card.spatial_dims, args.repeats, args.refine)
        key = f"learned+refine{args.refine}"
        if key in reg:
            reg["refine_over_learned"] = round(reg[key]["median"] / reg["learned"]["median"], 2)
        report["registration"] = reg
        _print_registration(reg)
    if "training" in chosen:
        stages = [s.strip() for s in args.train_stages.split(",") if s.strip()]
        report["training"] = suites.training_throughput(args.model, args.train_steps, stages)
        _print_training(report["training"])
    if "grid" in chosen:
        try:
            spacings = [float(s) for s in args.spacings.split(",") if s.strip()]
        except ValueError:
            raise DiffDefInputError(f"--spacings: expected comma-separated numbers, found {args.spacings!r}") from None
        report["grid"] = {d: suites.grid_latency(args.model, spacings, args.repeats, d) for d in devices}
        _print_grid(report["grid"])
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0
