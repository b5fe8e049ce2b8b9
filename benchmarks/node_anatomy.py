"""Where inside a model the GNN's latency goes wrong: its per-node latencies against the step times timed on the
records' own machine.

``perfpredict profile steps`` keeps, per model record, how the forward pass splits over groups of graph nodes (a
fused activation joins its producer, a conversion the node that reads it). This script trains the GNN with one
family held out (or loads a checkpoint), predicts every record that carries step times, and sums its per-node
latencies (:meth:`~perfpredict.gnn_predictor.GNNPredictor.node_latencies`, scaled to the predicted total) over the
same groups. The measured steps run unchained, one call each, so they are scaled to sum to the record's own latency
(the same target the predictor is scored on): each group's measured figure is its share of the record, in ms.

It reports, per family (the held-out one marked) and plan kind, predicted over measured for the whole record and
the share of the error that lies in each kernel class (op, depthwise or not, primitive); and, for one kernel class,
predicted over measured and the measured microseconds per million MACs by MAC bin and family, the question "are
this family's kernels faster in context, or does the predictor price them higher?"; and, per op and layout, its
share of each family's measured time beside the analytical prior's and the GNN's totals over the measured one (a
prior far off leaves the network a large correction to carry to a family it has not seen).

    .venv/bin/python benchmarks/node_anatomy.py --data datasets/zen3.db --campaigns CAMPAIGNS --family mobilenet_v2 \
        --latency-stat beacon --synthetic-offsets --kernel "Conv conv.dnnl_int8" --kind int8-nhwc \
        --out benchmarks/results/node_anatomy_zen3_mobilenet_v2

writes OUT.json (with the machine) and OUT.md and prints the Markdown.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.error_anatomy import store_facts  # noqa: E402
from benchmarks.harness import write_results  # noqa: E402
from cli.argtypes import add_campaigns  # noqa: E402
from perfpredict.features import FeatureSpace, encode_plans, plan_node_features  # noqa: E402
from perfpredict.samples import load_samples, make_splits  # noqa: E402
from perfpredict.train import TrainOptions, obtain_predictor, resolve_dataset  # noqa: E402

MAC_BINS = (0, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, float("inf"))


def kernel_class(template, plan, i: int) -> str:
    """``op[dw] primitive`` of node ``i`` (``default`` where the plan leaves the node to the default choice)."""
    op = template.ops[i] + ("dw" if template.ops[i] == "Conv" and template.chan_kind[i] == 1 else "")
    choice = plan.choices.get(template.node_names[i])
    return f"{op} {choice.primitive if choice else 'default'}"


def analytical_prior(sample) -> np.ndarray:
    """[n] the analytical prior (ms) of each node of a sample's plan: the per-node cost the GNN corrects
    (:attr:`perfpredict.features.PlanFeatures.prior_ms`; the network plays no part in it)."""
    space = FeatureSpace.current()
    return plan_node_features(sample.template, encode_plans(sample.template, [sample.plan], space), space,
                              sample.device, sample.threads).prior_ms[0]


def group_costs(predictor, samples, kinds: dict[str, str], prior=analytical_prior) -> list[dict]:
    """One row per step group of every sample with step times: family, model, threads, plan kind, the kernel class,
    layout and MACs of the group's costliest predicted node, predicted, prior (``prior(sample)``, per node) and
    measured ms (scaled to the record latency)."""
    rows = []
    for s in samples:
        if s.steps is None or not s.latency_ms:
            continue
        node = np.asarray(predictor.node_latencies(s.template, [s.plan], s.device, s.threads)[0])
        base_ms = np.asarray(prior(s))
        grp, ms = s.steps
        scale = s.latency_ms / float(ms.sum())
        base = {"family": s.family, "model": s.model_name, "threads": s.threads, "kind": kinds.get(s.key, "?"),
                "record": s.key}
        for g in range(len(ms)):
            idx = np.flatnonzero(grp == g)
            if not len(idx):
                continue
            top = int(idx[np.argmax(node[idx])])
            choice = s.plan.choices.get(s.template.node_names[top])
            rows.append({**base, "kernel": kernel_class(s.template, s.plan, top),
                         "layout": choice.layout if choice else "NCHW", "macs": float(s.template.macs[top]),
                         "pred_ms": float(node[idx].sum()), "prior_ms": float(base_ms[idx].sum()),
                         "meas_ms": float(ms[g] * scale)})
        rest = grp < 0
        if node[rest].sum():
            rows.append({**base, "kernel": "(no step)", "layout": "", "macs": 0.0, "pred_ms": float(node[rest].sum()),
                         "prior_ms": float(base_ms[rest].sum()), "meas_ms": 0.0})
    return rows


def by_family_kind(rows: list[dict], top: int = 4) -> list[dict]:
    """Per (family, plan kind): predicted / measured over its records, and the kernel classes that carry the most
    of the absolute error (their predicted - measured ms, as a share of the measured total)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["kind"])].append(r)
    out = []
    for (fam, kind), rs in sorted(groups.items()):
        meas = sum(r["meas_ms"] for r in rs)
        err = defaultdict(float)
        for r in rs:
            err[r["kernel"]] += r["pred_ms"] - r["meas_ms"]
        worst = sorted(err.items(), key=lambda kv: -abs(kv[1]))[:top]
        out.append({"family": fam, "kind": kind, "records": len({r["record"] for r in rs}),
                    "ratio": sum(r["pred_ms"] for r in rs) / meas,
                    "error_by_kernel": {k: 100 * v / meas for k, v in worst}})
    return out


def by_mac_bin(rows: list[dict], kernel: str, kind: str | None) -> list[dict]:
    """For one kernel class (and plan kind): per family and MAC bin, the median of predicted / measured over its
    groups and the median measured microseconds per million MACs."""
    cells = defaultdict(list)
    for r in rows:
        if r["kernel"] != kernel or (kind and r["kind"] != kind) or r["meas_ms"] <= 0 or r["macs"] <= 0:
            continue
        b = int(np.searchsorted(MAC_BINS, r["macs"], side="right")) - 1
        cells[(r["family"], b)].append((r["pred_ms"] / r["meas_ms"], 1e3 * r["meas_ms"] / (r["macs"] / 1e6)))
    return [{"family": fam, "bin": [MAC_BINS[b], MAC_BINS[b + 1]], "groups": len(v),
             "ratio": float(np.median([a for a, _ in v])), "us_per_mmac": float(np.median([u for _, u in v]))}
            for (fam, b), v in sorted(cells.items())]


def by_op(rows: list[dict], min_share: float = 2.0) -> list[dict]:
    """Per op (a kernel class's first word) and layout, per family: its share of the family's measured time and the
    analytical prior's and the GNN's totals over the measured one (rows under ``min_share`` percent left out): a
    prior far off a kernel's time leaves the network a large correction to carry to unseen families."""
    total = defaultdict(float)
    cells = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        total[r["family"]] += r["meas_ms"]
        if r["meas_ms"] > 0:
            c = cells[(r["kernel"].split()[0], r["layout"], r["family"])]
            c[0] += r["meas_ms"]
            c[1] += r["prior_ms"]
            c[2] += r["pred_ms"]
    out = []
    for (op, layout, fam), (meas, prior, pred) in sorted(cells.items()):
        share = 100 * meas / total[fam]
        if share >= min_share:
            out.append({"op": op, "layout": layout, "family": fam, "share": share, "prior_ratio": prior / meas,
                        "ratio": pred / meas})
    return out


def markdown(result: dict) -> str:
    meta = result["meta"]
    held = meta["family"]
    lines = [f"# Per-node latency against step times ({meta['data']}, held out: {held or 'none'})", "",
             f"{meta['samples_with_steps']} records with step times; {meta['host']}; {meta['seconds']} s", "",
             "Predicted / measured per family and plan kind (measured: the record's latency, split as its steps "
             "split), and the kernel classes carrying most of the error (predicted - measured, % of the measured "
             "total)", "", "| family | plan kind | records | predicted / measured | largest errors by kernel |",
             "|---|---|---:|---:|---|"]
    for r in result["by_family_kind"]:
        fam = f"**{r['family']}** (held out)" if r["family"] == held else r["family"]
        errs = ", ".join(f"{k} {v:+.1f}%" for k, v in r["error_by_kernel"].items())
        lines.append(f"| {fam} | {r['kind']} | {r['records']} | {r['ratio']:.3f} | {errs} |")
    if result["by_mac_bin"]:
        lines += ["", f"`{meta['kernel']}`{' in ' + meta['kind'] + ' plans' if meta['kind'] else ''}: median "
                  "predicted / measured per group and measured us per million MACs, by MACs of the node", "",
                  "| family | MACs | groups | predicted / measured | measured us / MMAC |", "|---|---|---:|---:|---:|"]
        for r in result["by_mac_bin"]:
            lo, hi = r["bin"]
            fam = f"**{r['family']}**" if r["family"] == held else r["family"]
            lines.append(f"| {fam} | {lo / 1e6:g}-{hi / 1e6:g} M | {r['groups']} | {r['ratio']:.3f} | "
                         f"{r['us_per_mmac']:.1f} |")
    if result.get("by_op"):
        lines += ["", "By op and layout (every plan kind): its share of the family's measured time, the analytical "
                  "prior over measured and the GNN over measured", "",
                  "| op | layout | family | share of measured | prior / measured | predicted / measured |",
                  "|---|---|---|---:|---:|---:|"]
        for r in result["by_op"]:
            fam = f"**{r['family']}**" if r["family"] == held else r["family"]
            lines.append(f"| {r['op']} | {r['layout']} | {fam} | {r['share']:.1f}% | {r['prior_ratio']:.2f} | "
                         f"{r['ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="measurement store with step-time records")
    add_campaigns(ap)
    ap.add_argument("--family", default=None, help="family to hold out of training (default: none)")
    ap.add_argument("--model", default=None,
                    help="a saved predictor (checkpoint directory) to use instead of training one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-stat", default="median", choices=("median", "min", "beacon"))
    ap.add_argument("--synthetic-offsets", action="store_true")
    ap.add_argument("--step-weight", type=float, default=0.0)
    ap.add_argument("--kernel", default="Conv conv.dnnl_int8", help="kernel class for the MAC-bin table")
    ap.add_argument("--kind", default=None, help="plan kind for the MAC-bin table (default: every kind)")
    ap.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = resolve_dataset(args.data)
    samples = load_samples(data, progress=True, latency_stat=args.latency_stat,
                           campaigns=args.campaigns)
    with_steps = [s for s in samples.models if s.steps is not None]
    if not with_steps:
        raise SystemExit(f"node_anatomy: no model record of {data} carries step times "
                         "(run perfpredict profile steps on the store's own machine first)")
    if args.model:
        predictor = obtain_predictor(args.model, samples)
    else:
        split = make_splits(samples, f"family:{args.family}" if args.family else "none", args.seed)[0]
        opts = TrainOptions(seed=args.seed, synthetic_offsets=args.synthetic_offsets, step_weight=args.step_weight)
        predictor = obtain_predictor("gnn", split.train, opts, progress=True)
    kinds, _, _ = store_facts(str(data), set())
    rows = group_costs(predictor, with_steps, kinds)
    result = {"meta": {"data": str(data), "campaigns": ",".join(args.campaigns) if args.campaigns else None, "family": args.family, "model": args.model,
                       "seed": args.seed, "latency_stat": args.latency_stat, "step_weight": args.step_weight,
                       "synthetic_offsets": args.synthetic_offsets, "kernel": args.kernel, "kind": args.kind,
                       "data_hash": samples.data_hash, "samples_with_steps": len(with_steps),
                       "host": platform.node(), "seconds": round(time.perf_counter() - t0, 1),
                       "command": " ".join(sys.argv)},
              "by_family_kind": by_family_kind(rows), "by_mac_bin": by_mac_bin(rows, args.kernel, args.kind),
              "by_op": by_op(rows)}
    write_results(Path(args.out).with_suffix(".json"), result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
