"""Transfer checkpoints: the multi-device predictor and the calibrated predictor (a source predictor with the
fitted calibration), their cards, and a loader for any predictor checkpoint."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from perfpredict import __version__
from perfpredict.devices import DeviceSpec, load_device
from perfpredict.errors import TransferError
from perfpredict.serialise import json_default
from perfpredict.transfer.calibrators import Calibrator, calibrator_from_dict
from perfpredict.transfer.multidevice import ENCODING_VERSION, DeviceAdapter, MultiDeviceModel, encode_graph
from perfpredict.transfer.proxies import amdahl_through

if TYPE_CHECKING:
    from perfpredict.graph import Graph


TRANSFER_FORMAT = "perfpredict-transfer"
TRANSFER_VERSION = 1
CARD_FILE = "transfer.json"
MULTIDEVICE_FILE = "multidevice.pt"


def _rough_memory(graph: "Graph") -> float:
    """Weights plus the largest single-node activation footprint (bytes): a rough peak for models that do
    not predict memory."""
    weights = sum(float(v.nbytes) for v in graph.initializers.values())
    act = max((n.bytes_in + n.bytes_out for n in graph.nodes), default=0)
    return weights + float(act)


def _as_list(graphs: "Graph | Sequence[Graph]", n: int) -> list["Graph"]:
    from perfpredict.graph import Graph

    if isinstance(graphs, Graph):
        return [graphs] * n
    graphs = list(graphs)
    if len(graphs) != n:
        raise TransferError(f"predict: {len(graphs)} graphs for {n} plans; pass one graph or one per plan")
    return graphs


class MultiDevicePredictor:
    """:class:`perfpredict.predictor.Predictor` over IR graphs backed by a :class:`MultiDeviceModel`.

    A source device (by name, with no fingerprint or the one it was trained with) is predicted directly;
    any other device is fitted zero-shot from its board's ``fingerprint``: the entries whose keys name
    reference workloads the checkpoint knows (``reference``: key -> graph factors) are the labelled points
    of :meth:`MultiDeviceModel.adapt`. Plans are ignored (the model predicts a graph as its device's own
    runtime deploys it); peak memory is a rough estimate (weights + largest node footprint).
    """

    kind = "multidevice"

    def __init__(self, model: MultiDeviceModel, reference: Mapping[str, np.ndarray],
                 source_fingerprints: Mapping[str, Mapping[str, float]] | None = None,
                 description: Mapping[str, Any] | None = None):
        self.model = model
        self.reference = {k: np.asarray(v, np.float64) for k, v in reference.items()}
        self.source_fingerprints = {k: dict(v) for k, v in (source_fingerprints or {}).items()}
        self.description = dict(description or {})
        self._adapters: dict[str, DeviceAdapter] = {}

    def factors(self, graphs: Sequence["Graph"]) -> np.ndarray:
        """Graph factors of ``graphs`` (each distinct graph encoded once)."""
        uniq: dict[int, int] = {}
        order = []
        for g in graphs:
            order.append(uniq.setdefault(id(g), len(uniq)))
        firsts = {v: g for g in graphs for v in [uniq[id(g)]]}
        phi = self.model.factors([encode_graph(firsts[i]) for i in range(len(uniq))])
        return phi[order]

    def fingerprint_points(self, device: DeviceSpec) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(keys, factors, latencies) of the device's fingerprint entries this predictor can use."""
        keys = [k for k in device.fingerprint if k in self.reference]
        phi = np.array([self.reference[k] for k in keys]).reshape(len(keys), self.model.config.factors)
        return keys, phi, np.array([device.fingerprint[k] for k in keys], np.float64)

    def adapter(self, device: DeviceSpec) -> DeviceAdapter | None:
        """None for a source device; else the device fitted from its fingerprint (cached per fingerprint)."""
        if device.name in self.model.devices and (not device.fingerprint or dict(device.fingerprint) ==
                                                  self.source_fingerprints.get(device.name, dict(device.fingerprint))):
            return None
        key = json.dumps(sorted(device.fingerprint.items()))
        if key not in self._adapters:
            keys, phi, y = self.fingerprint_points(device)
            if len(keys) < 3:
                need = sorted(self.reference)
                raise TransferError(
                    f"device '{device.name}' cannot be predicted zero-shot: its board has {len(keys)} of the "
                    f"{len(need)} fingerprint entries this predictor needs (keys {', '.join(need[:4])}"
                    f"{', ...' if len(need) > 4 else ''}); add the measured fingerprint or adapt it with "
                    f"`perfpredict transfer` (known source devices: {', '.join(self.model.devices)})")
            self._adapters[key] = self.model.adapt(phi, y)
        return self._adapters[key]

    def predict(self, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any], device: DeviceSpec,
                threads: int | None = None):
        """Predicted latency (ms) and rough peak memory (bytes) of each graph on ``device`` (``threads`` is
        accepted for interface compatibility; a device here is what it was measured as)."""
        from perfpredict.predictor import Prediction

        glist = _as_list(graphs, len(plans))
        phi = self.factors(glist)
        ad = self.adapter(device)
        lat = self.model.predict_sources(phi, [device.name])[:, 0] if ad is None else ad.predict(phi, self.model)
        return Prediction(np.asarray(lat, np.float64), np.array([_rough_memory(g) for g in glist]))

    def save(self, path: str | Path) -> Path:
        """Write ``path/multidevice.pt`` (weights, reference factors) and ``path/transfer.json`` (card)."""
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        payload = {"format": TRANSFER_FORMAT, "format_version": TRANSFER_VERSION, "kind": self.kind,
                   "encoding_version": ENCODING_VERSION, "model": self.model.state(),
                   "reference": {k: v.tolist() for k, v in self.reference.items()},
                   "source_fingerprints": self.source_fingerprints}
        tmp = path / (MULTIDEVICE_FILE + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path / MULTIDEVICE_FILE)
        _write_card(path, {"kind": self.kind, "devices": list(self.model.devices),
                           "reference_keys": sorted(self.reference), "training": self.model.training,
                           "config": self.model.config.to_dict(), **self.description})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MultiDevicePredictor":
        """Read a checkpoint written by :meth:`save`."""
        import torch

        file = Path(path) / MULTIDEVICE_FILE
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt file
            raise TransferError(f"{file}: not a readable multi-device checkpoint ({type(exc).__name__})") from None
        if payload.get("format") != TRANSFER_FORMAT or payload.get("encoding_version") != ENCODING_VERSION:
            raise TransferError(f"{file}: checkpoint format/encoding {payload.get('format')}/"
                                f"{payload.get('encoding_version')} is not {TRANSFER_FORMAT}/{ENCODING_VERSION}")
        card = _read_card(Path(path)) if (Path(path) / CARD_FILE).is_file() else {}
        return cls(MultiDeviceModel.from_state(payload["model"]), payload["reference"],
                   payload.get("source_fingerprints"), {k: v for k, v in card.items() if k not in
                                                         ("kind", "devices", "reference_keys", "training", "config")})


def _write_card(path: Path, content: Mapping[str, Any]) -> None:
    card = {"format": TRANSFER_FORMAT, "format_version": TRANSFER_VERSION, "perfpredict_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **content}
    tmp = path / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=json_default) + "\n")
    tmp.replace(path / CARD_FILE)


def _read_card(path: Path) -> dict[str, Any]:
    file = path / CARD_FILE
    try:
        card = json.loads(file.read_text())
    except FileNotFoundError:
        raise TransferError(f"{path}: no {CARD_FILE} here (not a transfer checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransferError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != TRANSFER_FORMAT:
        raise TransferError(f"{file}: not a perfpredict transfer card (format {card.get('format')!r})")
    if card.get("format_version") != TRANSFER_VERSION:
        raise TransferError(f"{file}: transfer card format_version {card.get('format_version')} is not supported "
                            f"(this perfpredict reads {TRANSFER_VERSION})")
    return card


def load_any_predictor(path: str | Path) -> Any:
    """Load a predictor checkpoint of any kind: a transfer checkpoint (calibrated or multi-device) or a GNN
    checkpoint (:func:`perfpredict.gnn_predictor.load_predictor`, which also resolves bare names)."""
    p = Path(path)
    if (p / CARD_FILE).is_file():
        kind = _read_card(p).get("kind")
        if kind == CalibratedPredictor.kind:
            return CalibratedPredictor.load(p)
        if kind == MultiDevicePredictor.kind:
            return MultiDevicePredictor.load(p)
        raise TransferError(f"{p / CARD_FILE}: unknown transfer checkpoint kind {kind!r}; known: "
                            f"{CalibratedPredictor.kind}, {MultiDevicePredictor.kind}")
    from perfpredict.gnn_predictor import load_predictor, resolve_model_path

    resolved = resolve_model_path(path)
    if (resolved / CARD_FILE).is_file():
        return load_any_predictor(resolved)
    return load_predictor(resolved)


PARTS = ("fp32", "int8")
"""The parts a ``board`` column can restrict a plan's predicted latency to (``"part"``): its nodes not at int8, or
at int8 (the source's per-node latencies, :meth:`GNNPredictor.node_latencies`)."""


def _template_parts(source: Any, template: Any, plans: Sequence[Any], board: DeviceSpec,
                    threads: int | None) -> np.ndarray:
    """[P, 2]: the source's predicted latency of ``plans`` of one graph template on ``board``, split into their fp32
    and their int8 nodes (:data:`PARTS`), from one call of its per-node latencies."""
    from perfpredict.features import encode_plans

    shares = np.asarray(source.node_latencies(template, plans, board, threads), np.float64)
    int8 = encode_plans(template, plans, source.space).precision == list(source.space.precisions).index("int8")
    return np.stack([(shares * ~int8).sum(axis=1), (shares * int8).sum(axis=1)], axis=1)


def precision_parts(source: Any, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any], board: DeviceSpec,
                    threads: int | None = None) -> np.ndarray:
    """[n, 2]: a plan-aware source's predicted latency of each (graph, plan) on ``board`` split into its fp32 and
    its int8 nodes (:data:`PARTS`)."""
    from perfpredict.predictor import Prediction, predict_by_graph

    def parts(tpl: Any, ps: Sequence[Any], dev: DeviceSpec, th: int | None) -> Any:
        split = _template_parts(source, tpl, ps, dev, th)
        return Prediction(split, np.zeros(len(split)))

    return predict_by_graph(parts, graphs, list(plans), board, threads).latency_ms


def _part(column: Mapping[str, Any]) -> int | None:
    """The index in :data:`PARTS` a ``board`` column reads, None for its whole latency."""
    part = column.get("part")
    if part is not None and part not in PARTS:
        raise TransferError(f"unknown column part '{part}'; known: {', '.join(PARTS)}")
    return None if part is None else PARTS.index(part)


def _pairwise_mixin() -> type:
    try:
        from perfpredict.additive import PairwiseCostsMixin
    except ImportError:  # the additive-costs module is optional for this class
        return object
    return PairwiseCostsMixin


class CalibratedPredictor(_pairwise_mixin()):  # type: ignore[misc]
    """A source predictor adapted to one target device: a normal checkpoint implementing Predictor.

    ``columns`` say what the calibrator reads for each (graph, plan): ``{"type": "factors"}`` (the graph
    factors of a multi-device source, one input column each), ``{"type": "source_device", "name": ...}``
    (a multi-device source's prediction for one of its devices) or ``{"type": "board", "board": {...}}``
    (the source's prediction for that device description - the target's own board for a zero-shot column,
    or a proxy) or ``{"type": "amdahl", "one": {...}, "two": {...}, "threads": t}`` (the source's predictions for
    one trained device at 1 and 2 threads, extrapolated to t threads by :func:`amdahl_latency`). Peak memory is
    the source's prediction for the target board. When every column is a board or an Amdahl pair and the source
    is plan-aware (``predict_plans`` / ``node_latencies``, the GNN), the NodeCostModel methods work too: node
    shares are the source's (an Amdahl pair's extrapolated node by node), rescaled to the calibrated total.
    """

    kind = "calibrated"

    def __init__(self, source: Any, source_path: str, target: DeviceSpec, columns: Sequence[Mapping[str, Any]],
                 calibrator: Calibrator, card: Mapping[str, Any] | None = None):
        self.source = source
        self.source_path = str(source_path)
        self.target = target
        self.columns = [dict(c) for c in columns]
        self._board_specs: list[DeviceSpec | None] | None = None
        self._amdahl_specs: list[tuple[DeviceSpec, DeviceSpec] | None] = []
        self.calibrator = calibrator
        self.card = dict(card or {})

    @property
    def space(self) -> Any:
        """The source's feature space (a plan-aware source's: what the node-cost methods price memory with)."""
        space = getattr(self.source, "space", None)
        if space is None:
            raise TransferError(f"adapted predictor for '{self.target.name}' over a source without a feature space "
                                "has no per-node costs")
        return space

    def _source_predict(self, graphs: Any, plans: Sequence[Any], board: DeviceSpec, threads: int | None):
        if threads is None:
            return self.source.predict(graphs, plans, board)
        return self.source.predict(graphs, plans, board, threads=threads)

    def inputs(self, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any],
               threads: int | None = None) -> np.ndarray:
        """The calibrator's input matrix for (graph, plan) pairs."""
        cols: list[np.ndarray] = []
        phi = None
        splits: dict[int, np.ndarray] = {}  # per board: both parts come from one prediction
        for i, (c, board) in enumerate(zip(self.columns, self._column_boards())):
            if c["type"] in ("factors", "source_device") and phi is None:
                phi = self.source.factors(_as_list(graphs, len(plans)))
            if c["type"] == "factors":
                cols.extend(phi.T)
            elif c["type"] == "source_device":
                cols.append(self.source.model.predict_sources(phi, [c["name"]])[:, 0])
            elif c["type"] == "board" and _part(c) is not None:
                key = self._column_boards().index(board)
                if key not in splits:
                    splits[key] = precision_parts(self.source, graphs, plans, board, threads)
                cols.append(splits[key][:, _part(c)])
            elif c["type"] == "board":
                cols.append(self._source_predict(graphs, plans, board, threads).latency_ms)
            elif c["type"] == "amdahl":
                cols.append(self._amdahl(i, lambda b, t: self._source_predict(graphs, plans, b, t).latency_ms))
            else:
                raise TransferError(f"unknown calibrator input column {c!r}")
        return np.stack(cols, axis=1)

    def predict(self, graphs: "Graph | Sequence[Graph]", plans: Sequence[Any], device: DeviceSpec,
                threads: int | None = None):
        """Predicted latency (ms) and peak memory (bytes) on the target device (``device`` must be it;
        ``threads`` is passed on to a source that takes it)."""
        from perfpredict.predictor import Prediction

        self._check_device(device, threads)
        plans = list(plans)
        lat = self.calibrator.predict(self.inputs(graphs, plans, threads))
        if isinstance(self.source, MultiDevicePredictor):
            mem = np.array([_rough_memory(g) for g in _as_list(graphs, len(plans))])
        else:
            mem = self._source_predict(graphs, plans, self.target, threads).peak_mem_bytes
        return Prediction(np.asarray(lat, np.float64), np.asarray(mem, np.float64))

    def answers_for(self, device: DeviceSpec, threads: int | None = None) -> bool:
        """Whether this adaptation holds for ``device`` at ``threads`` (its target: see :meth:`predict`)."""
        try:
            self._check_device(device, threads)
        except TransferError:
            return False
        return True

    def _check_device(self, device: DeviceSpec, threads: int | None = None) -> None:
        """The adaptation holds for its target only: same name, and where both boards say so, the same machine
        (device_id: hosts of one name differ) and thread count (``threads``, else the board's)."""
        t = self.target
        if device.name != t.name:
            raise TransferError(f"this predictor was adapted to device '{t.name}', not '{device.name}'; "
                                f"use its source {self.source_path} or adapt one for '{device.name}'")
        if device.device_id != t.device_id and device.cpu_model and t.cpu_model:
            raise TransferError(f"this predictor was adapted to device '{t.name}' with device_id {t.device_id}, not "
                                f"the machine of device_id {device.device_id} that shares its name; use its source "
                                f"{self.source_path} or adapt one for this machine")
        used = threads or device.threads_used
        if used and t.threads_used and used != t.threads_used:
            raise TransferError(f"this predictor was adapted to device '{t.name}' at {t.threads_used} threads, not "
                                f"{used}; use its source {self.source_path} or adapt one at {used} threads")

    def _boards(self) -> list[DeviceSpec]:
        """Each column's board (an Amdahl pair's 2-thread one) when every column is a board or an Amdahl pair and
        the source is plan-aware."""
        if any(c["type"] not in ("board", "amdahl") for c in self.columns) or \
                not hasattr(self.source, "predict_plans"):
            raise TransferError(f"adapted predictor for '{self.target.name}' ({self.card.get('method')}) over a "
                                "plan-agnostic source has no per-plan template path")
        boards = self._column_boards()
        return [b if b is not None else self._amdahl_specs[i][1] for i, b in enumerate(boards)]

    def _column_boards(self) -> list[DeviceSpec | None]:
        """Each column's board (None for other column types), parsed once with the (1-thread, 2-thread) boards of
        the Amdahl columns: the optimiser predicts batch by batch."""
        if self._board_specs is None:
            self._board_specs = [load_device(c["board"]) if c["type"] == "board" else None for c in self.columns]
            self._amdahl_specs = [(load_device(c["one"]), load_device(c["two"])) if c["type"] == "amdahl" else None
                                  for c in self.columns]
        return self._board_specs

    def _amdahl(self, i: int, latency: Callable[[DeviceSpec, int], np.ndarray]) -> np.ndarray:
        """Amdahl column ``i``'s values: ``latency(board, threads)`` at its 1- and 2-thread boards, extrapolated
        to its thread count."""
        self._column_boards()
        one, two = self._amdahl_specs[i]
        return amdahl_through(latency, one, two, self.columns[i]["threads"])

    def predict_plans(self, template: Any, plans: Sequence[Any], device: DeviceSpec, threads: int | None = None):
        """Batched prediction of many plans of one graph template (plan-aware sources only; ``threads`` is
        passed on to the source)."""
        from perfpredict.predictor import Prediction

        self._check_device(device, threads)
        boards = self._boards()
        splits: dict[int, np.ndarray] = {}  # per board: both parts come from one prediction
        cols = []
        for i, (c, b) in enumerate(zip(self.columns, boards)):
            if c["type"] == "amdahl":
                cols.append(self._amdahl(i, lambda b, t: self.source.predict_plans(template, plans, b, t).latency_ms))
                continue
            if _part(c) is None:
                cols.append(np.asarray(self.source.predict_plans(template, plans, b, threads).latency_ms, np.float64))
                continue
            key = boards.index(b)
            if key not in splits:
                splits[key] = _template_parts(self.source, template, plans, b, threads)
            cols.append(splits[key][:, _part(c)])
        lat = self.calibrator.predict(np.stack(cols, axis=1))
        mem = self.source.predict_plans(template, plans, self.target, threads).peak_mem_bytes
        return Prediction(np.asarray(lat, np.float64), np.asarray(mem, np.float64))

    def node_latencies(self, template: Any, plans: Sequence[Any], device: DeviceSpec,
                       threads: int | None = None) -> np.ndarray:
        """Per-node latency shares (the source's, on the first column's board or Amdahl pair), rescaled per plan to
        the calibrated total."""
        if self.columns[0]["type"] == "amdahl":  # node by node
            shares = self._amdahl(0, lambda b, t: self.source.node_latencies(template, plans, b, t))
        else:
            shares = np.asarray(self.source.node_latencies(template, plans, self._boards()[0], threads), np.float64)
        total = self.predict_plans(template, plans, device, threads).latency_ms
        return shares * (total / np.maximum(shares.sum(axis=1), 1e-12))[:, None]

    def save(self, path: str | Path) -> Path:
        """Write ``path/transfer.json`` (the card: source, target, method, calibrator, measurements, CV errors)
        and a human-readable ``path/README.md``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        src = Path(self.source_path)
        try:
            rel = str(Path(src).resolve().relative_to(path.resolve().parent))
            source_ref = {"path": str(src.resolve()), "relative_to_parent": rel}
        except ValueError:
            source_ref = {"path": str(src.resolve())}
        _write_card(path, {"kind": self.kind, "source": source_ref, "target": self.target.to_dict(),
                           "columns": self.columns, "calibrator": self.calibrator.to_dict(), **self.card})
        (path / "README.md").write_text(_card_markdown(self, source_ref))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CalibratedPredictor":
        """Read a checkpoint written by :meth:`save` (its source is loaded from the recorded path, or from the
        same place relative to this checkpoint's parent folder when the tree was moved)."""
        path = Path(path)
        card = _read_card(path)
        if card.get("kind") != cls.kind:
            raise TransferError(f"{path / CARD_FILE}: kind {card.get('kind')!r} is not {cls.kind!r}")
        src = card["source"]
        cand = [Path(src["path"])]
        if src.get("relative_to_parent"):
            cand.insert(0, path.resolve().parent / src["relative_to_parent"])
        where = next((c for c in cand if c.exists()), None)
        if where is None:
            raise TransferError(f"{path}: its source predictor is missing (looked in {', '.join(map(str, cand))})")
        rest = {k: v for k, v in card.items() if k not in ("kind", "source", "target", "columns", "calibrator",
                                                          "format", "format_version")}
        return cls(load_any_predictor(where), str(where), load_device(card["target"]), card["columns"],
                   calibrator_from_dict(card["calibrator"]), rest)


def _card_markdown(p: CalibratedPredictor, source_ref: Mapping[str, Any]) -> str:
    c = p.card
    lines = [f"# Adapted predictor: {p.target.name}", "",
             f"- source predictor: `{source_ref['path']}`",
             f"- method: **{c.get('method')}** (chosen by leave-one-out cross-validation on {c.get('points')} "
             f"labelled points: {c.get('k')} shots + {c.get('fingerprint_points', 0)} fingerprint entries)",
             f"- cross-validated error of the chosen method: {json.dumps(c.get('cv_error'))}", "",
             "| candidate | CV rmse(log) | CV MAPE % |", "|---|---|---|"]
    for name, v in (c.get("cv") or {}).items():
        lines.append(f"| {name} | {v.get('rmse_log', float('nan')):.4f} | {v.get('mape', float('nan')):.2f} |")
    if c.get("zero_shot"):
        z = c["zero_shot"]
        lines += ["", f"Zero-shot through the proxy device `{z['proxy']}`: its prediction x "
                      f"{z['fingerprint_ratio']:.4f}, the ratio of the two fingerprints over "
                      f"{z['shared_fingerprint_entries']} shared entries."]
    elif c.get("method") == "proxy_split":
        lines += ["", f"Through the proxy device `{p.columns[0]['board']['name']}`: its predicted latency of a plan's fp32 "
                      "nodes and of its int8 nodes, each rescaled to the shots."]
    elif c.get("method") == "amdahl_scale":
        lines += ["", f"Through the trained device `{p.columns[0]['two']['name']}` at 1 and 2 threads: its two "
                      f"predictions extrapolated to {p.columns[0]['threads']} threads by Amdahl's law, rescaled to "
                      "the shots."]
    elif c.get("method") == "proxy_scale":
        lines += ["", f"Through the proxy device `{p.columns[0]['board']['name']}` (the trained device whose "
                      "fingerprint correlates best with the target's): its prediction, rescaled to the shots."]
    if c.get("holdout"):
        lines += ["", f"Held-out measurements (not used to fit): {json.dumps(c['holdout'])}"]
    lines += ["", "## Measurements", "", "| model | plan | latency ms | used |", "|---|---|---|---|"]
    for m in c.get("measurements", []):
        lines.append(f"| {m['model']} | {m.get('plan') or 'default'} | {m['latency_ms']:.4g} | {m.get('used', True)} |")
    return "\n".join(lines) + "\n"
