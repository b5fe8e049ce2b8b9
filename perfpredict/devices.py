"""DeviceSpec: what a target device is, as read from a board.json or measured on the host.

board.json schema, version 1 (a JSON object; unknown keys are rejected):

Required
  schema_version      1 (a file with a newer version is refused)
  name                non-empty string, e.g. "raspberry_pi_4"
  kind                "cpu" | "gpu" | "npu"

Static facts (optional; from spec sheets or the host's /proc and /sys)
  cpu_model           string, e.g. "Cortex-A72", "Intel Xeon Gold 6240"
  arch                string, e.g. "x86_64", "aarch64", "armv7l"
  isa_features        list of lower-case strings, e.g. ["neon", "asimddp", "fp16"] or
                      ["avx2", "fma", "avx512f", "avx512_vnni"]. Vocabulary: Linux cpuinfo
                      flag names, plus "neon" for aarch64 "asimd" and "fp16" for "asimdhp"
  cores, threads      positive integers (physical cores, hardware threads); threads >= cores
  freq_mhz_max, freq_mhz_base, freq_mhz_min
                      CPU clock in MHz, each in [50, 10000]; min <= base <= max
  l1d_kb, l2_kb, l3_kb
                      size of one cache instance in KiB (per core for private caches, per
                      cluster / socket for shared ones), as Linux sysfs reports it
  memory_gb           main memory in GB
  clusters            heterogeneous CPUs: list of {"core": str, "count": int,
                      "freq_mhz_max": number (optional), "l2_kb": number (optional)};
                      the counts must add up to cores when cores is given

GPU facts (optional; enough to express NeuSight's device_configs, see `from_neusight`)
  gpu_sm_count, gpu_cores_per_sm   positive integers
  gpu_freq_mhz, gpu_mem_bandwidth_gbs, gpu_memory_gb, gpu_l2_mb,
  gpu_tflops_fp32, gpu_tflops_fp16  positive numbers

Measured (optional; written by `describe_host`)
  peak_gflops_fp32    best fp32 matmul throughput, GFLOP/s
  peak_gops_int8      best int8 matmul throughput, GOP/s
  mem_bw_copy_gbs, mem_bw_triad_gbs
                      STREAM-style bandwidth in GB/s (copy counts 2, triad 3 arrays moved)
  fingerprint         {reference layer name: median latency in ms}, see REFERENCE_LAYERS
  threads_used        thread count the measured figures were taken with

Provenance (optional)
  source, notes       free text: where the facts came from, caveats

`DeviceSpec.device_id` hashes the static facts only (not measured figures nor provenance),
so re-measuring the same machine keeps its identity in the measurement store.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

from perfpredict.cache import cache_dir
from perfpredict.errors import BoardError, PerfPredictError

__all__ = [
    "SCHEMA_VERSION",
    "KINDS",
    "REFERENCE_LAYERS",
    "CoreCluster",
    "DeviceSpec",
    "load_device",
    "from_neusight",
    "describe_host",
    "list_example_boards",
    "load_example_board",
]

SCHEMA_VERSION = 1
KINDS = ("cpu", "gpu", "npu")


@dataclass(frozen=True)
class CoreCluster:
    """One group of identical cores in a heterogeneous (big.LITTLE) CPU."""

    core: str
    count: int
    freq_mhz_max: float | None = None
    l2_kb: float | None = None


@dataclass(frozen=True)
class DeviceSpec:
    """A device description; see the module docstring for the meaning of each field."""

    name: str
    kind: str
    schema_version: int = SCHEMA_VERSION
    # static facts
    cpu_model: str | None = None
    arch: str | None = None
    isa_features: tuple[str, ...] = ()
    cores: int | None = None
    threads: int | None = None
    freq_mhz_max: float | None = None
    freq_mhz_base: float | None = None
    freq_mhz_min: float | None = None
    l1d_kb: float | None = None
    l2_kb: float | None = None
    l3_kb: float | None = None
    memory_gb: float | None = None
    clusters: tuple[CoreCluster, ...] = ()
    # GPU facts
    gpu_sm_count: int | None = None
    gpu_cores_per_sm: int | None = None
    gpu_freq_mhz: float | None = None
    gpu_mem_bandwidth_gbs: float | None = None
    gpu_memory_gb: float | None = None
    gpu_l2_mb: float | None = None
    gpu_tflops_fp32: float | None = None
    gpu_tflops_fp16: float | None = None
    # measured
    peak_gflops_fp32: float | None = None
    peak_gops_int8: float | None = None
    mem_bw_copy_gbs: float | None = None
    mem_bw_triad_gbs: float | None = None
    fingerprint: Mapping[str, float] = field(default_factory=dict)
    threads_used: int | None = None
    # provenance
    source: str | None = None
    notes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in schema order; unset (None / empty) optional fields are omitted."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name not in _REQUIRED and v in ((), {})):
                continue
            if f.name == "clusters":
                v = [{k: x for k, x in vars(c).items() if x is not None} for c in v]
            elif f.name == "isa_features":
                v = list(v)
            elif f.name == "fingerprint":
                v = dict(v)
            out[f.name] = v
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The board.json text for this spec."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike) -> None:
        """Write this spec as a board.json file."""
        Path(path).write_text(self.to_json() + "\n")

    @property
    def device_id(self) -> str:
        """16-hex-digit hash of the static facts (stable across re-measurement)."""
        d = self.to_dict()
        ident = {k: d[k] for k in _STATIC if k in d}
        if "isa_features" in ident:
            ident["isa_features"] = sorted(ident["isa_features"])
        text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_REQUIRED = ("schema_version", "name", "kind")
_MEASURED = (
    "peak_gflops_fp32",
    "peak_gops_int8",
    "mem_bw_copy_gbs",
    "mem_bw_triad_gbs",
    "fingerprint",
    "threads_used",
)
_STATIC = tuple(f.name for f in fields(DeviceSpec) if f.name not in _MEASURED + ("source", "notes"))
_ACCEPTED = tuple(f.name for f in fields(DeviceSpec))


# ---------------------------------------------------------------- validation


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(where: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise BoardError(f"{where}: field '{key}' must be a non-empty string, got {v!r}")
    return v


def _pos_int(where: str, key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BoardError(f"{where}: field '{key}' must be a positive integer, got {v!r}")
    return v


def _pos_num(where: str, key: str, v: Any, lo: float = 0.0, hi: float = math.inf, unit: str = "") -> float:
    if not _is_num(v) or not (lo < v <= hi if lo == 0.0 else lo <= v <= hi):
        if lo == 0.0:
            rng = "a positive number" if hi == math.inf else f"a positive number up to {hi:g}"
        else:
            rng = f"a number in [{lo:g}, {hi:g}]"
        raise BoardError(f"{where}: field '{key}' must be {rng}{' ' + unit if unit else ''}, got {v!r}")
    return float(v)


def _mhz(where: str, key: str, v: Any) -> float:
    return _pos_num(where, key, v, 50.0, 10000.0, "(MHz)")


def _kind(where: str, key: str, v: Any) -> str:
    if v not in KINDS:
        raise BoardError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {v!r}")
    return v


def _schema(where: str, key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise BoardError(f"{where}: field 'schema_version' must be a positive integer, got {v!r}")
    if v > SCHEMA_VERSION:
        raise BoardError(
            f"{where}: schema_version {v} is newer than this perfpredict supports ({SCHEMA_VERSION}); "
            "upgrade perfpredict"
        )
    return v


def _isa(where: str, key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(
        isinstance(x, str) and x and x == x.lower() and not x.isspace() for x in v
    ):
        raise BoardError(f"{where}: field 'isa_features' must be a list of lower-case strings, got {v!r}")
    return tuple(dict.fromkeys(v))


def _fingerprint(where: str, key: str, v: Any) -> dict[str, float]:
    if not isinstance(v, Mapping):
        raise BoardError(f"{where}: field 'fingerprint' must be an object of layer name -> latency ms, got {v!r}")
    for k, ms in v.items():
        if not isinstance(k, str) or not _is_num(ms) or ms <= 0:
            raise BoardError(f"{where}: field 'fingerprint' entry {k!r} must be a positive latency in ms, got {ms!r}")
    return {k: float(ms) for k, ms in v.items()}


_CLUSTER_KEYS = ("core", "count", "freq_mhz_max", "l2_kb")


def _clusters(where: str, key: str, v: Any) -> tuple[CoreCluster, ...]:
    if isinstance(v, Mapping) or not isinstance(v, (list, tuple)):
        raise BoardError(f"{where}: field 'clusters' must be a list of objects, got {v!r}")
    out = []
    for i, c in enumerate(v):
        w = f"{where}: clusters[{i}]"
        if isinstance(c, CoreCluster):
            c = {k: x for k, x in vars(c).items() if x is not None}
        if not isinstance(c, Mapping):
            raise BoardError(f"{w} must be an object with keys {', '.join(_CLUSTER_KEYS)}, got {c!r}")
        unknown = sorted(set(c) - set(_CLUSTER_KEYS))
        if unknown:
            raise BoardError(f"{w} has unknown key(s) {', '.join(unknown)}; accepted: {', '.join(_CLUSTER_KEYS)}")
        for req in ("core", "count"):
            if req not in c:
                raise BoardError(f"{w} is missing required key '{req}'")
        out.append(
            CoreCluster(
                core=_text(w, "core", c["core"]),
                count=_pos_int(w, "count", c["count"]),
                freq_mhz_max=None if c.get("freq_mhz_max") is None else _mhz(w, "freq_mhz_max", c["freq_mhz_max"]),
                l2_kb=None if c.get("l2_kb") is None else _pos_num(w, "l2_kb", c["l2_kb"], unit="(KiB)"),
            )
        )
    return tuple(out)


def _num(unit: str = "", hi: float = math.inf) -> Callable[[str, str, Any], float]:
    return lambda where, key, v: _pos_num(where, key, v, hi=hi, unit=unit)


_CHECKS: dict[str, Callable[[str, str, Any], Any]] = {
    "schema_version": _schema,
    "name": _text,
    "kind": _kind,
    "cpu_model": _text,
    "arch": _text,
    "isa_features": _isa,
    "cores": _pos_int,
    "threads": _pos_int,
    "freq_mhz_max": _mhz,
    "freq_mhz_base": _mhz,
    "freq_mhz_min": _mhz,
    "l1d_kb": _num("(KiB)", 1e6),
    "l2_kb": _num("(KiB)", 1e7),
    "l3_kb": _num("(KiB)", 1e8),
    "memory_gb": _num("(GB)", 1e5),
    "clusters": _clusters,
    "gpu_sm_count": _pos_int,
    "gpu_cores_per_sm": _pos_int,
    "gpu_freq_mhz": _mhz,
    "gpu_mem_bandwidth_gbs": _num("(GB/s)"),
    "gpu_memory_gb": _num("(GB)", 1e5),
    "gpu_l2_mb": _num("(MB)"),
    "gpu_tflops_fp32": _num("(TFLOP/s)"),
    "gpu_tflops_fp16": _num("(TFLOP/s)"),
    "peak_gflops_fp32": _num("(GFLOP/s)"),
    "peak_gops_int8": _num("(GOP/s)"),
    "mem_bw_copy_gbs": _num("(GB/s)"),
    "mem_bw_triad_gbs": _num("(GB/s)"),
    "fingerprint": _fingerprint,
    "threads_used": _pos_int,
    "source": _text,
    "notes": _text,
}
assert set(_CHECKS) == set(_ACCEPTED)


def _validate(d: Mapping[str, Any], where: str) -> DeviceSpec:
    if not isinstance(d, Mapping):
        raise BoardError(f"{where}: must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_ACCEPTED))
    if unknown:
        raise BoardError(f"{where}: unknown field(s) {', '.join(unknown)}; accepted fields: {', '.join(_ACCEPTED)}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise BoardError(f"{where}: missing required field(s) {', '.join(missing)}")
    vals = {k: (None if v is None and k not in _REQUIRED else _CHECKS[k](where, k, v)) for k, v in d.items()}
    vals = {k: v for k, v in vals.items() if v is not None}
    cores, threads = vals.get("cores"), vals.get("threads")
    if cores and threads and threads < cores:
        raise BoardError(f"{where}: field 'threads' ({threads}) must be >= 'cores' ({cores})")
    freqs = [(k, vals[k]) for k in ("freq_mhz_min", "freq_mhz_base", "freq_mhz_max") if k in vals]
    for (ka, a), (kb, b) in zip(freqs, freqs[1:]):
        if a > b:
            raise BoardError(f"{where}: field '{ka}' ({a:g}) must be <= '{kb}' ({b:g})")
    if cores and vals.get("clusters") and sum(c.count for c in vals["clusters"]) != cores:
        total = sum(c.count for c in vals["clusters"])
        raise BoardError(f"{where}: field 'clusters' counts add up to {total}, but 'cores' is {cores}")
    return DeviceSpec(**vals)


def load_device(source: str | os.PathLike | Mapping[str, Any] | DeviceSpec) -> DeviceSpec:
    """Read and validate a board.json (path) or an already-parsed dict; return a DeviceSpec."""
    if isinstance(source, DeviceSpec):
        return _validate(source.to_dict(), source.name)
    if isinstance(source, Mapping):
        return _validate(source, "board")
    if not isinstance(source, (str, os.PathLike)):
        raise BoardError(f"load_device: expected a path to a board.json or a dict, got {type(source).__name__}")
    path = Path(source)
    where = path.name
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BoardError(f"{path}: no such board file") from None
    except OSError as exc:
        raise BoardError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BoardError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return _validate(d, where)


_NEUSIGHT_KEYS = {
    "Device": "name",
    "Dev_Mem": "gpu_memory_gb",
    "Mem_Bw": "gpu_mem_bandwidth_gbs",
    "Num_Sm": "gpu_sm_count",
    "Core_Per_SM": "gpu_cores_per_sm",
    "Freq": "gpu_freq_mhz",
    "SingleFLOPs": "gpu_tflops_fp32",  # NeuSight gives GFLOP/s
    "L2Cache": "gpu_l2_mb",
}


def from_neusight(d: Mapping[str, Any], source: str = "NeuSight device_configs") -> DeviceSpec:
    """Convert a NeuSight GPU spec dict (Device, Dev_Mem, Mem_Bw, Num_Sm, ...) into a DeviceSpec."""
    unknown = sorted(set(d) - set(_NEUSIGHT_KEYS))
    if unknown:
        raise BoardError(f"NeuSight spec: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(_NEUSIGHT_KEYS)}")
    if "Device" not in d:
        raise BoardError("NeuSight spec: missing required key 'Device'")
    out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": "gpu", "source": source}
    for k, v in d.items():
        out[_NEUSIGHT_KEYS[k]] = v
    if _is_num(out.get("gpu_tflops_fp32")):
        out["gpu_tflops_fp32"] = out["gpu_tflops_fp32"] / 1000.0
    for k in ("gpu_sm_count", "gpu_cores_per_sm"):
        if _is_num(out.get(k)) and float(out[k]).is_integer():
            out[k] = int(out[k])
    return _validate(out, f"NeuSight spec {d['Device']!r}")


# ---------------------------------------------------------------- example boards


def list_example_boards() -> list[str]:
    """Names of the example boards shipped with perfpredict (usable with load_example_board)."""
    root = resources.files("perfpredict") / "boards"
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def load_example_board(name: str) -> DeviceSpec:
    """Load a shipped example board by name, e.g. "raspberry_pi_4"."""
    names = list_example_boards()
    if name not in names:
        raise BoardError(f"unknown example board {name!r}; available: {', '.join(names)}")
    res = resources.files("perfpredict") / "boards" / f"{name}.json"
    try:
        d = json.loads(res.read_text())
    except json.JSONDecodeError as exc:
        raise BoardError(f"{name}.json: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return _validate(d, f"{name}.json")


# ---------------------------------------------------------------- host description

_X86_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
_ARM_FEATURES = ("asimddp", "bf16", "i8mm", "sve", "sve2", "sme")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _cpuinfo() -> dict[str, Any]:
    """Model name, ISA features and physical core count from /proc/cpuinfo."""
    text = _read("/proc/cpuinfo") or ""
    model = None
    flags: set[str] = set()
    core_ids: set[tuple[str, str]] = set()
    physical = core = None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if core is not None:
                core_ids.add((physical or "0", core))
            physical = core = None
            continue
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key in ("model name", "Model name", "cpu model") and model is None:
            model = val
        elif key in ("flags", "Features"):
            flags.update(val.split())
        elif key == "physical id":
            physical = val
        elif key == "core id":
            core = val
        elif key == "CPU part" and model is None:
            model = _ARM_PARTS.get(val.lower())
    isa = [f for f in _X86_FEATURES if f in flags]
    if "asimd" in flags or "neon" in flags:
        isa.insert(0, "neon")
    isa += [f for f in _ARM_FEATURES if f in flags]
    if "asimdhp" in flags or "fphp" in flags:
        isa.append("fp16")
    return {"cpu_model": model, "isa_features": isa, "cores": len(core_ids) or None}


_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72",
              "0xd0b": "Cortex-A76", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd0c": "Neoverse-N1",
              "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2"}  # fmt: skip


def _size_kb(text: str) -> float | None:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text)
    if not m:
        return None
    return float(m.group(1)) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 * 1024}[m.group(2)]


def _sysfs(cpu: int = 0) -> dict[str, Any]:
    """Cache sizes and clock range of one CPU from /sys/devices/system/cpu."""
    out: dict[str, Any] = {}
    base = Path(f"/sys/devices/system/cpu/cpu{cpu}")
    for idx in sorted(base.glob("cache/index*")):
        level, ctype, size = (_read(str(idx / n)) for n in ("level", "type", "size"))
        kb = _size_kb(size or "")
        if not level or kb is None:
            continue
        level, ctype = level.strip(), (ctype or "").strip()
        if level == "1" and ctype == "Data":
            out["l1d_kb"] = kb
        elif level in ("2", "3") and ctype in ("Unified", "Data"):
            out[f"l{level}_kb"] = kb
    for key, name in (("freq_mhz_max", "cpuinfo_max_freq"), ("freq_mhz_min", "cpuinfo_min_freq"),
                      ("freq_mhz_base", "base_frequency")):  # fmt: skip
        text = _read(str(base / "cpufreq" / name))
        if text and text.strip().isdigit() and int(text) > 0:
            out[key] = int(text) / 1000.0  # kHz -> MHz
    return out


def _physical_cores() -> int | None:
    """Distinct physical cores among online CPUs, from sysfs topology sibling lists."""
    groups = set()
    for topo in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        text = _read(str(topo / "core_cpus_list")) or _read(str(topo / "thread_siblings_list"))
        if text:
            groups.add(text.strip())
    return len(groups) or None


def _memory_gb() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) * 1024 / 1e9, 2)
    return None


def _best_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak_fp32(sizes: tuple[int, ...], repeats: int) -> float:
    import torch

    best = 0.0
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        best = max(best, 2 * n**3 / _best_s(lambda: torch.mm(a, b, out=c), repeats) / 1e9)
    return best


def _peak_int8(sizes: tuple[int, ...], repeats: int) -> tuple[float | None, str]:
    """Best int8 GOP/s over torch._int_mm and fbgemm quantized linear; (None, why) if neither runs."""
    import warnings

    import torch

    results: dict[str, float] = {}
    for n in sizes:
        x = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        w = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        try:
            gops = 2 * n**3 / _best_s(lambda: torch._int_mm(x, w), repeats) / 1e9
            results["torch._int_mm"] = max(results.get("torch._int_mm", 0.0), gops)
        except (AttributeError, RuntimeError, NotImplementedError):
            pass
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engine = torch.backends.quantized.engine
                torch.backends.quantized.engine = "fbgemm"
                try:
                    xq = torch.quantize_per_tensor(torch.randn(n, n), 0.05, 64, torch.quint8)
                    wq = torch.quantize_per_channel(
                        torch.randn(n, n), torch.full((n,), 0.02), torch.zeros(n, dtype=torch.long), 0, torch.qint8
                    )
                    packed = torch.ops.quantized.linear_prepack(wq, None)
                    t = _best_s(lambda: torch.ops.quantized.linear(xq, packed, 0.1, 64), repeats)
                finally:
                    torch.backends.quantized.engine = engine
            gops = 2 * n**3 / t / 1e9
            results["fbgemm quantized.linear"] = max(results.get("fbgemm quantized.linear", 0.0), gops)
        except (AttributeError, RuntimeError, NotImplementedError):
            pass
    if not results:
        return None, "int8: neither torch._int_mm nor fbgemm quantized.linear ran"
    best = max(results, key=results.__getitem__)
    detail = ", ".join(f"{k} {v:.0f}" for k, v in results.items())
    return results[best], f"int8 GOP/s by method: {detail}"


def _bandwidth(elems: int, repeats: int) -> tuple[float, float]:
    """STREAM copy and triad (a = b + s*c) in GB/s on float32 tensors of elems elements."""
    import torch

    a, b, c = torch.zeros(elems), torch.ones(elems), torch.full((elems,), 2.0)
    nbytes = elems * 4
    copy = 2 * nbytes / _best_s(lambda: a.copy_(b), repeats) / 1e9
    triad = 3 * nbytes / _best_s(lambda: torch.add(b, c, alpha=3.0, out=a), repeats) / 1e9
    return copy, triad


def _reference_layers() -> dict[str, Callable[[], Callable[[], Any]]]:
    """Builders of the fingerprint's reference layers (batch 1, fp32, NCHW torch functional)."""
    import torch
    import torch.nn.functional as F

    def conv(cin: int, cout: int, hw: int, k: int, stride: int = 1, groups: int = 1):
        def build():
            x = torch.randn(1, cin, hw, hw)
            w = torch.randn(cout, cin // groups, k, k)
            return lambda: F.conv2d(x, w, None, stride, k // 2, 1, groups)

        return build

    def gemm():
        x, w, b = torch.randn(1, 512), torch.randn(1000, 512), torch.randn(1000)
        return lambda: F.linear(x, w, b)

    def maxpool():
        x = torch.randn(1, 64, 112, 112)
        return lambda: F.max_pool2d(x, 3, 2, 1)

    def add_relu():
        x, y = torch.randn(1, 256, 56, 56), torch.randn(1, 256, 56, 56)
        return lambda: F.relu(x + y)

    def gap():
        x = torch.randn(1, 2048, 7, 7)
        return lambda: F.adaptive_avg_pool2d(x, 1)

    return {
        "conv3x3_64_56": conv(64, 64, 56, 3),
        "conv1x1_256to64_56": conv(256, 64, 56, 1),
        "dwconv3x3_32_112": conv(32, 32, 112, 3, groups=32),
        "conv3x3_s2_64to128_56": conv(64, 128, 56, 3, stride=2),
        "stem7x7_s2_3to64_224": conv(3, 64, 224, 7, stride=2),
        "conv1x1_96to576_14": conv(96, 576, 14, 1),
        "dwconv5x5_s2_144_56": conv(144, 144, 56, 5, stride=2, groups=144),
        "gemm_512to1000": gemm,
        "maxpool3x3_s2_64_112": maxpool,
        "add_relu_256_56": add_relu,
        "global_avgpool_2048_7": gap,
    }


REFERENCE_LAYERS = (
    "conv3x3_64_56",
    "conv1x1_256to64_56",
    "dwconv3x3_32_112",
    "conv3x3_s2_64to128_56",
    "stem7x7_s2_3to64_224",
    "conv1x1_96to576_14",
    "dwconv5x5_s2_144_56",
    "gemm_512to1000",
    "maxpool3x3_s2_64_112",
    "add_relu_256_56",
    "global_avgpool_2048_7",
)


def _fingerprint_run(quick: bool) -> tuple[dict[str, float], list[str]]:
    """Median latency (ms) of each reference layer, and the names that missed the CI target."""
    import torch

    from perfpredict.measure import measure_latency

    builders = _reference_layers()
    opts = (
        dict(warmup=1, min_repeats=3, max_repeats=5, target_ci=0.05, time_cap_s=0.02)
        if quick
        else dict(warmup=5, min_repeats=10, max_repeats=200, target_ci=0.01, time_cap_s=1.0)
    )
    out, unstable = {}, []
    with torch.inference_mode():
        for name in REFERENCE_LAYERS:
            stats = measure_latency(builders[name](), **opts)
            out[name] = round(stats.median_ms, 5)
            if not stats.stable:
                unstable.append(name)
    return out, unstable


def _host_name(model: str | None, threads: int | None) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (model or platform.machine() or "cpu").lower()).strip("-")
    return f"host-{slug}-{threads or 0}t"


def describe_host(threads: int | None = None, quick: bool = False, name: str | None = None) -> DeviceSpec:
    """Describe this machine: static facts from /proc and /sys, plus measured throughput.

    Measures peak fp32 GFLOP/s (torch.mm), int8 GOP/s (best of torch._int_mm and fbgemm
    quantized linear), STREAM copy/triad bandwidth (torch, arrays >= 4x L3) and the
    REFERENCE_LAYERS latency fingerprint. threads sets torch's thread count for the duration
    (restored afterwards). quick=True uses small sizes and few repeats (a few seconds; cache
    effects then inflate the bandwidth figures). name defaults to "host-<cpu model>-<N>t".
    """
    import torch

    from perfpredict.measure import torch_threads

    static = _static_facts()
    logical, mem_gb = static["threads"], static["memory_gb"]
    notes = []
    load = (_read("/proc/loadavg") or "").split()
    if load:
        notes.append(f"load average {load[0]} on {logical} CPUs when measuring started")
    if "freq_mhz_max" not in static:
        notes.append("no cpufreq in sysfs: clock range unknown")
    l3_bytes = (static.get("l3_kb") or static.get("l2_kb") or 8192) * 1024
    if quick:
        mm_sizes, int8_sizes, reps = (256,), (256,), 3
        elems = 4 * 1024 * 1024
    else:
        mm_sizes, int8_sizes, reps = (1024, 2048), (1024, 2048), 5
        per_array = max(64 * 2**20, 4 * l3_bytes)
        if mem_gb:
            per_array = min(per_array, int(mem_gb * 1e9 / 16))
        elems = int(per_array // 4)
    with torch_threads(threads) as used, torch.inference_mode():
        gflops = _peak_fp32(mm_sizes, reps)
        gops, int8_note = _peak_int8(int8_sizes, reps)
        copy_bw, triad_bw = _bandwidth(elems, 10 if not quick else 3)
        fingerprint, unstable = _fingerprint_run(quick)
    notes.append(int8_note)
    if unstable and not quick:  # quick mode takes too few repeats for a CI at all
        notes.append(f"fingerprint layers short of the CI target (machine busy?): {', '.join(unstable)}")
    if quick:
        notes.append("quick mode: small sizes and few repeats, figures are rough")
    d: dict[str, Any] = {
        **static,
        **({"name": name} if name else {}),
        "peak_gflops_fp32": round(gflops, 2),
        "peak_gops_int8": None if gops is None else round(gops, 2),
        "mem_bw_copy_gbs": round(copy_bw, 2),
        "mem_bw_triad_gbs": round(triad_bw, 2),
        "fingerprint": fingerprint,
        "threads_used": used,
        "source": (
            f"describe_host{' (quick)' if quick else ''}: /proc/cpuinfo, /sys/devices/system/cpu, /proc/meminfo; "
            f"measured with torch {torch.__version__}"
        ),
        "notes": "; ".join(notes),
    }
    return _validate({k: v for k, v in d.items() if v is not None}, "describe_host")


def _static_facts() -> dict[str, Any]:
    """What :func:`describe_host` reads about this host without measuring (the DeviceSpec's static fields)."""
    info = _cpuinfo()
    cores = info["cores"] or _physical_cores()
    logical = os.cpu_count()
    return {"schema_version": SCHEMA_VERSION, "name": _host_name(info["cpu_model"], logical), "kind": "cpu",
            "cpu_model": info["cpu_model"], "arch": platform.machine() or None, "isa_features": info["isa_features"],
            "cores": min(cores, logical) if cores and logical else cores, "threads": logical, **_sysfs(),
            "memory_gb": _memory_gb()}


def static_host() -> DeviceSpec | None:
    """A DeviceSpec of this host's static facts only (what :func:`describe_host` reads, nothing measured), or
    None when they do not make a valid spec; its ``device_id`` identifies the machine without measuring it."""
    try:
        return load_device({k: v for k, v in _static_facts().items() if v is not None})
    except PerfPredictError:
        return None


def local_device(threads: int | None = None, *, refresh: bool = False, quick: bool = False) -> DeviceSpec:
    """This machine at ``threads`` (default: torch's current count): measured once by :func:`describe_host`
    and then read back from :func:`perfpredict.cache.cache_dir`.

    A predictor sees the device through measured figures (GFLOP/s, bandwidth, the latency fingerprint), so
    describing the machine afresh for every run would move its predictions, and the plans chosen on them, with
    each measurement's noise; the cached description keeps them fixed. The cache is keyed by the static facts'
    ``device_id``, the thread count and the torch version (which sets the kernels measured); ``refresh``
    measures again. The full measurement (not ``quick``) is the default: it is what profiling campaigns store,
    so a predictor trained on this machine's data sees the same figures.
    """
    import torch

    t = threads or torch.get_num_threads()
    host = static_host()
    if host is None:
        return describe_host(threads=t, quick=quick)
    mode = "quick" if quick else "full"
    path = cache_dir() / "devices" / f"{host.device_id}-{t}t-{mode}-torch{torch.__version__}.json"
    if path.exists() and not refresh:
        try:
            spec = load_device(path)
            if spec.device_id == host.device_id and spec.threads_used == t:
                return spec
        except PerfPredictError:
            pass  # a damaged cache file is measured again and replaced
    spec = describe_host(threads=t, quick=quick)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(spec.to_json() + "\n")
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only costs the measurement next time
    return spec


def resolve_device(text: str, threads: int | None = None, *, refresh: bool = False) -> DeviceSpec:
    """A device named on a command line: ``local`` (:func:`local_device` at ``threads``), the name of a shipped
    example board, or a board.json path."""
    if text == "local":
        return local_device(threads, refresh=refresh)
    if not Path(text).exists() and text in list_example_boards():
        return load_example_board(text)
    return load_device(text)
