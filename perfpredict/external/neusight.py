"""NeuSight's per-operator GPU latencies (Lee et al., ASPLOS 2025) and its GPU descriptors as DeviceSpecs.

Operators: ``conv`` (``nn.Conv2d(bias=False)`` on square inputs: B, Input_Channel, Output_Channel,
Kernel_Szie [sic], Input_Size, Stride, Padding), ``linear`` (B, M, N, K: input B x M x K times a K x N
weight), ``relu`` and ``add`` (B x H fp32 tensors). Latency in ms, fp32, PyTorch 2.1, CUDA events.

Files are found under any folder given (default: the NeuSight copy under :func:`external_root`):
``**/<op>/**/<GPU name>.csv`` for measurements and ``**/device_configs/*.json`` for descriptors, so a
folder with other GPUs (the reserved Tesla T4) is read the same way. :func:`gpu_specs` converts the
descriptors with :func:`perfpredict.devices.from_neusight` (AMD files give ``SingleFLOPsMM``, used as
the fp32 peak). :func:`op_work` gives each row's FLOPs and minimum DRAM traffic, the inputs of a roofline.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from perfpredict.devices import DeviceSpec, from_neusight
from perfpredict.errors import BoardError, DatasetError
from perfpredict.external import external_dataset

OPERATORS = ("conv", "linear", "relu", "add")
"""Operators NeuSight measured (and this copy holds)."""

SHAPE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "conv": ("B", "Input_Channel", "Output_Channel", "Kernel_Szie", "Input_Size", "Stride", "Padding"),
    "linear": ("B", "M", "N", "K"),
    "relu": ("B", "H"),
    "add": ("B", "H"),
}
"""Shape columns of each operator's CSV, in file order."""

FLOAT_BYTES = 4


@dataclass(frozen=True)
class OpTable:
    """Measurements of one operator: one row per (GPU, shape)."""

    op: str
    gpu: np.ndarray
    latency_ms: np.ndarray
    shape: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.latency_ms)

    @property
    def gpus(self) -> tuple[str, ...]:
        """GPU names present, sorted."""
        return tuple(sorted(set(self.gpu.tolist())))

    def rows(self, mask: np.ndarray) -> "OpTable":
        """The rows selected by a boolean mask or index array."""
        return OpTable(self.op, self.gpu[mask], self.latency_ms[mask], {k: v[mask] for k, v in self.shape.items()})

    def for_gpus(self, gpus: Sequence[str]) -> "OpTable":
        """Rows of the named GPUs; a DatasetError names the GPUs available."""
        missing = [g for g in gpus if g not in self.gpus]
        if missing:
            raise DatasetError(f"GPU(s) {', '.join(missing)} have no NeuSight {self.op} measurements here; "
                               f"available: {', '.join(self.gpus)}")
        return self.rows(np.isin(self.gpu, list(gpus)))


def _roots(data: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if data is None:
        return [external_dataset("NeuSight")]
    items = [data] if isinstance(data, (str, Path)) else list(data)
    roots = [Path(p).expanduser() for p in items]
    for r in roots:
        if not r.is_dir():
            raise DatasetError(f"NeuSight data folder {r} does not exist")
    return roots


def _check_op(op: str) -> None:
    if op not in OPERATORS:
        raise DatasetError(f"unknown NeuSight operator '{op}'; accepted: {', '.join(OPERATORS)}")


def op_files(op: str, data: str | Path | Sequence[str | Path] | None = None) -> dict[str, Path]:
    """GPU name (file stem) -> measurement CSV of ``op``; the first folder wins on duplicates."""
    _check_op(op)
    found: dict[str, Path] = {}
    for root in _roots(data):
        for p in sorted(root.glob(f"**/{op}/**/*.csv")):
            found.setdefault(p.stem, p)
    return found


def list_gpus(op: str = "conv", data: str | Path | Sequence[str | Path] | None = None) -> list[str]:
    """GPUs with measurements of ``op``."""
    return sorted(op_files(op, data))


def load_op(op: str, data: str | Path | Sequence[str | Path] | None = None,
            gpus: Sequence[str] | None = None) -> OpTable:
    """Load the measurements of ``op`` for ``gpus`` (default: all found). Rows with a missing or
    non-positive latency or shape are dropped."""
    files = op_files(op, data)
    if not files:
        raise DatasetError(f"no NeuSight {op} measurements found (expected **/{op}/**/<GPU>.csv)")
    wanted = list(gpus) if gpus is not None else sorted(files)
    missing = [g for g in wanted if g not in files]
    if missing:
        raise DatasetError(f"GPU(s) {', '.join(missing)} have no NeuSight {op} measurements; available: "
                           f"{', '.join(sorted(files))}")
    cols = SHAPE_COLUMNS[op]
    gpu_col: list[str] = []
    lat: list[float] = []
    shape: dict[str, list[int]] = {c: [] for c in cols}
    for g in wanted:
        path = files[g]
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            absent = [c for c in ("Latency",) + cols if c not in (reader.fieldnames or [])]
            if absent:
                raise DatasetError(f"{path}: missing column(s) {', '.join(absent)}")
            for row in reader:
                try:
                    ms = float(row["Latency"])
                    vals = [int(float(row[c])) for c in cols]
                except (TypeError, ValueError):
                    continue
                if not np.isfinite(ms) or ms <= 0 or any(v < 0 for v in vals):
                    continue
                gpu_col.append(row.get("Device") or g)
                lat.append(ms)
                for c, v in zip(cols, vals):
                    shape[c].append(v)
    return OpTable(op, np.array(gpu_col, dtype=object), np.array(lat, np.float64),
                   {c: np.array(v, np.int64) for c, v in shape.items()})


def op_work(table: OpTable) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, bytes) of each row: 2 x multiply-adds (elementwise: 1 per output), and the minimum DRAM
    traffic (inputs, weights and outputs once, fp32)."""
    s = table.shape
    if table.op == "conv":
        b, ci, co, k, h, st, pd = (s[c].astype(np.float64) for c in SHAPE_COLUMNS["conv"])
        ho = np.floor((h + 2 * pd - k) / np.maximum(st, 1)) + 1
        ho = np.maximum(ho, 1)
        flops = 2 * b * co * ho * ho * ci * k * k
        nbytes = FLOAT_BYTES * (b * ci * h * h + co * ci * k * k + b * co * ho * ho)
    elif table.op == "linear":
        b, m, n, k = (s[c].astype(np.float64) for c in SHAPE_COLUMNS["linear"])
        flops = 2 * b * m * n * k
        nbytes = FLOAT_BYTES * (b * m * k + k * n + b * m * n)
    else:
        b, h = (s[c].astype(np.float64) for c in SHAPE_COLUMNS[table.op])
        flops = b * h
        nbytes = FLOAT_BYTES * b * h * (3 if table.op == "add" else 2)
    return flops, nbytes


def gpu_specs(data: str | Path | Sequence[str | Path] | None = None) -> dict[str, DeviceSpec]:
    """Every GPU descriptor found, as DeviceSpecs keyed by the GPU name used in the measurement files."""
    out: dict[str, DeviceSpec] = {}
    for root in _roots(data):
        for p in sorted(root.glob("**/device_configs/*.json")):
            try:
                d = json.loads(p.read_text())
            except (json.JSONDecodeError, OSError) as exc:
                raise DatasetError(f"{p}: not a readable JSON GPU descriptor ({type(exc).__name__})") from None
            if not isinstance(d, dict) or "Device" not in d or d["Device"] in out:
                continue
            if "SingleFLOPs" not in d and "SingleFLOPsMM" in d:
                d = {**{k: v for k, v in d.items() if not k.startswith("SingleFLOPs")}, "SingleFLOPs": d["SingleFLOPsMM"]}
            try:
                out[d["Device"]] = from_neusight(d, source=f"NeuSight device_configs ({p.name})")
            except BoardError as exc:
                raise DatasetError(f"{p}: {exc}") from None
    return out


def gpu_spec(name: str, data: str | Path | Sequence[str | Path] | None = None) -> DeviceSpec:
    """The DeviceSpec of GPU ``name``; a DatasetError names the GPUs with descriptors."""
    specs = gpu_specs(data)
    if name not in specs:
        raise DatasetError(f"no NeuSight descriptor for GPU '{name}'; available: {', '.join(sorted(specs))}")
    return specs[name]


def resolve_gpus(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """The GPUs of ``available`` that ``names`` mean: each a GPU's full name or a family (``A100``: every variant);
    a DatasetError names what is available."""
    out: list[str] = []
    for n in names:
        hits = [n] if n in available else [g for g in available if gpu_family(g) == n]
        if not hits:
            raise DatasetError(f"no GPU '{n}' in the measurements; available: {', '.join(available)} (or a family: "
                               f"{', '.join(sorted({gpu_family(g) for g in available}))})")
        out += [h for h in hits if h not in out]
    return out


def gpu_family(name: str) -> str:
    """The GPU model without memory size / form factor (``NVIDIA A100 80GB PCIe`` -> ``A100``), used to hold
    out every variant of one GPU together."""
    m = re.search(r"\b([A-Z]{1,2}\d{1,3})\b", name.replace("-", " "))
    return m.group(1) if m else name


# ------------------------------------------------------------------------------------------ transfer


def _out_elems(table: OpTable) -> np.ndarray:
    s = table.shape
    if table.op == "conv":
        ho = np.maximum(np.floor((s["Input_Size"] + 2 * s["Padding"] - s["Kernel_Szie"]) /
                                 np.maximum(s["Stride"], 1)) + 1, 1)
        return (s["B"] * s["Output_Channel"] * ho * ho).astype(np.float64)
    if table.op == "linear":
        return (s["B"] * s["M"] * s["N"]).astype(np.float64)
    return (s["B"] * s["H"]).astype(np.float64)


def op_features(table: OpTable, specs: Mapping[str, DeviceSpec], as_gpu: str | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Device-relative features of each row and its roofline time (ms), on its own GPU or on ``as_gpu``.

    Features (logs): compute time and memory time at the GPU's peak (FLOPs / fp32 peak, bytes / bandwidth),
    their ratio (compute- vs memory-bound), roofline time, output elements per CUDA core and per SM
    (occupancy / waves), bytes per L2 size; plus the op's own shape (log of each shape column). No raw
    device identity enters, so a regressor on them transfers through the spec-sheet figures.
    """
    names = [as_gpu] * len(table) if as_gpu else table.gpu.tolist()
    missing = sorted({g for g in names if g not in specs})
    if missing:
        raise DatasetError(f"no GPU descriptor for {', '.join(missing)}; descriptors: {', '.join(sorted(specs))}")
    need = ("gpu_tflops_fp32", "gpu_mem_bandwidth_gbs", "gpu_sm_count", "gpu_cores_per_sm", "gpu_l2_mb")
    for g in sorted(set(names)):
        absent = [k for k in need if getattr(specs[g], k) is None]
        if absent:
            raise DatasetError(f"GPU '{g}' descriptor lacks {', '.join(absent)} (needed: {', '.join(need)})")
    dev = np.array([[specs[g].gpu_tflops_fp32 * 1e12, specs[g].gpu_mem_bandwidth_gbs * 1e9,
                     specs[g].gpu_sm_count * specs[g].gpu_cores_per_sm, specs[g].gpu_sm_count,
                     specs[g].gpu_l2_mb * 1e6] for g in names], np.float64)
    flops, nbytes = op_work(table)
    t_c = flops / dev[:, 0] * 1e3
    t_m = nbytes / dev[:, 1] * 1e3
    roof = np.maximum(t_c, t_m)
    out = _out_elems(table)
    shape = np.stack([np.log1p(v.astype(np.float64)) for v in table.shape.values()], axis=1)
    x = np.c_[np.log(t_c), np.log(t_m), np.log(t_c / t_m), np.log(roof), np.log(out / dev[:, 2]),
              np.log(out / dev[:, 3]), np.log(nbytes / dev[:, 4]), shape]
    return x, roof


def evaluate_transfer(ops: Sequence[str] = OPERATORS, data: str | Path | Sequence[str | Path] | None = None,
                      gpus: Sequence[str] | None = None, shots: Sequence[int] = (0, 10), repeats: int = 1,
                      seed: int = 0, test_gpus: Sequence[str] | None = None) -> dict:
    """Leave-one-GPU-out transfer of per-operator latency, from the GPU descriptor alone and with shots.

    For each operator and held-out GPU family (all variants of one GPU together), a gradient-boosted model
    of log(latency / roofline time) on :func:`op_features` is trained on the other GPUs; the held-out
    GPU's predictions use only its descriptor (k = 0). With k shots - chosen by
    :func:`perfpredict.transfer.choose_shots` on the zero-shot predictions, as ``transfer --measure-on``
    would - a calibration (scale, log-linear, isotonic, or a mixture with the source GPUs' predictions
    for the same op) is chosen by leave-one-out CV and scored on the other rows. Metrics: MAPE, share
    within +-10%, Spearman rho. ``gpus`` keeps only those GPUs, ``test_gpus`` holds out only those (default:
    each family in turn); both take GPU names or families (:func:`resolve_gpus`).
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    from perfpredict.transfer import (CALIBRATORS, MixtureCalibrator, choose_shots, rank_sources, select_calibrator,
                                      transfer_metrics)

    specs = gpu_specs(data)
    if data is not None:  # descriptors of the copy too, where it is there, for GPUs the folders measure only
        try:
            specs = {**gpu_specs(None), **specs}
        except DatasetError:
            pass
    results: dict = {}
    for op in ops:
        table = load_op(op, data)
        if gpus is not None:
            table = table.for_gpus(resolve_gpus(gpus, table.gpus))
        fam = np.array([gpu_family(g) for g in table.gpu])
        families = sorted(set(fam))
        if len(families) < 2:
            raise DatasetError(f"{op}: leave-one-GPU-out needs at least 2 GPUs, have {', '.join(table.gpus)}")
        if test_gpus is not None:
            families = sorted({gpu_family(g) for g in resolve_gpus(test_gpus, table.gpus)})
        x, roof = op_features(table, specs)
        y = np.log(table.latency_ms)
        per_gpu = {}
        for hold in families:
            tr, te = fam != hold, fam == hold
            model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.08, random_state=seed)
            model.fit(x[tr], (y - np.log(roof))[tr])
            sub = table.rows(te)
            pred0 = np.exp(model.predict(x[te])) * roof[te]
            true = table.latency_ms[te]
            src_names = sorted({g for g in table.gpu[tr]})
            src_pred = []
            for g in src_names:
                xs, rs = op_features(sub, specs, as_gpu=g)
                src_pred.append(np.exp(model.predict(xs)) * rs)
            src = np.stack(src_pred, axis=1)
            row: dict = {"gpu": sorted(set(sub.gpu.tolist())), "rows": int(te.sum())}
            for k in shots:
                if k == 0:
                    m = transfer_metrics(pred0, true)
                    row["0"] = {"mape": m["mape"], "within_10": m["within_10"], "spearman": m["spearman"]}
                    continue
                agg, methods = [], {}
                for r in range(repeats):
                    pick = np.array(choose_shots(pred0, k, seed=seed + r))
                    rest = np.setdiff1d(np.arange(len(true)), pick)
                    ranked = rank_sources(true[pick], src[pick], src_names)
                    cols = [src_names.index(n) for n, _ in ranked[:2]]
                    xx = np.c_[pred0, src[:, cols]]
                    cands = {m: (CALIBRATORS[m], xx[:, :1]) for m in ("scale", "loglinear", "isotonic")}
                    cands["mixture"] = (MixtureCalibrator, xx)
                    sel = select_calibrator(true[pick], {a: (f, v[pick]) for a, (f, v) in cands.items()})
                    p = sel.calibrator.predict(cands[sel.method][1][rest])
                    m = transfer_metrics(p, true[rest])
                    agg.append([m["mape"], m["within_10"], m["spearman"]])
                    methods[sel.method] = methods.get(sel.method, 0) + 1
                mean = np.mean(np.array(agg), axis=0)
                row[str(k)] = {"mape": mean[0], "within_10": mean[1], "spearman": mean[2], "methods": methods}
            per_gpu[hold] = row
        summary = {str(k): {m: float(np.mean([per_gpu[g][str(k)][m] for g in per_gpu]))
                            for m in ("mape", "within_10", "spearman")} for k in shots}
        results[op] = {"per_gpu": per_gpu, "summary": summary}
    return {"ops": list(ops), "shots": list(shots), "results": results}


__all__ = ["OPERATORS", "SHAPE_COLUMNS", "OpTable", "op_files", "list_gpus", "load_op", "op_work", "gpu_specs",
           "gpu_spec", "gpu_family", "resolve_gpus", "op_features", "evaluate_transfer"]
