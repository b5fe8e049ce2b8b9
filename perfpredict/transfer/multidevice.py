"""The multi-device graph model: a GNN maps a graph to K latent factors, each device is a weight vector over
them (``log latency = phi(g) . u_d + c_d``), so a new device is K + 1 numbers fitted from a few points."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from perfpredict.errors import TransferError
from perfpredict.transfer.calibrators import CALIBRATORS, Calibrator, MixtureCalibrator, register_calibrator, safe_log
from perfpredict.transfer.selection import (
    DEFAULT_METHODS, EnsembleCalibrator, Selection, average_calibrators, rank_sources, select_calibrator,
)

if TYPE_CHECKING:
    from perfpredict.graph import Graph


ENCODING_VERSION = 1
"""Version of :func:`encode_graph`'s node features (part of cache keys and checkpoints)."""

_OP_GROUPS: Mapping[str, int] = {
    "Conv": 0, "Gemm": 1, "MatMul": 1, "Relu": 2, "Clip": 2, "Sigmoid": 2, "HardSigmoid": 2, "HardSwish": 2,
    "Add": 3, "Mul": 4, "Concat": 5, "AveragePool": 6, "MaxPool": 7, "GlobalAveragePool": 8, "ReduceMean": 8,
    "BatchNormalization": 9, "Flatten": 10, "Reshape": 10, "Transpose": 10, "Split": 10, "Slice": 10, "Pad": 10,
    "Softmax": 11,
}

_N_GROUPS = 13  # the 12 groups above + other
NODE_FEATURES = _N_GROUPS + 15
"""Length of a node's feature vector."""


@dataclass(frozen=True)
class EncodedGraph:
    """A graph as arrays for a GNN: node features (n, NODE_FEATURES) and data-flow edges (2, E)."""

    x: np.ndarray
    edge_index: np.ndarray


def encode_graph(graph: "Graph") -> EncodedGraph:
    """Plan-free node features of ``graph``: op group one-hot; log MACs, FLOPs, bytes in/out, parameters;
    kernel, stride, grouped / depthwise, constant operand; log channels in/out and spatial size; in/out
    degree. Scaled to roughly [0, 1] without data-dependent statistics, so encodings are stable."""
    n = len(graph.nodes)
    x = np.zeros((n, NODE_FEATURES), np.float32)
    indeg = np.zeros(n)
    outdeg = np.zeros(n)
    for e in graph.edges:
        indeg[e.dst] += 1
        outdeg[e.src] += 1
    for i, node in enumerate(graph.nodes):
        x[i, _OP_GROUPS.get(node.op, _N_GROUPS - 1)] = 1.0
        a = node.attrs
        k = a.get("kernel", (1,))
        s = a.get("stride", (1,))
        out = node.out_shape
        inp = node.in_shape if node.input_shapes else ()
        groups = int(a.get("groups", 1))
        f = x[i, _N_GROUPS:]
        f[0:5] = np.log1p([node.macs, node.flops, node.bytes_in, node.bytes_out, node.param_count]) / 20.0
        f[5] = float(k[0]) / 7.0
        f[6] = float(s[0]) / 2.0
        f[7] = float(groups > 1)
        f[8] = float(groups > 1 and groups == a.get("in_channels") == a.get("out_channels"))
        f[9] = float(len(node.params) > 0 and node.op not in ("Conv", "Gemm", "MatMul", "BatchNormalization"))
        f[10] = math.log2(out[1]) / 10.0 if len(out) > 1 and out[1] > 0 else 0.0
        f[11] = math.log2(inp[1]) / 10.0 if len(inp) > 1 and inp[1] > 0 else 0.0
        f[12] = math.log2(out[2]) / 10.0 if len(out) > 2 and out[2] > 0 else 0.0
        f[13] = indeg[i] / 4.0
        f[14] = outdeg[i] / 4.0
    ei = np.array([[e.src for e in graph.edges], [e.dst for e in graph.edges]], np.int64).reshape(2, -1)
    return EncodedGraph(x, ei)


def pack_encodings(encs: Sequence[EncodedGraph]) -> dict[str, np.ndarray]:
    """Concatenate encodings into flat arrays (for an .npz cache); :func:`unpack_encodings` inverts it."""
    return {"x": np.concatenate([e.x for e in encs]).astype(np.float32),
            "edge_index": np.concatenate([e.edge_index for e in encs], axis=1).astype(np.int32),
            "nodes": np.array([len(e.x) for e in encs], np.int64),
            "edges": np.array([e.edge_index.shape[1] for e in encs], np.int64)}


def unpack_encodings(packed: Mapping[str, np.ndarray]) -> list[EncodedGraph]:
    """The encodings stored by :func:`pack_encodings` (node features back to float32 whatever the stored type)."""
    xo = np.r_[0, np.cumsum(packed["nodes"])]
    eo = np.r_[0, np.cumsum(packed["edges"])]
    x, ei = packed["x"], packed["edge_index"]
    return [EncodedGraph(x[xo[i]:xo[i + 1]].astype(np.float32), ei[:, eo[i]:eo[i + 1]].astype(np.int64))
            for i in range(len(packed["nodes"]))]


@register_calibrator
@dataclass
class DeviceFitCalibrator:
    """(a) Device fitting: ``log y = phi . u + c`` over a multi-device model's graph factors ``phi``.

    ``u`` is ridge-regressed towards the prior ``prior_u`` (a source device's weights) with strength
    ``lam``; ``c`` is free. This refits the device's own parameters of :class:`MultiDeviceModel` - the
    HELP-style adaptation of a device embedding, in closed form.
    """

    name: ClassVar[str] = "device_fit"
    params: ClassVar[int] = 3
    prior_u: tuple[float, ...] = ()
    lam: float = 10.0
    u: tuple[float, ...] = ()
    c: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "DeviceFitCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        v = safe_log(y)
        u0 = np.asarray(self.prior_u, np.float64) if self.prior_u else np.zeros(x.shape[1])
        xc, vc = x - x.mean(0), v - v.mean()
        u = np.linalg.solve(xc.T @ xc + self.lam * np.eye(x.shape[1]), xc.T @ vc + self.lam * u0)
        self.u, self.c = tuple(float(t) for t in u), float(np.mean(v - x @ u))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, len(self.u))
        return np.exp(x @ np.asarray(self.u) + self.c)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "prior_u": list(self.prior_u), "lam": self.lam, "u": list(self.u), "c": self.c}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceFitCalibrator":
        return cls(tuple(d["prior_u"]), float(d["lam"]), tuple(d["u"]), float(d["c"]))


@register_calibrator
@dataclass
class DeviceSubspaceCalibrator:
    """(a) Device fitting in the source devices' subspace: ``u = mean_u + basis^T a``, ``log y = phi . u + c``.

    ``basis`` holds the top principal directions of the source devices' weight vectors, so a new device
    is a few coordinates ``a`` (ridge ``lam``) plus an offset: fewer parameters than :class:`DeviceFitCalibrator`
    when points are scarce, like HELP's low-dimensional hardware embedding.
    """

    name: ClassVar[str] = "device_subspace"
    params: ClassVar[int] = 3
    mean_u: tuple[float, ...] = ()
    basis: tuple[tuple[float, ...], ...] = ()
    lam: float = 0.1
    a: tuple[float, ...] = ()
    c: float = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> "DeviceSubspaceCalibrator":
        x = np.asarray(x, np.float64).reshape(len(y), -1)
        mu, b = np.asarray(self.mean_u), np.asarray(self.basis).reshape(-1, x.shape[1])
        v = safe_log(y) - x @ mu
        z = x @ b.T
        zc = z - z.mean(0)
        a = np.linalg.solve(zc.T @ zc + self.lam * np.eye(len(b)), zc.T @ (v - v.mean()))
        self.a, self.c = tuple(float(t) for t in a), float(np.mean(v - z @ a))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        mu, b = np.asarray(self.mean_u), np.asarray(self.basis).reshape(len(self.a), -1)
        x = np.asarray(x, np.float64).reshape(-1, len(mu))
        return np.exp(x @ mu + (x @ b.T) @ np.asarray(self.a) + self.c)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "mean_u": list(self.mean_u), "basis": [list(r) for r in self.basis],
                "lam": self.lam, "a": list(self.a), "c": self.c}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceSubspaceCalibrator":
        return cls(tuple(d["mean_u"]), tuple(tuple(r) for r in d["basis"]), float(d["lam"]), tuple(d["a"]),
                   float(d["c"]))


@dataclass(frozen=True)
class MultiDeviceConfig:
    """Hyper-parameters of :class:`MultiDeviceGNN` and its training."""

    hidden: int = 64
    layers: int = 3
    factors: int = 16
    epochs: int = 25
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-5
    huber_delta: float = 0.3
    outlier_ratio: float | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(vars(self))


def _torch():
    import torch

    return torch


def _build_net(in_dim: int, n_devices: int, cfg: MultiDeviceConfig):
    """The torch module of :class:`MultiDeviceGNN` (built lazily so importing this module stays light)."""
    torch = _torch()
    from torch import nn
    from torch_geometric.nn import SAGEConv
    from torch_geometric.utils import scatter

    class MultiDeviceGNN(nn.Module):
        """GNN over graph encodings -> K graph factors phi(g); device d: log ms = phi(g) . u_d + c_d.

        Node encoder MLP, ``layers`` rounds of GraphSAGE messages along data-flow edges and their reverse
        (residual), then sum- and mean-pooling and an MLP to ``factors`` factors.
        """

        def __init__(self) -> None:
            super().__init__()
            h = cfg.hidden
            self.enc = nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, h))
            self.fwd = nn.ModuleList(SAGEConv(h, h) for _ in range(cfg.layers))
            self.bwd = nn.ModuleList(SAGEConv(h, h, root_weight=False, bias=False) for _ in range(cfg.layers))
            self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
            self.phi = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, cfg.factors))
            self.u = nn.Parameter(torch.zeros(n_devices, cfg.factors))
            self.c = nn.Parameter(torch.zeros(n_devices))

        def factors(self, x, edge_index, batch, num_graphs):
            h = self.enc(x)
            rev = edge_index.flip(0)
            for f, b, norm in zip(self.fwd, self.bwd, self.norms):
                h = h + torch.relu(norm(f(h, edge_index) + b(h, rev)))
            pooled = torch.cat([scatter(h, batch, 0, dim_size=num_graphs, reduce="sum") / 100.0,
                                scatter(h, batch, 0, dim_size=num_graphs, reduce="mean")], 1)
            return self.phi(pooled)

        def forward(self, x, edge_index, batch, num_graphs):
            return self.factors(x, edge_index, batch, num_graphs) @ self.u.T + self.c

    return MultiDeviceGNN()


def _collate(encs: Sequence[EncodedGraph], idx: Sequence[int]):
    torch = _torch()
    xs, eis, bs = [], [], []
    off = 0
    for k, i in enumerate(idx):
        e = encs[i]
        xs.append(e.x)
        eis.append(e.edge_index + off)
        bs.append(np.full(len(e.x), k, np.int64))
        off += len(e.x)
    return (torch.from_numpy(np.concatenate(xs).astype(np.float32)),
            torch.from_numpy(np.concatenate(eis, axis=1).astype(np.int64)),
            torch.from_numpy(np.concatenate(bs)), len(idx))


class MultiDeviceModel:
    """A trained multi-device latency model: graph factors from a GNN, one (u, c) per source device.

    Predicts any source device directly; a new device is fitted from labelled points (its fingerprint's
    reference workloads and any shots) by :meth:`adapt`.
    """

    def __init__(self, net: Any, devices: Sequence[str], config: MultiDeviceConfig, in_dim: int,
                 training: Mapping[str, Any] | None = None):
        self.net = net
        self.devices = tuple(devices)
        self.config = config
        self.in_dim = in_dim
        self.training = dict(training or {})

    @property
    def U(self) -> np.ndarray:
        """Device weights (devices, factors)."""
        return self.net.u.detach().double().numpy()

    @property
    def C(self) -> np.ndarray:
        """Device offsets (devices,)."""
        return self.net.c.detach().double().numpy()

    def factors(self, encs: Sequence[EncodedGraph], batch_size: int = 256) -> np.ndarray:
        """Graph factors phi (n, K) of encoded graphs."""
        torch = _torch()
        self.net.eval()
        out = []
        with torch.inference_mode():
            for lo in range(0, len(encs), batch_size):
                out.append(self.net.factors(*_collate(encs, range(lo, min(lo + batch_size, len(encs)))))
                           .double().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.factors))

    def predict_sources(self, phi: np.ndarray, devices: Sequence[str] | None = None) -> np.ndarray:
        """Predicted latencies (ms), shape (n, len(devices)), of source ``devices`` (default all) from ``phi``."""
        cols = [self.device_index(d) for d in (devices or self.devices)]
        return np.exp(phi @ self.U[cols].T + self.C[cols])

    def device_index(self, name: str) -> int:
        """Column of source device ``name``; a TransferError names the source devices."""
        try:
            return self.devices.index(name)
        except ValueError:
            raise TransferError(f"'{name}' is not a source device of this model; source devices: "
                                f"{', '.join(self.devices)}") from None

    def adapt(self, phi: np.ndarray, y: np.ndarray,
              methods: Sequence[str] = ("device_subspace", "device_fit") + DEFAULT_METHODS,
              top: int = 3, lams: Sequence[float] = (1.0, 10.0, 100.0),
              temperature: float | None = 0.1) -> "DeviceAdapter":
        """Fit a new device from labelled points (factors ``phi``, measured ``y`` ms) - see :class:`DeviceAdapter`.
        Points are filtered like the training data (``config.outlier_ratio``)."""
        return DeviceAdapter.fit(self, phi, y, methods, top, lams, self.config.outlier_ratio,
                                 temperature=temperature)

    # ----------------------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        """Plain-types state (plus tensors) for torch.save."""
        return {"devices": list(self.devices), "config": self.config.to_dict(), "in_dim": self.in_dim,
                "training": json.loads(json.dumps(self.training, default=str)),
                "state_dict": {k: v.detach().clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "MultiDeviceModel":
        """Rebuild from :meth:`state`."""
        cfg = MultiDeviceConfig(**state["config"])
        net = _build_net(int(state["in_dim"]), len(state["devices"]), cfg)
        net.load_state_dict(state["state_dict"])
        net.eval()
        return cls(net, state["devices"], cfg, int(state["in_dim"]), state.get("training"))


def fit_multi_device(encs: Sequence[EncodedGraph], latency_ms: np.ndarray, devices: Sequence[str],
                     config: MultiDeviceConfig = MultiDeviceConfig(),
                     val: tuple[Sequence[EncodedGraph], np.ndarray] | None = None,
                     val_device: tuple[Sequence[EncodedGraph], np.ndarray, Sequence[EncodedGraph], np.ndarray] | None = None,
                     progress: bool = False) -> MultiDeviceModel:
    """Train :class:`MultiDeviceGNN` on graphs ``encs`` with latencies ``latency_ms`` (graphs x devices, NaN =
    not measured).

    Loss: Huber on log latency. With ``config.outlier_ratio`` set, per device, values more than that factor
    above or below its median are masked out (degenerate measurements such as near-zero times). Training runs
    the whole one-cycle schedule; the state kept is the best of its last quarter of epochs by ``val_device`` -
    (reference encodings, their ms, query encodings, their ms) of a device left out of training, scored by the
    log error of :meth:`MultiDeviceModel.adapt` on the queries - else by ``val`` - (encodings, ms) of
    held-out graphs on the training devices - else by the training loss. Every epoch's score is in
    ``training["history"]``.
    """
    torch = _torch()
    from tqdm import tqdm

    cfg = config
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    y = np.array(latency_ms, np.float64).reshape(len(encs), len(devices))
    med = np.nanmedian(y, axis=0)
    ratio = cfg.outlier_ratio or math.inf
    bad = (y < med / ratio) | (y > med * ratio) | ~(y > 0)
    logy = np.where(bad, np.nan, np.log(np.where(bad, 1.0, y)))
    in_dim = encs[0].x.shape[1]
    net = _build_net(in_dim, len(devices), cfg)
    with torch.no_grad():
        net.c.copy_(torch.from_numpy(np.nanmean(logy, axis=0)).float())
        net.u.normal_(0.0, 0.01)
    model = MultiDeviceModel(net, devices, cfg, in_dim)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, math.ceil(len(encs) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    target = torch.from_numpy(logy).float()
    best, best_state, best_epoch = math.inf, None, -1
    history = []
    bar = tqdm(range(cfg.epochs), desc="multi-device GNN", disable=not progress, unit="epoch")
    for epoch in bar:
        net.train()
        perm = rng.permutation(len(encs))
        total, count = 0.0, 0
        for lo in range(0, len(perm), cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            pred = net(*_collate(encs, idx))
            t = target[idx]
            ok = ~torch.isnan(t)
            loss = torch.nn.functional.huber_loss(pred[ok], t[ok], delta=cfg.huber_delta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        score = total / count
        if val_device is not None:
            ref_e, ref_y, q_e, q_y = val_device
            ad = model.adapt(model.factors(ref_e), ref_y)
            score = float(np.sqrt(np.mean((safe_log(ad.predict(model.factors(q_e), model)) - safe_log(q_y)) ** 2)))
        elif val is not None:
            vp = model.factors(val[0]) @ model.U.T + model.C
            vy = np.log(np.maximum(np.asarray(val[1], np.float64), 1e-9))
            score = float(np.sqrt(np.nanmean((vp - vy) ** 2)))
        history.append(round(score, 5))
        bar.set_postfix(score=f"{score:.4f}")
        if epoch >= cfg.epochs - max(1, cfg.epochs // 4) and score < best - 1e-6:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    model.training = {"graphs": len(encs), "devices": list(devices), "best_epoch": best_epoch,
                      "best_score": best, "history": history,
                      "score": "val_device" if val_device else ("val" if val else "train_loss"),
                      "masked_outliers": int(np.sum(bad & (y > 0)))}
    return model


@dataclass(frozen=True)
class DeviceAdapter:
    """A new device fitted on labelled points: the chosen method, its calibrator and its inputs.

    The calibrator reads the graph factors (when ``factors``) followed by the predictions of the source
    devices ``columns`` (best-correlated first): the factors for ``device_*`` methods, source predictions
    for the calibrations and the mixture, both for the CV-weighted ``ensemble`` of all of them.
    """

    method: str
    calibrator: Calibrator
    columns: tuple[str, ...]
    selection: Selection
    factors: bool = False

    @classmethod
    def fit(cls, model: MultiDeviceModel, phi: np.ndarray, y: np.ndarray,
            methods: Sequence[str] = ("device_subspace", "device_fit") + DEFAULT_METHODS, top: int = 3,
            lams: Sequence[float] = (1.0, 10.0, 100.0), outlier_ratio: float | None = None,
            ranks: Sequence[int] = (2, 4, 8), temperature: float | None = 0.1) -> "DeviceAdapter":
        """Rank sources by correlation with ``y`` on the points, build every candidate, then average them by
        their CV errors (:func:`average_calibrators` at ``temperature``) or, with ``temperature=None``, pick
        the best (:func:`select_calibrator`).

        With ``outlier_ratio``, points more than that factor away from the median of the points
        (degenerate measurements, e.g. a near-zero time) are left out of the fit.
        """
        y = np.asarray(y, np.float64)
        phi = np.asarray(phi, np.float64).reshape(len(y), -1)
        med = float(np.median(y[y > 0])) if np.any(y > 0) else 1.0
        ratio = outlier_ratio or math.inf
        keep = (y > med / ratio) & (y < med * ratio) & (y > 0)
        if keep.sum() < 2:
            raise TransferError(f"need at least 2 usable measured points to fit a device, got {int(keep.sum())}")
        phi, y = phi[keep], y[keep]
        src = model.predict_sources(phi)
        ranked = [n for n, _ in rank_sources(y, src, model.devices)]
        cols = ranked[: max(1, top)]
        k = phi.shape[1]
        x = np.c_[phi, src[:, [model.device_index(c) for c in cols]]]
        cands = cls._candidates(model, cols, methods, lams, ranks, k)
        if temperature is not None:
            sel = average_calibrators(y, x, cands, temperature)
            return cls(sel.method, sel.calibrator, tuple(cols), sel, factors=True)
        sel = select_calibrator(y, {m: (make, x[:, list(c)]) for m, (make, c) in cands.items()})
        method = sel.method.split("@")[0]
        used = () if method.startswith("device_") else (tuple(cols) if method == "mixture" else (cols[0],))
        return cls(sel.method, sel.calibrator, used, sel, factors=method.startswith("device_"))

    @staticmethod
    def _candidates(model: MultiDeviceModel, cols: Sequence[str], methods: Sequence[str], lams: Sequence[float],
                    ranks: Sequence[int], k: int) -> dict[str, tuple[Callable[[], Calibrator], tuple[int, ...]]]:
        """Candidates by name, simplest first: (factory, the columns it reads of [phi (k) | sources ``cols``])."""
        factors, best, mix = tuple(range(k)), (k,), tuple(range(k, k + len(cols)))
        cands: dict[str, tuple[Callable[[], Calibrator], tuple[int, ...]]] = {}
        for m in methods:
            if m == "device_fit":
                u0 = tuple(model.U[model.device_index(cols[0])])
                for lam in sorted(lams, reverse=True):
                    cands[f"device_fit@{lam:g}"] = (lambda lam=lam: DeviceFitCalibrator(u0, lam), factors)
            elif m == "device_subspace":
                mu = model.U.mean(0)
                _, _, vt = np.linalg.svd(model.U - mu, full_matrices=False)
                for r in ranks:
                    if r < len(model.devices) - 1 and r <= vt.shape[0]:
                        basis = tuple(tuple(row) for row in vt[:r])
                        cands[f"device_subspace@{r}"] = (
                            lambda basis=basis: DeviceSubspaceCalibrator(tuple(mu), basis, 0.1), factors)
            elif m == "mixture":
                if len(cols) > 1:
                    cands[m] = (MixtureCalibrator, mix)
            elif m in CALIBRATORS:
                cands[m] = (CALIBRATORS[m], best)
            else:
                raise TransferError(f"unknown adaptation method '{m}'; known: "
                                    f"{', '.join(sorted(CALIBRATORS))}")
        order = [c for c in ("scale", "loglinear", "isotonic") if c in cands] + \
                [c for c in cands if c.startswith("device_subspace")] + \
                [c for c in cands if c.startswith("device_fit")] + [c for c in cands if c == "mixture"]
        return {c: cands[c] for c in order}

    @property
    def weights(self) -> dict[str, float]:
        """Weight of each candidate in the prediction: the ensemble's members, else the chosen method (1)."""
        cal = self.calibrator
        return dict(zip(cal.names, cal.weights)) if isinstance(cal, EnsembleCalibrator) else {self.method: 1.0}

    def inputs(self, phi: np.ndarray, model: MultiDeviceModel) -> np.ndarray:
        """The calibrator's input for graphs with factors ``phi``."""
        parts = [phi] if self.factors else []
        if self.columns:
            parts.append(model.predict_sources(phi, self.columns))
        return np.concatenate(parts, axis=1)

    def predict(self, phi: np.ndarray, model: MultiDeviceModel) -> np.ndarray:
        """Predicted latencies (ms) on the new device for graphs with factors ``phi``."""
        return self.calibrator.predict(self.inputs(phi, model))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the calibrator, its inputs and the CV errors of every candidate)."""
        return {"method": self.method, "calibrator": self.calibrator.to_dict(), "columns": list(self.columns),
                "factors": self.factors, "cv": {k: dict(v) for k, v in self.selection.cv.items()},
                "points": self.selection.n_points}
