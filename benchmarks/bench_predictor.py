"""Benchmark: the GNN predictor against every baseline on the same splits, plus prediction throughput.

Predictors: gnn (perfpredict.gnn_predictor), flops (FLOPs linear regression), kernel-rf / kernel-gbm
(nn-Meter-style per-kernel regressors summed, fusion aware), roofline (perfpredict.analytical, no fit).
Splits: held-out variants (random:FRACTION) and leave-one-family-out (each family held out in turn; the
pooled row concatenates the predictions of every held-out family). Every kind is trained afresh on each
split's training part. Throughput: batched GNN predictions per second for many plans of one
ResNet-18-sized graph (torch intra-op threads 1 and 2).

    .venv/bin/python benchmarks/bench_predictor.py --data datasets/proxy.sqlite

writes benchmarks/results/bench_predictor.json and .md (a table per target) and prints them. Slow
(one GNN training per split): minutes to tens of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import machine  # noqa: E402
from cli.argtypes import add_campaigns  # noqa: E402
from perfpredict.gnn import GNNConfig  # noqa: E402
from perfpredict.metrics import clean  # noqa: E402
from perfpredict.samples import load_samples, make_splits  # noqa: E402
from perfpredict.train import (PREDICTOR_KINDS, TrainOptions, obtain_predictor, predict_samples,  # noqa: E402
                               resolve_dataset, score)


def _row(name: str, predictor: str, metrics: dict, extra: dict) -> dict:
    return {"split": name, "predictor": predictor, "metrics": metrics, **extra}


def _predictions(models, lat, mem) -> dict:
    """Per-record predictions of one split, keyed by record, with the measured values beside them (for
    summarise_seeds.py --ensemble)."""
    return {"key": [s.key for s in models], "family": [s.family for s in models],
            "group": [f"{s.model_name}@{s.threads}" for s in models],
            "latency_ms": [float(v) for v in lat], "peak_mem_bytes": [float(v) for v in mem],
            "measured_latency_ms": [s.latency_ms for s in models],
            "measured_peak_mem_bytes": [s.peak_mem_bytes for s in models]}


def run_accuracy(samples, predictors, splits, seed, opts, log, saved=None, config=GNNConfig(), state_root=None):
    """One row per (split, predictor), the GNNs of network ``config``; with ``saved`` (a
    dict) the per-record predictions go there too, as ``saved[split][predictor]``; with ``state_root``, each
    GNN trains resumably in a folder of it (a killed run goes on from the training it was in)."""
    rows = []
    for spec in splits:
        pooled: dict[str, list] = {p: [] for p in predictors}
        lofo = spec == "lofo"
        for sp in make_splits(samples, spec, seed):
            for p in predictors:
                t0 = time.perf_counter()
                state_dir = Path(state_root) / f"{len(rows)}-{p}" if state_root is not None else None
                pred = obtain_predictor(p, sp.train, opts, config=config, state_dir=state_dir)
                t1 = time.perf_counter()
                lat, mem = predict_samples(pred, sp.test.models)
                t2 = time.perf_counter()
                m = score(sp.test.models, lat, mem)
                rows.append(_row(sp.name, p, m, {"fit_s": round(t1 - t0, 1), "predict_s": round(t2 - t1, 2),
                                                "train_models": len(sp.train.models),
                                                "train_layers": len(sp.train.layers),
                                                "test_models": len(sp.test.models),
                                                **_learned_scales(pred)}))
                pooled[p].append((sp.test.models, lat, mem))
                if saved is not None:
                    saved.setdefault(sp.name, {})[p] = _predictions(sp.test.models, lat, mem)
                log(f"{sp.name:28s} {p:11s} latency MAPE {m['latency']['mape'] or float('nan'):7.2f}%  "
                    f"memory MAPE {m['memory']['mape'] or float('nan'):7.2f}%  (fit {t1 - t0:.0f}s)")
        if lofo:
            for p in predictors:
                models = [s for chunk in pooled[p] for s in chunk[0]]
                lat = np.concatenate([c[1] for c in pooled[p]])
                mem = np.concatenate([c[2] for c in pooled[p]])
                rows.append(_row("lofo (pooled)", p, score(models, lat, mem), {"test_models": len(models)}))
    return rows


def _learned_scales(pred):
    """The level offsets a GNN learned in training (layer, session and synthetic-network scales), where it has any."""
    training = getattr(pred, "training", None) or {}
    return {k: training[k] for k in ("layer_scales", "session_scales", "synthetic_scales") if training.get(k)}


def run_throughput(samples, opts, n_plans, model, log, ensemble=1, checkpoint="proxy"):
    """Batched plans per second of a shipped predictor (``checkpoint``, a name under trained_models/ or a path;
    ``ensemble`` > 1: of an ensemble of that many copies of it, which costs what an ensemble of as many trained
    members costs)."""
    import torch

    from perfpredict.ensemble import GNNEnsemble
    from perfpredict.gnn_predictor import GNNPredictor, load_predictor
    from perfpredict.models import load_model
    from perfpredict.plan import Choice, Plan
    from perfpredict.primitives import candidates

    graph, _ = load_model(model)
    source = checkpoint if "/" in checkpoint else f"trained_models/{checkpoint}"
    try:
        pred = load_predictor(checkpoint)
    except Exception:
        if checkpoint != "proxy":  # a checkpoint named on the command line must load (main checked it exists)
            raise
        pred = GNNPredictor().fit(samples, options=TrainOptions(epochs=1, seed=opts.seed))
        source = "untrained-size network (1 epoch): same cost per prediction"
    rng = random.Random(0)
    plans = []
    for _ in range(n_plans):
        ch = {}
        for node in graph.nodes:
            cands = candidates(node)
            if cands and rng.random() < 0.5:
                prim = rng.choice(cands)
                ch[node.name] = Choice(prim.name, rng.choice(prim.layouts), rng.choice(prim.precisions))
        plans.append(Plan(ch))
    if ensemble > 1:
        pred = GNNEnsemble(members=[pred] * ensemble)
        source = f"{source} x{ensemble} as an ensemble"
    device = samples.models[0].device
    out = {"model": model, "nodes": len(graph.nodes), "plans": n_plans, "predictor": source, "ensemble": ensemble,
           "feature_schema": pred.space.schema_version if pred.space else None}
    for threads in (1, 2):
        pred.torch_threads = threads
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            pred.predict(graph, plans, device)
            best = min(best, time.perf_counter() - t0)
        out[f"plans_per_s_{threads}_threads"] = round(n_plans / best, 1)
        log(f"throughput {model} ({len(graph.nodes)} nodes), torch threads {threads}: {n_plans / best:.0f} plans/s")
    pred.torch_threads = 1
    out["torch_version"] = torch.__version__
    out["machine"] = machine()
    return out


def markdown(rows, throughput, meta) -> str:
    def f(v, d=2):
        return "n/a" if v is None else f"{v:.{d}f}"

    what = f"{meta['data']}, campaigns {meta['campaigns']}" if meta.get("campaigns") else meta["data"]
    lines = [f"# Predictor benchmark ({what}, data hash {meta['data_hash']})", "",
             f"{meta['model_samples']} model samples, {meta['layer_samples']} layer samples; latency target "
             f"{meta['latency_stat']}; seed {meta['seed']}; host {meta['host']}; {meta['seconds']} s", ""]
    noise = meta.get("noise")
    if noise:
        lines += [f"Noise floor of the store (re-measured records vs their originals, n = {noise.get('n')}): "
                  f"{f(100 * (noise.get('within_5pct') or 0), 1)} % agree within 5 %, "
                  f"{f(100 * (noise.get('within_10pct') or 0), 1)} % within 10 %, median relative difference "
                  f"{f(100 * (noise.get('median_rel_diff') or 0), 1)} %.", ""]
        model = noise.get("model")
        if model and model.get("n"):
            lines[-1:] = [f"Scored against these single measurements, a predictor of each model record's true latency "
                          f"would show about {f(100 * (model.get('truth_mape') or 0), 1)} % MAPE, "
                          f"{f(100 * (model.get('truth_within_5pct') or 0), 1)} % within 5 % and "
                          f"{f(100 * (model.get('truth_within_10pct') or 0), 1)} % within 10 % (the store's "
                          f"{model['n']} re-measured model records; an estimate assuming i.i.d. symmetric noise, "
                          "`perfpredict.measure.noise_floor`).", ""]
            b = model.get("beacon")
            if b and b.get("n"):
                lines[-1:] = [f"Of those, the {b['n']} timed beside the beacon (`perfpredict.beacon`), normalised by "
                              f"it (latency target `beacon`): about {f(100 * (b.get('truth_mape') or 0), 1)} % MAPE "
                              f"and {f(100 * (b.get('truth_within_10pct') or 0), 1)} % within 10 %, against "
                              f"{f(100 * (b['raw'].get('truth_mape') or 0), 1)} % and "
                              f"{f(100 * (b['raw'].get('truth_within_10pct') or 0), 1)} % for the same records "
                              "raw.", ""]
    mnoise = meta.get("memory_noise")
    if mnoise:
        lines += [f"Peak-memory target: {meta.get('memory_method')} figures. Re-measured now (n = {mnoise.get('n')}): "
                  f"{f(100 * (mnoise.get('within_5pct') or 0), 1)} % agree within 5 %, largest relative difference "
                  f"{f(100 * (mnoise.get('max_rel_diff') or 0), 3)} %.", ""]
    for target in ("latency", "memory"):
        lines += [f"## {target}", "", "| split | predictor | n | MAPE % | RMSPE % | within 5 % | within 10 % | "
                  "Spearman | Kendall |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m = r["metrics"][target]
            lines.append(f"| {r['split']} | {r['predictor']} | {m['n']} | {f(m['mape'])} | {f(m['rmspe'])} | "
                         f"{f(m['within_5'], 1)} | {f(m['within_10'], 1)} | {f(m['spearman'], 3)} | "
                         f"{f(m['kendall'], 3)} |")
        lines.append("")
    lines += ["## latency ranking of the plans of each model (mean over models and thread counts)", "",
              "| split | predictor | models | Spearman | Kendall |", "|---|---|---|---|---|"]
    for r in rows:
        g = r["metrics"].get("latency_ranking_within_model") or {}
        lines.append(f"| {r['split']} | {r['predictor']} | {g.get('groups')} | {f(g.get('spearman'), 3)} | "
                     f"{f(g.get('kendall'), 3)} |")
    lines += ["", "## GNN against the baselines (lower MAPE on both targets)", ""]
    by_split: dict[str, dict] = {}
    for r in rows:
        by_split.setdefault(r["split"], {})[r["predictor"]] = r["metrics"]
    for split, preds in by_split.items():
        if "gnn" not in preds:
            continue
        verdicts = []
        for p, m in preds.items():
            if p == "gnn":
                continue
            wins = all((preds["gnn"][t]["mape"] or 1e9) < (m[t]["mape"] or 1e9) for t in ("latency", "memory"))
            verdicts.append(f"{p}: {'beaten' if wins else 'NOT beaten'}")
        lines.append(f"- {split}: {', '.join(verdicts)}")
    if throughput:
        lines += ["", "## Throughput", "",
                  f"{throughput['plans']} plans of {throughput['model']} ({throughput['nodes']} nodes), one batched "
                  f"call, best of 3 ({throughput['predictor']}"
                  + (f", feature schema {throughput['feature_schema']}" if throughput.get("feature_schema") else "")
                  + "): "
                  f"{throughput['plans_per_s_1_threads']} plans/s with 1 torch thread, "
                  f"{throughput['plans_per_s_2_threads']} plans/s with 2."]
    return "\n".join(lines) + "\n"


def _noise(path):
    from perfpredict.dataset import open_store

    with open_store(path, create=False) as store:
        out = store.noise()
        if out is not None:
            out["model"] = store.noise("model")
        return out


def _memory_noise(path, n, seed):
    """Re-measure the allocator peak memory of ``n`` random records that have an allocator figure (their own or a
    re-measurement's) and compare: the noise floor of the memory target."""
    import random

    from perfpredict.dataset import MEMORY_CAMPAIGN, memory_method_of, open_store
    from perfpredict.measure import noise_floor
    from perfpredict.profile import allocator_memory_of

    with open_store(path, create=False) as store:
        remeasured = store.memory_remeasurements()
        pool = [r for r in store.iter_records(kind="model") if r.campaign != MEMORY_CAMPAIGN and "spec" in r.extra()
                and (r.key in remeasured or memory_method_of(r) == "allocator")]
    if not pool or n < 1:
        return None
    chosen = sorted(random.Random(seed).sample(pool, min(n, len(pool))), key=lambda r: r.model_name or "")
    graphs, pairs = {}, []
    for r in chosen:
        stored = remeasured.get(r.key, r.peak_mem_bytes)
        pairs.append((float(stored), float(allocator_memory_of(r, graphs).peak_bytes)))
    out = noise_floor(pairs)
    out["max_rel_diff"] = max(abs(b - a) / a for a, b in pairs)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="measurement store (path or name under datasets/)")
    ap.add_argument("--splits", default="random:0.2,lofo", help="comma-separated split specs")
    ap.add_argument("--predictors", default=",".join(k for k in PREDICTOR_KINDS if k != "gnn-ensemble"),
                    help=f"comma-separated predictor kinds of {', '.join(PREDICTOR_KINDS)} (default: all but "
                         "gnn-ensemble, three GNN trainings per split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="maximum GNN epochs per training")
    ap.add_argument("--identity-dropout", type=float, default=0.0,
                    help="TrainOptions.identity_dropout for the GNN (default 0)")
    ap.add_argument("--layer-offsets", action="store_true",
                    help="TrainOptions.layer_offsets for the GNN: the layer records' level is learned per device, "
                         "thread count and campaign (default off)")
    ap.add_argument("--layer-weight", type=float, default=TrainOptions.layer_weight,
                    help="TrainOptions.layer_weight for the GNN: the weight of the layer records' node loss "
                         f"(default {TrainOptions.layer_weight})")
    ap.add_argument("--session-offsets", action="store_true",
                    help="TrainOptions.session_offsets for the GNN (default off)")
    ap.add_argument("--synthetic-offsets", action="store_true",
                    help="TrainOptions.synthetic_offsets for the GNN: the synthetic (mixnet) records' level is "
                         "learned per device and thread count (default off)")
    ap.add_argument("--step-weight", type=float, default=0.0,
                    help="TrainOptions.step_weight for the GNN: weight of the step-share loss on the records that "
                         "have step-time records in the store (perfpredict profile steps; default 0: off)")
    ap.add_argument("--hidden", type=int, default=None, metavar="WIDTH",
                    help="the GNN's width (GNNConfig.hidden, default 32)")
    ap.add_argument("--gnn-layers", type=int, default=None, metavar="N",
                    help="the GNN's message-passing layers (GNNConfig.layers, default 3)")
    ap.add_argument("--patience", type=int, default=TrainOptions.patience,
                    help="GNN early-stopping patience in epochs (default 30)")
    ap.add_argument("--throughput-model", default="resnet18")
    ap.add_argument("--throughput-plans", type=int, default=2000)
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--throughput-predictor", default="proxy", metavar="CHECKPOINT",
                    help="the checkpoint whose throughput is timed (a name under trained_models/ or a path; default "
                         "proxy)")
    ap.add_argument("--throughput-ensemble", type=int, default=1, metavar="N",
                    help="time the throughput of an ensemble of N copies of the shipped predictor (default 1)")
    ap.add_argument("--latency-stat", default="median", choices=("median", "min", "beacon"),
                    help="latency target: the records' median (default), their fastest repeat, or their median "
                         "normalised by the beacon timed beside them (perfpredict.beacon)")
    add_campaigns(ap)
    ap.add_argument("--memory-method", default="auto", choices=("auto", "allocator", "rss", "any"),
                    help="peak-memory target (see perfpredict.samples.load_samples; default auto)")
    ap.add_argument("--memory-noise-sample", type=int, default=40,
                    help="allocator memory figures re-measured for the memory noise floor (default 40; 0: none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_predictor"),
                    help="output path without suffix (.json and .md are written)")
    ap.add_argument("--save-predictions", action="store_true",
                    help="also write every held-out record's predictions to OUT.predictions.json (for "
                         "summarise_seeds.py --ensemble)")
    args = ap.parse_args(argv)
    if not args.no_throughput and args.throughput_predictor != "proxy":
        from perfpredict.errors import PerfPredictError
        from perfpredict.gnn_predictor import resolve_model_path

        try:  # before the store loads and the folds train
            resolve_model_path(args.throughput_predictor)
        except PerfPredictError as e:
            raise SystemExit(f"bench_predictor: {e}") from None

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    data = resolve_dataset(args.data)
    samples = load_samples(data, progress=True, latency_stat=args.latency_stat, memory_method=args.memory_method,
                           campaigns=args.campaigns)
    opts = TrainOptions(seed=args.seed, identity_dropout=args.identity_dropout, layer_offsets=args.layer_offsets,
                        session_offsets=args.session_offsets, layer_weight=args.layer_weight,
                        synthetic_offsets=args.synthetic_offsets, step_weight=args.step_weight,
                        patience=args.patience, **({"epochs": args.epochs} if args.epochs else {}))
    saved = {} if args.save_predictions else None
    config = GNNConfig.of(args.hidden, args.gnn_layers)
    out = Path(args.out)
    state_root = out.with_name(out.name + ".state")  # the training under way, for a run killed in it
    rows = run_accuracy(samples, args.predictors.split(","), args.splits.split(","), args.seed, opts, log, saved,
                        config, state_root)
    throughput = None if args.no_throughput else run_throughput(samples, opts, args.throughput_plans,
                                                                args.throughput_model, log, args.throughput_ensemble,
                                                                args.throughput_predictor)
    meta = {"data": str(data), "campaigns": ",".join(args.campaigns) if args.campaigns else None, "data_hash": samples.data_hash, "model_samples": len(samples.models),
            "layer_samples": len(samples.layers), "step_samples": sum(s.steps is not None for s in samples.models),
            "seed": args.seed, "host": platform.node(),
            "latency_stat": args.latency_stat, "memory_method": samples.memory_method, "noise": _noise(data),
            "memory_noise": _memory_noise(data, args.memory_noise_sample, args.seed),
            "network": config.to_dict(), "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(sys.argv)}
    out.parent.mkdir(parents=True, exist_ok=True)
    if saved is not None:
        meta["predictions"] = out.name + ".predictions.json"
        out.with_name(meta["predictions"]).write_text(json.dumps(clean(saved)) + "\n")
    out.with_suffix(".json").write_text(json.dumps(clean({"meta": meta, "rows": rows, "throughput": throughput}),
                                                   indent=2) + "\n")
    md = markdown(clean(rows), throughput, meta)
    out.with_suffix(".md").write_text(md)
    shutil.rmtree(state_root, ignore_errors=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
