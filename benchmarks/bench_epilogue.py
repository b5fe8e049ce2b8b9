"""What a fused activation costs a oneDNN convolution, layer by layer of a zoo model (a figure, not a test).

The convolutions of a model that the runtime folds an activation into (``perfpredict.runtime.executor``'s fusion
patterns: a swish, sigmoid, Relu, ... after a Conv), one per distinct geometry, each built as ``conv.dnnl`` (fp32)
and ``conv.dnnl_int8`` (int8, on a pre-quantised input) with no epilogue and with each of --activations as its
oneDNN post-op (at int8 a swish also through its table of codes, ``perfpredict.primitives.dnnl.swish_table``,
where the CPU has AVX-512 VBMI), and timed round-robin (``perfpredict.measure.measure_interleaved``, medians, their 95% intervals
stated) at --threads. Per layer: each variant's time, and the activation's extra over none in nanoseconds per output
element; over the model: the sum, over its fused convolutions, of each one's extra at its own activation (a layer
that occurs k times counts k times), the share of those convolutions' time without it that the activation adds.

    .venv/bin/python benchmarks/bench_epilogue.py [--model efficientnet_b0] [--resolution 224] [--threads 2]
        [--activations relu,swish,sigmoid] [--out benchmarks/results/epilogue.json]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_primitives import make_layer  # noqa: E402
from benchmarks.harness import write_results  # noqa: E402
from perfpredict.measure import measure_interleaved  # noqa: E402
from perfpredict.models import load_model  # noqa: E402
from perfpredict.primitives import get_primitive  # noqa: E402
from perfpredict.primitives.dnnl import swish_table  # noqa: E402
from perfpredict.primitives.quantized import choose_qparams, quantize_activation  # noqa: E402
from perfpredict.runtime.executor import fusion_patterns  # noqa: E402
from perfpredict.runtime.kernel import BuildContext  # noqa: E402

PRIMITIVES = {"fp32": "conv.dnnl", "int8": "conv.dnnl_int8"}


def fused_convolutions(model: str, resolution: int | None) -> Counter:
    """(in channels, out channels, kernel, stride, pad, groups, input size, activation) -> how many Convs of
    ``model`` have that geometry and a folded activation (its residual-free fusions only)."""
    graph, _ = load_model(model, resolution=resolution)
    nodes = {n.name: n for n in graph.nodes}
    out: Counter = Counter()
    for f in fusion_patterns(graph):
        n = nodes[f.producer]
        if n.op != "Conv" or f.activation is None or f.residual is not None:
            continue
        a = n.attrs
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pads = tuple(a["pads"])
        if kh != kw or sh != sw or len(set(pads)) != 1 or n.in_shape[2] != n.in_shape[3]:
            continue  # make_layer builds square kernels, strides and inputs with one pad
        out[(n.in_shape[1], n.out_shape[1], kh, sh, pads[0], int(a.get("groups", 1)), n.in_shape[2],
             f.activation)] += 1
    return out


def _table_ctx(q_in, q_pre, q_out) -> BuildContext:  # noqa: ANN001
    return BuildContext(layout="NHWC", precision="int8", in_qparams=(q_in,), out_qparams=q_out,
                        fused_activation="swish", pre_activation_qparams=q_pre)


def bench_layer(geometry: tuple, activations: list[str], threads: int, time_cap: float) -> dict:
    """Every (precision, epilogue) variant of one layer, timed round-robin."""
    cin, cout, k, s, p, g, hw, _ = geometry
    node, weights, x = make_layer("layer", cin, cout, k, s, p, g, hw)
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    q_in, q_out = choose_qparams(float(x.min()), float(x.max())), choose_qparams(-0.5, 6.0)
    with torch.inference_mode():  # the grid of the convolution's own output, for the swish table
        raw = get_primitive("conv.dnnl").build(node, weights, BuildContext(layout="NHWC"))(xt)
    q_pre = choose_qparams(float(raw.min()), float(raw.max()))
    fns = {}
    for precision, prim in PRIMITIVES.items():
        inp = quantize_activation(xt, q_in) if precision == "int8" else xt
        table = precision == "int8" and geometry[7] == "swish" and swish_table(_table_ctx(q_in, q_pre, q_out)) is not None
        for act in ["none", *activations, *(["swish table"] if table else [])]:
            ctx = BuildContext(layout="NHWC", precision=precision, in_qparams=(q_in,), out_qparams=q_out,
                               fused_activation=None if act == "none" else act.split()[0],
                               pre_activation_qparams=q_pre if act == "swish table" else None)
            kernel = get_primitive(prim).build(node, weights, ctx)
            fns[f"{precision} {act}"] = (lambda kernel=kernel, inp=inp: kernel(inp))
    with torch.inference_mode():
        stats = measure_interleaved(fns, threads=threads, time_cap_s=time_cap, target_ci=0.02, min_repeats=10,
                                    warmup=3, seed=0)
    elements = int(np.prod(node.out_shape))
    row = {"elements": elements, "us": {k: 1e3 * st.median_ms for k, st in stats.items()},
           "ci95_rel": {k: st.ci95_rel for k, st in stats.items()}}
    row["extra_ns_per_element"] = {k: 1e6 * (st.median_ms - stats[f"{k.split()[0]} none"].median_ms) / elements
                                   for k, st in stats.items() if not k.endswith(" none")}
    return row


def _table(model: str, rows: list[dict], totals: dict, activations: list[str], threads: int) -> str:
    variants = [f"{p} {a}" for p in PRIMITIVES for a in ["none", *activations]]
    if any("int8 swish table" in r["us"] for r in rows):
        variants.append("int8 swish table")
    lines = [f"{model}: convolutions with a folded activation, one per geometry ({threads} threads; medians in us, "
             "the extra over no epilogue in ns per output element in brackets)", "",
             "| layer (cin, cout, k, stride, pad, groups, hw) | folds | times | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---|" * len(variants)]
    for r in rows:
        cells = []
        for v in variants:
            extra = r["extra_ns_per_element"].get(v)
            if v not in r["us"]:
                cells.append("")
                continue
            cells.append(f"{r['us'][v]:.1f}" + (f" ({extra:+.2f})" if extra is not None else ""))
        lines.append(f"| {tuple(r['geometry'][:7])} | {r['geometry'][7]} | {r['count']} | " + " | ".join(cells) + " |")
    lines.append("")
    for precision, t in totals.items():
        lines.append(f"{precision}: over the model's {t['convolutions']} such convolutions, their activations add "
                     f"{t['extra_ms']:.3f} ms to {t['none_ms']:.3f} ms without ({100 * t['extra_share']:.0f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_b0", help="zoo model (default efficientnet_b0)")
    ap.add_argument("--resolution", type=int, default=None, help="input resolution (default: the model's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--activations", default="relu,swish,sigmoid",
                    help="fused activations to time besides none (default relu,swish,sigmoid)")
    ap.add_argument("--time-cap", type=float, default=0.6, help="seconds of timing per variant and layer")
    ap.add_argument("--out", default="benchmarks/results/epilogue.json", help="result JSON (and .md beside it)")
    args = ap.parse_args(argv)
    activations = [a for a in args.activations.split(",") if a]
    try:
        layers = fused_convolutions(args.model, args.resolution)
    except Exception as e:  # noqa: BLE001 - an unknown model or resolution: one line, no traceback
        print(f"bench_epilogue: {e}", file=sys.stderr)
        return 2
    rows = []
    for geometry, count in sorted(layers.items(), key=lambda kv: (-kv[0][6], kv[0])):
        print(f"{geometry} x{count}", file=sys.stderr)
        rows.append({"geometry": list(geometry), "count": count,
                     **bench_layer(geometry, activations, args.threads, args.time_cap)})
    totals = {}
    for precision in PRIMITIVES:
        timed = [r for r in rows if r["geometry"][7] in activations]
        none = sum(r["count"] * r["us"][f"{precision} none"] for r in timed) / 1e3
        extra = sum(r["count"] * (r["us"][f"{precision} {r['geometry'][7]}"] - r["us"][f"{precision} none"])
                    for r in timed) / 1e3
        totals[precision] = {"convolutions": sum(r["count"] for r in timed), "none_ms": none, "extra_ms": extra,
                             "extra_share": extra / none if none else 0.0}
    if any("int8 swish table" in r["us"] for r in rows):  # as int8, the swishes through their table
        timed = [r for r in rows if r["geometry"][7] in activations]

        def own(r: dict) -> str:
            act = r["geometry"][7]
            return "int8 swish table" if act == "swish" and "int8 swish table" in r["us"] else f"int8 {act}"

        none = sum(r["count"] * r["us"]["int8 none"] for r in timed) / 1e3
        extra = sum(r["count"] * (r["us"][own(r)] - r["us"]["int8 none"]) for r in timed) / 1e3
        totals["int8, swish by its table"] = {"convolutions": sum(r["count"] for r in timed), "none_ms": none,
                                              "extra_ms": extra, "extra_share": extra / none if none else 0.0}
    write_results(args.out, {"model": args.model, "resolution": args.resolution, "threads": args.threads,
                             "activations": activations, "rows": rows, "totals": totals},
                  _table(args.model, rows, totals, activations, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
