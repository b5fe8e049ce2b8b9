"""GNNEnsemble: several GNN predictors trained alike from different seeds, answering as one.

A single training extrapolates to a model family it never saw in a way that depends on its seed (the initial
weights, the validation tenth, the batch order and so the epoch early stopping keeps): on the Xeon store one
leave-one-family-out fold moved by up to 4.8 MAPE points between seeds, mostly as a family-wide over- or
under-prediction. Averaging members cancels much of that. The ensemble predicts the geometric mean of its members'
latencies (they are trained on log latency) and the mean of their peak memories; per-node latencies are the mean
of the members' shares, rescaled to sum to the ensemble's latency. It implements the same protocols as
:class:`~perfpredict.gnn_predictor.GNNPredictor` (Predictor, NodeCostModel through the pairwise expansion), at
about the members' count times the cost of a prediction.

Checkpoint: one ``model.pt`` of :data:`~perfpredict.gnn_predictor.CHECKPOINT_FORMAT` with ``kind``
``"gnn-ensemble"`` and ``members`` (each a GNNPredictor payload); :func:`perfpredict.gnn_predictor.load_predictor`
reads it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from perfpredict import __version__
from perfpredict.additive import PairwiseCostsMixin
from perfpredict.devices import DeviceSpec
from perfpredict.features import FeatureSpace, GraphTemplate, threads_of
from perfpredict.gnn import GNNConfig
from perfpredict.gnn_predictor import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, GNNPredictor,
                                       write_checkpoint)
from perfpredict.graph import Graph
from perfpredict.plan import Plan
from perfpredict.predictor import Prediction, predict_by_graph
from perfpredict.serialise import plain

if TYPE_CHECKING:
    from perfpredict.samples import SampleSet
    from perfpredict.train import TrainOptions

DEFAULT_SIZE = 3
"""Members of a ``gnn-ensemble`` when no size is given."""


class GNNEnsemble(PairwiseCostsMixin):
    """``size`` GNN predictors trained with seeds ``seed, seed + 1, ...`` on the same data; see the module
    docstring. ``members`` builds one from trained predictors of the same feature space."""

    kind = "gnn-ensemble"

    def __init__(self, size: int = DEFAULT_SIZE, config: GNNConfig = GNNConfig(),
                 members: Sequence[GNNPredictor] | None = None):
        if members is not None:
            size = len(members)
        if size < 1:
            raise CheckpointError(f"an ensemble needs at least one member, got {size}")
        self.size = size
        self.config = config
        self.members: list[GNNPredictor] = list(members or [])
        self.training: dict[str, Any] = {}
        self.metrics: dict[str, Any] = {}
        self.created: str | None = None
        self.source_path: Path | None = None
        if self.members:
            self._check_members()
            self.config = self.members[0].config
            self.training = self._summary()

    def _check_members(self) -> None:
        spaces = {json.dumps(m.space.to_dict() if m.space else None, sort_keys=True) for m in self.members}
        if len(spaces) > 1:
            raise CheckpointError("ensemble members featurise differently (another op, primitive or layout "
                                  "vocabulary): train them with one perfpredict")

    def _summary(self) -> dict[str, Any]:
        first = self.members[0].training
        return {**first, "ensemble": {
            "size": len(self.members),
            "seeds": [m.training.get("options", {}).get("seed") for m in self.members],
            "best_epochs": [m.training.get("best_epoch") for m in self.members],
            "seconds": round(sum(m.training.get("seconds") or 0.0 for m in self.members), 1)}}

    # ------------------------------------------------------------------------------ training
    def fit(self, train: "SampleSet", val: "SampleSet | None" = None, options: "TrainOptions | None" = None,
            progress: bool = False, state_dir: "str | Path | None" = None) -> "GNNEnsemble":
        """Train the members on ``train``, member i with ``options.seed + i`` (see GNNPredictor.fit; each member
        keeps its own state in ``state_dir``)."""
        from perfpredict.train import TrainOptions

        opts = options or TrainOptions()
        self.members = []
        for i in range(self.size):
            if progress:
                from tqdm import tqdm

                tqdm.write(f"ensemble member {i + 1}/{self.size} (seed {opts.seed + i})")
            self.members.append(GNNPredictor(self.config).fit(train, val, replace(opts, seed=opts.seed + i),
                                                              progress=progress, state_dir=state_dir))
        self.training = self._summary()
        return self

    def _require_trained(self) -> None:
        if not self.members:
            raise CheckpointError("this GNNEnsemble is not trained: call fit() or load_predictor()")

    @property
    def space(self) -> FeatureSpace | None:
        """The members' feature space (None before training)."""
        return self.members[0].space if self.members else None

    @property
    def known_primitives(self) -> tuple[str, ...] | None:
        """The primitives every member learned (None before training)."""
        if not self.members:
            return None
        learned = set.intersection(*(set(m.known_primitives or ()) for m in self.members))
        return tuple(p for p in self.members[0].known_primitives or () if p in learned)

    @property
    def torch_threads(self) -> int | None:
        """Intra-op threads the members' networks run with (see GNNPredictor)."""
        return self.members[0].torch_threads if self.members else 1

    @torch_threads.setter
    def torch_threads(self, value: int | None) -> None:
        for m in self.members:
            m.torch_threads = value

    def training_devices(self) -> list[DeviceSpec]:
        """The devices the members were trained on (the same data for all)."""
        self._require_trained()
        return self.members[0].training_devices()

    # ------------------------------------------------------------------------------ prediction
    def predict(self, graphs: Graph | Sequence[Graph], plans: Sequence[Plan], device: DeviceSpec,
                threads: int | None = None) -> Prediction:
        """Predicted latency (ms) and peak memory (bytes) of each (graph, plan) on ``device``."""
        return predict_by_graph(self.predict_plans, graphs, plans, device, threads)

    def predict_plans(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                      threads: int | None = None) -> Prediction:
        """Batched prediction of many plans of one graph: the members' geometric-mean latency, mean memory."""
        outs = self._forward(template, plans, device, threads, with_nodes=False)
        return Prediction(_geomean([o["latency_ms"] for o in outs]),
                          np.mean([o["peak_mem_bytes"] for o in outs], axis=0))

    def node_latencies(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec,
                       threads: int | None = None) -> np.ndarray:
        """[P, n] per-node latencies (ms): the members' mean, each row rescaled to the ensemble's latency."""
        outs = self._forward(template, plans, device, threads, with_nodes=True)
        mean = np.mean([o["node_ms"] for o in outs], axis=0)
        total = _geomean([o["latency_ms"] for o in outs])
        sums = mean.sum(axis=1, keepdims=True)
        return mean * (total[:, None] / np.where(sums > 0, sums, 1.0))

    def plan_latencies(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec) -> np.ndarray:
        """Latencies of plans that change a few nodes of the default plan (GNNPredictor.plan_latencies of each
        member on features computed once, geometric mean)."""
        self._require_trained()
        if not plans:
            return np.zeros(0)
        t = threads_of(device)
        pf = self.members[0].featurise(template, [Plan({}), *plans], device, t)
        return _geomean([m.plan_latencies_features(template, pf, device, t) for m in self.members])

    def _forward(self, template: GraphTemplate, plans: Sequence[Plan], device: DeviceSpec, threads: int | None,
                 with_nodes: bool) -> list[dict[str, np.ndarray]]:
        """Each member's answers on the plans, featurised once (the members share one feature space)."""
        self._require_trained()
        n = template.n_nodes
        if not plans:
            return [{"latency_ms": np.zeros(0), "peak_mem_bytes": np.zeros(0), "node_ms": np.zeros((0, n))}]
        t = threads_of(device, threads)
        pf = self.members[0].featurise(template, plans, device, t)
        return [m.forward_features(template, pf, device, t, with_nodes) for m in self.members]

    # ------------------------------------------------------------------------------ persistence
    def payload(self) -> dict[str, Any]:
        """The checkpoint's content: the ensemble's facts and each member's payload."""
        self._require_trained()
        return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "kind": self.kind,
                "perfpredict_version": __version__, "feature_schema_version": self.members[0].feature_schema_version,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "training": plain(self.training), "metrics": plain(self.metrics),
                "members": [m.payload() for m in self.members]}

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint to ``path`` (a directory, created; or a ``.pt`` file); returns the file."""
        return write_checkpoint(self.payload(), path)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], file: Path | None = None) -> "GNNEnsemble":
        """The ensemble a :meth:`payload` describes (read by :func:`~perfpredict.gnn_predictor.load_predictor`)."""
        members = payload.get("members")
        if not isinstance(members, list) or not members:
            raise CheckpointError(f"{file}: ensemble checkpoint holds no members")
        ens = cls(members=[GNNPredictor.from_payload(m, file) for m in members])
        ens.training = payload.get("training", ens.training)
        ens.metrics = payload.get("metrics", {})
        ens.created = payload.get("created")
        ens.source_path = file
        return ens


def _geomean(values: Sequence[np.ndarray]) -> np.ndarray:
    return np.exp(np.mean([np.log(np.asarray(v, np.float64)) for v in values], axis=0))


__all__ = ["DEFAULT_SIZE", "GNNEnsemble"]
