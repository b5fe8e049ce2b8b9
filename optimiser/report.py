"""Outputs of an optimisation: plan.json, report.json / report.txt, trials.csv, pareto.csv / pareto.png.

The report gives the default and the chosen plan's predicted latency and memory, measured figures when
the plans were run, the accuracy drop (estimated, and measured when a drop was allowed), the speedup
over the default plan, whether the budgets were met (and, when no plan meets them, that the plan
given is the closest one found), the validations made during the search and the Pareto front
(latency x memory, or the objectives searched when there are several) with its hypervolume.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from optimiser.pareto import hypervolume, pareto_front, plot_front, write_front_csv

__all__ = ["write_outputs", "summary_lines"]

_COLUMNS = {"latency": ("latency_ms", "latency (ms)", 1.0), "memory": ("peak_mem_mb", "peak memory (MB)", 1e-6),
            "accuracy": ("accuracy_drop_pct", "accuracy drop (points)", 1.0)}


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return _finite(float(o)) if isinstance(o, np.floating) else int(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _cost_values(c: Any) -> dict[str, float]:
    return {"latency": c.latency_ms, "memory": c.peak_mem_bytes, "accuracy": c.accuracy_drop_pct}


def write_outputs(outcome: Any, outdir: Path, strategy: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """Write every output file; return ({kind: path}, the report as a dict)."""
    res = outcome.result
    space = outcome.space
    graph = space.graph
    outdir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    plan = outcome.chosen_plan or res.best_plan
    files["plan"] = str(plan.save(outdir / "plan.json"))
    if outcome.chosen_plan is not None:
        files["plan_predicted"] = str(res.best_plan.save(outdir / "plan_predicted.json"))

    # trials
    path = outdir / "trials.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["trial", "latency_ms", "peak_mem_mb", "accuracy_drop_pct", "feasible", "violation"])
        for k, c in enumerate(res.archive_costs):
            w.writerow([k, f"{c.latency_ms:.6g}", f"{c.peak_mem_bytes / 1e6:.6g}", f"{c.accuracy_drop_pct:.6g}",
                        int(c.feasible), f"{c.violation:.6g}"])
    files["trials"] = str(path)

    # Pareto front
    names = list(res.problem.objective.names) if len(res.problem.objective.names) > 1 else ["latency", "memory"]
    costs = list(res.archive_costs) + [res.default_costs]  # the default plan is a point of the front too
    feasible = [k for k, c in enumerate(costs) if c.feasible] or list(range(len(costs)))
    pts = np.array([[_cost_values(costs[k])[n] * _COLUMNS[n][2] for n in names] for k in feasible])
    front_rows, hv = [], 0.0
    if len(pts):
        order = pareto_front(pts)
        hv = hypervolume(pts[order])
        for j in order:
            k = feasible[j]
            row = {"trial": k if k < len(res.archive_costs) else "default"}
            row.update({_COLUMNS[n][0]: float(pts[j, m]) for m, n in enumerate(names)})
            row["feasible"] = int(costs[k].feasible)
            front_rows.append(row)
        files["pareto_csv"] = str(write_front_csv(outdir / "pareto.csv", front_rows))
        best = np.array([_cost_values(res.best_costs)[n] * _COLUMNS[n][2] for n in names])
        files["pareto_png"] = str(plot_front(outdir / "pareto.png", pts[:, :2], pts[order][:, :2],
                                             [_COLUMNS[n][1] for n in names[:2]],
                                             title=f"{graph.name} on {outcome.device.name}", highlight=best[:2]))

    d, b = res.default_costs, res.best_costs
    c = res.problem.objective.constraints
    report: dict[str, Any] = {
        "model": graph.name, "graph_id": space.graph_id, "device": outcome.device.name,
        "predictor": outcome.predictor_name, "strategy": res.strategy, "trials": res.trials,
        "seconds": round(res.seconds, 3), "interrupted": res.interrupted,
        "objectives": list(res.problem.objective.names), "budgets": c.as_dict(),
        "space": space.describe(), "accuracy_model": outcome.accuracy_note,
        "default": {"predicted_latency_ms": d.latency_ms, "predicted_peak_mem_bytes": d.peak_mem_bytes},
        "best": {"predicted_latency_ms": b.latency_ms, "predicted_peak_mem_bytes": b.peak_mem_bytes,
                 "estimated_accuracy_drop_pct": b.accuracy_drop_pct, "feasible": b.feasible,
                 "violation": b.violation},
        "speedup_predicted": d.latency_ms / b.latency_ms if b.latency_ms > 0 else None,
        "memory_ratio_predicted": b.peak_mem_bytes / d.peak_mem_bytes if d.peak_mem_bytes > 0 else None,
        "validations": [v.as_dict() for v in res.validations],
        "calibration": res.calibration.as_dict() if res.calibration is not None else None,
        "pareto": {"objectives": names, "points": len(front_rows), "hypervolume": hv},
        "notes": list(res.notes), "files": files,
    }
    if outcome.chosen_note:
        report["notes"].append(outcome.chosen_note)
        report["chosen"] = "measured"
    if getattr(outcome, "measure_note", None):
        report["notes"].append(outcome.measure_note)
    refinement = getattr(outcome, "refinement", None)
    if refinement is not None:
        report["notes"].append(refinement.note)
        report["refinement"] = refinement.as_dict()
        if refinement.plan is not None:
            report["chosen"] = "measured"
    if not b.feasible:
        report["notes"].append("no plan found meets the budgets; the plan written is the closest one found "
                               f"(total relative violation {b.violation:.3g})")
    if res.final_measured is not None and res.final_measured.peak_mem_bytes is not None:
        report["best"]["measured_peak_mem_bytes"] = res.final_measured.peak_mem_bytes
    measured_best = getattr(outcome, "measured_best", None) or res.final_measured
    if measured_best is not None:
        report["best"]["measured_latency_ms"] = measured_best.latency_ms
    if outcome.measured_default is not None:
        report["default"]["measured_latency_ms"] = outcome.measured_default.latency_ms
        if measured_best is not None:
            report["speedup_measured"] = outcome.measured_default.latency_ms / measured_best.latency_ms
            if outcome.chosen_plan is not None and outcome.chosen_measured_ms:
                report["chosen_measured_latency_ms"] = outcome.chosen_measured_ms
                report["speedup_measured_chosen"] = outcome.measured_default.latency_ms / outcome.chosen_measured_ms
    if outcome.measured_accuracy is not None:
        report["best"]["measured_accuracy"] = outcome.measured_accuracy.as_dict()
    info = getattr(strategy, "result", None)
    if info is not None and hasattr(info, "info"):
        report["exact"] = {k: v for k, v in info.info.items() if k != "memory_sweeps"} | \
            {"memory_sweeps": info.info.get("memory_sweeps", [])}
    report = json.loads(json.dumps(report, default=_jsonable))
    files["report"] = str(outdir / "report.json")
    files["report_txt"] = str(outdir / "report.txt")
    report["files"] = files
    (outdir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (outdir / "report.txt").write_text("\n".join(summary_lines(report)) + "\n")
    return files, report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A human-readable summary of a report dict."""
    d, b = report["default"], report["best"]
    lines = [f"{report['model']} on {report['device']}: {report['strategy']} search, {report['trials']} trials in "
             f"{report['seconds']:.1f} s (predictor {report['predictor']})"]
    if report.get("interrupted"):
        lines.append("search interrupted: the best plan so far is written")
    lines.append(f"  default plan : predicted {d['predicted_latency_ms']:.4g} ms, "
                 f"{d['predicted_peak_mem_bytes'] / 1e6:.4g} MB"
                 + (f"; measured {d['measured_latency_ms']:.4g} ms" if "measured_latency_ms" in d else ""))
    lines.append(f"  chosen plan  : predicted {b['predicted_latency_ms']:.4g} ms, "
                 f"{b['predicted_peak_mem_bytes'] / 1e6:.4g} MB, accuracy drop {b['estimated_accuracy_drop_pct']:.3g}"
                 " pt (est.)"
                 + (f"; measured {b['measured_latency_ms']:.4g} ms" if "measured_latency_ms" in b else ""))
    if "measured_accuracy" in b:
        lines.append(f"  measured accuracy drop of the chosen plan: {b['measured_accuracy']['drop_pct']:.3g} pt")
    sp = report.get("speedup_predicted")
    sm = report.get("speedup_measured")
    lines.append(f"  speedup over default: predicted {sp:.3g}x" + (f", measured {sm:.3g}x" if sm else ""))
    if report.get("chosen") == "measured":
        lines.append(f"  kept the measured-fastest plan: {report['chosen_measured_latency_ms']:.4g} ms, "
                     f"{report['speedup_measured_chosen']:.3g}x the default")
    budgets = report["budgets"]
    shown = []
    if budgets.get("latency_ms") is not None:
        shown.append(f"latency <= {budgets['latency_ms']:g} ms")
    if budgets.get("memory_bytes") is not None:
        shown.append(f"peak memory <= {budgets['memory_bytes'] / 1e6:g} MB")
    if budgets.get("accuracy_drop_pct") is not None:
        shown.append(f"accuracy drop <= {budgets['accuracy_drop_pct']:g} pt")
    lines.append(f"  budgets {'met' if b['feasible'] else 'NOT met'}: {', '.join(shown)}" if shown else "  no budgets")
    for note in report.get("notes", []):
        lines.append(f"  note: {note}")
    lines.append(f"  Pareto front ({' x '.join(report['pareto']['objectives'])}): {report['pareto']['points']} plans, "
                 f"hypervolume {report['pareto']['hypervolume']:.4g}")
    lines.append(f"  wrote {report['files'].get('plan')}, {report['files'].get('report')}")
    return lines
