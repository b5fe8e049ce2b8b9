"""Measurements on the target device: the CSV a transfer reads and writes, normalised by the beacon timed beside
them."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from perfpredict.errors import TransferError


@dataclass(frozen=True)
class Measurement:
    """One measured workload on the target device: a model (zoo name or ONNX path), a plan (JSON path or
    None = default plan) and its latency; ``beacon_ms``, when it was timed beside the beacon workload
    (:mod:`perfpredict.beacon`, as ``--measure-on local`` times its shots), the beacon's median in the same rounds."""

    model: str
    plan: str | None
    latency_ms: float
    beacon_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d: dict[str, Any] = {"model": self.model, "plan": self.plan, "latency_ms": self.latency_ms}
        if self.beacon_ms is not None:
            d["beacon_ms"] = self.beacon_ms
        return d


def beacon_normalised(measurements: Sequence[Measurement]) -> list[Measurement]:
    """``measurements`` with each latency timed beside the beacon scaled to the machine's typical speed over them:
    ``latency_ms * reference / beacon_ms``, the reference the median beacon of those measurements (the store's
    ``"beacon"`` latency target, :mod:`perfpredict.beacon`). Shots measured one after another on a machine whose
    speed drifts (a shared VM) then disagree by the drift no more; measurements without a beacon stay as they are."""
    from perfpredict.beacon import normalised_ms

    beacons = [m.beacon_ms for m in measurements if m.beacon_ms]
    if not beacons:
        return list(measurements)
    reference = float(np.median(beacons))
    return [replace(m, latency_ms=normalised_ms(m.latency_ms, m.beacon_ms, reference)) if m.beacon_ms else m
            for m in measurements]


def read_measurements(path: str | Path) -> list[Measurement]:
    """Read a measurements CSV: header ``model,latency_ms`` and optionally ``plan`` (plan JSON path; empty =
    default plan). Relative paths are taken relative to the CSV's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TransferError(f"{path}: no such measurements file") from None
    reader = csv.DictReader(text.splitlines())
    cols = set(reader.fieldnames or [])
    missing = [c for c in ("model", "latency_ms") if c not in cols]
    if missing:
        raise TransferError(f"{path}: missing column(s) {', '.join(missing)}; a measurements CSV has columns "
                            "model, latency_ms and optionally plan")
    def positive_ms(row: Mapping[str, Any], column: str, i: int) -> float:
        try:
            ms = float(row[column])
        except (TypeError, ValueError):
            raise TransferError(f"{path}:{i}: {column} {row.get(column)!r} is not a number") from None
        if not math.isfinite(ms) or ms <= 0:
            raise TransferError(f"{path}:{i}: {column} must be a positive number of ms, got {ms}")
        return ms

    out = []
    for i, row in enumerate(reader, start=2):
        ms = positive_ms(row, "latency_ms", i)
        model = (row.get("model") or "").strip()
        if not model:
            raise TransferError(f"{path}:{i}: empty model")
        if model.endswith(".onnx") and not Path(model).is_absolute():
            model = str(path.parent / model)
        plan = (row.get("plan") or "").strip() or None
        if plan and not Path(plan).is_absolute():
            plan = str(path.parent / plan)
        beacon = positive_ms(row, "beacon_ms", i) if (row.get("beacon_ms") or "").strip() else None
        out.append(Measurement(model, plan, ms, beacon))
    if not out:
        raise TransferError(f"{path}: no measurements (only a header)")
    return out


def write_measurements(path: str | Path, measurements: Sequence[Measurement]) -> Path:
    """Write measurements as a CSV readable by :func:`read_measurements`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "plan", "latency_ms", "beacon_ms"])
        for m in measurements:
            plan = m.plan or ""
            if plan and Path(plan).is_absolute() and Path(plan).parent.is_relative_to(path.parent.resolve()):
                plan = str(Path(plan).relative_to(path.parent.resolve()))  # the folder travels with its plans
            w.writerow([m.model, plan, f"{m.latency_ms:.6g}", "" if m.beacon_ms is None else f"{m.beacon_ms:.6g}"])
    tmp.replace(path)  # atomic: a killed run leaves the previous file whole
    return path
