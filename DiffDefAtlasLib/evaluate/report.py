"""``metrics.csv`` and ``report.md`` of an evaluation: rows are methods, columns are metrics, mean ± sd over conditions.

Example:
    >>> from .records import EvaluationResult
    >>> r = EvaluationResult("demo", rows=[{"method": "a", "age": 1, "x": 1.0}, {"method": "a", "age": 2, "x": 3.0}], metric_names=["x"])
    >>> summary_table(r)["a"]["x"]
    (2.0, 1.4142135623730951, 2)
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from .records import EvaluationResult
from .metrics import trend_slope, trend_slope_interval

#: Metrics where higher is better (all others: lower is better, except the plain descriptive sizes).
HIGHER_IS_BETTER = {"dice_mean", "dice_ventricles", "sharpness"}
DESCRIPTIVE = {"ventricle_ml", "ventricle_size"}


def summary_table(result: EvaluationResult) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{method: {metric: (mean, sd, n)}}`` over the conditions (NaN values left out; sd with ddof 1)."""
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for method in dict.fromkeys(r["method"] for r in result.rows):
        rows = [r for r in result.rows if r["method"] == method]
        table[method] = {}
        for metric in result.metric_names:
            values = np.array([r.get(metric, math.nan) for r in rows], dtype=np.float64)
            values = values[np.isfinite(values)]
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            table[method][metric] = (float(values.mean()) if len(values) else math.nan, sd, int(len(values)))
    return table


def metrics_csv(result: EvaluationResult) -> str:
    """All rows as CSV text (one row per method and condition)."""
    columns: list[str] = []
    for row in result.rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def _format(mean: float, sd: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    digits = 4 if abs(mean) < 0.1 else 3
    return f"{mean:.{digits}g} ± {sd:.2g}"


def markdown_table(result: EvaluationResult, reference: str | None = "truth") -> str:
    """The methods x metrics table; the best method per metric (reference row excluded) is in bold."""
    table = summary_table(result)
    metrics = [m for m in result.metric_names if any(math.isfinite(table[k][m][0]) for k in table)]
    best: dict[str, float] = {}
    for metric in metrics:
        if metric in DESCRIPTIVE:
            continue
        values = [table[k][metric][0] for k in table if k != reference and math.isfinite(table[k][metric][0])]
        if values:
            best[metric] = max(values) if metric in HIGHER_IS_BETTER else min(values)
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for method, cells in table.items():
        row = []
        for metric in metrics:
            mean, sd, _ = cells[metric]
            text = _format(mean, sd)
            if method != reference and metric in best and math.isfinite(mean) and np.isclose(mean, best[metric], rtol=1e-9, atol=1e-12):
                text = f"**{text}**"
            row.append(text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def trend_table(result: EvaluationResult) -> str:
    """Ventricle size against age: least-squares slope per year of each method's atlases and of the data, per sex.

    The data row carries the slope's 95 % interval (normal approximation), so an atlas slope can be read as
    consistent with the data or not.
    """
    key = next((k for k in ("ventricle_ml", "ventricle_size") if k in result.metric_names), None)
    if key is None:
        return ""
    sexes = sorted({r["sex"] for r in result.rows if "sex" in r})
    lines = ["| ventricle slope per year | " + " | ".join(f"sex {s}" for s in sexes) + " |", "|---|" + "---|" * len(sexes)]
    for method in dict.fromkeys(r["method"] for r in result.rows):
        cells = []
        for sex in sexes:
            rows = [r for r in result.rows if r["method"] == method and r.get("sex") == sex]
            cells.append(f"{trend_slope([r['age'] for r in rows], [r[key] for r in rows]):.4g}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    data = result.data_points
    if data.get("age"):
        cells = []
        for sex in sexes:
            keep = [i for i, s in enumerate(data["sex"]) if s == sex]
            slope, low, high = trend_slope_interval([data["age"][i] for i in keep], [data["ventricle"][i] for i in keep])
            cells.append(f"{slope:.4g} (95% CI {low:.3g} to {high:.3g}; n={len(keep)})")
        lines.append("| data (subjects) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def data_points_csv(result: EvaluationResult) -> str:
    """The data behind the trend figure (age, sex, ventricle size per subject) as CSV text."""
    data = result.data_points
    lines = ["age,sex,ventricle"] + [f"{a:.6g},{s},{v:.6g}" for a, s, v in zip(data.get("age", []), data.get("sex", []), data.get("ventricle", []))]
    return "\n".join(lines) + "\n"


def report_markdown(result: EvaluationResult, command: str | None = None, figures: list[str] | None = None) -> str:
    """The whole ``report.md``: settings, the table, units, methods, figures, notes."""
    n_conditions = len({tuple((k, v) for k, v in r.items() if k in ("age", "sex")) for r in result.rows})
    parts = [f"# Evaluation: {result.name}", ""]
    if command:
        parts += ["Reproduce with:", "", "```", command, "```", ""]
    parts += [f"Mean ± sd over {n_conditions} conditions; bold = best non-reference method per metric. Run time {result.seconds:.0f} s.", ""]
    parts += [markdown_table(result), ""]
    trends = trend_table(result)
    if trends:
        units = result.data_points.get("units") or ("mL" if "ventricle_ml" in result.metric_names else "mm^2 (2D) or mL (3D)")
        parts += [f"Ventricle size against age ({units} per year):", "", trends, ""]
    parts += ["Units: " + "; ".join(f"{k}: {v}" for k, v in result.units.items() if v), ""]
    parts += ["Methods:", ""] + [f"- **{k}**: {v}" for k, v in result.methods.items()] + [""]
    if result.notes:
        parts += ["Notes:", ""] + [f"- {n}" for n in result.notes] + [""]
    if figures:
        parts += ["Figures:", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures] + [""]
    return "\n".join(parts)


def write_report(result: EvaluationResult, out: str | Path, command: str | None = None, figures: list[str] | None = None) -> dict[str, Path]:
    """Write ``metrics.csv`` and ``report.md`` into ``out``; returns their paths."""
    out = Path(out)
    paths = {"metrics": out / "metrics.csv", "report": out / "report.md"}
    write_text_atomic(paths["metrics"], metrics_csv(result))
    write_text_atomic(paths["report"], report_markdown(result, command, figures))
    if result.data_points.get("age"):
        paths["data"] = out / "data_points.csv"
        write_text_atomic(paths["data"], data_points_csv(result))
    return paths


def summary_dict(result: EvaluationResult) -> dict[str, Any]:
    """The summary table as plain JSON-ready data."""
    return {m: {k: {"mean": v[0], "sd": v[1], "n": v[2]} for k, v in cells.items()} for m, cells in summary_table(result).items()}
