#!/usr/bin/env python
"""Train the bundled ``brain3d`` generator on the 3D population model, on CPU, within a time budget.

Usage (run in the background; every stage resumes where it stopped, so running it again continues):
    nohup python scripts/train_brain3d.py --work work/brain3d > work/brain3d.log 2>&1 &

Stages: autoencoder -> diffusion -> mp (if the registration network is bundled) -> export to
Resources/models/brain3d -> evaluation against the population model's conditional means (metrics written into the
model card). ``--minutes`` gives each stage's wall-time budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(model: str = "brain3d", defaults: dict | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=f"work/{model}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--minutes", default=",".join(str(v) for v in (defaults or {"autoencoder": 15, "diffusion": 20, "mp": 6}).values()), help="budgets of autoencoder,diffusion,mp in minutes")
    parser.add_argument("--subjects", type=int, default=None)
    parser.add_argument("--skip-mp", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()

    import torch

    from DiffDefAtlasLib.cli.main import main as cli

    torch.set_num_threads(args.threads)
    budgets = [float(v) for v in args.minutes.split(",")]
    common = ["--model", model, "--work", args.work, "--threads", str(args.threads), "--quiet"]
    if args.subjects:
        common += ["--subjects", str(args.subjects)]
    durations = {}
    for stage, minutes in zip(("autoencoder", "diffusion", "mp"), budgets):
        if stage == "mp" and args.skip_mp:
            continue
        start = time.monotonic()
        status = cli(["train", "--stage", stage, *common, "--max-minutes", str(minutes)])
        durations[stage] = round(time.monotonic() - start, 1)
        print(f"[{model}] {stage}: exit {status} after {durations[stage]} s", flush=True)
        if status != 0 and stage != "mp":
            return status
    status = cli(["train", "--stage", "export", *common] + (["--no-mp"] if args.skip_mp else []))
    if status != 0:
        return status
    if not args.skip_eval:
        from DiffDefAtlasLib.generate.bundled import resolve_model
        from DiffDefAtlasLib.generate import evaluation

        start = time.monotonic()
        evaluate = getattr(evaluation, f"evaluate_{model}")
        report = evaluate()
        if (Path(args.work) / "mp_losses.csv").is_file() and not args.skip_mp:
            # ablation: the same model exported without the morphology-preservation fine-tuning
            ablation = Path(args.work) / "model_without_mp"
            cli(["train", "--stage", "export", *common, "--no-mp", "--export-to", str(ablation)])
            without = evaluate(ablation)
            report["ablation_without_mp"] = {k: v for k, v in without.items() if not isinstance(v, list) and k != "model"}
        from DiffDefAtlasLib.train.recipes import cached_fields

        report["ventricle_trends"] = evaluation.ventricle_trends(model, cached_fields(model, args.work), max_subjects=120)
        report["seconds"] = round(time.monotonic() - start, 1)
        card = resolve_model(model)
        summary = {k: v for k, v in report.items() if not isinstance(v, list) or k == "conditions"}
        summary.pop("per_subject", None)
        card.metrics.update({"evaluation": summary, "training_wall_s": durations})
        card.save(card.path.parent)
        Path(args.work, "evaluation.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in report.items() if not isinstance(v, list)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
