"""Trained devices a new one borrows predictions from: the nearest by fingerprint (with the ratio of their
reference latencies), matching int8 dot-product support, and Amdahl's law across thread counts."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from perfpredict.devices import DeviceSpec
from perfpredict.transfer.selection import rank_sources


def parallel_fraction(one: np.ndarray, two: np.ndarray) -> np.ndarray:
    """Amdahl's parallel fraction p of work that takes ``one`` at 1 thread and ``two`` at 2
    (``one / two = 1 / ((1 - p) + p / 2)``), clipped to [0, 1]; 0 where ``one`` is 0."""
    one, two = np.asarray(one, np.float64), np.asarray(two, np.float64)
    frac = np.divide(two, one, out=np.ones_like(one), where=one > 0)
    return 2.0 * (1.0 - np.clip(frac, 0.5, 1.0))


def amdahl_latency(one: np.ndarray, two: np.ndarray, threads: int) -> np.ndarray:
    """Latency at ``threads`` from latencies at 1 and 2 threads by Amdahl's law: ``one * ((1 - p) + p / threads)``
    with p their :func:`parallel_fraction`; zero latencies stay zero."""
    p = parallel_fraction(one, two)
    return np.asarray(one, np.float64) * ((1.0 - p) + p / threads)


def amdahl_through(latency: Callable[[DeviceSpec, int], np.ndarray], one: DeviceSpec, two: DeviceSpec,
                   threads: int) -> np.ndarray:
    """``latency(board, threads)`` at a trained device's 1-thread board ``one`` and 2-thread board ``two``,
    extrapolated to ``threads`` by :func:`amdahl_latency`."""
    return amdahl_latency(latency(one, 1), latency(two, 2), threads)


def amdahl_pairs(source: Any, threads: int) -> list[tuple[DeviceSpec, DeviceSpec]]:
    """(1-thread board, 2-thread board) pairs of the devices ``source`` trained at both counts (every pairing, for
    a machine described by several campaigns), when it trained no device at ``threads``: what an ``amdahl_scale``
    adaptation can extrapolate from (none otherwise)."""
    from perfpredict.features import threads_of

    if threads in (1, 2) or training_devices_at(source, threads):
        return []
    by_id: dict[str, dict[int, list[DeviceSpec]]] = {}
    for d in training_devices_at(source):
        by_id.setdefault(d.device_id, {}).setdefault(threads_of(d), []).append(d)
    return [(one, two) for b in by_id.values() for one in b.get(1, []) for two in b.get(2, [])]


def fingerprint_similarity(target: DeviceSpec, sources: Sequence[DeviceSpec]) -> list[tuple[str, float]]:
    """Sources ordered by correlation of their fingerprints with the target's, on the keys they share."""
    keys = sorted(target.fingerprint)
    out = []
    for s in sources:
        common = [k for k in keys if k in s.fingerprint]
        if len(common) < 3:
            out.append((s.name, -1.0))
            continue
        out.append(rank_sources(np.array([target.fingerprint[k] for k in common]),
                                np.array([[s.fingerprint[k]] for k in common]), [s.name])[0])
    return sorted(out, key=lambda p: -p[1])


def fingerprint_ratio(target: DeviceSpec, source: DeviceSpec) -> tuple[float, int]:
    """How much slower ``target`` runs the reference workloads than ``source``: the geometric mean of the ratios of
    their fingerprint entries over the keys both have, and how many keys that is (1.0 and 0 without any)."""
    common = [k for k in target.fingerprint if k in source.fingerprint
              and target.fingerprint[k] > 0 and source.fingerprint[k] > 0]
    if not common:
        return 1.0, 0
    return float(np.exp(np.mean([math.log(target.fingerprint[k] / source.fingerprint[k]) for k in common]))), \
        len(common)


PROXY_MIN_SHARED = 3
"""Fingerprint entries a proxy device must share with the target for the zero-shot proxy scaling."""

INT8_DOT_PRODUCT = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
"""ISA features (``isa_features``, cpuinfo's names) that give a CPU int8 dot-product instructions: the int8 kernels
of fbgemm and oneDNN run several times faster with them than on the plain AVX2 / NEON sequences."""


def int8_dot_product(device: DeviceSpec) -> bool | None:
    """Whether ``device``'s CPU has int8 dot-product instructions (:data:`INT8_DOT_PRODUCT`); None when its board
    lists no ISA features (a GPU, a hand-written board)."""
    if not device.isa_features:
        return None
    return bool(INT8_DOT_PRODUCT & set(device.isa_features))


def zero_shot_proxies(target: DeviceSpec, devices: Sequence[DeviceSpec]) -> list[DeviceSpec]:
    """The ``devices`` a zero-shot prediction for ``target`` may go through: those that match its
    :func:`int8_dot_product` support (or either board does not say). The fingerprint times fp32 layers only, so its
    ratio scales int8 and fp32 work alike: through a VNNI proxy, an AVX2-only CPU's int8 plans came out 0.89x of
    their measured time and its fp32 plans 1.17x (benchmarks/README.md, "Transfer to new hardware": the Zen 3 host)."""
    want = int8_dot_product(target)
    return [d for d in devices if want is None or int8_dot_product(d) in (None, want)]


def nearest_proxy(target: DeviceSpec, proxies: Sequence[DeviceSpec]) -> tuple[DeviceSpec, float, int] | None:
    """The proxy whose fingerprint correlates best with ``target``'s (:func:`fingerprint_similarity`, on at least
    :data:`PROXY_MIN_SHARED` shared entries), with its :func:`fingerprint_ratio`; None when no proxy qualifies."""
    # by position, not name: two machines of one kind can share a name
    scored = [(fingerprint_similarity(target, [p])[0][1], i) for i, p in enumerate(proxies)]
    scored = [(r, i) for r, i in scored if r > -1.0]
    if not scored:
        return None
    proxy = proxies[max(scored, key=lambda t: (t[0], -t[1]))[1]]
    ratio, shared = fingerprint_ratio(target, proxy)
    return (proxy, ratio, shared) if shared >= PROXY_MIN_SHARED else None


def training_devices_at(source: Any, threads: int | None = None) -> list[DeviceSpec]:
    """The devices ``source`` records it trained on (none when it records none); with ``threads``, only those at
    that thread count (a proxy is predicted at its own board's threads, so one at another count would scale the
    wrong latencies)."""
    from perfpredict.features import threads_of

    devices = getattr(source, "training_devices", None)
    out = list(devices()) if callable(devices) else []
    return [d for d in out if threads_of(d) == threads] if threads else out
