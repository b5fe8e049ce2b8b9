"""GNNPredictor: the trained latency / peak-memory predictor, scikit-learn-like (fit, predict, save, load).

Checkpoint layout (a directory, e.g. ``trained_models/proxy/``)::

    model.pt      torch.save of a dict (loaded with weights_only=True):
                    format "perfpredict-gnn", format_version 1, perfpredict_version,
                    feature_schema_version, feature_space (op / primitive / layout / precision vocabularies),
                    config (GNNConfig), normaliser (feature means, stds, device ranges), state_dict,
                    training (options, data source and hash, split, sample counts, best epoch, seconds, the
                    training devices' descriptions),
                    metrics (held-out figures), created (UTC), versions (python, torch, torch_geometric)
    metrics.json  the same metrics plus the split and data summary (written by `perfpredict train`)
    README.md     the model card, generated from metrics.json (data, splits, metrics, versions, rebuild command)

Loading a checkpoint of a ``feature_schema_version`` outside
:data:`~perfpredict.features.READABLE_SCHEMA_VERSIONS`, or of another ``format_version``, raises
:class:`CheckpointError` (retrain with ``perfpredict train``); a checkpoint of an older readable schema is
featurised with that schema's columns. :func:`load_predictor` resolves a name such
as ``"proxy"`` to ``trained_models/proxy/``.
"""

from __future__ import annotations

import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from perfpredict import __version__
from perfpredict.additive import PairwiseCostsMixin
from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import PerfPredictError
from perfpredict.features import (FEATURE_SCHEMA_VERSION, READABLE_SCHEMA_VERSIONS, FeatureSpace, FeatureWarning,
                                  GraphTemplate, Normaliser, device_vector, encode_plans, plan_node_features,
                                  threads_of)
from perfpredict.gnn import GNNConfig, PerfGNN
from perfpredict.graph import Graph
from perfpredict.plan import Plan
from perfpredict.predictor import Prediction, predict_by_graph
from perfpredict.serialise import plain

if TYPE_CHECKING:
    from perfpredict.samples import SampleSet
    from perfpredict.train import TrainOptions

CHECKPOINT_FORMAT = "perfpredict-gnn"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "model.pt"
MODELS_DIR = "trained_models"


class CheckpointError(PerfPredictError):
    """A checkpoint that is missing, unreadable, or of another format / feature schema version."""


class GNNPredictor(PairwiseCostsMixin):
    """Latency and peak-memory predictor backed by :class:`perfpredict.gnn.PerfGNN`.

    ``predict(graphs, plans, device)`` implements :class:`perfpredict.predictor.Predictor`; the thread
    count is the device's ``threads_used`` (else threads, cores). ``torch_threads`` (default 1) is the
    number of intra-op threads the network itself runs with: these graphs are small and one thread is
    fastest, by far on a busy machine. ``node_costs``/``edge_costs``/
    ``node_memory``/``cost_pairs`` implement :class:`perfpredict.predictor.NodeCostModel` by a pairwise
    expansion around the default plan (see :mod:`perfpredict.additive`).
    """

    kind = "gnn"

    def __init__(self, config: GNNConfig = GNNConfig(), space: FeatureSpace | None = None):
        self.config = config
        self.space = space
        self.normaliser: Normaliser | None = None
        self.model: PerfGNN | None = None
        self.training: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.max_nodes_per_batch = 150_000
        self.torch_threads: int | None = 1  # intra-op threads while predicting (None: leave torch's setting)
        self.created: str | None = None  # set by load()
        self.source_path: Path | None = None  # set by load()

    # ------------------------------------------------------------------------------ training
    def fit(self, train: "SampleSet", val: "SampleSet | None" = None, options: "TrainOptions | None" = None,
            progress: bool = False, state_dir: "str | Path | None" = None) -> "GNNPredictor":
        """Train on ``train``, keeping the epoch best on ``val`` (or on a held-out tenth of ``train``); with
        ``state_dir``, resumably (:mod:`perfpredict.train_state`)."""
        from perfpredict.train import TrainOptions, fit_gnn

        fit_gnn(self, train, val, options or TrainOptions(), progress=progress, state_dir=state_dir)
        return self

    @property
    def known_primitives(self) -> tuple[str, ...] | None:
        """The primitives this predictor learned: those of its vocabulary whose one-hot varied in its training data
        (a primitive registered when it trained but never measured is in the vocabulary, its column pinned by the
        normaliser, and its cost would be extrapolated); None before training."""
        if self.space is None:
            return None
        if self.normaliser is None:
            return tuple(self.space.primitives)
        pinned, ds = set(self.normaliser.pinned.tolist()), self.space.static_dim
        return tuple(p for j, p in enumerate(self.space.primitives) if ds + j not in pinned)

    def build_model(self) -> PerfGNN:
        """A fresh network sized for this predictor's feature space."""
        from perfpredict.features import DEVICE_COLUMNS, GRAPH_MEMORY_COLUMNS

        assert self.space is not None
        return PerfGNN(self.space.static_dim, self.space.plan_dim, len(DEVICE_COLUMNS), len(GRAPH_MEMORY_COLUMNS),
                       self.config)

    def training_devices(self) -> list[DeviceSpec]:
        """The devices the checkpoint was trained on (their board descriptions, fingerprints included); empty for a
        checkpoint written before they were recorded."""
        return [load_device(d) for d in self.training.get("devices", [])]

    # ------------------------------------------------------------------------------ prediction
    def _require_trained(self) -> None:
        if self.model is None or self.normaliser is None or self.space is None:
            raise CheckpointError("this GNNPredictor is not trained: call fit() or GNNPredictor.load()")

    def predict(self, graphs: Graph | Sequence[Graph], plans: Sequence[Plan], device: DeviceSpec,
                threads: int | None = None) -> Prediction:
        """Predicted latency (ms) and peak memory (bytes) of each (graph, plan) on ``device``."""
        return predict_by_graph(self.predict_plans, graphs, plans, device, threads)

    def predict_plans(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                      threads: int | None = None) -> Prediction:
        """Batched prediction of many plans of one graph (the fast path: static features once)."""
        out = self._forward_plans(template, plans, device, threads)
        return Prediction(out["latency_ms"], out["peak_mem_bytes"])

    def node_latencies(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                       threads: int | None = None) -> np.ndarray:
        """[P, n] per-node latency contributions (ms), scaled so each row sums to the predicted latency."""
        return self._forward_plans(template, plans, device, threads, with_nodes=True)["node_ms"]

    def _forward_plans(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                       threads: int | None, with_nodes: bool = False) -> dict[str, np.ndarray]:
        self._require_trained()
        if not plans:
            return {"latency_ms": np.zeros(0), "peak_mem_bytes": np.zeros(0),
                    "node_ms": np.zeros((0, template.n_nodes))}
        t = threads_of(device, threads)
        return self.forward_features(template, self.featurise(template, plans, device, t), device, t, with_nodes)

    def featurise(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec, threads: int) -> Any:
        """The plans' node features (:class:`perfpredict.features.PlanFeatures`) before normalisation: the same for
        every predictor of this feature space, so an ensemble computes them once."""
        self._require_trained()
        assert self.space is not None
        return plan_node_features(template, encode_plans(template, plans, self.space), self.space, device, threads)

    def forward_features(self, template: GraphTemplate, pf: Any, device: DeviceSpec, threads: int,
                         with_nodes: bool = False) -> dict[str, np.ndarray]:
        """Latency (ms), peak memory (bytes) and, ``with_nodes``, per-node latencies of featurised plans (from
        :meth:`featurise` at ``threads``)."""
        self._require_trained()
        assert self.model is not None and self.normaliser is not None
        P, n = pf.plan.shape[0], template.n_nodes
        static, plan_mean, plan_std, log_prior, dev, corrected = self._network_inputs(pf, device, threads)
        mem_x = torch.from_numpy(self.normaliser.memory(pf.memory))
        log_mem_prior = torch.from_numpy(np.log(np.maximum(pf.memory_prior, 1.0)).astype(np.float32))
        ei = torch.from_numpy(template.edge_index)
        E = ei.shape[1]
        lat = np.zeros(P)
        mem = np.zeros(P)
        node_ms = np.zeros((P, n)) if with_nodes else None
        chunk = max(1, self.max_nodes_per_batch // max(n, 1))
        model = self.model
        model.eval()
        from perfpredict.measure import torch_threads

        with torch_threads(self.torch_threads), torch.inference_mode():
            static_h = model.encode_static(static)
            for lo in range(0, P, chunk):
                hi = min(P, lo + chunk)
                c = hi - lo
                plan_x = torch.from_numpy((pf.plan[lo:hi].reshape(c * n, -1) - plan_mean) / plan_std)
                offsets = (torch.arange(c) * n).repeat_interleave(E)
                edge_index = ei.repeat(1, c) + offsets
                batch = torch.arange(c).repeat_interleave(n)
                out = model(static_h.repeat(c, 1), plan_x, log_prior[lo:hi].reshape(-1), dev.expand(c, -1),
                            edge_index, batch, c, mem_x[lo:hi], log_mem_prior[lo:hi],
                            None if corrected is None else corrected.repeat(c))
                lat[lo:hi] = torch.exp(out.log_latency).double().numpy()
                mem[lo:hi] = torch.exp(out.log_memory).double().numpy()
                if node_ms is not None:
                    scale = torch.exp(out.log_latency - out.log_node_sum)[batch]
                    node_ms[lo:hi] = (torch.exp(out.node_log_latency) * scale).double().numpy().reshape(c, n)
        return {"latency_ms": lat, "peak_mem_bytes": mem, "node_ms": node_ms if node_ms is not None else np.zeros(0)}

    def _network_inputs(self, pf: Any, device: DeviceSpec, threads: int) -> tuple[Any, ...]:
        """Standardised static rows [n, S], the plan features' mean and std (plan rows are standardised per
        chunk), log node priors [P, n], the device row [1, D] of a featurised batch (features.PlanFeatures) and
        which nodes take the network's correction ([n] floats; None when all do: see :meth:`_corrected`)."""
        assert self.normaliser is not None and self.space is not None
        norm = self.normaliser
        ds = self.space.static_dim
        self._warn_unseen(pf.static)
        static = torch.from_numpy(((pf.static - norm.node_mean[:ds]) / norm.node_std[:ds]).astype(np.float32))
        corrected = self._corrected(pf.static)
        prior = pf.prior_ms
        if corrected is not None and pf.fallback_ms is not None:  # uncorrected nodes cost the fallback prior
            prior = np.where(corrected.numpy() > 0, prior, pf.fallback_ms)
        log_prior = torch.from_numpy(np.log(prior).astype(np.float32))
        dev = torch.from_numpy(norm.device(device_vector(device, threads)))[None, :]
        return (static, norm.node_mean[ds:].astype(np.float32), norm.node_std[ds:].astype(np.float32), log_prior,
                dev, corrected)

    def _corrected(self, static: np.ndarray) -> Any:
        """[n] 1.0 for the nodes whose op the training data had, 0.0 for the others (None when all had it).

        The network's correction of a node's prior is learned per op; for an op it never saw it would come from
        the op's category and shapes, and on the stores' leave-one-family-out folds that guess was worse than the
        prior alone (shufflenet_v2's Reshape, Split and Transpose priced 2-10x their layer records by the
        correction learned on Flatten and Concat, 1-2x by the prior). Such a node keeps its analytical prior, the
        one that counts the bytes each int8 kernel moves (``PlanFeatures.fallback_ms``); its embedding still
        informs its neighbours and the graph-level terms."""
        assert self.normaliser is not None and self.space is not None
        ops = self.normaliser.unseen_columns(static[:, :self.space.op_dim])
        if not ops.size:
            return None
        new = (static[:, ops] != self.normaliser.node_mean[ops]).any(axis=1)
        return torch.from_numpy((~new).astype(np.float32))

    def _warn_unseen(self, static: np.ndarray) -> None:
        """Warn when a graph has static columns (an op's one-hot) that never varied in the training data: the
        normaliser pins them (:meth:`features.Normaliser.unseen_columns`), so the network leaves them out."""
        assert self.normaliser is not None and self.space is not None
        unseen = self.normaliser.unseen_columns(static)
        if unseen.size:
            names = self.space.column_names()
            cols = [names[i] for i in unseen]
            ops = [c.removeprefix("op=") for c in cols if c.startswith("op=")]
            facts = [c for c in cols if not c.startswith("op=")]
            what = " and ".join(p for p in (f"ops {', '.join(ops)}" if ops else "",
                                            f"node features {', '.join(facts)}" if facts else "") if p)
            priced = " (nodes of those ops are priced by their analytical prior alone)" if ops else ""
            warnings.warn(f"{what} never appeared in this predictor's training data: the network leaves them out"
                          f"{priced}, so the prediction is extrapolated; retrain with measurements that include "
                          "them (`perfpredict profile layers --model MODEL.onnx` measures a model's layers, "
                          "`perfpredict profile models --model MODEL.onnx` the whole model under sampled plans)",
                          FeatureWarning, stacklevel=4)

    def plan_latencies(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec) -> np.ndarray:
        """Predicted latency (ms) of plans that each change a few nodes of the default plan: equal to
        ``predict_plans(...).latency_ms`` (up to float rounding), but the network runs only where a plan's inputs
        differ from the default plan's and on what the message passing reaches from there.

        With L message-passing layers a node's embedding changes only within L hops (either direction) of a
        node whose inputs changed, and those embeddings need the inputs within 2L hops: each plan runs on that
        induced subgraph, its other embeddings and node latencies are the default plan's, and the sums, pools
        and graph-level head run over the whole graph as usual. This is what makes the pairwise expansion of
        :mod:`perfpredict.additive` (tens of thousands of two-node changes on a large graph) affordable.
        """
        self._require_trained()
        if not plans:
            return np.zeros(0)
        t = threads_of(device)
        return self.plan_latencies_features(template, self.featurise(template, [Plan({}), *plans], device, t), device,
                                            t)

    def plan_latencies_features(self, template: GraphTemplate, pf: Any, device: DeviceSpec, threads: int) -> np.ndarray:
        """:meth:`plan_latencies` of featurised plans: ``pf`` from :meth:`featurise` of the default plan followed by
        the plans."""
        self._require_trained()
        assert self.model is not None and self.normaliser is not None
        P, n = pf.plan.shape[0] - 1, template.n_nodes
        static, plan_mean, plan_std, log_prior, dev, corrected = self._network_inputs(pf, device, threads)
        changed = (pf.plan[1:] != pf.plan[:1]).any(-1) | (pf.prior_ms[1:] != pf.prior_ms[:1])  # [P, n]
        adj = _undirected_adjacency(template)
        inner = _within_hops(changed, adj, self.config.layers)
        region = _within_hops(inner, adj, self.config.layers)
        src, dst = template.edge_index
        out = np.zeros(P)
        model = self.model
        model.eval()
        from perfpredict.measure import torch_threads

        with torch_threads(self.torch_threads), torch.inference_mode():
            static_h = model.encode_static(static)
            dev_h = model.enc_device(dev)
            ei = torch.from_numpy(template.edge_index)
            base_x = torch.from_numpy((pf.plan[0] - plan_mean) / plan_std)
            base_h = model.embed(static_h, base_x, dev_h.expand(n, -1), ei)  # [n, H]
            base_log = log_prior[0] + model.node_correction(base_h, corrected)  # [n]
            budget = max(1, self.max_nodes_per_batch // 4)
            lo = 0
            while lo < P:  # chunks of plans whose regions together hold about ``budget`` nodes
                sizes = np.cumsum(region[lo:].sum(1))
                hi = lo + max(1, min(int(np.searchsorted(sizes, budget, side="right")), budget // n))
                rm, im = region[lo:hi], inner[lo:hi]
                c = hi - lo
                pp, vv = np.nonzero(rm)  # the chunk's subgraph nodes, plan-major
                local = np.cumsum(rm.ravel()).reshape(c, n) - 1
                keep = rm[:, src] & rm[:, dst]
                ep, ee = np.nonzero(keep)
                sub_ei = torch.from_numpy(np.stack([local[ep, src[ee]], local[ep, dst[ee]]]))
                tp, tv = torch.from_numpy(pp), torch.from_numpy(vv)
                x_sub = torch.from_numpy((pf.plan[1 + lo + pp, vv] - plan_mean) / plan_std)
                h_sub = model.embed(static_h[tv], x_sub, dev_h.expand(len(vv), -1), sub_ei)
                sel = torch.from_numpy(im[pp, vv])
                sp, sv = tp[sel], tv[sel]
                h_new = h_sub[sel]
                h_all = base_h.unsqueeze(0).repeat(c, 1, 1)
                h_all[sp, sv] = h_new
                node_log = base_log.unsqueeze(0).repeat(c, 1)
                node_log[sp, sv] = log_prior[1 + lo + sp, sv] + model.node_correction(
                    h_new, None if corrected is None else corrected[sv])
                log_sum = torch.logsumexp(node_log, dim=1)
                pooled = torch.cat([h_all.mean(1), h_all.amax(1)], dim=1)
                out[lo:hi] = torch.exp(model.graph_latency(pooled, dev.expand(c, -1), log_sum)).double().numpy()
                lo = hi
        return out

    # ------------------------------------------------------------------------------ persistence
    @property
    def feature_schema_version(self) -> int:
        """The feature schema this predictor featurises with: its space's (the current one before training)."""
        return self.space.schema_version if self.space else FEATURE_SCHEMA_VERSION

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights: versions, vocabularies, config, training facts, metrics."""
        import torch_geometric

        return {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "kind": self.kind,
            "perfpredict_version": __version__, "feature_schema_version": self.feature_schema_version,
            "feature_space": self.space.to_dict() if self.space else None, "config": self.config.to_dict(),
            "training": self.training, "metrics": self.metrics,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "torch_geometric": torch_geometric.__version__},
        }

    def payload(self) -> dict[str, Any]:
        """The checkpoint's content: :meth:`metadata`, the normaliser and the weights (plain types and tensors)."""
        self._require_trained()
        assert self.model is not None and self.normaliser is not None
        meta = self.metadata()
        meta["normaliser"] = self.normaliser.to_dict()
        payload = plain(meta)
        payload["state_dict"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return payload

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint to ``path`` (a directory, created; or a ``.pt`` file); returns the file."""
        return write_checkpoint(self.payload(), path)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], file: Path | None = None) -> "GNNPredictor":
        """The predictor a :meth:`payload` describes (``file`` names it in errors and becomes ``source_path``)."""
        try:
            space = FeatureSpace.from_dict(payload["feature_space"])
            pred = cls(GNNConfig.from_dict(payload["config"]), space)
            pred.normaliser = Normaliser.from_dict(payload["normaliser"])
            pred.model = pred.build_model()
            pred.model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{file}: checkpoint is incomplete or inconsistent ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:120]})") from None
        pred.model.eval()
        pred.training = payload.get("training", {})
        pred.metrics = payload.get("metrics", {})
        pred.created = payload.get("created")
        pred.source_path = file
        return pred

    @classmethod
    def load(cls, path: str | Path) -> "GNNPredictor":
        """Read a checkpoint written by :meth:`save` (see the module docstring for the checks)."""
        file = _checkpoint_file(Path(path))
        payload = read_checkpoint(file)
        if payload.get("kind", cls.kind) != cls.kind:
            raise CheckpointError(f"{file}: a '{payload.get('kind')}' checkpoint, not a single GNN; load it with "
                                  "perfpredict.gnn_predictor.load_predictor")
        return cls.from_payload(payload, file)


def write_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """torch.save ``payload`` atomically to ``path`` (a directory, created, gets ``model.pt``; or a ``.pt`` file)."""
    path = Path(path)
    file = path if path.suffix == ".pt" else path / CHECKPOINT_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(file)
    return file


def read_checkpoint(file: Path) -> dict[str, Any]:
    """A checkpoint file's payload, checked for this perfpredict's format, format version and feature schema."""
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise CheckpointError(f"{file}: not a readable perfpredict checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file}: not a perfpredict GNN checkpoint (format "
                              f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__})")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{file}: checkpoint format_version {payload.get('format_version')} is not "
                              f"supported (this perfpredict reads {CHECKPOINT_VERSION}); retrain with "
                              "`perfpredict train`")
    if payload.get("feature_schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise CheckpointError(f"{file}: checkpoint was trained with feature schema version "
                              f"{payload.get('feature_schema_version')}, this perfpredict "
                              f"({__version__}) featurises with versions "
                              f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}; retrain "
                              "with `perfpredict train --data DATASET -o DIR`")
    return payload


def _undirected_adjacency(template: GraphTemplate) -> Any:
    """The template's data-flow edges in both directions, with self-loops, as a sparse [n, n] matrix."""
    import scipy.sparse as sp

    n = template.n_nodes
    src, dst = template.edge_index
    rows = np.concatenate([src, dst, np.arange(n)])
    cols = np.concatenate([dst, src, np.arange(n)])
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))


def _within_hops(mask: np.ndarray, adj: Any, hops: int) -> np.ndarray:
    """[P, n] bool: the nodes within ``hops`` edges (either direction) of a True node of each row."""
    m = mask.astype(np.float32)
    for _ in range(hops):
        m = (adj @ m.T).T  # adj is symmetric; entries count paths, > 0 where reached
    return m > 0


def _checkpoint_file(path: Path) -> Path:
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: no checkpoint here (expected a directory holding {CHECKPOINT_FILE} or a "
                              ".pt file)")
    return file


def resolve_model_path(path_or_name: str | Path) -> Path:
    """A checkpoint path, or a bare name resolved to ``trained_models/NAME`` (in the current directory,
    then beside the perfpredict package)."""
    p = Path(path_or_name)
    if p.exists():
        return p
    name = str(path_or_name)
    if "/" not in name and "\\" not in name:
        for root in (Path.cwd() / MODELS_DIR, Path(__file__).resolve().parent.parent / MODELS_DIR):
            if (root / name).exists():
                return root / name
    roots = [Path.cwd() / MODELS_DIR, Path(__file__).resolve().parent.parent / MODELS_DIR]
    known = sorted({d.name for r in roots if r.is_dir() for d in r.iterdir()
                    if (d / CHECKPOINT_FILE).is_file() or (d / "baseline.pkl").is_file()})
    raise CheckpointError(f"no predictor '{path_or_name}': not a path, and not a name under {MODELS_DIR}/ "
                          f"(known: {', '.join(known) or 'none'})")


def load_predictor(path_or_name: str | Path) -> Any:
    """Load a trained predictor from a checkpoint directory / file or a name under ``trained_models/``:
    a GNN checkpoint (``model.pt``), or a fitted baseline saved by ``baselines`` (``baseline.pkl``)."""
    path = resolve_model_path(path_or_name)
    if path.is_dir() and (path / "transfer.json").is_file():  # adapted / multi-device checkpoints (transfer.py)
        from perfpredict.transfer import load_any_predictor

        return load_any_predictor(path)
    if path.suffix == ".pkl" or (path.is_dir() and (path / "baseline.pkl").is_file()
                                 and not (path / CHECKPOINT_FILE).is_file()):
        from perfpredict.baselines import KernelSumBaseline

        return KernelSumBaseline.load(path)
    file = _checkpoint_file(path)
    payload = read_checkpoint(file)
    if payload.get("kind") == "gnn-ensemble":
        from perfpredict.ensemble import GNNEnsemble

        return GNNEnsemble.from_payload(payload, file)
    return GNNPredictor.from_payload(payload, file)
