"""Adapting a source predictor to a new device from its features and k measurements: candidates fitted and
chosen by cross-validation, the device features themselves fine-tuned (:func:`fit_board`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import TransferError
from perfpredict.transfer.calibrators import (
    CALIBRATORS, Calibrator, MixtureCalibrator, ScaleCalibrator, SplitScaleCalibrator, safe_log,
)
from perfpredict.transfer.measurements import Measurement
from perfpredict.transfer.predictors import (
    PARTS, CalibratedPredictor, MultiDevicePredictor, load_any_predictor, precision_parts,
)
from perfpredict.transfer.proxies import (
    amdahl_pairs, amdahl_through, nearest_proxy, training_devices_at, zero_shot_proxies,
)
from perfpredict.transfer.selection import (
    DEFAULT_METHODS, Selection, best_scaled_column, rank_sources, select_calibrator, transfer_metrics,
)
from perfpredict.transfer.shots import choose_shots

if TYPE_CHECKING:
    from perfpredict.graph import Graph


def _workload(m: Measurement) -> tuple["Graph", Any]:
    from perfpredict.models import load_model
    from perfpredict.plan import Plan, default_plan, validate_plan

    graph, _ = load_model(m.model)
    if m.plan is None:
        return graph, default_plan(graph)
    plan = Plan.load(m.plan)
    validate_plan(graph, plan)
    return graph, plan


@dataclass(frozen=True)
class TransferResult:
    """What :func:`adapt_predictor` produced: the checkpoint, the chosen method and its CV error, errors on
    measurements held out of the fit (when more were given than ``k``) and, for a zero-shot through a proxy
    device, the proxy, the fingerprint ratio and the entries it was taken over."""

    path: Path
    method: str
    cv_error: Mapping[str, float]
    cv: Mapping[str, Mapping[str, float]]
    k: int
    fingerprint_points: int
    holdout: Mapping[str, float] | None
    zero_shot: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": str(self.path), "method": self.method, "cv_error": dict(self.cv_error),
                "cv": {k: dict(v) for k, v in self.cv.items()}, "k": self.k,
                "fingerprint_points": self.fingerprint_points, "holdout": self.holdout,
                "zero_shot": dict(self.zero_shot) if self.zero_shot else None}


def adapt_predictor(source_path: str | Path, device: DeviceSpec, measurements: Sequence[Measurement], k: int,
                    out: str | Path, proxies: Sequence[DeviceSpec] = (),
                    methods: Sequence[str] = ("device_subspace", "device_fit", "board_fit") + DEFAULT_METHODS
                    ) -> TransferResult:
    """Adapt the predictor at ``source_path`` to ``device`` with ``k`` of the ``measurements`` and save it.

    With more measurements than ``k``, the ``k`` most informative ones (:func:`choose_shots` on the source's
    zero-shot predictions) are used and the rest report a held-out error. A multi-device source also uses
    the board's fingerprint entries as labelled points (k = 0 is then a zero-shot fit); any other source
    (e.g. the GNN) is calibrated on its predictions for the target board (zero-shot column) and for the
    ``proxies`` (mixture candidates), or - ``board_fit``, with 4 or more shots - has the board's device
    features fine-tuned (:func:`fit_board`). With k = 0 it predicts at the :func:`nearest_proxy` scaled by the
    :func:`fingerprint_ratio` when a proxy's fingerprint qualifies (method ``proxy_scale``; the proxies given, else
    the devices the source records it was trained on, either kept to :func:`zero_shot_proxies`), else it is used
    as is on the target board.
    """
    if k < 0:
        raise TransferError(f"-k must be >= 0, got {k}")
    if k > len(measurements):
        raise TransferError(f"-k {k} asks for more shots than the {len(measurements)} measurements given; "
                            f"pass more measurements or -k {len(measurements)} or less")
    source = load_any_predictor(source_path)
    if isinstance(source, CalibratedPredictor):
        raise TransferError(f"{source_path} is already adapted to '{source.target.name}'; adapt its source "
                            f"{source.source_path} instead")
    zero_shot: dict[str, Any] = {}
    work = [_workload(m) for m in measurements]
    graphs = [g for g, _ in work]
    plans = [p for _, p in work]
    y_all = np.array([m.latency_ms for m in measurements], np.float64)
    multi = isinstance(source, MultiDevicePredictor)
    if multi:
        zero = source.predict(graphs, plans, device).latency_ms if _fingerprint_ok(source, device) else \
            source.model.predict_sources(source.factors(graphs))[:, 0]
    else:
        zero = source.predict(graphs, plans, device).latency_ms
    feats = np.array([[math.log1p(g.macs), math.log1p(g.param_count), len(g.nodes)] for g in graphs])
    used = choose_shots(zero, k, feats) if k < len(measurements) else list(range(len(measurements)))
    held = [i for i in range(len(measurements)) if i not in used]
    fp_points = 0
    if multi:
        keys, phi_fp, y_fp = source.fingerprint_points(device)
        fp_points = len(keys)
        phi_used = source.factors([graphs[i] for i in used]) if used else np.zeros((0, source.model.config.factors))
        phi = np.r_[phi_fp, phi_used.reshape(len(used), -1)]
        y = np.r_[y_fp, y_all[used]]
        if len(y) < 2:
            raise TransferError(f"device '{device.name}': {len(y)} labelled point(s) ({fp_points} usable fingerprint "
                                f"entries + {len(used)} shots); need at least 2 - add the fingerprint of the "
                                f"reference workloads ({', '.join(sorted(source.reference)[:3])}, ...) or more shots")
        ad = source.model.adapt(phi, y, methods=[m for m in methods if m != "board_fit"])
        columns: list[dict[str, Any]] = ([{"type": "factors"}] if ad.factors else []) + \
            [{"type": "source_device", "name": n} for n in ad.columns]
        sel, calibrator = ad.selection, ad.calibrator
    else:
        base = [{"type": "board", "board": device.to_dict()}]
        # zero-shot candidates: the proxies given, else the devices the source was trained on (when it records them)
        near = nearest_proxy(device, zero_shot_proxies(device, list(proxies) or training_devices_at(
            source, device.threads_used))) if not used else None
        if near is not None:
            # zero-shot through a device the source predicts well: its prediction there, scaled by how much slower
            # the target runs the fingerprint's reference workloads
            proxy, ratio, shared = near
            sel = Selection("proxy_scale", ScaleCalibrator(math.log(ratio)),
                            {"proxy_scale": {"rmse_log": math.nan, "mape": math.nan}}, 0)
            calibrator = sel.calibrator
            columns = [{"type": "board", "board": proxy.to_dict()}]
            zero_shot = {"proxy": proxy.name, "fingerprint_ratio": ratio, "shared_fingerprint_entries": shared}
        elif not used:
            sel = Selection("none", ScaleCalibrator(0.0), {"none": {"rmse_log": math.nan, "mape": math.nan}}, 0)
            calibrator, columns = sel.calibrator, base
        else:
            ug = [graphs[i] for i in used]
            up = [plans[i] for i in used]
            # the proxies given, else the trained device nearest by fingerprint: its prediction is a column too
            offered = list(proxies)
            if not offered:
                near_k = nearest_proxy(device, training_devices_at(source, device.threads_used))
                offered = [near_k[0]] if near_k is not None else []
            xs = [zero[used]] + [source.predict(ug, up, p).latency_ms for p in offered]
            x = np.stack(xs, axis=1)
            ranked = rank_sources(y_all[used], x[:, 1:], [p.name for p in offered]) if offered else []
            top = [i + 1 for i, (name, _) in enumerate(ranked[:2])]
            cols = [0] + [next(j + 1 for j, p in enumerate(offered) if p.name == ranked[t - 1][0]) for t in top]
            cands: dict[str, tuple[Callable[[], Calibrator], np.ndarray]] = {}
            for m in methods:
                if m == "mixture" and len(cols) > 1:
                    cands[m] = (MixtureCalibrator, x[:, cols])
                elif m in ("scale", "loglinear", "isotonic"):
                    cands[m] = (CALIBRATORS[m], x[:, :1])
            if "scale" in methods and len(cols) > 1:  # the best-ranked proxy's prediction, rescaled to the shots
                cands["proxy_scale"] = (ScaleCalibrator, x[:, cols[1]:cols[1] + 1])
                split = precision_parts(source, ug, up, offered[cols[1] - 1]) \
                    if hasattr(source, "node_latencies") and getattr(source, "space", None) is not None else None
                if split is not None and np.any(split[:, 1] > 0) and np.any(split[:, 0] > 0):
                    # its fp32 and int8 nodes rescaled apart: devices differ in int8 : fp32 speed
                    cands["proxy_split"] = (SplitScaleCalibrator, split)
            from perfpredict.features import threads_of

            t_dev = threads_of(device)
            pairs = amdahl_pairs(source, t_dev) if "scale" in methods else []
            if pairs:  # a thread count the source never trained at: the trained devices' 1- and 2-thread
                # predictions extrapolated by Amdahl's law; the one that one scale fits best (the least spread of
                # its log ratios to the shots) rescaled to them
                shot_ms = lambda b, t: source.predict(ug, up, b, threads=t).latency_ms  # noqa: E731
                xa = np.stack([amdahl_through(shot_ms, one, two, t_dev) for one, two in pairs], axis=1)
                amdahl_at = best_scaled_column(y_all[used], xa)
                cands["amdahl_scale"] = (ScaleCalibrator, xa[:, amdahl_at:amdahl_at + 1])
            if len(used) < 2:
                cands = {"scale": (ScaleCalibrator, x[:, :1])}
                sel = Selection("scale", ScaleCalibrator().fit(x[:, :1], y_all[used]),
                                {"scale": {"rmse_log": math.nan, "mape": math.nan}}, len(used))
            else:
                sel = select_calibrator(y_all[used], cands)
            calibrator = sel.calibrator
            if sel.method == "mixture":
                columns = base + [{"type": "board", "board": offered[j - 1].to_dict()} for j in cols[1:]]
            elif sel.method == "proxy_scale":
                columns = [{"type": "board", "board": offered[cols[1] - 1].to_dict()}]
            elif sel.method == "proxy_split":
                columns = [{"type": "board", "board": offered[cols[1] - 1].to_dict(), "part": part} for part in PARTS]
            elif sel.method == "amdahl_scale":
                one, two = pairs[amdahl_at]
                columns = [{"type": "amdahl", "one": one.to_dict(), "two": two.to_dict(), "threads": t_dev}]
            else:
                columns = base
            if "board_fit" in methods and len(used) >= 4:
                cv_b = _board_fit_cv(source, device, ug, up, y_all[used])
                cv_all = {**{a: dict(b) for a, b in sel.cv.items()}, "board_fit": cv_b}
                best = min(v["rmse_log"] for v in cv_all.values() if math.isfinite(v["rmse_log"]))
                if cv_b["rmse_log"] <= best + 1e-12:
                    tuned, off = fit_board(source, device, ug, up, y_all[used])
                    calibrator = ScaleCalibrator(off)
                    columns = [{"type": "board", "board": tuned.to_dict()}]
                    sel = Selection("board_fit", calibrator, cv_all, len(used))
                else:
                    sel = Selection(sel.method, sel.calibrator, cv_all, sel.n_points)
    mlist = [{**m.to_dict(), "used": i in used} for i, m in enumerate(measurements)]
    card = {**({"zero_shot": zero_shot} if zero_shot else {}), "method": sel.method,
            "cv_error": dict(sel.cv.get(sel.method, {})),
            "cv": {a: dict(b) for a, b in sel.cv.items()}, "k": len(used), "fingerprint_points": fp_points,
            "points": sel.n_points, "measurements": mlist, "source_kind": getattr(source, "kind", "gnn")}
    pred = CalibratedPredictor(source, str(Path(getattr(source, "source_path", source_path)) if not multi
                                          else source_path), device, columns, calibrator, card)
    holdout = None
    if held:
        hp = pred.predict([graphs[i] for i in held], [plans[i] for i in held], device).latency_ms
        holdout = {k2: v for k2, v in transfer_metrics(hp, y_all[held]).items() if k2 in ("n", "mape", "within_10",
                                                                                           "spearman")}
        pred.card["holdout"] = holdout
    out = pred.save(out)
    return TransferResult(out, sel.method, sel.cv.get(sel.method, {}), sel.cv, len(used), fp_points, holdout,
                          zero_shot or None)


BOARD_FIT_FIELDS = ("peak_gflops_fp32", "peak_gops_int8", "mem_bw_triad_gbs", "fingerprint")
"""What :func:`fit_board` scales: the board's throughput figures and (one common factor) its fingerprint."""


def scaled_board(board: DeviceSpec, log_factors: Sequence[float]) -> DeviceSpec:
    """``board`` with fp32 / int8 throughput, bandwidth and fingerprint multiplied by exp(``log_factors``).

    Figures the board lacks start from :func:`perfpredict.features.device_rates`' estimates (what a
    device-conditioned predictor would assume for it); the result keeps its name.
    """
    from perfpredict.features import device_rates

    m = list(log_factors) + [0.0] * (4 - len(log_factors))
    rates = device_rates(board)
    d = board.to_dict()
    base_threads = board.threads_used
    d["peak_gflops_fp32"] = float(rates.gflops_fp32 * math.exp(m[0]))
    d["peak_gops_int8"] = float(rates.gops_int8 * math.exp(m[1]))
    d["mem_bw_triad_gbs"] = float(rates.bandwidth_gbs * math.exp(m[2]))
    if d.get("mem_bw_copy_gbs"):
        d["mem_bw_copy_gbs"] = float(d["mem_bw_copy_gbs"] * math.exp(m[2]))
    if d.get("fingerprint"):
        d["fingerprint"] = {k: float(v * math.exp(m[3])) for k, v in d["fingerprint"].items()}
    if base_threads is None and "threads_used" in d:
        d.pop("threads_used")
    return load_device(d)


def fit_board(source: Any, board: DeviceSpec, graphs: Sequence["Graph"], plans: Sequence[Any], y: np.ndarray,
              ridge: float = 1e-3, max_evals: int = 200) -> tuple[DeviceSpec, float]:
    """(a) for a device-conditioned source (the GNN): fine-tune the device's features - the input through
    which it sees a device - to the measured points.

    Finds log-factors on the board's throughput figures and fingerprint (:func:`scaled_board`) that minimise
    the variance of the log errors of ``source``'s predictions (the shape) plus ``ridge`` x their squared
    size (Powell, bounded to x/20..x20), then the residual scale (median log ratio). Returns (tuned board,
    residual log-scale). Where the fingerprint times the 3x3 convolution the fp32 rate is read from (feature schema
    8, :func:`perfpredict.features.device_rates`), the fingerprint's factor is the fp32 one and the matmul peak's
    is left at 1: both would move the same rate.
    """
    from scipy.optimize import minimize

    from perfpredict.features import FINGERPRINT_CONV

    y = np.asarray(y, np.float64)
    free = [1, 2, 3] if FINGERPRINT_CONV in (board.fingerprint or {}) else [0, 1, 2, 3] if board.fingerprint else \
        [0, 1, 2]

    def full(m: np.ndarray) -> np.ndarray:
        out = np.zeros(4)
        out[free] = m
        return out

    def preds(m: np.ndarray) -> np.ndarray:
        return source.predict(list(graphs), list(plans), scaled_board(board, full(m))).latency_ms

    def loss(m: np.ndarray) -> float:
        r = safe_log(preds(m)) - safe_log(y)
        return float(np.mean((r - np.mean(r)) ** 2) + ridge * np.mean(m**2))

    res = minimize(loss, np.zeros(len(free)), method="Powell", bounds=[(-3.0, 3.0)] * len(free),
                   options={"maxfev": max_evals, "xtol": 1e-2, "ftol": 1e-4})
    tuned = scaled_board(board, full(res.x))
    offset = float(np.median(safe_log(y) - safe_log(preds(res.x))))
    return tuned, offset


def _board_fit_cv(source: Any, board: DeviceSpec, graphs: Sequence["Graph"], plans: Sequence[Any],
                  y: np.ndarray) -> dict[str, float]:
    """Leave-one-out errors of :func:`fit_board` (same keys as :func:`cross_validate`)."""
    n = len(y)
    pred = np.zeros(n)
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        tuned, off = fit_board(source, board, [graphs[j] for j in keep], [plans[j] for j in keep], y[keep])
        pred[i] = source.predict([graphs[i]], [plans[i]], tuned).latency_ms[0] * math.exp(off)
    err = safe_log(pred) - safe_log(y)
    return {"rmse_log": float(np.sqrt(np.mean(err**2))), "mape": float(np.mean(np.abs(pred / y - 1)) * 100)}


def _fingerprint_ok(source: MultiDevicePredictor, device: DeviceSpec) -> bool:
    return len([k for k in device.fingerprint if k in source.reference]) >= 3 or device.name in source.model.devices
