"""Training and evaluation loops: fit the GNN, score any predictor on samples, write checkpoint + model card.

``fit_gnn`` featurises the samples once (plans of one graph on one device in one vectorised pass), fits
the :class:`~perfpredict.features.Normaliser`, and trains with AdamW and a cosine learning-rate schedule
on smooth-L1 losses of log errors (latency, memory, the plain sum of node latencies against the model's
latency, per-kernel latency of layer samples and, with ``step_weight``, each step group's share of the node sum
against its share of the forward pass timed step by step: :func:`step_share_loss`), keeping the weights of the epoch with the best validation
error (early stopping after ``patience`` epochs without a better one). The memory head's learned correction of the
analytical memory prior is then shrunk by the factor in [0, 1] that best fits the validation samples (0: the
prior alone, where the prior is already closer than the correction). With ``session_offsets``, model samples of a
measurement session other than their device's reference (:mod:`perfpredict.sessions`) are fitted with a learned
offset of their session, so the network predicts the reference: the newest runtime, as most recently measured.
``evaluate`` scores any predictor (GNN, baselines, the roofline model) on the same samples.
``train_and_report`` is what ``perfpredict train`` runs; it trains resumably (:mod:`perfpredict.train_state`: a
killed run goes on from its last finished epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from perfpredict import __version__
from perfpredict.errors import DatasetError, PerfPredictError
from perfpredict.features import (FEATURE_SCHEMA_VERSION, FeatureSpace, Normaliser, device_vector, encode_plans,
                                  plan_node_features)
from perfpredict.gnn import GNNConfig
from perfpredict.metrics import clean, grouped_ranking, summarise
from perfpredict.samples import (LayerSample, ModelSample, SampleSet, Split, graph_of, make_splits,
                                 validation_split)
from perfpredict.sessions import Sessions, campaign_of
from perfpredict.train_state import (fingerprint, load_state, random_states, restore_random_states, samples_digest,
                                     save_state, state_path)
from perfpredict.zoo import list_synthetic_families

if TYPE_CHECKING:
    from perfpredict.gnn_predictor import GNNPredictor


@dataclass(frozen=True)
class TrainOptions:
    """Training hyper-parameters (defaults sized for a few minutes on 2 CPU cores)."""

    epochs: int = 150
    lr: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 32
    layer_weight: float = 0.3
    # weight of the plain node sum's error against the model latency: the nodes carry the latency and the
    # graph-level correction stays a residual (unconstrained, it extrapolated to unseen families)
    node_sum_weight: float = 0.5
    memory_weight: float = 1.0
    # epochs without a better validation score before training stops (None: the whole schedule runs; the
    # best-validation epoch is kept either way)
    patience: int | None = 30
    val_fraction: float = 0.1
    seed: int = 0
    huber_beta: float = 0.02
    max_seconds: float | None = None
    threads: int = 1  # torch threads while training (1 is fastest for these small graphs on a busy machine)
    # share of nodes whose op and primitive one-hots are blanked in each training batch (see drop_identity)
    identity_dropout: float = 0.0
    # a learned log-latency offset per measurement session but each device's reference (perfpredict.sessions):
    # the network predicts the reference session, the runtime as it runs now (off by default: on the shipped data
    # it scores the reference records better, but one of its searched plans ran 1.33x slower; benchmarks/README.md,
    # Predictor)
    session_offsets: bool = False
    # a learned log-latency offset per device, thread count and campaign for the layer records: kernels measured
    # alone, often on another day than the model records, then teach the network the kernels' relative costs, not
    # their level (a nuisance: xeon2.db's layer campaign ran ~1.6x slower than its beacon model campaign; the nodes'
    # level comes from the model records through the node-sum loss)
    layer_offsets: bool = False
    # a learned log-latency offset per device and thread count for the model records of synthetic families
    # (perfpredict.zoo.mixnet): random networks teach the nodes every family's blocks in context, but not the level
    # that deployed families run at (on xeon2.db they pushed held-out families' predictions ~3% too slow)
    synthetic_offsets: bool = False
    # weight of the step-share loss: each step group's share of the node sum against its measured share of the
    # forward pass's step times, for model samples that carry them (ModelSample.steps); 0: off
    step_weight: float = 0.0
    step_beta: float = 0.1


# --------------------------------------------------------------------------------------------- tensors


@dataclass
class _Rows:
    """Featurised samples before normalisation (one entry per sample)."""

    static: list[np.ndarray]
    plan: list[np.ndarray]
    log_prior: list[np.ndarray]
    edge_index: list[np.ndarray]
    device: list[np.ndarray]
    memory: list[np.ndarray]
    log_mem_prior: list[float]
    y_lat: list[float]
    y_mem: list[float]
    steps: list[tuple[np.ndarray, np.ndarray] | None]


def _group_key(template: Any, device: Any, threads: int) -> tuple[int, str, int]:
    return id(template), device.to_json(indent=None), threads


def featurise_samples(space: FeatureSpace, models: Sequence[ModelSample] = (),
                      layers: Sequence[LayerSample] = ()) -> _Rows:
    """Featurise model samples, then layer samples, in that order (grouped per graph/device/threads)."""
    items: list[tuple[Any, Any, Any, int, float | None, float | None, Any]] = []
    for s in models:
        items.append((s.template, s.plan, s.device, s.threads, s.latency_ms, s.peak_mem_bytes, s.steps))
    for s in layers:
        items.append((s.template, s.choices, s.device, s.threads, s.latency_ms, None, None))
    groups: dict[tuple[int, str, int], list[int]] = {}
    for k, it in enumerate(items):
        groups.setdefault(_group_key(it[0], it[2], it[3]), []).append(k)
    out: list[Any] = [None] * len(items)
    for idx in groups.values():
        tpl, _, dev, thr = items[idx[0]][:4]
        pf = plan_node_features(tpl, encode_plans(tpl, [items[k][1] for k in idx], space), space, dev, thr)
        dv = device_vector(dev, thr)
        for j, k in enumerate(idx):
            lat, mem = items[k][4], items[k][5]
            out[k] = (pf.static, pf.plan[j], np.log(pf.prior_ms[j]), tpl.edge_index, dv, pf.memory[j],
                      float(np.log(max(pf.memory_prior[j], 1.0))),
                      math.log(lat) if lat else math.nan, math.log(mem) if mem else math.nan, items[k][6])
    cols = list(zip(*out)) if out else [[] for _ in range(10)]
    return _Rows(*[list(c) for c in cols])


def _node_rows(rows: _Rows) -> np.ndarray:
    return np.concatenate([np.concatenate([s, p], axis=1) for s, p in zip(rows.static, rows.plan)], axis=0)


def fit_normaliser(rows: _Rows, layer_rows: _Rows | None = None) -> Normaliser:
    """Fit feature standardisation on featurised training rows; the layer records' rows (``layer_rows``) only
    standardise the columns the model rows never varied (:meth:`Normaliser.fit`)."""
    layers = _node_rows(layer_rows) if layer_rows is not None and layer_rows.static else None
    return Normaliser.fit(_node_rows(rows), np.stack(rows.device), np.stack(rows.memory), layers)


def to_data(rows: _Rows, norm: Normaliser, static_dim: int, sessions: Sequence[int] | None = None,
            synthetic: Sequence[int] | None = None) -> list[Data]:
    """Normalised torch_geometric ``Data`` objects, one per sample (with its session's offset index, ``session``,
    when ``sessions`` gives them, and its synthetic-family offset index, ``synth``, when ``synthetic`` does)."""
    out = []
    s_mean, s_std = norm.node_mean[:static_dim], norm.node_std[:static_dim]
    p_mean, p_std = norm.node_mean[static_dim:], norm.node_std[static_dim:]
    static_cache: dict[int, Tensor] = {}
    for k in range(len(rows.plan)):
        st = rows.static[k]
        sx = static_cache.get(id(st))
        if sx is None:
            sx = static_cache[id(st)] = torch.from_numpy(((st - s_mean) / s_std).astype(np.float32))
        out.append(Data(
            x_static=sx, x_plan=torch.from_numpy(((rows.plan[k] - p_mean) / p_std).astype(np.float32)),
            log_prior=torch.from_numpy(rows.log_prior[k].astype(np.float32)),
            edge_index=torch.from_numpy(rows.edge_index[k]), dev=torch.from_numpy(norm.device(rows.device[k]))[None],
            mem=torch.from_numpy(norm.memory(rows.memory[k][None])),
            log_mem_prior=torch.tensor([rows.log_mem_prior[k]], dtype=torch.float32),
            y_lat=torch.tensor([rows.y_lat[k]], dtype=torch.float32),
            y_mem=torch.tensor([rows.y_mem[k]], dtype=torch.float32), num_nodes=int(st.shape[0]),
            **_step_targets(rows.steps[k], int(st.shape[0])),
            **({} if sessions is None else {"session": torch.tensor([sessions[k]], dtype=torch.long)}),
            **({} if synthetic is None else {"synth": torch.tensor([synthetic[k]], dtype=torch.long)})))
    return out


def _step_targets(steps: tuple[np.ndarray, np.ndarray] | None, n: int) -> dict[str, Tensor]:
    """Per-node step-share targets of a sample (:attr:`ModelSample.steps`): ``step_grp`` [n] each node's step
    group (-1 none), ``step_share`` [n] the log share of the forward pass's step time that the group takes, at the
    group's first node (NaN elsewhere, and everywhere for a sample without steps)."""
    grp = np.full(n, -1, np.int64)
    share = np.full(n, np.nan, np.float32)
    if steps is not None:
        g, ms = steps
        ok = (g >= 0) & (ms[np.maximum(g, 0)] > 0) if len(ms) else np.zeros(n, bool)
        grp[ok] = g[ok]
        _, first = np.unique(np.where(ok, g, -1), return_index=True)
        first = first[grp[first] >= 0]
        share[first] = np.log(ms[grp[first]] / ms[np.unique(grp[ok])].sum())
    return {"step_grp": torch.from_numpy(grp), "step_share": torch.from_numpy(share)}


def step_share_loss(out: Any, batch: Batch, beta: float) -> Tensor | None:
    """Smooth-L1 error of each step group's predicted log share of the node sum against its measured share of
    the steps' time (None where the batch holds no step targets)."""
    rep = ~torch.isnan(batch.step_share)
    if not bool(rep.any()):
        return None
    ok = batch.step_grp >= 0
    gid = torch.where(ok, batch.ptr[batch.batch] + batch.step_grp, torch.zeros_like(batch.step_grp))
    node_log = out.node_log_latency
    t = torch.exp(node_log - out.log_node_sum[batch.batch]) * ok
    share = scatter(t, gid, 0, dim_size=node_log.shape[0], reduce="sum")
    pred = torch.log(share[gid[rep]].clamp_min(1e-12))
    return torch.nn.functional.smooth_l1_loss(pred, batch.step_share[rep], beta=beta)


def identity_absent(space: FeatureSpace, norm: Normaliser) -> tuple[Tensor, Tensor]:
    """Standardised op and primitive one-hot columns of a node whose op and primitive are unknown (all zero):
    what a node of an op the training data never had looks like once the normaliser pins its columns."""
    zero = norm.nodes(np.zeros((1, space.node_dim)))[0]
    ds = space.static_dim
    return torch.from_numpy(zero[:space.op_dim]), torch.from_numpy(zero[ds:ds + len(space.primitives) + 1])


def drop_identity(batch: Batch, share: float, absent: tuple[Tensor, Tensor], gen: torch.Generator) -> Batch:
    """Blank the op and primitive one-hots of a random ``share`` of the batch's nodes (in place, on copies of
    the feature tensors), so the network learns to cost a node from its op category, shapes and prior alone,
    as it must for an op no training family has."""
    if share <= 0:
        return batch
    op, prim = absent
    drop = torch.rand(batch.x_static.shape[0], generator=gen) < share
    batch.x_static = batch.x_static.clone()
    batch.x_static[drop, :op.numel()] = op
    batch.x_plan = batch.x_plan.clone()
    batch.x_plan[drop, :prim.numel()] = prim
    return batch


def layer_session(sample: LayerSample) -> str:
    """The group of layer records that shares one learned level offset (``TrainOptions.layer_offsets``): their
    device at their thread count, in their campaign."""
    return f"{sample.device.device_id}|{sample.threads}|{sample.campaign}"


def synthetic_group(sample: ModelSample) -> str:
    """The group of synthetic-family model records that shares one learned level offset
    (``TrainOptions.synthetic_offsets``): their device at their thread count."""
    return f"{sample.device.device_id}|{sample.threads}"


def _forward(model: Any, batch: Batch) -> Any:
    return model(model.encode_static(batch.x_static), batch.x_plan, batch.log_prior, batch.dev, batch.edge_index,
                 batch.batch, batch.num_graphs, batch.mem, batch.log_mem_prior)


def _masked_loss(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    mask = torch.isfinite(target)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return torch.nn.functional.smooth_l1_loss(pred[mask], target[mask], beta=beta)


def _abs_log_errors(model: Any, batches: list[Batch],
                    offset: Callable[[Batch], Tensor | float] = lambda b: 0.0) -> tuple[np.ndarray, np.ndarray]:
    lat_err, mem_err = [], []
    with torch.inference_mode():
        for b in batches:
            out = _forward(model, b)
            lat_err.append((out.log_latency + offset(b) - b.y_lat).abs().numpy())
            mem_err.append((out.log_memory - b.y_mem).abs().numpy())
    lat = np.concatenate(lat_err) if lat_err else np.zeros(0)
    mem = np.concatenate(mem_err) if mem_err else np.zeros(0)
    return lat[np.isfinite(lat)], mem[np.isfinite(mem)]


_SHRINK_GRID = np.linspace(0.0, 1.0, 11)


def shrink_memory_correction(model: Any, batches: list[Batch]) -> float:
    """Scale the memory head's output layer (its correction of the log memory prior) by the factor of
    ``_SHRINK_GRID`` with the lowest mean absolute log error on ``batches``; returns the factor (1.0 when the
    batches hold no memory target)."""
    corr, resid = [], []
    with torch.inference_mode():
        for b in batches:
            out = _forward(model, b)
            corr.append((out.log_memory - b.log_mem_prior).numpy())
            resid.append((b.y_mem - b.log_mem_prior).numpy())
    c, r = np.concatenate(corr), np.concatenate(resid)
    ok = np.isfinite(r)
    if not ok.any():
        return 1.0
    errors = [float(np.abs(a * c[ok] - r[ok]).mean()) for a in _SHRINK_GRID]
    scale = float(_SHRINK_GRID[int(np.argmin(errors))])
    last = model.mem_head[-1]
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return scale


def fit_gnn(pred: "GNNPredictor", train: SampleSet, val: SampleSet | None, opts: TrainOptions,
            progress: bool = False, state_dir: str | Path | None = None) -> dict[str, Any]:
    """Train ``pred`` in place (see the module docstring); returns and stores the training record. With
    ``state_dir``, the state after each epoch is kept there and a run of the same data and options goes on from it
    (:mod:`perfpredict.train_state`)."""
    from perfpredict.measure import torch_threads

    with torch_threads(opts.threads):
        return _fit_gnn(pred, train, val, opts, progress, state_dir)


def _fit_gnn(pred: "GNNPredictor", train: SampleSet, val: SampleSet | None, opts: TrainOptions,
             progress: bool, state_dir: str | Path | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    random.seed(opts.seed)
    np.random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    if not train.models:
        raise PerfPredictError("training needs at least one model sample")
    if val is None:
        train, val = validation_split(train, opts.val_fraction, opts.seed)
    if pred.space is None:
        pred.space = FeatureSpace.current()
    space = pred.space
    rows = featurise_samples(space, train.models)
    layer_rows = featurise_samples(space, (), train.layers)
    norm = fit_normaliser(rows, layer_rows)
    pred.normaliser = norm
    sessions = Sessions.of(train.models) if opts.session_offsets else None
    synthetic = set(list_synthetic_families())
    synth_keys = sorted({synthetic_group(s) for s in train.models if s.family in synthetic}) \
        if opts.synthetic_offsets else []
    synth_index = {k: i for i, k in enumerate(synth_keys)}

    def synth_of(models: Sequence[ModelSample]) -> list[int] | None:  # len(synth_keys): no offset
        if not synth_keys:
            return None
        return [synth_index.get(synthetic_group(s), len(synth_keys)) if s.family in synthetic else len(synth_keys)
                for s in models]

    tr = to_data(rows, norm, space.static_dim, None if sessions is None else [sessions.index(s) for s in train.models],
                 synth_of(train.models))
    layer_keys = sorted({layer_session(s) for s in train.layers}) if opts.layer_offsets else []
    layer_index = {k: i for i, k in enumerate(layer_keys)}
    tl = to_data(layer_rows, norm, space.static_dim,
                 [layer_index[layer_session(s)] for s in train.layers] if layer_keys else None) \
        if train.layers else []
    va = to_data(featurise_samples(space, val.models), norm, space.static_dim,
                 None if sessions is None else [sessions.index(s) for s in val.models],
                 synth_of(val.models)) if val.models else []
    model = pred.model = pred.build_model()
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    # learned log-latency levels: per session, per layer group, per synthetic group (empty when off)
    levels = [torch.zeros(n, requires_grad=True) for n in (len(sessions) if sessions else 0, len(layer_keys),
                                                           len(synth_keys))]
    offsets, layer_shift, synth_shift = levels
    # scalars that must travel a whole log-ratio (0.2-0.5) where a weight moves by little: a tenfold rate
    groups += [{"params": [t], "weight_decay": 0.0, "lr": opts.lr * 10} for t in levels if t.numel()]

    def offset(batch: Batch) -> Tensor | float:  # each sample's session and synthetic-family offsets (or 0)
        shift: Tensor | float = 0.0
        if sessions is not None:
            shift = torch.cat([offsets, offsets.new_zeros(1)])[batch.session]
        if synth_keys:
            shift = shift + torch.cat([synth_shift, synth_shift.new_zeros(1)])[batch.synth]
        return shift

    optim = torch.optim.AdamW(groups, lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(1, opts.epochs), eta_min=opts.lr * 0.03)
    rng = np.random.default_rng(opts.seed)
    n_batches = max(1, math.ceil(len(tr) / opts.batch_size))
    # layer samples are collated once into one mega-batch per step (order reshuffled every epoch)
    layer_batches = [Batch.from_data_list([tl[i] for i in chunk])
                     for chunk in np.array_split(rng.permutation(len(tl)), n_batches) if len(chunk)] if tl else []
    val_batches = [Batch.from_data_list(va[lo:lo + 256]) for lo in range(0, len(va), 256)] if va else \
        [Batch.from_data_list(tr[lo:lo + 256]) for lo in range(0, len(tr), 256)]
    best, best_state, best_epoch, bad = math.inf, None, -1, 0
    best_levels = [t.detach().clone() for t in levels]
    history: list[dict[str, float]] = []
    absent = identity_absent(space, norm)
    gen = torch.Generator().manual_seed(opts.seed)
    state_file = state_path(state_dir, opts.seed) if state_dir is not None else None
    run_print = fingerprint(options=asdict(opts), config=pred.config.to_dict(), data_hash=train.data_hash,
                            samples=samples_digest(train.models, train.layers, val.models),
                            schema=FEATURE_SCHEMA_VERSION, levels=[t.numel() for t in levels])
    saved = load_state(state_file, run_print) if state_file is not None else None
    start, earlier_seconds, stopped = 0, 0.0, False
    if saved is not None:  # go on from the last finished epoch of a killed run
        model.load_state_dict(saved["model"])
        for t, v in zip(levels, saved["levels"]):
            t.data.copy_(v)
        optim.load_state_dict(saved["optim"])
        sched.load_state_dict(saved["sched"])
        best, best_epoch, bad = saved["best"], saved["best_epoch"], saved["bad"]
        best_state, best_levels = saved["best_state"], saved["best_levels"]
        history = json.loads(saved["history"])
        start, earlier_seconds, stopped = saved["next_epoch"], saved["seconds"], saved["stopped"]
        restore_random_states(saved["random"], rng, gen)
        print(f"perfpredict: {state_file}: training goes on from epoch {start} of {opts.epochs}", file=sys.stderr)
    epochs: Any = range(start, start if stopped else opts.epochs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = epochs = tqdm(epochs, desc="training", unit="epoch", leave=False, initial=start, total=opts.epochs)
    for epoch in epochs:
        model.train()
        perm = rng.permutation(len(tr))
        lorder = rng.permutation(len(layer_batches)) if layer_batches else []
        total = 0.0
        for b in range(n_batches):
            batch = Batch.from_data_list([tr[i] for i in perm[b * opts.batch_size:(b + 1) * opts.batch_size]])
            batch = drop_identity(batch, opts.identity_dropout, absent, gen)
            out = _forward(model, batch)
            shift = offset(batch)
            loss = _masked_loss(out.log_latency + shift, batch.y_lat, opts.huber_beta) \
                + opts.memory_weight * _masked_loss(out.log_memory, batch.y_mem, opts.huber_beta)
            if opts.node_sum_weight:
                loss = loss + opts.node_sum_weight * _masked_loss(out.log_node_sum + shift, batch.y_lat,
                                                                  opts.huber_beta)
            if opts.step_weight:
                sl = step_share_loss(out, batch, opts.step_beta)
                if sl is not None:
                    loss = loss + opts.step_weight * sl
            if b < len(lorder):
                lb = layer_batches[lorder[b]]
                lout = _forward(model, lb)
                lshift = layer_shift[lb.session] if layer_shift.numel() else 0.0
                loss = loss + opts.layer_weight * _masked_loss(lout.log_node_sum + lshift, lb.y_lat, opts.huber_beta)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            total += float(loss.detach())
        sched.step()
        model.eval()
        lat_e, mem_e = _abs_log_errors(model, val_batches, offset)
        score = (float(lat_e.mean()) if lat_e.size else 0.0) + (float(mem_e.mean()) if mem_e.size else 0.0)
        history.append({"epoch": epoch, "loss": total / n_batches, "val_lat": float(lat_e.mean()) if lat_e.size
                        else math.nan, "val_mem": float(mem_e.mean()) if mem_e.size else math.nan})
        if bar is not None:
            bar.set_postfix(loss=f"{total / n_batches:.4f}", val=f"{score:.4f}")
        if score < best - 1e-6:
            best, best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_levels = [t.detach().clone() for t in levels]
        else:
            bad += 1
        stop = (opts.patience is not None and bad >= opts.patience) or \
            bool(opts.max_seconds and earlier_seconds + time.perf_counter() - t0 > opts.max_seconds)
        if state_file is not None:
            save_state(state_file, run_print, {
                "model": model.state_dict(), "levels": [t.detach() for t in levels], "optim": optim.state_dict(),
                "sched": sched.state_dict(), "best": best, "best_epoch": best_epoch, "bad": bad,
                "best_state": best_state, "best_levels": best_levels, "history": json.dumps(history),
                "next_epoch": epoch + 1, "seconds": earlier_seconds + time.perf_counter() - t0, "stopped": stop,
                "random": random_states(rng, gen)})
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    shrink = shrink_memory_correction(model, val_batches) if va else 1.0
    best_offsets, best_layer_shift, best_synth_shift = best_levels
    record = {
        "options": asdict(opts), "config": pred.config.to_dict(), "epochs_run": len(history),
        "best_epoch": best_epoch, "best_val_score": best,
        "seconds": round(earlier_seconds + time.perf_counter() - t0, 1),
        "memory_correction_scale": shrink,
        "train_model_samples": len(train.models), "train_layer_samples": len(train.layers),
        "val_model_samples": len(val.models), "data_source": train.source, "data_hash": train.data_hash,
        "history_tail": history[-5:], "devices": _distinct_devices(train),
    }
    if saved is not None:
        record["resumed_at_epoch"] = start
    if sessions is not None:  # each session's speed against its device's reference (measured / predicted)
        record["reference_sessions"] = sorted(sessions.references.values())
        record["session_of_campaign"] = dict(sessions.of_campaign)
        record["session_scales"] = {k: round(float(np.exp(best_offsets[i])), 4)
                                    for k, i in sorted(sessions.offset_index.items())}
    if layer_keys:  # each layer group's level against the model records (measured alone / in the model)
        record["layer_scales"] = {k: round(float(np.exp(best_layer_shift[i])), 4) for i, k in enumerate(layer_keys)}
    if synth_keys:  # the synthetic networks' level against the deployed families' (measured / predicted)
        record["synthetic_scales"] = {k: round(float(np.exp(best_synth_shift[i])), 4)
                                      for i, k in enumerate(synth_keys)}
    pred.training = clean(record)
    return record


# --------------------------------------------------------------------------------------------- evaluation


def _distinct_devices(samples: SampleSet) -> list[dict[str, Any]]:
    """The descriptions (board dicts, fingerprints included) of the devices ``samples`` were measured on, in first-
    seen order: what a checkpoint offers :func:`perfpredict.transfer.adapt_predictor` as zero-shot proxies."""
    seen: dict[str, dict[str, Any]] = {}
    for s in list(samples.models) + list(samples.layers):
        key = s.device.to_json(indent=None)
        if key not in seen:
            seen[key] = s.device.to_dict()
    return list(seen.values())


def predict_samples(predictor: Any, models: Sequence[ModelSample], progress: bool = False) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Predicted (latency ms, peak bytes) of every model sample, batched per graph, device and threads.

    Predictors with ``predict_plans(template, plans, device, threads)`` run on templates; others (e.g.
    the roofline model) get the rebuilt Graph and a device whose ``threads_used`` is the sample's.
    """
    lat = np.full(len(models), np.nan)
    mem = np.full(len(models), np.nan)
    groups: dict[tuple[int, str, int], list[int]] = {}
    for k, s in enumerate(models):
        groups.setdefault(_group_key(s.template, s.device, s.threads), []).append(k)
    items: Any = groups.values()
    if progress:
        from tqdm import tqdm

        items = tqdm(list(items), desc="predicting", unit="group", leave=False)
    for idx in items:
        s0 = models[idx[0]]
        plans = [models[k].plan for k in idx]
        if hasattr(predictor, "predict_plans"):
            p = predictor.predict_plans(s0.template, plans, s0.device, s0.threads)
        elif getattr(predictor, "threads", "absent") is None:  # e.g. RooflineModel(threads=None)
            predictor.threads = s0.threads
            try:
                p = predictor.predict(graph_of(s0), plans, s0.device)
            finally:
                predictor.threads = None
        else:
            p = predictor.predict(graph_of(s0), plans, replace(s0.device, threads_used=s0.threads))
        lat[idx], mem[idx] = p.latency_ms, p.peak_mem_bytes
    return lat, mem


def score(models: Sequence[ModelSample], lat: np.ndarray, mem: np.ndarray) -> dict[str, Any]:
    """Metrics for latency and memory overall and per family, plus the mean rank correlation of latency over
    the plans of each (model, threads): how well plans are ordered, which is what an optimiser uses."""
    def block(sel: list[int]) -> dict[str, Any]:
        lt = np.array([models[k].latency_ms if models[k].latency_ms else np.nan for k in sel], np.float64)
        mt = np.array([models[k].peak_mem_bytes if models[k].peak_mem_bytes else np.nan for k in sel], np.float64)
        lp, mp = lat[sel], mem[sel]
        lm = np.isfinite(lt) & np.isfinite(lp) & (lp > 0)
        mm = np.isfinite(mt) & np.isfinite(mp) & (mp > 0)
        groups = [(models[k].model_name, models[k].threads) for k in sel]
        return {"latency": summarise(lp[lm], lt[lm]), "memory": summarise(mp[mm], mt[mm]),
                "latency_ranking_within_model": grouped_ranking(lp[lm], lt[lm],
                                                                [g for g, ok in zip(groups, lm) if ok])}

    all_idx = list(range(len(models)))
    fams: dict[str, list[int]] = {}
    for k, s in enumerate(models):
        fams.setdefault(s.family, []).append(k)
    out = block(all_idx)
    out["per_family"] = {f: block(sel) for f, sel in sorted(fams.items())}
    return clean(out)


def evaluate(predictor: Any, samples: SampleSet, progress: bool = False) -> dict[str, Any]:
    """Metrics (see :mod:`perfpredict.metrics`) of ``predictor`` on the model samples of ``samples``."""
    lat, mem = predict_samples(predictor, samples.models, progress)
    return score(samples.models, lat, mem)


def score_by_session(models: Sequence[ModelSample], lat: np.ndarray, mem: np.ndarray,
                     training: Mapping[str, Any]) -> dict[str, Any] | None:
    """For predictions ``lat``/``mem`` of ``models`` by a predictor trained with session or synthetic-network offsets
    (``training`` its record, or another such checkpoint's): metrics on the samples at the level the network
    predicts (deployed families in the reference sessions), and on every sample with the learned scales of its
    session and, for a synthetic network, of its device and threads applied (a session or device training never
    saw counts as the reference); None without offsets."""
    if not _learned_levels(training):
        return None
    scales, synth = training.get("session_scales"), training.get("synthetic_scales")
    refs = set(training.get("reference_sessions") or [])
    of_campaign = training.get("session_of_campaign") or {}
    keys = [of_campaign.get(campaign_of(s)) for s in models]
    synthetic = set(list_synthetic_families()) if synth is not None else set()
    ref = [k for k, key in enumerate(keys)
           if (scales is None or key in refs) and models[k].family not in synthetic]
    factor = np.array([(scales or {}).get(key, 1.0) for key in keys])
    factor *= np.array([synth.get(synthetic_group(s), 1.0) if s.family in synthetic else 1.0 for s in models])
    return clean({"reference": score([models[k] for k in ref], lat[ref], mem[ref]) if ref else None,
                  "corrected": score(models, lat * factor, mem)})


def _learned_levels(training: Mapping[str, Any]) -> bool:
    """Whether a training record holds learned session or synthetic-network scales."""
    return training.get("session_scales") is not None or training.get("synthetic_scales") is not None


def evaluate_by_session(predictor: Any, samples: SampleSet, training: Mapping[str, Any]) -> dict[str, Any] | None:
    """:func:`score_by_session` of ``predictor``'s predictions of the model samples of ``samples``."""
    if not _learned_levels(training):
        return None
    lat, mem = predict_samples(predictor, samples.models)
    return score_by_session(samples.models, lat, mem, training)


# --------------------------------------------------------------------------------------------- reporting


def train_and_report(data: str | Path, out_dir: str | Path, split: str = "random:0.2", seed: int = 0,
                     epochs: int | None = None, progress: bool = True,
                     samples: SampleSet | None = None, options: TrainOptions | None = None,
                     latency_stat: str = "median", memory_method: str = "auto", ensemble: int = 1,
                     config: GNNConfig = GNNConfig(), campaigns: Sequence[str] | None = None) -> dict[str, Any]:
    """Load ``data`` (``latency_stat``, ``memory_method``, ``campaigns``: see
    :func:`~perfpredict.samples.load_samples`), train a
    GNN of ``config`` (``ensemble`` > 1: that many, seeds ``seed``
    upwards, as one :class:`~perfpredict.ensemble.GNNEnsemble`) on the split's training part, evaluate on its test
    part, and write ``out_dir/model.pt``, ``metrics.json`` and ``README.md``. Returns the metrics."""
    from perfpredict.ensemble import GNNEnsemble
    from perfpredict.gnn_predictor import GNNPredictor
    from perfpredict.samples import SplitError, load_samples, parse_split

    kind, _ = parse_split(split)
    if kind == "lofo":
        raise SplitError("train takes one split (random:F, family:NAME or none); run `perfpredict evaluate "
                         "--split lofo` or benchmarks/bench_predictor.py for leave-one-family-out figures")
    samples = samples if samples is not None else load_samples(data, progress=progress, latency_stat=latency_stat,
                                                                      memory_method=memory_method,
                                                                      campaigns=campaigns)
    sp: Split = make_splits(samples, split, seed)[0]
    opts = options or TrainOptions(seed=seed)
    opts = replace(opts, seed=seed, **({"epochs": epochs} if epochs else {}))
    if ensemble < 1:
        raise PerfPredictError(f"--ensemble takes a number of members >= 1, got {ensemble}")
    pred: Any = GNNEnsemble(ensemble, config) if ensemble > 1 else GNNPredictor(config)
    out = Path(out_dir)
    pred.fit(sp.train, None, opts, progress=progress, state_dir=out)  # a killed run goes on from its last epoch
    test_pred = predict_samples(pred, sp.test.models) if sp.test.models else None  # once, for both scores
    metrics: dict[str, Any] = {
        "perfpredict_version": __version__, "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "split": sp.name, "seed": seed, "ensemble": ensemble, "data": samples.summary(), "train": sp.train.summary(),
        "test_summary": sp.test.summary() if sp.test.models else None,
        "test": score(sp.test.models, *test_pred) if test_pred else None,
        "test_by_session": score_by_session(sp.test.models, *test_pred, pred.training or {}) if test_pred else None,
        "training": pred.training,
        "command": _rebuild_command(data, out_dir, split, seed, epochs, samples.latency_stat,
                                    memory_method, opts.identity_dropout,
                                    # no patience: one of the whole schedule's length never stops early
                                    opts.patience if opts.patience is not None else opts.epochs, ensemble,
                                    opts.session_offsets, opts.layer_offsets, opts.synthetic_offsets, config,
                                    opts.step_weight, samples.campaigns),
    }
    metrics = clean(metrics)
    pred.metrics = {"split": sp.name, "test": metrics["test"]}
    pred.training = {**pred.training, "split": sp.name, "data": samples.summary()}
    pred.save(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "README.md").write_text(model_card(metrics, out))
    for member_seed in range(seed, seed + ensemble):  # the checkpoint is written: nothing left to resume
        state_path(out, member_seed).unlink(missing_ok=True)
    return metrics


def _rebuild_command(data: str | Path, out_dir: str | Path, split: str, seed: int, epochs: int | None,
                     latency_stat: str = "median", memory_method: str = "auto", identity_dropout: float = 0.0,
                     patience: int | None = TrainOptions.patience, ensemble: int = 1,
                     session_offsets: bool = False, layer_offsets: bool = False,
                     synthetic_offsets: bool = False, config: GNNConfig = GNNConfig(),
                     step_weight: float = 0.0, campaigns: Sequence[str] | None = None) -> str:
    default = GNNConfig()
    cmd = f"perfpredict train --data {data} -o {out_dir} --split {split} --seed {seed}"
    cmd += f" --campaigns {','.join(campaigns)}" if campaigns is not None else ""
    cmd += f" --hidden {config.hidden}" if config.hidden != default.hidden else ""
    cmd += f" --gnn-layers {config.layers}" if config.layers != default.layers else ""
    cmd += f" --ensemble {ensemble}" if ensemble > 1 else ""
    cmd += f" --epochs {epochs}" if epochs else ""
    cmd += f" --patience {patience}" if patience != TrainOptions.patience else ""
    cmd += f" --identity-dropout {identity_dropout:g}" if identity_dropout else ""
    cmd += " --session-offsets" if session_offsets else ""
    cmd += " --layer-offsets" if layer_offsets else ""
    cmd += " --synthetic-offsets" if synthetic_offsets else ""
    cmd += f" --step-weight {step_weight:g}" if step_weight else ""
    cmd += f" --memory-method {memory_method}" if memory_method != "auto" else ""
    return cmd + (f" --latency-stat {latency_stat}" if latency_stat != "median" else "")


_MEMORY_TARGET_TEXT = {
    "allocator": "deployed weights + the peak of torch's allocator during a forward pass (exact, repeatable)",
    "rss": "deployed weights + the resident-set rise during a forward pass (a few percent of re-measurement noise)",
    "any": "allocator figures where the store has them, else resident-set figures",
}

_LATENCY_TARGET_TEXT = {
    "median": "median of the timed repeats",
    "min": "fastest timed repeat",
    "beacon": "median of the timed repeats scaled to the store's typical machine speed by the beacon timed beside "
              "it, perfpredict.beacon",
}


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def metrics_table(block: Mapping[str, Any] | None, label: str = "all") -> list[str]:
    """Markdown rows (latency, memory) of one metrics block."""
    if not block:
        return []
    rows = []
    for target in ("latency", "memory"):
        m = block.get(target) or {}
        rows.append(f"| {label} | {target} | {m.get('n', 0)} | {_fmt(m.get('mape'))} | {_fmt(m.get('rmspe'))} | "
                    f"{_fmt(m.get('within_5'), 1)} | {_fmt(m.get('within_10'), 1)} | {_fmt(m.get('spearman'), 3)} | "
                    f"{_fmt(m.get('kendall'), 3)} |")
    return rows


def model_card(metrics: Mapping[str, Any], out_dir: str | Path) -> str:
    """The README.md model card, generated from ``metrics`` (so it never drifts from metrics.json)."""
    d = metrics.get("data") or {}
    tr = metrics.get("training") or {}
    head = "| part | target | n | MAPE % | RMSPE % | within 5 % | within 10 % | Spearman | Kendall |\n" \
           "|---|---|---|---|---|---|---|---|---|"
    ens = tr.get("ensemble") or {}
    what = "GNN latency and peak-memory predictor of perfpredict (`perfpredict.gnn_predictor.GNNPredictor`)" \
        if not ens else (f"Ensemble of {ens.get('size')} GNN latency and peak-memory predictors of perfpredict "
                         f"(`perfpredict.ensemble.GNNEnsemble`, seeds {', '.join(map(str, ens.get('seeds') or []))}; "
                         "geometric-mean latency, mean memory)")
    lines = [
        f"# Model card: `{Path(out_dir).name}`", "",
        f"{what}: given a CNN graph, a deployment plan and a device description it predicts end-to-end latency "
        "(ms) and peak memory (bytes) without running the model.", "",
        "## Data", "",
        f"- store: `{d.get('source')}` (data hash `{d.get('data_hash')}`)"
        + (f"; campaigns {', '.join(f'`{c}`' for c in d['campaigns'])}" if d.get("campaigns") else "")
        + (" (`A+B`: sessions that timed the same models and plans, one sample each at the geometric mean of their "
           "latencies)" if any("+" in c for c in d.get("campaigns") or ()) else ""),
        f"- model samples: {d.get('model_samples')} over {d.get('models')} models "
        f"(with latency {d.get('with_latency')}, with memory {d.get('with_memory')}); layer samples: "
        f"{d.get('layer_samples')}",
        f"- families: {', '.join(f'{k} ({v})' for k, v in (d.get('families') or {}).items())}",
        f"- threads: {', '.join(f'{k} ({v})' for k, v in (d.get('threads') or {}).items())}",
        f"- latency target: the records' {d.get('latency_stat', 'median')} "
        f"({_LATENCY_TARGET_TEXT.get(d.get('latency_stat', 'median'), d.get('latency_stat'))})",
        f"- peak-memory target: {_MEMORY_TARGET_TEXT.get(d.get('memory_method', 'any'), d.get('memory_method'))}",
        f"- records skipped while loading: {d.get('skipped') or 'none'}; latencies whose confidence interval "
        f"missed the campaign's target, kept: {d.get('unstable_latencies_kept', 0)}", "",
        "## Split and held-out metrics", "",
        f"Split `{metrics.get('split')}` (seed {metrics.get('seed')}): the checkpoint was trained on the "
        "training part only; figures below are on the held-out part.", "",
    ]
    if metrics.get("test"):
        lines += [head, *metrics_table(metrics["test"], "held-out")]
        rk = metrics["test"].get("latency_ranking_within_model") or {}
        lines += ["", f"Ranking of the plans of each held-out model ({rk.get('groups')} model x thread groups): mean "
                  f"Spearman {_fmt(rk.get('spearman'), 3)}, mean Kendall {_fmt(rk.get('kendall'), 3)}."]
        per = metrics["test"].get("per_family") or {}
        if per:
            lines += ["", "Per family (held-out):", "", head]
            for fam, block in per.items():
                lines += metrics_table(block, fam)
        by_session = metrics.get("test_by_session") or {}
        if by_session:
            trained = metrics.get("training") or {}
            sessions, synth = bool(trained.get("reference_sessions")), bool(trained.get("synthetic_scales"))
            own = ("each device's reference session (the campaign of the newest runtime, latest measured: "
                   "`perfpredict.sessions`)" if sessions else "the deployed families' level")
            others = " and ".join((["the other sessions' records"] if sessions else []) +
                                  (["the synthetic networks' records (`perfpredict.zoo.mixnet`)"] if synth else []))
            lines += ["", f"The network predicts {own}; {others} differ from it by the scales learned in training. "
                      "Held-out, on the records at the network's own level alone and on every record with its "
                      "learned scales applied:", "", head,
                      *metrics_table(by_session.get("reference"),
                                     "reference sessions" if sessions else "deployed families"),
                      *metrics_table(by_session.get("corrected"), "all, learned scales applied")]
    else:
        lines += ["No held-out part (split `none`): no held-out figures for this checkpoint."]
    lines += [
        "", "## Training", "",
        (f"- {ens.get('size')} members, best epochs {', '.join(map(str, ens.get('best_epochs') or []))}, "
         f"{ens.get('seconds')} s in all; the first member: " if ens else "- ") +
        f"epochs run {tr.get('epochs_run')}, best epoch {tr.get('best_epoch')}, "
        f"{tr.get('seconds')} s; train samples {tr.get('train_model_samples')} models + "
        f"{tr.get('train_layer_samples')} layers, validation {tr.get('val_model_samples')}",
        f"- memory head: its correction of the analytical memory prior scaled by "
        f"{tr.get('memory_correction_scale', 1.0)} (the factor in [0, 1] that fits the validation samples best)",
        *([f"- sessions (`perfpredict.sessions`): references {', '.join(f'`{r}`' for r in tr['reference_sessions'])}; "
           "the others' learned scales (their measured / the reference's latency): "
           + (", ".join(f"`{k}` {v:.3f}" for k, v in tr["session_scales"].items()) or "none")]
          if tr.get("reference_sessions") else []),
        *(["- synthetic networks (`perfpredict.zoo.mixnet`): their learned level against the deployed families' "
           "(measured / predicted), per device and threads: "
           + ", ".join(f"`{k}` {v:.3f}" for k, v in tr["synthetic_scales"].items())]
          if tr.get("synthetic_scales") else []),
        f"- options: `{json.dumps(tr.get('options'))}`",
        f"- network: `{json.dumps(tr.get('config'))}`", "",
        "## Versions", "",
        f"- perfpredict {metrics.get('perfpredict_version')}, feature schema "
        f"{metrics.get('feature_schema_version')} (it loads where the code featurises that schema, "
        "`features.READABLE_SCHEMA_VERSIONS`; elsewhere it refuses to load)", "",
        "## Files", "",
        "- `model.pt`: weights, feature vocabularies, normaliser, metadata (see `perfpredict/gnn_predictor.py`)",
        "- `metrics.json`: the figures above, machine-readable",
        "- `README.md`: this card, generated by `perfpredict train`", "",
        "## Rebuild", "", f"    {metrics.get('command')}", "",
        "## Limits", "",
        "- Trained on the devices and thread counts of the store only; for another board the learned part sees "
        "the nearest trained device (device features are clipped to the training range) and the cross-device "
        "scaling comes from the roofline prior (peak GFLOP/s, GOP/s and bandwidth of the board).", "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- comparisons

PREDICTOR_KINDS = ("gnn", "gnn-ensemble", "flops", "kernel-rf", "kernel-gbm", "roofline")
"""Predictor kinds that ``run_evaluation`` trains afresh on each split's training part."""


def obtain_predictor(spec: str, train: SampleSet, options: TrainOptions | None = None,
                     progress: bool = False, config: GNNConfig = GNNConfig(),
                     state_dir: str | Path | None = None) -> Any:
    """A predictor for ``spec``: a kind of :data:`PREDICTOR_KINDS` fitted on ``train`` (the GNN kinds with the
    network ``config``, resumably with ``state_dir``), else a checkpoint (path or name under trained_models/) loaded
    as-is."""
    if spec == "gnn":
        from perfpredict.gnn_predictor import GNNPredictor

        return GNNPredictor(config).fit(train, None, options or TrainOptions(), progress=progress,
                                        state_dir=state_dir)
    if spec == "gnn-ensemble":
        from perfpredict.ensemble import GNNEnsemble

        return GNNEnsemble(config=config).fit(train, None, options or TrainOptions(), progress=progress,
                                              state_dir=state_dir)
    if spec in PREDICTOR_KINDS:
        from perfpredict.baselines import make_baseline

        pred = make_baseline(spec)
        return pred.fit(train) if hasattr(pred, "fit") else pred
    from perfpredict.gnn_predictor import load_predictor

    return load_predictor(spec)


def run_evaluation(samples: SampleSet, predictors: Sequence[str], split: str = "random:0.2", seed: int = 0,
                   options: TrainOptions | None = None, progress: bool = False,
                   on_result: Callable[[dict[str, Any]], None] | None = None,
                   checkpoints: Mapping[str, Any] | None = None,
                   work_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Evaluate each predictor spec on each split of ``split`` (kinds are trained per split; checkpoints are
    used as they are, taken from ``checkpoints`` by spec where the caller loaded them already). Returns one row
    per (split, predictor): metrics, fit and predict seconds, and a ``note`` when the figures are not held-out
    ones.

    With ``work_root``, the rows finished so far and the state of the training under way are kept in a folder of
    it named for this evaluation (its samples, split, seed, options and predictors), so a killed evaluation, run
    again, goes on where it stopped instead of training every split again; the folder goes once every row is
    done."""
    rows = []
    loaded: dict[str, Any] = dict(checkpoints or {})
    splits = make_splits(samples, split, seed)
    work = _evaluation_dir(work_root, samples, split, seed, options, predictors) if work_root is not None else None
    done = _finished_rows(work, len(splits) * len(predictors)) if work is not None else {}
    for sp in splits:
        test = sp.test if sp.test.models else sp.train
        for spec in predictors:
            if (sp.name, spec) in done:
                rows.append(done[(sp.name, spec)])
                if on_result is not None:
                    on_result(rows[-1])
                continue
            t0 = time.perf_counter()
            note = None
            state_dir = work / f"state-{len(rows)}" if work is not None else None  # this row's training
            if spec in PREDICTOR_KINDS:
                pred = obtain_predictor(spec, sp.train, options, progress, state_dir=state_dir)
                if not sp.test.models:
                    note = "split none: scored on the training data"
            else:
                pred = loaded.get(spec) or obtain_predictor(spec, sp.train)
                loaded[spec] = pred
                if getattr(pred, "training", {}).get("data_hash") == samples.data_hash:
                    note = f"checkpoint was trained on this data (its own split: {pred.training.get('split')})"
            scored = test
            if hasattr(pred, "answers_for"):  # an adapted checkpoint: the records of its target device only
                scored = test.select(lambda s: pred.answers_for(s.device, s.threads), lambda s: False)
                if not scored.models:
                    raise DatasetError(f"{spec} is adapted to device '{pred.target.name}' (device_id "
                                       f"{pred.target.device_id}, {pred.target.threads_used} threads); the test "
                                       "data has no record of it")
                note = f"scored on the {len(scored.models)} of {len(test.models)} records of its target device"
            t1 = time.perf_counter()
            metrics = evaluate(pred, scored, progress)
            row = {"split": sp.name, "predictor": spec, "metrics": metrics, "fit_seconds": round(t1 - t0, 2),
                   "predict_seconds": round(time.perf_counter() - t1, 2), "test_samples": len(scored.models),
                   "note": note}
            if work is not None:
                row = clean(row)
                work.mkdir(parents=True, exist_ok=True)  # a twin evaluation that finished first removed it
                with open(work / _ROWS_FILE, "a") as fh:  # one line per row, on disk before the next split starts
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                shutil.rmtree(state_dir, ignore_errors=True)
            rows.append(row)
            if on_result is not None:
                on_result(row)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    return rows


_ROWS_FILE = "rows.jsonl"


def _evaluation_dir(work_root: str | Path, samples: SampleSet, split: str, seed: int, options: TrainOptions | None,
                    predictors: Sequence[str]) -> Path:
    """The folder of one evaluation under ``work_root``: named by a digest of what decides its rows."""
    print_ = fingerprint(data_hash=samples.data_hash, samples=samples_digest(samples.models, samples.layers),
                         split=split, seed=seed, options=asdict(options or TrainOptions()),
                         predictors=list(predictors), schema=FEATURE_SCHEMA_VERSION, version=__version__)
    work = Path(work_root) / hashlib.sha1(print_.encode()).hexdigest()[:16]
    work.mkdir(parents=True, exist_ok=True)
    return work


def _finished_rows(work: Path, total: int) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows an earlier, killed run of the same evaluation finished (a line a kill cut short is left out)."""
    done: dict[tuple[str, str], dict[str, Any]] = {}
    path = work / _ROWS_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                done[(row["split"], row["predictor"])] = row
            except (ValueError, KeyError, TypeError):
                continue
    if done:
        print(f"perfpredict: {work}: the evaluation goes on; {len(done)} of {total} results were finished before",
              file=sys.stderr)
    return done


def resolve_dataset(data: str | Path) -> Path:
    """A store path, or a bare name resolved to ``datasets/NAME.sqlite`` / ``.db`` / ``NAME``."""
    p = Path(str(data).replace("sqlite:///", "", 1))
    if p.exists():
        return p
    for root in (Path.cwd() / "datasets", Path(__file__).resolve().parent.parent / "datasets"):
        for cand in (root / f"{data}.sqlite", root / f"{data}.db", root / str(data)):
            if cand.is_file():
                return cand
    raise DatasetError(f"no dataset '{data}': not a store file, and not a name under datasets/ (.sqlite or .db)")


def metrics_rows(blocks: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of a text table: one row per (label, target)."""
    headers = ["what", "target", "n", "MAPE %", "RMSPE %", "<=5 %", "<=10 %", "Spearman", "Kendall"]
    rows = []
    for label, block in blocks:
        for target in ("latency", "memory"):
            m = (block or {}).get(target) or {}
            rows.append([label, target, m.get("n", 0)] + [_fmt(m.get(k), 2 if k in ("mape", "rmspe") else
                                                               (1 if k.startswith("within") else 3))
                                                          for k in ("mape", "rmspe", "within_5", "within_10",
                                                                    "spearman", "kendall")])
    return headers, rows
