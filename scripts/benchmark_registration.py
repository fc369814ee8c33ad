"""Benchmark atlas registration on held-out labelled subjects (not a test; needs ../shared/data).

Pairs: each held-out subject (the last 4 SynthSeg and 4 BrainWeb label maps with images synthesised from them,
FreeSurfer ``bert`` and the VoxelMorph subject with their real T1s; all skull-stripped) registered to the MNI template.
Dice is measured in template space between the template's labels and the subject's labels carried by each method's
transform (CSF, GM, WM and, where the subject's labels have them, lateral ventricles).

Methods: learned (affine + network), learned + refinement, a SimpleITK baseline (the same affine + diffeomorphic
demons), ANTs SyN (``antspyx``, default ``SyN`` with its own affine; benchmark-only dependency, skipped when absent).
Every method runs in its own process (spawn), so its peak RSS is its own; timings use ``--threads`` CPU threads and
exclude one untimed warm-up run on the first pair (``--no-warmup`` times it cold).

    python scripts/benchmark_registration.py --resolution 2mm --pairs 10 --refine 200
    python scripts/benchmark_registration.py --resolution 1mm --methods learned,ants
    python scripts/benchmark_registration.py --oasis2d --compare-2d WORKDIR/export2d_uniform --pairs 30 --methods learned
    python scripts/benchmark_registration.py --lambda-figure docs/images/registration_lambda.png --lambda-subject bert --methods learned
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("learned", "learned+refine", "sitk-demons", "ants-syn")


def _threads(n: int) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)


def load_pairs(limit: int | None, seed: int = 0):
    """Held-out subjects as (name, image Volume, library-class labels Volume, has_ventricles)."""
    from DiffDefAtlasLib.data.label_datasets import list_label_maps, load_label_map
    from DiffDefAtlasLib.data.labelmaps import NON_BRAIN, class_lookup, has_ventricles, to_diffdef_labels
    from DiffDefAtlasLib.data.synthesis import synthesise_image
    from DiffDefAtlasLib.imageio import Volume
    from DiffDefAtlasLib.register.training_data import split_label_maps

    _, held = split_label_maps(list_label_maps())
    # Interleave sources so that --pairs N still covers all of them.
    order = sorted(held, key=lambda i: (sum(1 for j in held if j.source == i.source and j.name < i.name), i.source))
    pairs = []
    for info in order[:limit]:
        subject = load_label_map(info, with_image=True)
        classes = class_lookup(subject.labels.array, info.convention)
        if subject.image is None:
            brain_only = np.where(classes == NON_BRAIN, 0, subject.labels.array)
            image = synthesise_image(Volume(brain_only, subject.labels.affine), info.convention, seed=seed, blur_sigma_mm=0.5).image
        else:
            image = subject.image
        labels = to_diffdef_labels(subject.labels, info.convention)
        pairs.append((info.name, image, labels, has_ventricles(info.convention)))
    return pairs


def dice_in_template(warped_labels: np.ndarray, template_labels: np.ndarray, ventricles: bool) -> float:
    from DiffDefAtlasLib.data.labelmaps import merge_ventricles_into_csf
    from DiffDefAtlasLib.metrics import dice_per_class

    a, b = np.asarray(warped_labels, np.uint8), np.asarray(template_labels, np.uint8)
    if not ventricles:
        a, b = merge_ventricles_into_csf(a), merge_ventricles_into_csf(b)
    scores = dice_per_class(a, b, classes=(1, 2, 3, 4) if ventricles else (1, 2, 3))
    return float(np.nanmean(list(scores.values())))


def _metrics(displacement: np.ndarray, grid, moving, labels, template, ventricles: bool) -> dict:
    import torch

    from DiffDefAtlasLib.register.engine import brain_ncc
    from DiffDefAtlasLib.spatial import jacobian_determinant, jacobian_summary, warp_image, warp_labels

    u = torch.as_tensor(displacement)[None]
    mask = torch.as_tensor(np.array(template.brain_mask.array) > 0)[None]
    jac = jacobian_determinant(u.double(), grid)
    summary = jacobian_summary(jac, grid, mask)
    warped_labels = warp_labels(torch.as_tensor(np.asarray(labels.array, np.int64))[None, None], u, grid, labels.grid)[0, 0].numpy()
    warped = warp_image(torch.as_tensor(np.asarray(moving.array, np.float32))[None, None], u.float(), grid, moving.grid)
    ncc = brain_ncc(warped, torch.as_tensor(np.array(template.t1.array))[None, None], mask[:, None].float())
    return {
        "dice": dice_in_template(warped_labels, template.labels.array, ventricles),
        "folding": summary["folding_ratio_nonpositive"],
        "log_detj_std": summary["log_detj_std"],
        "ncc": ncc,
    }


_NETWORK_FOLDER: str | None = None  # --network: a 3D model folder for the learned methods (None: the bundled one)


@functools.lru_cache(maxsize=None)
def _load_network(folder: str):
    from DiffDefAtlasLib.register import load_registration_network

    return load_registration_network(3, device="cpu", folder=folder)


def _learned_network():
    """The 3D network of the learned methods (loaded once per process), or None for the bundled default."""
    return None if _NETWORK_FOLDER is None else _load_network(_NETWORK_FOLDER)


def run_method(method: str, resolution: str, limit: int | None, refine: int, threads: int, queue, warmup: bool = True, network: str | None = None) -> None:
    """Child process: run one method on every pair; put (results, peak RSS in MB, warm-up seconds) on ``queue``.

    With ``warmup`` the first pair is registered once untimed before the timed runs, so one-time costs (imports,
    loading weights, thread pools) stay out of every method's per-pair time; the warm-up time is reported apart.
    """
    import resource

    global _NETWORK_FOLDER
    _NETWORK_FOLDER = network
    _threads(threads)
    from DiffDefAtlasLib.template import load_template

    template = load_template(resolution)
    pairs = load_pairs(limit)
    run = globals()[f"_run_{method.replace('+', '_').replace('-', '_')}"]
    warmup_s = None
    if warmup and pairs:
        start = time.perf_counter()
        run(pairs[0][1], template, refine)
        warmup_s = time.perf_counter() - start
        print(f"  {method:15s} warm-up on {pairs[0][0]} (untimed): {warmup_s:.1f} s", flush=True)
    results = []
    for name, image, labels, ventricles in pairs:
        start = time.perf_counter()
        displacement = run(image, template, refine)
        elapsed = time.perf_counter() - start
        if displacement is None:
            break
        metrics = _metrics(displacement, template.grid, image, labels, template, ventricles)
        results.append({"pair": name, "seconds": elapsed, **metrics})
        print(f"  {method:15s} {name:16s} dice {metrics['dice']:.3f} fold {metrics['folding']:.5f} "
              f"sdlogJ {metrics['log_detj_std']:.3f} ncc {metrics['ncc']:.3f} {elapsed:.1f} s", flush=True)
    queue.put((results, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, warmup_s))


def _run_learned(image, template, refine):
    from DiffDefAtlasLib.register import register_to_atlas

    return register_to_atlas(image, template.t1, atlas_mask=template.brain_mask, device="cpu", network=_learned_network()).displacement


def _run_learned_refine(image, template, refine):
    from DiffDefAtlasLib.register import register_to_atlas

    return register_to_atlas(image, template.t1, atlas_mask=template.brain_mask, refine=refine, device="cpu", network=_learned_network()).displacement


def _run_sitk_demons(image, template, refine):
    """The same MI affine, then SimpleITK diffeomorphic demons (histogram-matched, 3 levels) on the template grid."""
    import SimpleITK as sitk
    import torch

    from DiffDefAtlasLib.imageio import Volume, volume_to_sitk
    from DiffDefAtlasLib.imaging.affine import affine_register
    from DiffDefAtlasLib.imaging.resampling import compose_with_affine, resample
    from DiffDefAtlasLib.spatial import displacement_from_sitk

    grid = template.grid
    matrix = affine_register(template.t1, image, fixed_mask=template.brain_mask)
    moving = Volume(resample(image, grid, matrix)[0, 0].numpy(), grid.affine)
    fixed_s = sitk.Cast(volume_to_sitk(template.t1), sitk.sitkFloat32)
    moving_s = sitk.HistogramMatching(sitk.Cast(volume_to_sitk(moving), sitk.sitkFloat32), fixed_s, 256, 7, True)
    demons = sitk.DiffeomorphicDemonsRegistrationFilter()
    demons.SetNumberOfIterations(50)
    demons.SetStandardDeviations(1.5)
    field = None
    for shrink in (4, 2, 1):
        f = sitk.Shrink(fixed_s, [shrink] * 3) if shrink > 1 else fixed_s
        m = sitk.Shrink(moving_s, [shrink] * 3) if shrink > 1 else moving_s
        if field is not None:
            field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(f, m, field)
        else:
            field = demons.Execute(f, m)
    u, field_grid = displacement_from_sitk(field)
    return compose_with_affine(matrix, torch.as_tensor(u)[None], grid)[0].numpy()


def _run_ants_syn(image, template, refine):
    """antspyx default ``SyN`` (with its own affine); the composite transform is sampled on the template grid."""
    try:
        import ants
    except ImportError:
        print("  antspyx is not installed: skipping ANTs SyN (pip install antspyx)", flush=True)
        return None
    import SimpleITK as sitk

    from DiffDefAtlasLib.imageio import write_image
    from DiffDefAtlasLib.spatial import displacement_from_sitk
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_image(template.t1, Path(tmp) / "fixed.nii.gz")
        write_image(image, Path(tmp) / "moving.nii.gz")
        fixed = ants.image_read(str(Path(tmp) / "fixed.nii.gz"))
        moving = ants.image_read(str(Path(tmp) / "moving.nii.gz"))
        start = time.perf_counter()
        result = ants.registration(fixed, moving, type_of_transform="SyN")
        _ = time.perf_counter() - start
        # Compose warp + affine into one displacement field on the fixed grid (ITK convention, LPS).
        composite = ants.apply_transforms(fixed, moving, result["fwdtransforms"], compose=str(Path(tmp) / "composite"))
        field = sitk.ReadImage(composite, sitk.sitkVectorFloat64)
        u, _ = displacement_from_sitk(field)
    return u


def oasis_2d(models: dict[str, Path | None], refine: int, limit: int | None, json_path: Path | None = None) -> dict:
    """2D check on the OASIS validation slices against the 2D template: NCC, folding, std log det J and tissue Dice per model.

    The OASIS slices come without segmentations, so Dice is over tissue classes from 3-class k-means of each image's own
    intensities (:func:`DiffDefAtlasLib.register.report.kmeans_tissue_labels`; CSF/GM/WM, mean of the three): the
    subject's classes carried into template space by each model's transform (nearest) against the template's classes,
    inside the template mask (intensity > 0.1), as the 3D benchmark does with real labels. "affine only" is the same
    Dice with the affine part of the transform alone.

    The MI affine is computed once per slice and reused for every model (it varies slightly from run to run), so the
    models differ only in their deformable step.
    """
    import torch

    from DiffDefAtlasLib.metrics import dice_per_class
    from DiffDefAtlasLib.data.oasis import load_oasis_slice, oasis_cohort
    from DiffDefAtlasLib.imageio import read_image
    from DiffDefAtlasLib.imaging import head
    from DiffDefAtlasLib.register import load_registration_network, register_to_atlas
    from DiffDefAtlasLib.imaging.resampling import affine_displacement
    from DiffDefAtlasLib.register.report import kmeans_tissue_labels
    from DiffDefAtlasLib.register.weights import model_folder
    from DiffDefAtlasLib.spatial import warp_labels

    template = read_image(model_folder(2) / "template2d.nii.gz")
    template_mask = np.asarray(template.array) > 0.1
    template_labels = kmeans_tissue_labels(template.array, template_mask)
    ids = [s.subject_id for s in oasis_cohort("axial", "validation").subjects][:limit]
    slices = {sid: load_oasis_slice(sid) for sid in ids}
    labels = {sid: torch.as_tensor(kmeans_tissue_labels(v.array, np.asarray(v.array) > 0.05).astype(np.int64))[None, None] for sid, v in slices.items()}

    def dice(sid: str, displacement: torch.Tensor) -> float:
        warped = warp_labels(labels[sid], displacement, template.grid, slices[sid].grid)[0, 0].numpy()
        scores = dice_per_class(np.where(template_mask, warped, 0), template_labels, classes=(1, 2, 3))
        return float(np.nanmean(list(scores.values())))

    original_affine, affines, current = head.affine_register, {}, [None]

    def shared_affine(*args, **kwargs):
        if current[0] not in affines:
            affines[current[0]] = original_affine(*args, **kwargs)
        return affines[current[0]]

    print("| 2D model (OASIS validation) | slices | Dice affine only | Dice registered | NCC affine | NCC registered | folding % | std log detJ | mean λ (grid / brain) | median deformable s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    table = {}
    for name, folder in models.items():
        network = load_registration_network(2, device="cpu", folder=folder)
        rows = []
        for sid in ids:
            current[0] = sid
            head.affine_register = shared_affine
            try:
                result = register_to_atlas(slices[sid], template, network=network, refine=refine, device="cpu")
            finally:
                head.affine_register = original_affine
            s = result.summary
            seconds = s["timings_s"]["deformable_s"] + s["timings_s"].get("refine_s", 0.0)  # the affine is shared, so not timed
            affine_only = affine_displacement(result.affine, template.grid, torch.float64)
            lam = np.asarray(result.lambda_map.array) if result.lambda_map is not None else None
            lam_brain = float(lam[template_mask].mean()) if lam is not None and lam.shape == template_mask.shape else float("nan")
            rows.append((s["similarity"]["ncc_brain_affine_only_working_grid"], s["similarity"]["ncc_brain"], s["folding_ratio"],
                         s["log_detj_std_brain"], seconds, s["lambda"]["mean"], dice(sid, affine_only),
                         dice(sid, torch.as_tensor(result.displacement)[None]), lam_brain))
        r = np.array(rows)
        table[name] = {
            "slices": len(rows), "dice_affine": float(r[:, 6].mean()), "dice_registered": float(r[:, 7].mean()),
            "dice_registered_sd": float(r[:, 7].std(ddof=1)) if len(rows) > 1 else 0.0,
            "ncc_brain_affine": float(r[:, 0].mean()), "ncc_brain_registered": float(r[:, 1].mean()),
            "folding_percent": float(100 * r[:, 2].mean()), "log_detj_std": float(r[:, 3].mean()), "lambda_mean": float(r[:, 5].mean()),
            "lambda_mean_brain": float(r[:, 8].mean()),
            "median_s": float(np.median(r[:, 4])), "per_slice_dice": [round(float(v), 4) for v in r[:, 7]],
        }
        t = table[name]
        print(f"| {name} | {len(rows)} | {t['dice_affine']:.3f} | {t['dice_registered']:.3f} | {t['ncc_brain_affine']:.3f} | {t['ncc_brain_registered']:.3f} | "
              f"{t['folding_percent']:.4f} | {t['log_detj_std']:.3f} | {t['lambda_mean']:.3f} / {t['lambda_mean_brain']:.3f} | {t['median_s']:.2f} |", flush=True)
    names = list(table)
    for other in names[1:]:
        diff = np.array(table[names[0]]["per_slice_dice"]) - np.array(table[other]["per_slice_dice"])
        table[other]["dice_difference_to_first"] = {"mean": float(diff.mean()), "sd": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
                                                   "first_higher": int((diff > 0).sum())}
        print(f"paired Dice difference ({names[0]} - {other}): mean {diff.mean():+.4f}, SD {diff.std(ddof=1) if len(diff) > 1 else 0.0:.4f}, "
              f"{int((diff > 0).sum())}/{len(diff)} slices higher")
    if json_path is not None:
        json_path.write_text(json.dumps(table, indent=2))
    return table


def lambda_figure_for_subject(subject: str, path: Path, resolution: str = "2mm", refine: int = 0) -> dict:
    """Register a held-out labelled subject (``bert`` or ``voxelmorph_test``) to the MNI template with the bundled 3D
    network and draw the fixed template, the warped scan, λ(x) and log det J (:func:`DiffDefAtlasLib.register.report.lambda_figure`)."""
    from DiffDefAtlasLib.data.label_datasets import list_label_maps, load_label_map
    from DiffDefAtlasLib.register import register_to_atlas
    from DiffDefAtlasLib.register.report import lambda_figure
    from DiffDefAtlasLib.template import load_template

    found = [info for info in list_label_maps() if info.name == subject]
    if not found:
        raise SystemExit(f"unknown subject {subject!r}: expected one of {', '.join(i.name for i in list_label_maps())}")
    image = load_label_map(found[0], with_image=True).image
    if image is None:
        raise SystemExit(f"{subject} has no T1 image (use bert or voxelmorph_test)")
    template = load_template(resolution)
    result = register_to_atlas(image, template.t1, atlas_mask=template.brain_mask, refine=refine, device="cpu")
    s = result.summary
    title = (f"{subject} -> MNI {resolution}, bundled 3D network{f' + {refine} refinement steps' if refine else ''}: "
             f"mean lambda {s['lambda']['mean']:.2f}, folding {100 * s['folding_ratio']:.3f} %, std log detJ {s['log_detj_std_brain']:.3f}")
    lambda_figure(template.t1, result.warped, result.lambda_map, result.jacobian, path, mask=template.brain_mask, title=title)
    print(title)
    lam, brain = np.asarray(result.lambda_map.array), np.asarray(template.brain_mask.array) > 0
    if lam.shape == brain.shape:  # the 2 mm template grid is the working grid
        labels = np.asarray(template.labels.array)
        lowest = np.indices(brain.shape)[2] < np.percentile(np.argwhere(brain)[:, 2], 25)
        parts = {"brain mask": brain, "outside": ~brain, "lowest quarter of the brain (axial)": brain & lowest,
                 "rest of the brain": brain & ~lowest, **{f"template {n}": labels == c for c, n in ((1, "CSF"), (2, "GM"), (3, "WM"), (4, "ventricles"))}}
        print("mean λ: " + ", ".join(f"{n} {lam[m].mean():.3f}" for n, m in parts.items() if m.any()))
    print(f"wrote {path}")
    return s


def _model_label(folder: Path) -> str:
    """A row name for a 2D model folder: "uniform λ = <value>" for the ablation, else the folder name."""
    try:
        network = json.loads((folder / "model_card.json").read_text())["network"]
    except (OSError, KeyError, ValueError):
        return folder.name
    return f"uniform λ = {network['lambda_init']:g}" if not network.get("spatially_varying", True) else folder.name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", choices=("2mm", "1mm"), default="2mm", help="template grid (fixed image)")
    parser.add_argument("--pairs", type=int, default=None, help="use only the first N held-out subjects")
    parser.add_argument("--refine", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--network", type=Path, help="3D model folder for the learned methods (default: the bundled registration3d)")
    parser.add_argument("--no-warmup", action="store_true", help="time the first pair cold (imports and weight loading included)")
    parser.add_argument("--oasis2d", action="store_true", help="run the 2D OASIS check instead")
    parser.add_argument("--compare-2d", type=Path, action="append", default=[], help="another 2D model folder (e.g. the uniform-λ ablation)")
    parser.add_argument("--lambda-figure", type=Path, help="instead: register --lambda-subject to the template with the bundled 3D "
                        "network and write the λ-map figure (PNG) here")
    parser.add_argument("--lambda-subject", default="bert", help="held-out subject with a T1 for --lambda-figure: bert or voxelmorph_test")
    args = parser.parse_args(argv)
    if args.lambda_figure is not None:
        _threads(args.threads)
        lambda_figure_for_subject(args.lambda_subject, args.lambda_figure, args.resolution, args.refine if "refine" in args.methods else 0)
        return 0
    if args.oasis2d:
        _threads(args.threads)
        models = {"bundled 2D (spatially varying λ)": None, **{_model_label(p): p for p in args.compare_2d}}
        oasis_2d(models, args.refine if "refine" in args.methods else 0, args.pairs, args.json)
        return 0
    methods = [m for m in args.methods.split(",") if m]
    context = multiprocessing.get_context("spawn")
    rows = {}
    for method in methods:
        print(f"running {method} ...", flush=True)
        queue = context.Queue()
        process = context.Process(target=run_method, args=(method, args.resolution, args.pairs, args.refine, args.threads, queue, not args.no_warmup,
                                                                   None if args.network is None else str(args.network)))
        process.start()
        results, rss, warmup_s = queue.get()
        process.join()
        if results:
            rows[method] = {
                "pairs": len(results),
                "dice": float(np.mean([r["dice"] for r in results])),
                "folding": float(np.mean([r["folding"] for r in results])),
                "log_detj_std": float(np.mean([r["log_detj_std"] for r in results])),
                "ncc": float(np.mean([r["ncc"] for r in results])),
                "median_s": float(np.median([r["seconds"] for r in results])),
                "peak_rss_mb": rss,
                "warmup_s": warmup_s,
                "per_pair": results,
            }
    ants = rows.get("ants-syn", {}).get("median_s")
    print(f"\nRegistration to MNI ICBM152 2009a at {args.resolution}, {args.threads} CPU threads, held-out pairs")
    print("| method | pairs | mean Dice | folding % (detJ<=0) | std log detJ | NCC (brain) | median CPU s | x ANTs SyN | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, row in rows.items():
        ratio = f"{ants / row['median_s']:.1f}x faster" if ants else "n/a"
        print(f"| {method} | {row['pairs']} | {row['dice']:.3f} | {100 * row['folding']:.4f} | {row['log_detj_std']:.3f} | {row['ncc']:.3f} | "
              f"{row['median_s']:.2f} | {ratio} | {row['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
