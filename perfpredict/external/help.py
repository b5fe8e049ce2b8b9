"""HELP's multi-device latency tables (Lee et al., NeurIPS 2021): NAS-Bench-201, FBNet and OFA latencies.

One latency (ms) per architecture per device; the list index is the architecture index. Files are read in
place from any folder with HELP's layout, so a folder holding other devices (the reserved evaluation
devices) works the same way. Accepted layouts for a folder ``R`` and a space ``S``:

* ``R/data/S/latency/<device>.pt``, ``R/S/latency/<device>.pt``, ``R/S/<device>.pt`` or, when ``R`` is the
  space folder itself, ``R/latency/<device>.pt`` (torch zip archives of plain Python lists, read with
  zipfile + pickle, torch not needed);
* ``R/derived_csv/S_latency_ms.csv`` or ``R/S_latency_ms.csv`` (one column per device).

The architecture list (``str_arch2idx.pt`` / ``metainfo.pt`` / ``ofa_archs.pt`` or the CSV's architecture
columns) and the 10 reference architectures (``hardware_embedding_index.pt`` / ``.json``) are taken from
the first folder that has them, falling back to the default external copy (:func:`external_dataset`).

A device's *fingerprint* is HELP's hardware embedding: its latencies of the 10 reference architectures,
stored in :attr:`DeviceSpec.fingerprint` under the keys ``"<space>#<arch index>"``.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from perfpredict.devices import SCHEMA_VERSION, DeviceSpec, load_device
from perfpredict.errors import DatasetError
from perfpredict.external import external_dataset

if TYPE_CHECKING:
    from perfpredict.transfer import EncodedGraph

SPACES = ("nasbench201", "fbnet", "ofa")
"""Search spaces HELP measured."""

FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
"""FBNet block vocabulary, in HELP's op-index order (kernel size, expansion, group count; skip)."""

HELP_SPLITS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "nasbench201": {
        "meta_train": ("1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50",
                       "pixel3", "essential_ph_1", "samsung_s7"),
        "meta_valid": ("titanx_1", "titanx_32", "titanx_256", "gold_6240"),
        "meta_test": ("titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"),
    },
    "fbnet": {
        "meta_train": ("1080ti_1", "1080ti_32", "1080ti_64", "silver_4114", "silver_4210r", "samsung_a50",
                       "pixel3", "essential_ph_1", "samsung_s7"),
        "meta_valid": ("titanx_1", "titanx_32", "titanx_64", "gold_6240"),
        "meta_test": ("fpga", "raspi4", "eyeriss"),
    },
}
"""HELP's published device splits (its run scripts)."""

HELP_TRAIN_POOL = {"nasbench201": 900, "fbnet": 4000, "ofa": 4000}
"""HELP's ``num_meta_train_sample``: shots come from archs [0, n), queries from [n, n + queries)."""

_META_FILES = {"hardware_embedding_index", "str_arch2idx", "arch", "metainfo", "ofa_archs", "architecture",
               "nasbench201"}


def load_pt(path: str | Path) -> Any:
    """Read a torch ``.pt`` archive that holds only plain Python objects, without torch (zipfile + pickle)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            inner = [n for n in z.namelist() if n.endswith("data.pkl")]
            if not inner:
                raise DatasetError(f"{path}: not a torch archive (no data.pkl inside)")
            return pickle.Unpickler(io.BytesIO(z.read(inner[0]))).load()
    except (zipfile.BadZipFile, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot be read as a torch .pt archive ({type(exc).__name__})") from None


def fingerprint_key(space: str, index: int) -> str:
    """The DeviceSpec.fingerprint key of reference architecture ``index`` of ``space``."""
    return f"{space}#{int(index)}"


def device_kind(device: str) -> str:
    """board.json ``kind`` of a HELP device name (GPUs by model name, CPUs and phones as cpu, else npu)."""
    if re.search(r"(\d080ti|titan|v100|rtx|a100)", device):
        return "gpu"
    if re.match(r"(silver|gold|raspi|pixel|samsung|essential)", device):
        return "cpu"
    return "npu"


@dataclass(frozen=True)
class HelpData:
    """Latency tables of one search space: ``latency_ms[device][arch index]`` in ms.

    ``archs`` holds the architectures in index order: NB201 arch strings, FBNet tuples of 22 op indices
    (into :data:`FBNET_OPS`), OFA dicts (``ks``, ``e``, ``d``, ``r``). ``reference_index`` lists HELP's 10
    reference architectures; ``sources`` says which file each device came from.
    """

    space: str
    archs: tuple[Any, ...]
    latency_ms: Mapping[str, np.ndarray]
    reference_index: tuple[int, ...]
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def devices(self) -> tuple[str, ...]:
        """Device names, sorted."""
        return tuple(sorted(self.latency_ms))

    def __len__(self) -> int:
        return len(self.archs)

    def latency(self, device: str) -> np.ndarray:
        """Latencies (ms) of every architecture on ``device``; a DatasetError names the devices available."""
        try:
            return self.latency_ms[device]
        except KeyError:
            raise DatasetError(f"device '{device}' is not in the HELP {self.space} data; available: "
                               f"{', '.join(self.devices)}") from None

    def missing(self, device: str, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Arch indices (of ``indices``, default all) that ``device`` has no latency for: a folder may hold a
        device measured on part of the space only, written as ``nan`` (e.g. just what a held-out device needs)."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=int)
        return idx[~np.isfinite(self.latency(device)[idx])]

    def complete(self, device: str) -> bool:
        """Whether ``device`` has a latency for every architecture (a training device needs that)."""
        return not len(self.missing(device))

    def matrix(self, devices: Sequence[str]) -> np.ndarray:
        """Latencies as an (architectures, devices) array, columns in the order given."""
        return np.stack([self.latency(d) for d in devices], axis=1)

    def fingerprint(self, device: str) -> dict[str, float]:
        """HELP's hardware embedding of ``device``: {"<space>#<index>": ms} over the reference architectures."""
        lat = self.latency(device)
        return {fingerprint_key(self.space, i): float(lat[i]) for i in self.reference_index}

    def device_spec(self, device: str) -> DeviceSpec:
        """A DeviceSpec of ``device`` whose measured fingerprint is its reference-architecture latencies.

        Non-positive reference latencies (degenerate cells measured as 0) are clamped to 1 microsecond, since
        board.json fingerprints must be positive.
        """
        fp = {k: max(v, 1e-3) for k, v in self.fingerprint(device).items()}
        return load_device({"schema_version": SCHEMA_VERSION, "name": device, "kind": device_kind(device),
                            "fingerprint": fp,
                            "source": f"HELP {self.space} latency table ({self.sources.get(device, 'HELP')})"})

    def subset(self, devices: Iterable[str]) -> "HelpData":
        """The same tables restricted to ``devices`` (each must be present)."""
        devices = list(devices)
        return HelpData(self.space, self.archs, {d: self.latency(d) for d in devices}, self.reference_index,
                        {d: self.sources.get(d, "") for d in devices})


# ------------------------------------------------------------------------------------------ locating files


def _roots(data: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if data is None:
        return [external_dataset("HELP")]
    items = [data] if isinstance(data, (str, Path)) else list(data)
    roots = [Path(p).expanduser() for p in items]
    for r in roots:
        if not r.is_dir():
            raise DatasetError(f"HELP data folder {r} does not exist")
    return roots


def _space_dirs(root: Path, space: str) -> list[Path]:
    dirs = [root / "data" / space / "latency", root / space / "latency", root / space]
    if root.name == space:
        dirs.insert(0, root / "latency")
    return [d for d in dirs if d.is_dir()]


def _csv_files(root: Path, space: str) -> list[Path]:
    return [p for p in (root / "derived_csv" / f"{space}_latency_ms.csv", root / f"{space}_latency_ms.csv")
            if p.is_file()]


def _meta_dirs(root: Path, space: str) -> list[Path]:
    dirs = [root / "data" / space, root / space]
    if root.name == space:
        dirs.insert(0, root)
    return [d for d in dirs if d.is_dir()]


_CSV_META_COLS = {"nb201_index", "arch_str", "index", "op_idx_list", "block_ops", "ks", "e", "d", "r"}


def _read_csv(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError(f"{path}: empty CSV file") from None
        cols: dict[str, list[str]] = {h: [] for h in header}
        for row in reader:
            if len(row) != len(header):
                raise DatasetError(f"{path}: row {reader.line_num} has {len(row)} fields, header has {len(header)}")
            for h, v in zip(header, row):
                cols[h].append(v)
    return header, cols


def list_devices(space: str = "nasbench201", data: str | Path | Sequence[str | Path] | None = None) -> list[str]:
    """Names of the devices with latency tables for ``space`` in the folders ``data`` (default: HELP copy)."""
    return sorted(_locate(space, _roots(data)))


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise DatasetError(f"unknown HELP search space '{space}'; accepted: {', '.join(SPACES)}")


def _locate(space: str, roots: Sequence[Path]) -> dict[str, tuple[str, Path]]:
    """device -> ("pt", file) or ("csv", file), first folder first, .pt before CSV within a folder."""
    _check_space(space)
    found: dict[str, tuple[str, Path]] = {}
    for root in roots:
        for d in _space_dirs(root, space):
            for p in sorted(d.glob("*.pt")):
                if p.stem not in _META_FILES and p.stem not in found:
                    found[p.stem] = ("pt", p)
        for c in _csv_files(root, space):
            with open(c, newline="") as f:
                header = next(csv.reader(f), [])
            for h in header:
                if h not in _CSV_META_COLS and h not in found:
                    found[h] = ("csv", c)
    return found


# ------------------------------------------------------------------------------------------ metadata


def _load_reference(space: str, roots: Sequence[Path]) -> tuple[int, ...] | None:
    for root in roots:
        for d in _meta_dirs(root, space):
            p = d / "hardware_embedding_index.pt"
            if p.is_file():
                return tuple(int(i) for i in load_pt(p))
        j = root / "derived_csv" / "hardware_embedding_index.json"
        for p in (j, root / "hardware_embedding_index.json"):
            if p.is_file():
                try:
                    return tuple(int(i) for i in json.loads(p.read_text())[space])
                except (KeyError, ValueError, TypeError):
                    continue
    return None


def _archs_from_csv(space: str, cols: Mapping[str, list[str]]) -> tuple[Any, ...] | None:
    if space == "nasbench201" and "arch_str" in cols:
        return tuple(cols["arch_str"])
    if space == "fbnet" and "op_idx_list" in cols:
        return tuple(tuple(int(x) for x in s.split()) for s in cols["op_idx_list"])
    if space == "ofa" and "ks" in cols:
        return tuple({"ks": [int(x) for x in k.split()], "e": [int(x) for x in e.split()],
                      "d": [int(x) for x in d.split()], "r": int(r)}
                     for k, e, d, r in zip(cols["ks"], cols["e"], cols["d"], cols["r"]))
    return None


def _load_archs(space: str, roots: Sequence[Path]) -> tuple[Any, ...] | None:
    for root in roots:
        for d in _meta_dirs(root, space):
            if space == "nasbench201" and (d / "str_arch2idx.pt").is_file():
                m = load_pt(d / "str_arch2idx.pt")
                out: list[str | None] = [None] * len(m)
                for s, i in m.items():
                    out[int(i)] = s
                if any(a is None for a in out):
                    raise DatasetError(f"{d / 'str_arch2idx.pt'}: architecture indices are not 0..{len(m) - 1}")
                return tuple(out)  # type: ignore[arg-type]
            if space == "fbnet" and (d / "metainfo.pt").is_file():
                return tuple(tuple(int(x) for x in a["op_idx_list"]) for a in load_pt(d / "metainfo.pt")["arch"])
            if space == "fbnet" and (d / "arch.pt").is_file():
                return tuple(tuple(int(x) for x in a) for a in load_pt(d / "arch.pt"))
            if space == "ofa" and (d / "ofa_archs.pt").is_file():
                return tuple(load_pt(d / "ofa_archs.pt")["arch"])
        for c in _csv_files(root, space):
            archs = _archs_from_csv(space, _read_csv(c)[1])
            if archs is not None:
                return archs
    return None


# ------------------------------------------------------------------------------------------ loading


def load_help(space: str = "nasbench201", data: str | Path | Sequence[str | Path] | None = None,
              devices: Sequence[str] | None = None) -> HelpData:
    """Load HELP latency tables of ``space`` for ``devices`` (default: every device found).

    ``data`` is one folder or several (searched in order; a device is read from the first that has it);
    default: the HELP copy under :func:`external_root`. A device not found raises a DatasetError naming
    the devices available.
    """
    roots = _roots(data)
    found = _locate(space, roots)
    if not found:
        raise DatasetError(f"no HELP {space} latency files under {', '.join(map(str, roots))} (expected "
                           f"data/{space}/latency/<device>.pt, {space}/<device>.pt or "
                           f"derived_csv/{space}_latency_ms.csv)")
    wanted = list(devices) if devices is not None else sorted(found)
    missing = [d for d in wanted if d not in found]
    if missing:
        raise DatasetError(f"device(s) {', '.join(missing)} not in the HELP {space} data; available: "
                           f"{', '.join(sorted(found))}")
    fallback = [] if data is None else [external_dataset("HELP")] if _default_exists() else []
    meta_roots = list(roots) + fallback
    archs = _load_archs(space, meta_roots)
    ref = _load_reference(space, meta_roots)
    if archs is None or ref is None:
        raise DatasetError(f"HELP {space}: architecture list or hardware_embedding_index not found under "
                           f"{', '.join(map(str, meta_roots))}")
    csv_cache: dict[Path, dict[str, list[str]]] = {}
    lat: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for dev in wanted:
        kind, path = found[dev]
        if kind == "pt":
            values = load_pt(path)
        else:
            if path not in csv_cache:
                csv_cache[path] = _read_csv(path)[1]
            values = csv_cache[path][dev]
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: latencies of '{dev}' are not numbers") from None
        if arr.ndim != 1 or len(arr) != len(archs):
            raise DatasetError(f"{path}: '{dev}' has {arr.size} latencies, the {space} space has {len(archs)} "
                               "architectures")
        lat[dev] = arr
        sources[dev] = str(path)
    return HelpData(space, archs, lat, ref, sources)


# ------------------------------------------------------------------------------------------ encodings

FBNET_STAGES = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
"""FBNet's macro network: (channels, blocks, first stride) per stage, 22 searchable blocks in all."""
FBNET_FEATURES = len(FBNET_OPS) + 4 + 1 + len(FBNET_STAGES) + 2


def encode_fbnet(arch: Sequence[int]) -> "EncodedGraph":
    """An FBNet architecture (22 op indices) as a chain graph of its blocks.

    FBNet's macro network is not built in our IR; each node is one searchable block with its op one-hot,
    kernel / expansion / group / skip, relative position, stage one-hot, log channels and stride.
    """
    from perfpredict.transfer import EncodedGraph

    blocks = [(c, s if b == 0 else 1, st) for st, (c, n, s) in enumerate(FBNET_STAGES) for b in range(n)]
    if len(arch) != len(blocks) or any(not 0 <= int(o) < len(FBNET_OPS) for o in arch):
        raise DatasetError(f"FBNet arch must be {len(blocks)} op indices in 0..{len(FBNET_OPS) - 1}, got {list(arch)}")
    x = np.zeros((len(blocks), FBNET_FEATURES), np.float32)
    for i, (o, (c, stride, st)) in enumerate(zip(arch, blocks)):
        name = FBNET_OPS[int(o)]
        x[i, int(o)] = 1.0
        j = len(FBNET_OPS)
        if name != "skip":
            k, e = name.split("_")[:2]
            x[i, j:j + 3] = (int(k[1:]) / 5.0, int(e[1:]) / 6.0, float(name.endswith("_g2")))
        x[i, j + 3] = float(name == "skip")
        x[i, j + 4] = i / (len(blocks) - 1)
        x[i, j + 5 + st] = 1.0
        x[i, -2:] = (np.log2(c) / 10.0, stride / 2.0)
    ei = np.array([np.arange(len(blocks) - 1), np.arange(1, len(blocks))], np.int64)
    return EncodedGraph(x, ei)


def encode_archs(data: HelpData, indices: Sequence[int], mode: str = "eager", cache: bool = True,
                 progress: bool = False) -> list["EncodedGraph"]:
    """Encodings of architectures ``indices`` of ``data``'s space, for :class:`perfpredict.transfer.ResourceModel`.

    NAS-Bench-201: the IR graph of :func:`perfpredict.nasbench201.nb201_graph` in ``mode`` (default
    ``eager``, the computation HELP's PyTorch measurements ran), encoded by
    :func:`perfpredict.transfer.encode_graph`; FBNet: :func:`encode_fbnet`. NB201 encodings are cached in
    ``<cache dir>/help/`` (node features as float16, compressed: about 4 MB for all 15,625; building one
    takes about 40 ms).
    """
    from perfpredict.transfer import ENCODING_VERSION, pack_encodings, unpack_encodings

    idx = [int(i) for i in indices]
    if data.space == "fbnet":
        return [encode_fbnet(data.archs[i]) for i in idx]
    if data.space != "nasbench201":
        raise DatasetError(f"no graph encoding for the HELP {data.space} space; supported: nasbench201, fbnet")
    from perfpredict.cache import cache_dir
    from perfpredict.nasbench201 import nb201_graph
    from perfpredict.transfer import encode_graph

    path = cache_dir() / "help" / f"nasbench201-{mode}-enc{ENCODING_VERSION}.npz"
    have: dict[str, "EncodedGraph"] = {}
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                packed = {k: z[k] for k in z.files}
            have = dict(zip(packed["arch"].tolist(), unpack_encodings(packed)))
        except (OSError, ValueError, KeyError):
            have = {}
    todo = sorted({data.archs[i] for i in idx if data.archs[i] not in have})
    if todo:
        from tqdm import tqdm

        for a in tqdm(todo, desc="NB201 graphs", disable=not progress, unit="arch"):
            have[a] = encode_graph(nb201_graph.__wrapped__(a, mode=mode))
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            names = list(have)
            packed = pack_encodings([have[a] for a in names])
            packed["x"] = packed["x"].astype(np.float16)  # features lie in about [0, 1]: halves the cache
            tmp = path.with_name(f"{path.stem}.tmp.npz")
            np.savez_compressed(tmp, arch=np.array(names), **packed)
            tmp.replace(path)
    return [have[data.archs[i]] for i in idx]


# ------------------------------------------------------------------------------------------ transfer evaluation

HELP_PUBLISHED = {"nasbench201": {"shots": 10, "spearman_mean": 0.932, "spearman_min": 0.802, "spearman_max": 0.989,
                                  "devices": HELP_SPLITS["nasbench201"]["meta_test"]}}
"""HELP's published 10-shot Spearman on its NAS-Bench-201 meta-test devices (paper, Table 2)."""


@dataclass(frozen=True)
class TransferProtocol:
    """How :func:`evaluate_transfer` samples, following HELP (``loader.py`` of its code).

    Queries are archs [pool, pool + queries); the shot pool is archs [0, pool) with the target's top and
    bottom 10% latencies removed; every repeat draws ``k`` shots at random from it on top of the 10
    reference architectures of the fingerprint (so HELP's "10-shot" is our k = 10: 10 reference + 10
    shots). Metrics are reported on the queries with the target's top/bottom 10% removed (HELP) and on
    all queries. The source model trains on ``train_archs`` random archs outside the queries (all of
    them if fewer), reference archs included; the target device's values are never used in training.
    """

    pool: int
    queries: int = 1000
    train_archs: int = 2000
    repeats: int = 5
    trim: float = 0.1
    graph_mode: str = "eager"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(vars(self))


def _trimmed(idx: np.ndarray, lat: np.ndarray, trim: float) -> np.ndarray:
    order = idx[np.argsort(lat[idx], kind="stable")]
    lo, hi = int(len(order) * trim), int(len(order) * (1 - trim))
    return order[lo:hi]


def _require(data: HelpData, device: str, indices: np.ndarray | None, why: str) -> None:
    gap = data.missing(device, indices)
    if len(gap):
        raise DatasetError(f"device '{device}' has no latency for {len(gap)} architecture(s) (first: index "
                           f"{int(gap[0])}); {why}")


def evaluate_transfer(data: HelpData, train_devices: Sequence[str], test_devices: Sequence[str],
                      shots: Sequence[int] = (0, 5, 10, 20), queries: int = 1000, seed: int = 0,
                      val_device: str | None = None, protocol: TransferProtocol | None = None,
                      config: Any = None, progress: bool = False,
                      save_model: str | Path | None = None) -> dict[str, Any]:
    """Train the multi-device GNN on ``train_devices`` and measure transfer to each of ``test_devices``.

    ``val_device`` (default: the last of ``train_devices``) is left out of training and used for early
    stopping (zero-shot error of its queries after fitting its fingerprint). For every test device and
    shot count ``k`` the adaptation (:meth:`perfpredict.transfer.MultiDeviceModel.adapt`) is fitted on the
    10 reference architectures plus ``k`` random shots, ``protocol.repeats`` times, and scored on the
    queries: Spearman rho, MAPE, share within +-10% (means over repeats) and ``methods``, the mean weight of
    each candidate in the adapted predictions (the CV-weighted ensemble's members).
    ``save_model`` writes the trained model as a :class:`perfpredict.transfer.MultiDevicePredictor`
    checkpoint (its reference workloads are the 10 reference architectures, keys
    ``"<space>#<index>"``, so a board whose fingerprint holds their latencies is predicted zero-shot).
    """
    import time

    from perfpredict.transfer import MultiDeviceConfig, fit_multi_device, transfer_metrics

    t0 = time.time()
    train_devices, test_devices = list(train_devices), list(test_devices)
    overlap = sorted(set(train_devices) & set(test_devices))
    if overlap:
        raise DatasetError(f"device(s) {', '.join(overlap)} are both training and test devices")
    for dev in train_devices + test_devices:
        data.latency(dev)
    if any(k < 0 for k in shots):
        raise DatasetError(f"shot counts must be >= 0, got {list(shots)}")
    proto = protocol or TransferProtocol(pool=HELP_TRAIN_POOL.get(data.space, 900), queries=queries)
    n = len(data)
    if proto.pool + 1 >= n:
        raise DatasetError(f"HELP {data.space}: {n} archs leave no queries after a shot pool of {proto.pool}")
    q_idx = np.arange(proto.pool, min(n, proto.pool + proto.queries))
    pool_idx = np.arange(proto.pool)
    ref = np.array(data.reference_index)
    if val_device is None:
        if len(train_devices) < 2:
            raise DatasetError("need at least 2 training devices (one is left out as the validation device)")
        val_device = train_devices[-1]
    elif val_device not in train_devices:
        data.latency(val_device)
    for dev in train_devices + [val_device]:
        _require(data, dev, None, "a training device needs every architecture (hold it out as a test device instead)")
    for dev in test_devices:
        _require(data, dev, np.r_[ref, pool_idx, q_idx], f"a held-out device needs its reference architectures "
                 f"and archs [0, {int(q_idx[-1]) + 1})")
    fit_devices = [d for d in train_devices if d != val_device]
    if not fit_devices:
        raise DatasetError(f"no training device is left once the validation device '{val_device}' is set aside: "
                           "give at least 2 training devices, or a validation device that is not one of them")
    rng = np.random.default_rng(seed)
    candidates = np.setdiff1d(np.arange(n), q_idx)
    take = min(len(candidates), proto.train_archs)
    train_idx = np.union1d(rng.choice(candidates, take, replace=False), ref)
    needed = np.unique(np.r_[train_idx, q_idx, pool_idx, ref])
    enc_list = encode_archs(data, needed, mode=proto.graph_mode, progress=progress)
    enc = dict(zip(needed.tolist(), enc_list))
    cfg = config or MultiDeviceConfig(seed=seed, outlier_ratio=10.0)
    val_lat = data.latency(val_device)
    val_q = _trimmed(q_idx, val_lat, proto.trim)
    model = fit_multi_device([enc[i] for i in train_idx], data.matrix(fit_devices)[train_idx], fit_devices, cfg,
                             val_device=([enc[i] for i in ref], val_lat[ref], [enc[i] for i in val_q], val_lat[val_q]),
                             progress=progress)
    if save_model is not None:
        from perfpredict.transfer import MultiDevicePredictor

        phi_r = model.factors([enc[i] for i in ref])
        MultiDevicePredictor(model, {fingerprint_key(data.space, i): v for i, v in zip(ref, phi_r)},
                             {d: data.fingerprint(d) for d in fit_devices},
                             {"space": data.space, "graph_mode": proto.graph_mode if data.space == "nasbench201"
                              else "fbnet block chain", "trained_on": "HELP latency tables",
                              "val_device": val_device}).save(save_model)
    phi_q = model.factors([enc[i] for i in q_idx])
    phi_pool = dict(zip(pool_idx.tolist(), model.factors([enc[i] for i in pool_idx])))
    phi_ref = model.factors([enc[i] for i in ref])
    results: dict[str, Any] = {}
    for dev in test_devices:
        lat = data.latency(dev)
        shot_pool = np.setdiff1d(_trimmed(pool_idx, lat, proto.trim), ref)
        q_trim = _trimmed(q_idx, lat, proto.trim)
        in_trim = np.isin(q_idx, q_trim)
        per_k: dict[str, Any] = {}
        for k in shots:
            rows, methods = [], {}
            for r in range(proto.repeats if k > 0 else 1):
                r_rng = np.random.default_rng([seed, r, k])
                pick = r_rng.choice(shot_pool, min(k, len(shot_pool)), replace=False) if k else np.zeros(0, int)
                phi = np.r_[phi_ref, np.array([phi_pool[i] for i in pick]).reshape(len(pick), phi_ref.shape[1])]
                y = np.r_[lat[ref], lat[pick]]
                ad = model.adapt(phi, y)
                pred = ad.predict(phi_q, model)
                m_trim = transfer_metrics(pred[in_trim], lat[q_idx][in_trim])
                m_all = transfer_metrics(pred, lat[q_idx])
                rows.append([m_trim["spearman"], m_trim["mape"], m_trim["within_10"], m_all["spearman"],
                             m_all["mape"], m_all["within_10"]])
                for name, w in ad.weights.items():
                    methods[name] = methods.get(name, 0.0) + w
            mean = np.nanmean(np.array(rows, np.float64), axis=0)
            per_k[str(k)] = {"spearman": mean[0], "mape": mean[1], "within_10": mean[2], "spearman_all": mean[3],
                             "mape_all": mean[4], "within_10_all": mean[5], "repeats": len(rows),
                             "methods": {m: round(w / len(rows), 3)
                                         for m, w in sorted(methods.items(), key=lambda p: -p[1])}}
        results[dev] = per_k
    summary = {}
    for k in shots:
        vals = [results[d][str(k)] for d in test_devices]
        summary[str(k)] = {m: float(np.mean([v[m] for v in vals])) for m in
                           ("spearman", "mape", "within_10", "spearman_all", "mape_all", "within_10_all")}
        summary[str(k)]["spearman_min"] = float(np.min([v["spearman"] for v in vals]))
    src_fit = model.predict_sources(phi_q, fit_devices)
    source_rho = {d: transfer_metrics(src_fit[:, j], data.latency(d)[q_idx])["spearman"]
                  for j, d in enumerate(fit_devices)}
    return {"space": data.space, "protocol": {**proto.to_dict(), "seed": seed, "query_range": [int(q_idx[0]),
            int(q_idx[-1]) + 1], "train_archs_used": int(len(train_idx))},
            "train_devices": fit_devices, "val_device": val_device, "test_devices": test_devices,
            "shots": list(shots), "results": results, "summary": summary,
            "source_fit_spearman": source_rho, "model": {**cfg.to_dict(), **{k: v for k, v in model.training.items()
                                                                           if k != "devices"}},
            "seconds": round(time.time() - t0, 1)}


def _default_exists() -> bool:
    try:
        external_dataset("HELP")
        return True
    except DatasetError:
        return False


__all__ = ["SPACES", "FBNET_OPS", "HELP_SPLITS", "HELP_TRAIN_POOL", "HelpData", "load_pt", "load_help",
           "list_devices", "fingerprint_key", "device_kind", "encode_archs", "encode_fbnet", "FBNET_STAGES",
           "HELP_PUBLISHED", "TransferProtocol", "evaluate_transfer"]
