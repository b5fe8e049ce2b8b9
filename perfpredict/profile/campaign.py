"""What every measurement campaign shares: names, the measuring protocol, the report, the skip log and the device."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from perfpredict.dataset import Store
from perfpredict.devices import DeviceSpec
from perfpredict.errors import MeasurementError, PerfPredictError
from perfpredict.graph import Graph
from perfpredict.measure import LatencyStats

LAYER_CAMPAIGN = "layers"
MODEL_CAMPAIGN = "models"


@dataclass(frozen=True)
class Protocol:
    """The measurement protocol of a campaign (see :mod:`perfpredict.measure`).

    ``warmup`` counts every untimed call: the three probe calls a campaign makes while building (the
    faster of the last two is compared with ``max_call_ms``; a first call over three times the limit skips
    at once) and the rest (at least one) in an interleaved warm-up round right before timing.
    ``time_cap_s`` caps the timed repeats of one candidate (measure_interleaved stops after ``time_cap_s``
    times the number of candidates); ``max_call_ms`` skips a candidate whose single call takes longer
    (recorded in the skip log, never stored as a measurement). The defaults are the layer
    campaign's; :data:`MODEL_PROTOCOL` is the model campaign's.

    ``block`` > 1 times the model campaign's plans in steady turns: each turn of the round-robin makes
    ``block_warmup`` untimed calls and then ``block`` timed ones back to back (``measure_interleaved``'s
    ``block``), where one call per turn (the default) times each plan right after another plan or the beacon, as
    a cold single inference. Short plans pay that cold start most: on the AMX Xeon VM (ad hoc) the beacon
    campaign's oneDNN int8 NHWC plans of mobilenet_v1, squeezenet1_1 and resnet18 took 1.26-1.77x as long one
    call per turn as in turns of five after two untimed calls, fp32 plans 0.94-1.18x. Records timed in blocks
    say so (``extra["block"]``).
    """

    warmup: int = 4
    min_repeats: int = 6
    max_repeats: int = 40
    target_ci: float = 0.05
    time_cap_s: float = 0.025
    max_call_ms: float = 20.0
    block: int = 1
    block_warmup: int = 0

    def __post_init__(self) -> None:
        if self.min_repeats < 1 or self.max_repeats < self.min_repeats or self.warmup < 0:
            raise MeasurementError(f"protocol needs warmup >= 0 and 1 <= min_repeats <= max_repeats, got {self}")
        if not (self.target_ci > 0 and self.time_cap_s > 0 and self.max_call_ms > 0):
            raise MeasurementError("protocol target_ci, time_cap_s and max_call_ms must be positive numbers")
        if self.block < 1 or self.block_warmup < 0:
            raise MeasurementError(f"protocol needs block >= 1 and block_warmup >= 0, got {self.block} and "
                                   f"{self.block_warmup}")

    def measure_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for measure_latency / measure_interleaved."""
        return dict(warmup=self.warmup, min_repeats=self.min_repeats, max_repeats=self.max_repeats,
                    target_ci=self.target_ci, time_cap_s=self.time_cap_s)

    def block_kwargs(self) -> dict[str, Any]:
        """measure_interleaved's turn shape (``block``, ``block_warmup``), empty for one call per turn."""
        return dict(block=self.block, block_warmup=self.block_warmup) if self.block > 1 else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


MODEL_PROTOCOL = Protocol(time_cap_s=0.2, max_call_ms=400.0)
"""The model campaign's protocol: as the layer one, with a longer time cap and call limit."""


@dataclass
class CampaignReport:
    """What a campaign did: records planned, stored now, found already stored, skipped (by reason),
    stored unstable, and campaign-specific figures in ``extra``."""

    campaign: str
    kind: str
    store: str
    threads: tuple[int, ...]
    planned: int = 0
    stored: int = 0
    already: int = 0
    skipped: Counter = field(default_factory=Counter)
    unstable: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def triage(self, items: Sequence[tuple[Any, str]], done: set[str], skipped_before: set[str]) -> list:
        """Count (item, key) pairs as planned and return those still to measure: not stored yet (``done``)
        and not skipped by an earlier run."""
        todo = []
        for item, key in items:
            self.planned += 1
            if key in done:
                self.already += 1
            elif key in skipped_before:
                self.skipped["skipped in an earlier run"] += 1
            else:
                todo.append((item, key))
        return todo

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["threads"] = list(self.threads)
        d["skipped"] = dict(self.skipped)
        d["skipped_total"] = sum(self.skipped.values())
        return d


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def canonical(obj: Any) -> str:
    """Compact, key-sorted JSON of ``obj``: the text record keys and seeds are hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def seed_of(*parts: Any) -> int:
    """A 32-bit seed derived from ``parts`` (the same parts give the same seed on every run)."""
    return int(hashlib.sha256(canonical(list(parts)).encode()).hexdigest()[:8], 16)


class SkipLog:
    """Append-only JSON-lines log of skipped measurements, next to the store (``<store>.skips.jsonl``).

    A skipped key is not retried on resume. A line cut short by a kill is ignored when read.
    """

    def __init__(self, store_path: str | os.PathLike) -> None:
        p = Path(store_path)
        self.path = p.with_name(p.name + ".skips.jsonl")

    def keys(self) -> set[str]:
        """Keys skipped so far."""
        return {e["key"] for e in self.entries() if "key" in e}

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def add(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append entries (each with at least key and reason)."""
        lines = "".join(canonical({**e, "timestamp": _utc_now()}) + "\n" for e in entries)
        if not lines:
            return
        with open(self.path, "a") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


def campaign_device(store: Store, threads: int, *, quick: bool = False) -> DeviceSpec:
    """This machine's DeviceSpec measured at ``threads``: the one already in ``store`` (same static facts,
    i.e. same device_id, and same thread count) if any, else ``describe_host(threads=threads, quick=quick)``
    (its JSON goes into the store with the first record). A resumed campaign thus keeps its description."""
    from perfpredict.devices import describe_host, static_host

    host = static_host()
    if host is not None:
        for spec in reversed(store.devices()):
            if spec.threads_used == threads and spec.device_id == host.device_id:
                return spec
    return describe_host(threads=threads, quick=quick)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr counting records (silent when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, dynamic_ncols=True, disable=not enabled,
                smoothing=0.05)


def parse_threads(threads: Sequence[int] | int) -> tuple[int, ...]:
    """Thread counts as a sorted tuple of distinct positive integers (else a one-line error)."""
    ts = (threads,) if isinstance(threads, int) else tuple(threads)
    if not ts or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in ts):
        raise PerfPredictError(f"threads must be positive integers, got {list(ts)}")
    return tuple(sorted(set(ts)))


def stats_extra(st: LatencyStats) -> dict[str, Any]:
    """The timing statistics a record keeps beside its median."""
    return {"min_ms": round(st.min_ms, 6), "mean_ms": round(st.mean_ms, 6)}


def random_inputs(graph: Graph, seed: int) -> tuple[np.ndarray, ...]:
    """Seeded standard-normal float32 inputs for ``graph``."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(tuple(graph.tensor_shapes[t]), dtype=np.float32) for t in graph.inputs)
