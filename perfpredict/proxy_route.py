"""Zero-shot prediction for a device the predictor never trained on, through the trained device nearest to it.

A device-conditioned predictor (the GNN) answers for any board.json from its features, but on devices outside
its training set those answers carry the features' blind spots: two machines of one peak throughput can run the
zoo 1.7x apart. Performance monotonicity offers a second route: predict on the *proxy*, the trained device
whose fingerprint (the board's measured reference workloads) correlates best with the target's, and scale by
how much slower the target ran those workloads (:func:`perfpredict.transfer.nearest_proxy`,
:func:`perfpredict.transfer.fingerprint_ratio`). On the four machine pairs measured first (benchmarks/README.md,
"Transfer to new hardware")
this route beat the board's features every time, so ``predict``, ``optimise`` and ``validate`` take it by
default (``--zero-shot proxy``) whenever it applies:

* the predictor records the devices it trained on (:meth:`GNNPredictor.training_devices`) and the target is not
  one of them (same ``device_id`` at the same thread count);
* the target's board has a fingerprint, measured at the thread count asked for;
* a trained device at that thread count shares at least
  :data:`perfpredict.transfer.PROXY_MIN_SHARED` fingerprint entries with it;
* and that device matches the target's int8 dot-product support (VNNI, AMX int8, Arm's dot product:
  :func:`perfpredict.transfer.zero_shot_proxies`), as the fingerprint's fp32 layers cannot carry that gap
  (:func:`isa_note` says so when it rules every proxy out).

Otherwise the board's features are used as they are (``--zero-shot board`` asks for that always). The routed
predictor is an in-memory :class:`perfpredict.transfer.CalibratedPredictor` (method ``proxy_scale``, k = 0), the
same object ``perfpredict transfer -k 0`` saves; peak memory still comes from the target's own board.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from perfpredict.devices import DeviceSpec
from perfpredict.errors import PerfPredictError

ROUTES = ("proxy", "board")
"""Values of ``--zero-shot``: through the nearest trained device when that applies (default), or the board's
features always."""


@dataclass(frozen=True)
class ProxyRoute:
    """The trained device a prediction for ``target`` goes through, and the factor its latencies are scaled by."""

    target: DeviceSpec
    proxy: DeviceSpec
    ratio: float
    shared: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form (what reports and ``--json`` outputs record)."""
        return {"route": "proxy", "proxy": self.proxy.name, "proxy_device_id": self.proxy.device_id,
                "threads": self.proxy.threads_used, "fingerprint_ratio": self.ratio,
                "shared_fingerprint_entries": self.shared}

    def describe(self) -> str:
        """One line for people."""
        return (f"device '{self.target.name}' ({self.target.device_id}) is not among the predictor's training "
                f"devices: predicting on the nearest one by fingerprint, '{self.proxy.name}' "
                f"({self.proxy.device_id}, {self.proxy.threads_used} threads), "
                f"x {self.ratio:.3g} (fingerprint ratio over {self.shared} entries); --zero-shot board uses the "
                "board's features instead")


def trained_on(predictor: Any, device: DeviceSpec, threads: int | None = None) -> bool:
    """Whether ``predictor`` trained on ``device`` at ``threads`` (same machine, by ``device_id``, and thread
    count); False for a predictor that records no training devices."""
    from perfpredict.features import threads_of
    from perfpredict.transfer import training_devices_at

    return any(d.device_id == device.device_id for d in training_devices_at(predictor, threads_of(device, threads)))


def proxy_route(predictor: Any, device: DeviceSpec, threads: int | None = None) -> ProxyRoute | None:
    """The proxy route for ``device`` at ``threads`` (see the module docstring), or None where it does not apply:
    the predictor records no training devices (or is already adapted), trained on this device, or no trained
    device at this thread count shares enough of the board's fingerprint; or the board has none, or was
    measured at another thread count; or no such device matches its int8 dot-product support."""
    from perfpredict.transfer import nearest_proxy, zero_shot_proxies

    candidates = _candidates(predictor, device, threads)
    near = nearest_proxy(device, zero_shot_proxies(device, candidates)) if candidates else None
    if near is None:
        return None
    proxy, ratio, shared = near
    return ProxyRoute(device, proxy, ratio, shared)


def _candidates(predictor: Any, device: DeviceSpec, threads: int | None) -> list[DeviceSpec]:
    """The trained devices the proxy route for ``device`` could take before the int8 rule (empty where it cannot
    apply at all)."""
    from perfpredict.features import threads_of
    from perfpredict.transfer import training_devices_at

    if not device.fingerprint:
        return []
    t = threads_of(device, threads)
    if device.threads_used and t != device.threads_used:  # the fingerprint was measured at another count
        return []
    if trained_on(predictor, device, t):
        return []
    return list(training_devices_at(predictor, t))


def isa_note(predictor: Any, device: DeviceSpec, threads: int | None = None) -> str | None:
    """A note when the proxy route would apply but for the int8 rule (:func:`perfpredict.transfer.zero_shot_proxies`):
    no trained device matches the target's int8 dot-product support, so the board's features answer."""
    from perfpredict.transfer import int8_dot_product, nearest_proxy, zero_shot_proxies

    candidates = _candidates(predictor, device, threads)
    if not candidates or nearest_proxy(device, candidates) is None:
        return None
    if nearest_proxy(device, zero_shot_proxies(device, candidates)) is not None:
        return None
    has = "has" if int8_dot_product(device) else "lacks"
    return (f"device '{device.name}' {has} int8 dot-product instructions (VNNI, AMX int8 or Arm's dot product) "
            "unlike every device the predictor trained on: predicting from the board's features, as the "
            "fingerprint (fp32 layers) cannot tell how its int8 kernels compare; `perfpredict transfer -k 10` "
            "adapts it with measurements")


def thread_range_note(predictor: Any, device: DeviceSpec, threads: int | None = None) -> str | None:
    """A note when ``threads`` lies outside the thread counts ``predictor`` trained at (None inside them, or for a
    predictor that records no training devices, as an adapted one, which measured its device, does not).

    The network sees the thread count as a feature, so it answers for any count, but beyond those it trained at it
    extrapolates: scaling to many threads is where small layers, pruned plans and memory-bound operators part
    from the big ones (benchmarks/README.md, "Transfer to new hardware": a 16-core host at 16 threads)."""
    from perfpredict.features import threads_of
    from perfpredict.transfer import training_devices_at

    counts = sorted({threads_of(d) for d in training_devices_at(predictor)})
    t = threads_of(device, threads)
    if not counts or counts[0] <= t <= counts[-1]:
        return None
    span = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
    return (f"the predictor trained at {span} thread(s) only, so at {t} threads it extrapolates: expect larger "
            f"errors than on its own thread counts; `perfpredict transfer -k 10` adapts it with measurements at {t}")


def via_proxy(predictor: Any, route: ProxyRoute, source_path: str | None = None) -> Any:
    """``predictor`` answering for ``route.target`` through its proxy: an in-memory adapted predictor."""
    from perfpredict.transfer import CalibratedPredictor, ScaleCalibrator

    card: Mapping[str, Any] = {"method": "proxy_scale", "k": 0, "zero_shot": route.to_dict(),
                               "cv": {}, "cv_error": {}, "fingerprint_points": 0, "points": 0, "measurements": []}
    path = source_path or str(getattr(predictor, "source_path", "") or "")
    return CalibratedPredictor(predictor, path, route.target, [{"type": "board", "board": route.proxy.to_dict()}],
                               ScaleCalibrator(math.log(route.ratio)), card)


def route_predictor(predictor: Any, device: DeviceSpec, threads: int | None = None,
                    zero_shot: str = "proxy") -> tuple[Any, ProxyRoute | None]:
    """(the predictor to use for ``device``, the proxy route taken or None): ``zero_shot`` "proxy" takes
    :func:`proxy_route` where it applies, "board" never does."""
    if zero_shot not in ROUTES:
        raise PerfPredictError(f"--zero-shot must be one of {', '.join(ROUTES)}, got '{zero_shot}'")
    route = proxy_route(predictor, device, threads) if zero_shot == "proxy" else None
    return (predictor, None) if route is None else (via_proxy(predictor, route), route)


__all__ = ["ROUTES", "ProxyRoute", "isa_note", "proxy_route", "route_predictor", "thread_range_note",
           "trained_on", "via_proxy"]
