"""``diffdef-atlas generate``, ``sweep`` and ``models``.

Example:
    diffdef-atlas models
    diffdef-atlas generate --model brain3d --set age=72 --set sex=F --out atlas72F
    diffdef-atlas sweep --model brain3d --vary age=45:70:5 --set sex=F --out sweepF
"""

from __future__ import annotations

import argparse
import csv
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..conditions.resolve import extrapolation_words
from ..device import DEVICE_CHOICES
from ..errors import DiffDefInputError


# ---------------------------------------------------------------------------------------------- shared
def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="brain3d", help="bundled model name (see `diffdef-atlas models`) or a model folder")
    parser.add_argument("--set", dest="conditions", action="append", default=[], metavar="NAME=VALUE", help="a condition, e.g. age=72 or sex=F (repeatable); unset ones are marginalised out")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); it changes the atlas only with --temperature above 0 (and the --samples draws)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model card's)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the model card's)")
    parser.add_argument("--temperature", type=float, default=None, help="initial-noise scale: 0 = the sub-population's centre (default), 1 = one random member")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N (default auto)")
    parser.add_argument("--allow-extrapolation", action="store_true", help="allow conditions outside the trained range (with a warning)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace files in a non-empty output folder")


def parse_conditions(items: list[str]) -> dict[str, str]:
    """``["age=72", "sex=F"]`` -> ``{"age": "72", "sex": "F"}``; a name given twice is an error."""
    from ..conditions.resolve import parse_assignment

    out: dict[str, str] = {}
    for item in items:
        name, value = parse_assignment(item)
        if name in out:
            raise DiffDefInputError(f"condition '{name}' is set twice (--set {name}={out[name]} and --set {item})")
        out[name] = value
    return out


#: What ``--outputs`` writes besides ``summary.json``: ``minimal`` is what a study needs to reuse the atlas.
OUTPUT_SETS = {
    "minimal": ("atlas", "labels", "displacement"),
    "all": ("atlas", "labels", "displacement", "displacement_itk", "jacobian", "folding", "preview"),
}


def picture_label(label: str, summary: dict) -> str:
    """A picture's label, marked ``EXTRAPOLATED: ...`` when the summary lists conditions outside the trained range."""
    return " - ".join(filter(None, [label, extrapolation_words(summary.get("extrapolated", {}))]))


def write_atlas_files(result, out: Path, *, preview: bool = True, minimal: bool = False, outputs: str = "all") -> list[Path]:
    """Write the files of one atlas into ``out``: the :data:`OUTPUT_SETS` entry ``outputs``; ``minimal`` (a sweep's
    steps) writes only the atlas and labels."""
    from ..fieldio import save_displacement_itk, save_displacement_nifti
    from ..imageio import write_image
    from ..results import ATLAS_FILES
    from .preview import save_png, slices_with_jacobian

    written = [write_image(result.atlas, out / ATLAS_FILES["atlas"]), write_image(result.labels, out / ATLAS_FILES["labels"])]
    if minimal:
        return written
    wanted = OUTPUT_SETS[outputs]
    written.append(save_displacement_nifti(result.displacement, result.grid, out / ATLAS_FILES["displacement"]))
    if "displacement_itk" not in wanted:
        return written
    written.append(save_displacement_itk(result.displacement, result.grid, out / ATLAS_FILES["displacement_itk"]))
    written.append(write_image(result.jacobian, out / ATLAS_FILES["jacobian"]))
    written.append(write_image(result.folding, out / ATLAS_FILES["folding"]))
    if preview:
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.summary["conditions"].items()) or "unconditional"
        written.append(save_png(slices_with_jacobian(result.atlas, result.jacobian, picture_label(label, result.summary)),
                                out / ATLAS_FILES["preview"]))
    return written


def _generate(args: argparse.Namespace, conditions: dict[str, Any]):
    from .bundled import generate_atlas

    return generate_atlas(
        args.model,
        conditions,
        seed=args.seed,
        steps=args.steps,
        device=args.device,
        allow_extrapolation=args.allow_extrapolation,
        guidance=args.guidance,
        temperature=args.temperature,
    )


def _print_warnings(caught: list[warnings.WarningMessage], command: str, printed: set[str] | None = None) -> None:
    """Print each distinct warning once, in order, as one line; ``printed`` remembers those already shown."""
    import sys

    printed = set() if printed is None else printed
    for message in dict.fromkeys(str(w.message) for w in caught):
        if "grid_sample" in message or message in printed:
            continue
        printed.add(message)
        print(f"diffdef-atlas {command}: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- generate
#: The most draws ``--samples`` may ask for (each costs one generation; more would run for days on brain3d).
MAX_SAMPLES = 1000
#: The most atlases one ``sweep`` may generate.
MAX_SWEEP_STEPS = 200


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``diffdef-atlas generate``."""
    _common_arguments(parser)
    parser.add_argument("--samples", type=int, default=0, metavar="K", help=f"also draw K samples (temperature 1, K from 2 to {MAX_SAMPLES}) and write displacement_mean/std maps")
    parser.add_argument("--outputs", choices=sorted(OUTPUT_SETS), default="all",
                        help="all (default): also the ITK field, Jacobian, folding and preview; minimal: atlas, labels, displacement and summary")


def check_settings(args: argparse.Namespace) -> None:
    """Refuse bad sampling settings (non-finite guidance or temperature, steps out of range, a bad sample count),
    a device that is not there and a bad output folder before anything is computed or created."""
    from ..device import select_device
    from ..results import check_output_dir
    from .atlas import check_sampling_settings, check_seed

    check_sampling_settings(args.steps, args.guidance, args.temperature)
    check_seed(args.seed)
    samples = getattr(args, "samples", 0)
    if samples < 0 or samples == 1 or samples > MAX_SAMPLES:
        raise DiffDefInputError(f"--samples: expected 0 (none) or 2 to {MAX_SAMPLES} samples for a standard deviation, found {samples}")
    if samples:
        check_seed(args.seed + samples - 1)  # the draws use seed .. seed + samples - 1
    select_device(args.device)  # e.g. cuda without a GPU: refused before a sweep prints its warnings
    check_output_dir(args.out, args.overwrite)


def run_generate(args: argparse.Namespace) -> int:
    """Generate one atlas and write atlas, labels, displacement (RAS and ITK), Jacobian, folding, summary and preview.

    The folder is built beside ``--out`` and swapped in when complete: an interrupted run leaves the old result.
    """
    from ..imageio import Volume, write_image
    from ..fieldio import save_displacement_nifti
    from ..results import ATLAS_FILES, result_folder, seed_with_effect, write_summary
    from .bundled import resolve_model, sample_variability
    from ..conditions.resolve import resolve_conditions

    conditions = parse_conditions(args.conditions)
    card = resolve_model(args.model)
    check_settings(args)
    printed: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_conditions(card, conditions, args.allow_extrapolation)  # fail before computing anything
        result = _generate(args, conditions)
    _print_warnings(caught, "generate", printed)
    summary = dict(result.summary)
    variability = None
    if args.samples:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            variability = sample_variability(
                args.model, conditions, args.samples, seed=args.seed, steps=args.steps, device=args.device, guidance=args.guidance, allow_extrapolation=True
            )
        _print_warnings(caught, "generate", printed)
        mean, std = variability
        summary["variability"] = {"samples": args.samples, "seeds": [args.seed, args.seed + args.samples - 1], "temperature": 1.0, "mean_std_mm": float(std.mean()), "max_std_mm": float(std.max())}
    with result_folder(args.out, args.overwrite) as out:
        written = write_atlas_files(result, out, outputs=args.outputs)
        if variability is not None:
            mean, std = variability
            written.append(save_displacement_nifti(mean, result.grid, out / ATLAS_FILES["displacement_mean"]))
            written.append(write_image(Volume(std.astype(np.float32), result.grid.affine), out / ATLAS_FILES["displacement_std"]))
        write_summary(out / ATLAS_FILES["summary"], summary, device=summary.get("device"))
        written.append(out / ATLAS_FILES["summary"])
    text = ", ".join(f"{k}={v}" for k, v in summary["conditions"].items()) or "no conditions (unconditional atlas)"
    seed = seed_with_effect(args.seed, summary)  # at temperature 0 every seed gives this atlas: not shown
    settings = ("" if seed is None else f"seed {seed}, ") + f"{summary['steps']} steps"
    print(f"Generated {card.name} atlas for {text} ({settings}) in {summary['timings_s']['total_s']:.2f} s on {summary['device']}")
    if "volumes_ml" in summary:
        print("  volumes (mL): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["volumes_ml"].items()))
    if "areas_mm2" in summary:
        print("  areas (mm^2): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["areas_mm2"].items()))
    print(f"  folding ratio (det J <= 0): {summary['folding_ratio_nonpositive']:.2e}")
    print(f"Wrote {len(written)} files to {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------- sweep
def parse_vary(text: str, card) -> tuple[str, list[Any]]:
    """``age=45:70:5`` (start:stop:step, stop included) or ``sex=F,M`` -> the name and its values.

    Example:
        >>> from DiffDefAtlasLib.generate.model_card import ConditionSpec, ModelCard
        >>> parse_vary("age=40:50:5", ModelCard("m", 3, conditions=[ConditionSpec("age", minimum=0, maximum=99)]))
        ('age', [40.0, 45.0, 50.0])
    """
    from ..conditions.resolve import parse_assignment

    name, spec_text = parse_assignment(text)
    spec = card.condition(name)
    if spec.kind == "categorical" or "," in spec_text:
        values = [v.strip() for v in spec_text.split(",") if v.strip()]
        if not values:
            raise DiffDefInputError(f"--vary {text!r}: expected at least one value in the comma list, e.g. {name}=A,B")
        if len(values) > MAX_SWEEP_STEPS:
            raise DiffDefInputError(f"--vary {text!r}: {len(values)} values; at most {MAX_SWEEP_STEPS} are allowed")
        return name, values
    parts = spec_text.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise DiffDefInputError(f"--vary {text!r}: expected NAME=START:STOP:STEP (or a comma list)") from None
    if not all(np.isfinite(numbers)):
        raise DiffDefInputError(f"--vary {text!r}: START, STOP and STEP must be finite numbers")
    if len(numbers) == 2:
        numbers.append((numbers[1] - numbers[0]) / 4 if numbers[1] != numbers[0] else 1.0)
    if len(numbers) != 3 or numbers[2] == 0 or (numbers[1] - numbers[0]) / numbers[2] < 0:
        raise DiffDefInputError(f"--vary {text!r}: expected NAME=START:STOP:STEP with a step towards STOP")
    start, stop, step = numbers
    span = (stop - start) / step  # inf or NaN when STOP - START overflows (e.g. 0:1e300:1e-300)
    if not np.isfinite(span):
        raise DiffDefInputError(f"--vary {text!r}: the range is too large; at most {MAX_SWEEP_STEPS} steps are allowed")
    count = int(np.floor(span + 1e-9)) + 1
    if count > MAX_SWEEP_STEPS:
        raise DiffDefInputError(f"--vary {text!r}: {count} steps; at most {MAX_SWEEP_STEPS} are allowed")
    return name, [round(start + n * step, 10) for n in range(count)]


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``diffdef-atlas sweep``."""
    _common_arguments(parser)
    parser.add_argument("--vary", required=True, metavar="NAME=START:STOP:STEP", help="the condition to sweep, e.g. age=45:70:5 or sex=F,M")


def run_sweep(args: argparse.Namespace) -> int:
    """One atlas per value (folder per step), ``montage.png``, ``sweep.gif``, ``volumes.csv`` and ``summary.json``."""
    from ..results import result_folder
    from .bundled import resolve_model
    from ..conditions.resolve import resolve_conditions

    card = resolve_model(args.model)
    conditions = parse_conditions(args.conditions)
    name, values = parse_vary(args.vary, card)
    if name in conditions:
        raise DiffDefInputError(f"condition '{name}' is both swept (--vary) and fixed (--set)")
    printed: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for value in values:
            resolve_conditions(card, {**conditions, name: value}, args.allow_extrapolation)
    check_settings(args)  # a refusal is the only line: the extrapolation warnings come after every check
    _print_warnings(caught, "sweep", printed)
    with result_folder(args.out, args.overwrite) as out:
        values = _sweep_into(out, args, card, conditions, name, values, printed)
    print(f"Wrote {len(values)} atlases, montage.png, sweep.gif and volumes.csv to {args.out}")
    return 0


def _sweep_into(out: Path, args: argparse.Namespace, card, conditions: dict, name: str, values: list, printed: set[str]) -> list:
    """Generate and write every step of a sweep into the (staging) folder ``out``."""
    from ..atomic import atomic_path
    from ..progress import progress_reporter
    from ..results import SWEEP_FILES, write_summary
    from .preview import montage, save_gif, save_png, slices_with_jacobian

    lines = progress_reporter()  # PROGRESS lines for a parent process (the Slicer module's progress bar)
    rows, pictures, summaries = [], [], []
    for n, value in enumerate(values):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _generate(args, {**conditions, name: value})
        _print_warnings(caught, "sweep", printed)  # e.g. a fall back to the CPU, once
        folder = out / f"{n:02d}_{name}_{value:g}" if isinstance(value, float) else out / f"{n:02d}_{name}_{value}"
        folder.mkdir(exist_ok=True)
        write_atlas_files(result, folder, minimal=True)
        label = f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
        pictures.append(slices_with_jacobian(result.atlas, result.jacobian, picture_label(label, result.summary)))
        volumes = result.summary.get("volumes_ml") or result.summary.get("areas_mm2") or {}
        rows.append({name: value, **volumes, "folding_ratio_nonpositive": result.summary["folding_ratio_nonpositive"], "mean_displacement_mm": result.summary["displacement_mean_norm_mm"]})
        summaries.append({"folder": folder.name, **result.summary})
        print(f"  {label}: " + ", ".join(f"{k} {v:.1f}" for k, v in volumes.items()), flush=True)
        if lines is not None:
            lines((n + 1) / len(values), label)
    save_png(montage(pictures, columns=1), out / SWEEP_FILES["montage"])
    save_gif(pictures, out / SWEEP_FILES["gif"])
    with atomic_path(out / SWEEP_FILES["volumes"]) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    unit = "mL" if card.spatial_dims == 3 else "mm^2"
    write_summary(out / SWEEP_FILES["summary"], {"model": card.name, "vary": name, "values": values, "fixed_conditions": conditions, "volume_units": unit, "steps": summaries}, device=summaries[0]["device"])
    return values


# ---------------------------------------------------------------------------------------------- models
def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``diffdef-atlas models``."""
    parser.add_argument("--json", action="store_true", help="print the model cards as JSON")


def models_table(cards) -> str:
    """The bundled models as a text table: name, dimensions, grid and each condition's trained range."""
    lines = []
    for card in cards:
        grid = card.grids.get("output", {})
        shape = "x".join(str(s) for s in grid.get("shape", []))
        spacing = "x".join(f"{s:g}" for s in grid.get("spacing_mm", []))
        lines.append(f"{card.name}  ({card.spatial_dims}D, atlas grid {shape} at {spacing} mm)  {card.description}")
        for spec in card.conditions:
            lines.append(f"    {spec.name:<18} {spec.kind:<12} {spec.describe_range():<20} {spec.description}")
    return "\n".join(lines) if lines else "no bundled models found"


def run_models(args: argparse.Namespace) -> int:
    """Print the bundled models (``--json``: their full cards)."""
    from .bundled import list_models

    cards = list_models()
    if args.json:
        print(json.dumps([card.to_dict() for card in cards], indent=2))
    else:
        print(models_table(cards))
    return 0
