"""The measurement store: an append-only SQLite database of layer and model measurements.

Storage (schema_version 1, stdlib sqlite3, WAL journal):
  meta(key, value)          holds "schema_version"; a newer version than this code knows is refused
  devices(hash, device_id, name, device_json)
                            each distinct DeviceSpec JSON once; hash = sha256 of its canonical JSON
  records(id, key UNIQUE, ..., device_hash -> devices.hash)
                            one row per measurement, columns as in `Record` (device_json is
                            replaced by device_hash)
Triggers make both data tables append-only: UPDATE and DELETE abort. Every `append` is one
transaction and `append_many` is one transaction for the whole batch, so a killed writer leaves
only complete records; synchronous=NORMAL in WAL mode survives process kills (power loss may
lose the last commits, never corrupt the file).

Resuming: `record_key` is a hash of kind + device_id (the DeviceSpec's static facts) +
threads + campaign + the measured thing's identity (graph_id, plan, node, primitive, layout,
precision, prune, model_name, family). A campaign computes the key before measuring and
skips it when `store.has(key)`.

Noise floor: re-measurements go in as records of campaign "noise-recheck" (see
`noise_recheck_record`) with extra_json {"original_key": ...}; `Store.info()` reports how
often the two medians agree within 5% / 10%.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import sqlite3
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import BoardError, DatasetError
from perfpredict.measure import LatencyStats, noise_floor

__all__ = [
    "SCHEMA_VERSION",
    "RECORD_KINDS",
    "NOISE_CAMPAIGN",
    "Record",
    "Store",
    "open_store",
    "record_key",
    "remeasured_key",
    "make_record",
    "noise_recheck_record",
    "memory_remeasure_record",
    "MEMORY_CAMPAIGN",
    "STEPS_CAMPAIGN",
    "step_times_record",
    "step_times_key",
    "current_versions",
]

SCHEMA_VERSION = 1
RECORD_KINDS = ("layer", "model")
NOISE_CAMPAIGN = "noise-recheck"
MEMORY_CAMPAIGN = "memory-allocator"
"""Campaign of memory-only records that re-measure a model record's peak memory by the allocator method
(:func:`memory_remeasure_record`)."""
STEPS_CAMPAIGN = "step-times"
"""Campaign of records that time a model record's forward pass step by step (:func:`step_times_record`)."""


@lru_cache(maxsize=1)
def _versions_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "onnxruntime", "numpy", "perfpredict"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return json.dumps(out, sort_keys=True)


def current_versions() -> dict[str, str | None]:
    """Versions of python, torch, onnxruntime, numpy and perfpredict in this process."""
    return json.loads(_versions_text())


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Record:
    """One measurement of a layer (kind "layer") or a whole model under a plan (kind "model").

    Text fields ending in _json hold JSON. Latency fields come from measure.LatencyStats and
    are None for memory-only records; a record needs median_ms or peak_mem_bytes.
    """

    kind: str  # "layer" | "model"
    key: str  # record_key(...): unique in the store
    campaign: str  # name of the measurement campaign
    device_name: str
    device_json: str  # DeviceSpec.to_json()
    threads: int
    family: str | None = None  # model family, e.g. "resnet", "mobilenet"
    model_name: str | None = None
    graph_id: str | None = None  # Graph.graph_id of the model (model records; optional for layers)
    plan_json: str | None = None  # Plan JSON (model records)
    node_json: str | None = None  # the layer's op / attrs / shapes (layer records)
    primitive: str | None = None
    layout: str | None = None
    precision: str | None = None
    prune: float | None = None
    median_ms: float | None = None
    iqr_ms: float | None = None
    cv: float | None = None
    n_repeats: int | None = None
    stable: bool | None = None
    ci95_rel: float | None = None
    peak_mem_bytes: int | None = None  # measured (measure.peak_memory_of)
    est_mem_bytes: int | None = None  # estimated analytically
    versions_json: str = field(default_factory=_versions_text)
    timestamp: str = field(default_factory=_utc_now)  # UTC ISO 8601
    extra_json: str = "{}"

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> DatasetError:
            return DatasetError(f"record field '{name}' must be {want}, got {getattr(self, name)!r}")

        if self.kind not in RECORD_KINDS:
            raise bad("kind", "one of " + ", ".join(RECORD_KINDS))
        for name in ("key", "campaign", "device_name", "device_json", "versions_json", "timestamp", "extra_json"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise bad(name, "a non-empty string")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise bad("threads", "a positive integer")
        for name in ("family", "model_name", "graph_id", "plan_json", "node_json", "primitive", "layout", "precision"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise bad(name, "a string or None")
        for name in ("prune", "median_ms", "iqr_ms", "cv", "ci95_rel"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
                raise bad(name, "a number >= 0 or None")
        for name in ("n_repeats", "peak_mem_bytes", "est_mem_bytes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise bad(name, "an integer >= 0 or None")
        if self.stable is not None and not isinstance(self.stable, bool):
            raise bad("stable", "true, false or None")
        if self.median_ms is None and self.peak_mem_bytes is None and self.campaign != STEPS_CAMPAIGN:
            raise DatasetError(f"record {self.key}: needs median_ms or peak_mem_bytes, got neither (only a "
                               f"{STEPS_CAMPAIGN} record holds neither: its steps are in extra_json)")
        if self.kind == "layer" and self.node_json is None:
            raise DatasetError(f"record {self.key}: layer records need node_json")
        if self.kind == "model" and self.graph_id is None:
            raise DatasetError(f"record {self.key}: model records need graph_id")

    def device(self) -> DeviceSpec:
        """The DeviceSpec this record was measured on."""
        return load_device(json.loads(self.device_json))

    def extra(self) -> dict[str, Any]:
        """extra_json parsed."""
        return json.loads(self.extra_json)


_JSON_FIELDS = ("device_json", "plan_json", "node_json", "versions_json", "extra_json")
_COLUMNS = tuple(f.name for f in fields(Record) if f.name != "device_json")


# ---------------------------------------------------------------- keys and builders


def _canon(v: Any, name: str) -> Any:
    """Parsed JSON value for a str / dict identity part (so whitespace and key order don't matter)."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            raise DatasetError(f"record field '{name}' must be JSON text, got {v[:60]!r}") from None
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return v


def _as_json(v: Any, name: str) -> str | None:
    c = _canon(v, name)
    if c is None:
        return None
    try:
        return json.dumps(c, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"record field '{name}' must be JSON-serialisable ({exc})") from None


def record_key(
    *,
    kind: str,
    device: DeviceSpec | str,
    threads: int,
    campaign: str,
    graph_id: str | None = None,
    plan_json: Any = None,
    node_json: Any = None,
    primitive: str | None = None,
    layout: str | None = None,
    precision: str | None = None,
    prune: float | None = None,
    model_name: str | None = None,
    family: str | None = None,
    extra_identity: Any = None,
) -> str:
    """The unique key of a measurement: 32 hex digits of sha256 over its identity.

    device is a DeviceSpec (its device_id is used) or a device_id string. plan_json and
    node_json may be JSON text, a dict, or an object with to_dict() (e.g. a Plan).
    """
    ident = {
        "kind": kind,
        "device_id": device.device_id if isinstance(device, DeviceSpec) else device,
        "threads": threads,
        "campaign": campaign,
        "graph_id": graph_id,
        "plan": _canon(plan_json, "plan_json"),
        "node": _canon(node_json, "node_json"),
        "primitive": primitive,
        "layout": layout,
        "precision": precision,
        "prune": None if prune is None else float(prune),
        "model_name": model_name,
        "family": family,
        "extra": _canon(extra_identity, "extra_identity"),
    }
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_HASH_PREFIX = re.compile(r"[0-9a-f]{8,32}")


def _nested(rows: list[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """{outer: {inner: count}} from (outer, inner, count) rows, in row order."""
    out: dict[str, dict[str, int]] = {}
    for outer, inner, n in rows:
        out.setdefault(str(outer), {})[str(inner)] = n
    return out


def _describe(dev_hash: str, device_json: str) -> str:
    """A device description's label in ``Store.info``: its hash prefix (a ``device`` filter), name, threads and
    measured fp32 throughput."""
    d = json.loads(device_json)
    gflops = d.get("peak_gflops_fp32")
    rate = f", {gflops:g} GFLOP/s" if gflops else ""
    return f"{dev_hash[:12]} ({d.get('name')}, {d.get('threads_used', '?')} threads{rate})"


@lru_cache(maxsize=256)
def _device_entry(device_json: str) -> tuple[str, tuple[str, str, str]]:
    """(description hash, (device_id, name, normalised JSON)) of a record's device_json; the records of a store
    share a few descriptions, so each is parsed and hashed once."""
    dev = load_device(json.loads(device_json))
    text = dev.to_json(indent=None)
    return hashlib.sha256(text.encode()).hexdigest()[:32], (dev.device_id, dev.name, text)


def remeasured_key(key: str, device_hash: str) -> str:
    """The key a merge gives a record whose own ``key`` is taken by a measurement under another description of
    the same device (:meth:`Store.merge_from`): 32 hex digits of sha256 over both."""
    return hashlib.sha256(f"{key}:{device_hash}".encode()).hexdigest()[:32]


def make_record(
    *,
    kind: str,
    device: DeviceSpec,
    campaign: str,
    threads: int,
    stats: LatencyStats | None = None,
    graph_id: str | None = None,
    plan_json: Any = None,
    node_json: Any = None,
    primitive: str | None = None,
    layout: str | None = None,
    precision: str | None = None,
    prune: float | None = None,
    model_name: str | None = None,
    family: str | None = None,
    peak_mem_bytes: int | None = None,
    est_mem_bytes: int | None = None,
    extra: Mapping[str, Any] | None = None,
    extra_identity: Any = None,
) -> Record:
    """Build a Record with its key (as record_key computes it), device JSON, versions and timestamp; a model
    record's ``extra_json`` also gets the runtime's ``fusion_revision`` and ``dispatch_revision``."""
    key = record_key(
        kind=kind, device=device, threads=threads, campaign=campaign, graph_id=graph_id, plan_json=plan_json,
        node_json=node_json, primitive=primitive, layout=layout, precision=precision, prune=prune,
        model_name=model_name, family=family, extra_identity=extra_identity,
    )  # fmt: skip
    if kind == "model":  # what the runtime folded and how it ran the steps (runtime.executor's revisions)
        from perfpredict.runtime.executor import DISPATCH_REVISION, FUSION_REVISION

        extra = {**(extra or {}), "fusion_revision": FUSION_REVISION, "dispatch_revision": DISPATCH_REVISION}
    lat: dict[str, Any] = {}
    if stats is not None:
        lat = dict(median_ms=stats.median_ms, iqr_ms=stats.iqr_ms, cv=stats.cv, n_repeats=stats.n_repeats,
                   stable=stats.stable, ci95_rel=stats.ci95_rel)  # fmt: skip
    return Record(
        kind=kind, key=key, campaign=campaign, device_name=device.name, device_json=device.to_json(indent=None),
        threads=threads, family=family, model_name=model_name, graph_id=graph_id,
        plan_json=_as_json(plan_json, "plan_json"), node_json=_as_json(node_json, "node_json"),
        primitive=primitive, layout=layout, precision=precision, prune=None if prune is None else float(prune),
        peak_mem_bytes=peak_mem_bytes, est_mem_bytes=est_mem_bytes, extra_json=_as_json(extra or {}, "extra"),
        **lat,
    )  # fmt: skip


def noise_recheck_record(original: Record, stats: LatencyStats, *, repeat: int = 0,
                         beacon: dict[str, Any] | None = None) -> Record:
    """A re-measurement of original (campaign "noise-recheck", extra_json {"original_key": ...}).

    repeat distinguishes several rechecks of the same record; ``beacon`` is the :mod:`perfpredict.beacon` timing of
    the same rounds (:func:`perfpredict.beacon.beacon_extra`), when the re-check was timed beside it.
    """
    extra = {"original_key": original.key, "original_campaign": original.campaign, "repeat": repeat}
    if beacon is not None:
        extra["beacon"] = beacon
    key = record_key(kind=original.kind, device=original.device(), threads=original.threads,
                     campaign=NOISE_CAMPAIGN, extra_identity={"original_key": original.key, "repeat": repeat})
    return replace(
        original, key=key, campaign=NOISE_CAMPAIGN, median_ms=stats.median_ms, iqr_ms=stats.iqr_ms, cv=stats.cv,
        n_repeats=stats.n_repeats, stable=stats.stable, ci95_rel=stats.ci95_rel, peak_mem_bytes=None,
        versions_json=_versions_text(), timestamp=_utc_now(), extra_json=json.dumps(extra, sort_keys=True),
    )  # fmt: skip


def memory_remeasure_record(original: Record, *, peak_bytes: int, weight_bytes: int, run_peak_bytes: int,
                            method: str = "allocator") -> Record:
    """A memory-only re-measurement of model record ``original`` (campaign ``memory-allocator``, no latency,
    extra_json {"original_key", "mem": {...}} plus the original's zoo spec, plan kind and seed). The plan is the
    original's: ``plan_json`` is left empty rather than copied (a plan is ~10 kB of JSON), so the record is
    meaningful only next to its original (:func:`perfpredict.samples.load_samples` attaches it)."""
    if original.kind != "model":
        raise DatasetError(f"record {original.key}: only model records carry a peak memory to re-measure")
    key = record_key(kind="model", device=original.device(), threads=original.threads, campaign=MEMORY_CAMPAIGN,
                     extra_identity={"original_key": original.key, "method": method})
    orig_extra = original.extra()
    extra = {k: orig_extra[k] for k in ("spec", "plan_kind", "seed") if k in orig_extra}
    extra.update({"original_key": original.key, "original_campaign": original.campaign,
                  "mem": {"weights": int(weight_bytes), "run_peak": int(run_peak_bytes), "method": method}})
    return replace(
        original, key=key, campaign=MEMORY_CAMPAIGN, plan_json=None, median_ms=None, iqr_ms=None, cv=None,
        n_repeats=None, stable=None, ci95_rel=None, peak_mem_bytes=int(peak_bytes), versions_json=_versions_text(),
        timestamp=_utc_now(), extra_json=json.dumps(extra, sort_keys=True),
    )  # fmt: skip


def step_times_key(original: Record, device: DeviceSpec) -> str:
    """The key of the ``step-times`` record of ``original`` timed on ``device`` (known before timing: resumable)."""
    return record_key(kind="model", device=device, threads=original.threads, campaign=STEPS_CAMPAIGN,
                      extra_identity={"original_key": original.key})


def step_times_record(original: Record, groups: Sequence[tuple[float, Sequence[str]]], *, device: DeviceSpec,
                      repeats: int) -> Record:
    """Where model record ``original``'s forward pass spends its time, timed step by step on ``device`` (campaign
    ``step-times``, no latency or memory of its own; extra_json {"original_key", "steps": {"repeats", "total_ms",
    "groups": [[ms, [node, ...]], ...]}} plus the original's zoo spec, plan kind and seed). ``groups`` are
    :func:`~perfpredict.runtime.executor.step_groups` (medians of ``repeats`` passes). ``device`` is the machine
    that timed the steps, which need not be the original's; like a memory re-measurement the record is meaningful
    only next to its original (:func:`perfpredict.samples.load_samples` attaches it)."""
    if original.kind != "model":
        raise DatasetError(f"record {original.key}: only model records have a forward pass to time step by step")
    key = step_times_key(original, device)
    orig_extra = original.extra()
    extra = {k: orig_extra[k] for k in ("spec", "plan_kind", "seed") if k in orig_extra}
    extra.update({"original_key": original.key, "original_campaign": original.campaign,
                  "steps": {"repeats": int(repeats), "total_ms": round(float(sum(ms for ms, _ in groups)), 6),
                            "groups": [[round(float(ms), 6), list(nodes)] for ms, nodes in groups]}})
    return replace(
        original, key=key, campaign=STEPS_CAMPAIGN, device_name=device.name, device_json=device.to_json(indent=None),
        plan_json=None, median_ms=None, iqr_ms=None, cv=None, n_repeats=int(repeats), stable=None, ci95_rel=None,
        peak_mem_bytes=None, est_mem_bytes=None, versions_json=_versions_text(), timestamp=_utc_now(),
        extra_json=json.dumps(extra, sort_keys=True),
    )  # fmt: skip


def memory_method_of(record: Record) -> str | None:
    """How ``record``'s peak memory was measured: ``"allocator"``, ``"rss"`` (the resident-set methods), or None
    when it has none."""
    if not record.peak_mem_bytes:
        return None
    method = record.extra().get("mem", {}).get("method")
    return "allocator" if method == "allocator" else "rss"


# ---------------------------------------------------------------- store

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    hash TEXT PRIMARY KEY, device_id TEXT NOT NULL, name TEXT NOT NULL, device_json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('layer', 'model')),
    campaign TEXT NOT NULL,
    device_name TEXT NOT NULL,
    device_hash TEXT NOT NULL REFERENCES devices(hash),
    threads INTEGER NOT NULL,
    family TEXT, model_name TEXT, graph_id TEXT, plan_json TEXT, node_json TEXT,
    primitive TEXT, layout TEXT, precision TEXT, prune REAL,
    median_ms REAL, iqr_ms REAL, cv REAL, n_repeats INTEGER, stable INTEGER, ci95_rel REAL,
    peak_mem_bytes INTEGER, est_mem_bytes INTEGER,
    versions_json TEXT NOT NULL, timestamp TEXT NOT NULL, extra_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_campaign ON records(campaign);
CREATE INDEX IF NOT EXISTS records_kind_device ON records(kind, device_name);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'perfpredict store is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'perfpredict store is append-only'); END;
CREATE TRIGGER IF NOT EXISTS devices_no_update BEFORE UPDATE ON devices
    BEGIN SELECT RAISE(ABORT, 'perfpredict store is append-only'); END;
CREATE TRIGGER IF NOT EXISTS devices_no_delete BEFORE DELETE ON devices
    BEGIN SELECT RAISE(ABORT, 'perfpredict store is append-only'); END;
"""

_FILTERS = ("kind", "device", "campaign", "threads", "family", "model_name")


_Recheck = tuple[str, float, str | None, float | None, float | None, float | None, str | None]
"""A noise re-check as :meth:`Store._noise_rechecks` lists it."""


class Store:
    """An open measurement store. Use open_store(); close() or a with-block when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        self._known_devices: set[str] = set()

    # -- lifecycle
    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- writing
    def append(self, record: Record, *, if_exists: str = "error") -> bool:
        """Insert one record in its own transaction; True if inserted.

        A record whose key is already stored raises DatasetError (if_exists="error") or is
        left alone and False returned (if_exists="skip"); stored records are never changed.
        """
        return self.append_many([record], if_exists=if_exists) == 1

    def append_many(self, records: Iterable[Record], *, if_exists: str = "error") -> int:
        """Insert records in one transaction (all or none); returns how many were inserted."""
        if if_exists not in ("error", "skip"):
            raise DatasetError(f"if_exists must be 'error' or 'skip', got {if_exists!r}")
        rows = [self._row(r) for r in records]
        verb = "INSERT OR IGNORE" if if_exists == "skip" else "INSERT"
        marks = ", ".join("?" * (len(_COLUMNS) + 1))
        sql = f"{verb} INTO records ({', '.join(_COLUMNS)}, device_hash) VALUES ({marks})"
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for dev_hash, dev_info in {(h, info) for _, h, info in rows}:
                    self._ensure_device(dev_hash, dev_info)
                inserted = 0
                for vals, _, _ in rows:
                    inserted += conn.execute(sql, vals).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise DatasetError(
                    f"{self.path}: a record with this key is already stored (the store is append-only; "
                    "use has(key) to skip, or if_exists='skip')"
                ) from None
            raise DatasetError(f"{self.path}: record rejected by the store ({exc})") from None
        except sqlite3.Error as exc:
            raise DatasetError(f"{self.path}: write failed ({exc})") from None
        if inserted:
            self._known_devices.update(h for _, h, _ in rows)
        return inserted

    def merge_from(self, other: "Store", batch: int = 2000) -> int:
        """Append every record of ``other`` that this store lacks (same keys are skipped, nothing stored is
        changed); returns how many were added. Each batch is one transaction, so an interrupted merge resumes.

        A record whose key is stored here with another device description is a measurement of the same machine
        (same ``device_id``) under other conditions, e.g. the same host measured busy and idle: it is kept, under
        :func:`remeasured_key` of its key and its description, so neither is lost and a second merge adds nothing.
        Re-measurements of such a record (noise re-checks, memory re-measurements) point at its new key.
        """
        added, chunk = 0, []
        renamed: dict[str, str] = {}
        for record in other.iter_records():
            chunk.append(record)
            if len(chunk) >= batch:
                added += self.append_many(self._rekey_redescribed(chunk, renamed), if_exists="skip")
                chunk = []
        return added + (self.append_many(self._rekey_redescribed(chunk, renamed), if_exists="skip") if chunk else 0)

    def _rekey_redescribed(self, records: list[Record], renamed: dict[str, str]) -> list[Record]:
        """``records`` with those whose key is stored under another device description re-keyed (``renamed``
        gains old -> new key), and references to re-keyed records (``original_key``) following them."""
        stored: dict[str, str] = {}
        keys = [r.key for r in records]
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            stored.update(self._conn.execute(
                f"SELECT key, device_hash FROM records WHERE key IN ({', '.join('?' * len(part))})", part).fetchall())
        out = []
        for r in records:
            if r.key in stored:
                own = self._row(r)[1]  # validates the record, as append_many will (its device entry is cached)
                if own != stored[r.key]:
                    renamed[r.key] = remeasured_key(r.key, own)
                    r = replace(r, key=renamed[r.key])
            extra = r.extra() if renamed and r.extra_json and "original_key" in r.extra_json else {}
            if extra.get("original_key") in renamed:
                r = replace(r, extra_json=json.dumps({**extra, "original_key": renamed[extra["original_key"]]}))
            out.append(r)
        return out

    def _row(self, r: Record) -> tuple[tuple, str, tuple[str, str, str]]:
        """(column values + device hash, device hash, (device_id, name, device_json)) of a valid record."""
        if not isinstance(r, Record):
            raise DatasetError(f"Store.append takes Record objects, got {type(r).__name__}")
        for name in _JSON_FIELDS:
            text = getattr(r, name)
            if text is not None:
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    raise DatasetError(f"record {r.key}: field '{name}' is not valid JSON") from None
        try:
            dev_hash, info = _device_entry(r.device_json)
        except BoardError as exc:
            raise DatasetError(f"record {r.key}: field 'device_json' is not a valid DeviceSpec ({exc})") from None
        vals = tuple(int(r.stable) if n == "stable" and r.stable is not None else getattr(r, n) for n in _COLUMNS)
        return vals + (dev_hash,), dev_hash, info

    def _ensure_device(self, dev_hash: str, info: tuple[str, str, str]) -> None:
        if dev_hash in self._known_devices:
            return
        self._conn.execute(
            "INSERT OR IGNORE INTO devices (hash, device_id, name, device_json) VALUES (?, ?, ?, ?)",
            (dev_hash, *info),
        )

    # -- reading
    def has(self, key: str) -> bool:
        """Whether a record with this key is stored."""
        return self._conn.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None

    def keys(self, campaign: str | None = None) -> set[str]:
        """All stored keys, or those of one campaign."""
        if campaign is None:
            cur = self._conn.execute("SELECT key FROM records")
        else:
            cur = self._conn.execute("SELECT key FROM records WHERE campaign = ?", (campaign,))
        return {k for (k,) in cur}

    def memory_remeasurements(self) -> dict[str, int]:
        """Original record key -> peak memory (bytes) of its ``memory-allocator`` re-measurement."""
        rows = self._conn.execute("SELECT extra_json, peak_mem_bytes FROM records WHERE campaign = ? AND "
                                  "peak_mem_bytes IS NOT NULL", (MEMORY_CAMPAIGN,)).fetchall()
        return {json.loads(extra)["original_key"]: int(peak) for extra, peak in rows}

    def step_times(self) -> dict[str, list[tuple[str, list]]]:
        """Original record key -> (device_id of the machine that timed them, step groups) of each ``step-times``
        record of it (:func:`step_times_record`), oldest first."""
        out: dict[str, list[tuple[str, list]]] = {}
        for extra, dev in self._conn.execute(
                "SELECT r.extra_json, d.device_id FROM records r JOIN devices d ON d.hash = r.device_hash "
                "WHERE r.campaign = ? ORDER BY r.id", (STEPS_CAMPAIGN,)):
            ex = json.loads(extra)
            out.setdefault(ex["original_key"], []).append((dev, ex["steps"]["groups"]))
        return out

    def has_memory_method(self, method: str) -> bool:
        """Whether any model record's peak memory was measured by ``method`` (``"allocator"`` or ``"rss"``)."""
        # records' extra_json is written both compact and spaced, so match the parsed field, not the text
        op = "=" if method == "allocator" else "IS NOT"
        return self._conn.execute(
            "SELECT 1 FROM records WHERE kind = 'model' AND peak_mem_bytes IS NOT NULL AND "
            f"json_extract(extra_json, '$.mem.method') {op} 'allocator' LIMIT 1").fetchone() is not None

    def devices(self) -> list[DeviceSpec]:
        """Every distinct DeviceSpec referenced by the store, in insertion order."""
        rows = self._conn.execute("SELECT device_json FROM devices ORDER BY rowid").fetchall()
        return [load_device(json.loads(t)) for (t,) in rows]

    def iter_records(
        self,
        kind: str | None = None,
        device: str | None = None,
        campaign: str | None = None,
        threads: int | None = None,
        family: str | None = None,
        model_name: str | None = None,
    ) -> Iterator[Record]:
        """Records in insertion order, filtered by any of kind, device (its name, its device_id where two
        machines share a name, or at least 8 leading hex digits of a device description's hash where one machine
        was described twice, e.g. measured busy and idle: ``dataset info`` lists them), campaign, threads, family,
        model_name."""
        where, args = [], []
        for col, v in (("kind", kind), ("campaign", campaign), ("threads", threads),
                       ("family", family), ("model_name", model_name)):  # fmt: skip
            if v is not None:
                where.append(f"r.{col} = ?")
                args.append(v)
        if device is not None:
            # a description's hash prefix only when it looks like one ('' matches no hash)
            where.append("(r.device_name = ? OR d.device_id = ? OR d.hash LIKE ?)")
            args += [device, device, device + "%" if _HASH_PREFIX.fullmatch(device) else ""]
        sql = (
            f"SELECT {', '.join('r.' + c for c in _COLUMNS)}, d.device_json FROM records r "
            "JOIN devices d ON d.hash = r.device_hash"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY r.id"
        )
        dev_cache: dict[str, str] = {}
        for row in self._conn.execute(sql, args):
            d = dict(zip(_COLUMNS, row[:-1]))
            d["device_json"] = dev_cache.setdefault(row[-1], row[-1])
            if d["stable"] is not None:
                d["stable"] = bool(d["stable"])
            yield Record(**d)

    def to_dataframe(self, **filters: Any):
        """A pandas DataFrame with one row per record (columns as Record fields); filters as iter_records."""
        import pandas as pd

        unknown = sorted(set(filters) - set(_FILTERS))
        if unknown:
            raise DatasetError(f"unknown filter(s) {', '.join(unknown)}; accepted: {', '.join(_FILTERS)}")
        cols = [f.name for f in fields(Record)]
        return pd.DataFrame([asdict(r) for r in self.iter_records(**filters)], columns=cols)

    def export(self, path: str | os.PathLike, **filters: Any) -> int:
        """Write the records to CSV or Parquet (chosen by the suffix .csv / .parquet); returns the row count."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise DatasetError(f"{p}: export format is chosen by suffix; accepted: .csv, .parquet")
        df = self.to_dataframe(**filters)
        if suffix == ".csv":
            df.to_csv(p, index=False)
        else:
            try:
                df.to_parquet(p, index=False)
            except ImportError:
                raise DatasetError(f"{p}: Parquet export needs pyarrow (pip install pyarrow)") from None
        return len(df)

    def info(self) -> dict[str, Any]:
        """Summary for `perfpredict dataset info`: counts by kind, device, threads, family, campaign; noise floor."""
        c = self._conn

        def counts(col: str) -> dict[str, int]:
            rows = c.execute(f"SELECT {col}, COUNT(*) FROM records GROUP BY {col} ORDER BY {col}").fetchall()
            return {("none" if k is None else str(k)): n for k, n in rows}

        rechecks = self._noise_rechecks()
        n, unstable, with_mem, first, last = c.execute(
            "SELECT COUNT(*), SUM(stable = 0), SUM(peak_mem_bytes IS NOT NULL), MIN(timestamp), MAX(timestamp) "
            "FROM records"
        ).fetchone()
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "records": n,
            "devices": c.execute("SELECT COUNT(*) FROM devices").fetchone()[0],
            "by_kind": counts("kind"),
            "by_device": counts("device_name"),
            "by_device_id": {k: n for k, n in c.execute(
                "SELECT d.device_id, COUNT(*) FROM records r JOIN devices d ON d.hash = r.device_hash "
                "GROUP BY d.device_id ORDER BY d.device_id").fetchall()},
            "by_description": {_describe(h, t): n for h, t, n in c.execute(
                "SELECT d.hash, d.device_json, COUNT(*) FROM records r JOIN devices d ON d.hash = r.device_hash "
                "GROUP BY d.hash ORDER BY MIN(r.id)").fetchall()},
            "by_threads": counts("threads"),
            "by_family": counts("family"),
            "by_campaign": counts("campaign"),
            "by_campaign_device": _nested(c.execute(
                "SELECT campaign, device_name, COUNT(*) FROM records GROUP BY campaign, device_name "
                "ORDER BY campaign, MIN(id)").fetchall()),
            "unstable": unstable or 0,
            "with_peak_mem": with_mem or 0,
            "first_timestamp": first,
            "last_timestamp": last,
            "noise": _noise_summary(rechecks, None),
            "noise_by_kind": {k: v for k in ("layer", "model") if (v := _noise_summary(rechecks, k)) is not None},
            "noise_by_campaign": {camp: _noise_summary(rechecks, None, camp)
                                  for camp in sorted({r[6] for r in rechecks if r[6] is not None})},
        }

    def beacon_references(self) -> dict[tuple[str, int], float]:
        """(device description JSON, threads) -> the median :mod:`perfpredict.beacon` time (ms) over the model records
        (re-checks aside) timed beside the current beacon: the machine speed that the ``"beacon"`` latency target of
        :func:`perfpredict.samples.load_samples` scales every record to."""
        from statistics import median

        from perfpredict.beacon import beacon_ms

        times: dict[tuple[str, int], list[float]] = {}
        rows = self._conn.execute(
            "SELECT d.device_json, r.threads, r.extra_json FROM records r JOIN devices d ON d.hash = r.device_hash "
            "WHERE r.kind = 'model' AND r.campaign != ? AND r.extra_json LIKE '%\"beacon\"%'", (NOISE_CAMPAIGN,))
        for device_json, threads, extra in rows:
            ms = beacon_ms(json.loads(extra))
            if ms is not None:
                times.setdefault((device_json, int(threads)), []).append(ms)
        return {k: float(median(v)) for k, v in times.items()}

    def noise(self, kind: str | None = None, campaign: str | None = None) -> dict[str, Any] | None:
        """Agreement of noise-recheck records with their originals (measure.noise_floor), or None if there are none;
        ``kind`` ("layer" or "model") keeps the re-checks of that kind only, ``campaign`` those whose originals are
        of that campaign. Where re-checks and their originals were both timed beside the :mod:`perfpredict.beacon`
        workload, ``"beacon"`` holds the same figures for their beacon-normalised latencies (each median divided by
        its own beacon's)."""
        return _noise_summary(self._noise_rechecks(), kind, campaign)

    def _noise_rechecks(self) -> list[_Recheck]:
        """Every noise re-check as (kind, its median, its original's key, the original's median, its beacon's median,
        the original's beacon's median, the original's campaign): the key is None when the re-check names none, the
        original's median and campaign None when that record is not in the store, a beacon's None when that record
        was not timed beside one."""
        from perfpredict.beacon import beacon_ms

        rows = self._conn.execute(
            "SELECT kind, extra_json, median_ms FROM records WHERE campaign = ? AND median_ms IS NOT NULL",
            (NOISE_CAMPAIGN,),
        ).fetchall()
        found = []
        for kind, extra, med in rows:
            ex = json.loads(extra)
            found.append((kind, med, ex.get("original_key") or None, beacon_ms(ex)))
        originals: dict[str, tuple[float, float | None, str]] = {}
        keys = list({orig for _, _, orig, _ in found if orig})
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = (f"SELECT key, median_ms, extra_json, campaign FROM records "
                 f"WHERE key IN ({', '.join('?' * len(chunk))})")
            originals.update((k, (m, beacon_ms(json.loads(e)), camp)) for k, m, e, camp in self._conn.execute(q, chunk))
        out = []
        for kind, med, orig, beacon in found:
            o_med, o_beacon, o_camp = originals.get(orig, (None, None, None)) if orig else (None, None, None)
            out.append((kind, med, orig, o_med, beacon, o_beacon, o_camp))
        return out


def _noise_summary(rechecks: Sequence[_Recheck],
                   kind: str | None, campaign: str | None = None) -> dict[str, Any] | None:
    """:meth:`Store.noise` of the re-checks ``rechecks`` (:meth:`Store._noise_rechecks`) of ``kind`` (None: all)
    whose originals are of ``campaign`` (None: any)."""
    if kind not in (None, "layer", "model"):
        raise DatasetError(f"noise: kind must be 'layer', 'model' or None, got {kind!r}")
    chosen = [r[1:6] for r in rechecks if (kind is None or r[0] == kind) and (campaign is None or r[6] == campaign)]
    if not chosen:
        return None
    clean = lambda d: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}  # noqa: E731
    out = noise_floor([(orig, med) for med, key, orig, _, _ in chosen if orig and orig > 0 and med > 0])
    out["orphans"] = sum(1 for _, key, orig, _, _ in chosen if key and not orig)
    both = [(orig / ob, med / b) for med, _, orig, b, ob in chosen if orig and orig > 0 and med > 0 and b and ob]
    if both:
        out["beacon"] = clean(noise_floor(both))
        # the raw figures of the same re-checks, to compare like with like
        out["beacon"]["raw"] = clean(noise_floor([(orig, med) for med, _, orig, b, ob in chosen
                                                  if orig and orig > 0 and med > 0 and b and ob]))
    return clean(out)


def _path_of(path_or_url: str | os.PathLike) -> Path:
    if isinstance(path_or_url, os.PathLike):
        return Path(path_or_url)
    if not isinstance(path_or_url, str) or not path_or_url:
        raise DatasetError(f"store must be a path or sqlite:///PATH, got {path_or_url!r}")
    if "://" in path_or_url:
        scheme, _, rest = path_or_url.partition("://")
        if scheme != "sqlite" or not rest.startswith("/") or len(rest) < 2:
            raise DatasetError(
                f"store {path_or_url!r}: accepted forms are a file path, sqlite:///relative.db or sqlite:////abs.db"
            )
        return Path(rest[1:])
    return Path(path_or_url)


def open_store(path_or_url: str | os.PathLike, *, create: bool = True) -> Store:
    """Open (or, with create=True, create) a store: a plain path or "sqlite:///x.db"."""
    path = _path_of(path_or_url)
    if not path.exists():
        if not create:
            raise DatasetError(f"{path}: no such store")
        if not path.parent.is_dir():
            raise DatasetError(f"{path}: directory {path.parent} does not exist")
    elif path.is_dir():
        raise DatasetError(f"{path}: is a directory, expected a store file")
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            conn.close()
            raise DatasetError(f"{path}: is an SQLite database but not a perfpredict store (no meta table)")
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                conn.close()
                raise DatasetError(
                    f"{path}: store schema_version {version} is newer than this perfpredict supports "
                    f"({SCHEMA_VERSION}); upgrade perfpredict"
                )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        if "records" not in tables:  # create the schema in one transaction
            conn.executescript(
                "BEGIN IMMEDIATE;" + _DDL
                + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
    except sqlite3.DatabaseError as exc:
        raise DatasetError(f"{path}: cannot open as a perfpredict store ({exc})") from None
    return Store(path, conn)
