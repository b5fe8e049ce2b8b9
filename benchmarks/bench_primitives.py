"""Latency of every conv / fully-connected primitive on a few representative layers (a figure, not a test).

Each layer is a one-node ONNX model built with onnx.helper and loaded with perfpredict.graph.load_onnx;
every candidate (primitive, layout, precision) of its node is built as the runtime would build it and
timed round-robin with perfpredict.measure.measure_interleaved at a fixed thread count. int8 kernels get
qparams calibrated on the fp32 output and a pre-quantised input (quantisation time excluded).

    .venv/bin/python benchmarks/bench_primitives.py [--threads 1] [--time-cap 1.0] [--layers resnet3x3,...]
"""

from __future__ import annotations

import argparse
import sys
from typing import Collection

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from perfpredict.graph import Node, load_onnx
from perfpredict.measure import measure_interleaved
from perfpredict.primitives import candidates
from perfpredict.primitives.quantized import choose_qparams, quantize_activation
from perfpredict.runtime.kernel import BuildContext

# name: (in_channels, out_channels, kernel, stride, pad, groups, hw)
LAYERS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "resnet3x3": (64, 64, 3, 1, 1, 1, 56),  # ResNet-18 stage 1
    "resnet1x1": (256, 64, 1, 1, 0, 1, 56),  # ResNet-50 bottleneck reduce
    "resnet3x3s2": (64, 128, 3, 2, 1, 1, 56),  # ResNet-18 stage-2 downsample
    "mbv1dw": (32, 32, 3, 1, 1, 32, 112),  # MobileNet-v1 first depthwise
    "fc": (512, 1000, 0, 0, 0, 0, 0),  # ResNet-18 classifier (Gemm, transB)
}


def layer_node(name: str, seed: int = 0) -> tuple[Node, dict[str, np.ndarray], np.ndarray]:
    """The node, weights and an input of one named layer."""
    return make_layer(name, *LAYERS[name], seed=seed)


def make_layer(name: str, cin: int, cout: int, k: int, s: int, p: int, g: int, hw: int,
               seed: int = 0) -> tuple[Node, dict[str, np.ndarray], np.ndarray]:
    """The node, weights and an input of a one-node model: a Conv (``k`` > 0) or a Gemm (``k`` = 0)."""
    rng = np.random.default_rng(seed)
    if k == 0:
        w = (rng.standard_normal((cout, cin)) / np.sqrt(cin)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name=name, transB=1)
        in_shape, out_dims = [1, cin], ["a", "b"]
    else:
        w = (rng.standard_normal((cout, cin // g, k, k)) / np.sqrt(cin // g * k * k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name=name, kernel_shape=[k, k], strides=[s, s],
                                pads=[p] * 4, group=g)
        in_shape, out_dims = [1, cin, hw, hw], ["a", "b", "c", "d"]
    b = rng.standard_normal(cout).astype(np.float32) * 0.1
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    g_ = load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    n = g_.nodes[0]
    return n, {"weight": g_.initializers[n.inputs[1]], "bias": g_.initializers[n.inputs[2]]}, \
        rng.standard_normal(in_shape).astype(np.float32)


def variants(node: Node, weights: dict[str, np.ndarray], x: np.ndarray,
             labels: Collection[str] | None = None) -> dict[str, tuple]:
    """label ("primitive layout precision") -> (kernel, prepared input, workspace bytes) for every candidate of
    ``node``, or for those of ``labels``."""
    xt = torch.from_numpy(x)
    fp32_default = next(p for p in candidates(node, precision="fp32"))
    with torch.inference_mode():
        y = fp32_default.build(node, weights, BuildContext())(xt)
    in_qp = choose_qparams(float(x.min()), float(x.max()))
    out_qp = choose_qparams(float(y.min()), float(y.max()))
    out: dict[str, tuple] = {}
    for prim in candidates(node):
        for precision in prim.precisions:
            for layout in prim.layouts:
                label = f"{prim.name} {layout} {precision}"
                if labels is not None and label not in labels:
                    continue
                ctx = BuildContext(layout=layout, precision=precision, in_qparams=(in_qp,), out_qparams=out_qp)
                inp = xt.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else xt
                if precision == "int8":
                    inp = quantize_activation(inp, in_qp)
                out[label] = (prim.build(node, weights, ctx), inp,
                                                            prim.workspace_bytes(node, precision, layout))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-cap", type=float, default=1.0, help="seconds of timing per candidate (default 1)")
    ap.add_argument("--layers", default=",".join(LAYERS), help=f"comma-separated subset of {','.join(LAYERS)}")
    args = ap.parse_args(argv)
    names = [s for s in args.layers.split(",") if s]
    unknown = [s for s in names if s not in LAYERS]
    if unknown:
        print(f"unknown layers {unknown}; known: {', '.join(LAYERS)}", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of interleaved repeats")
    print(f"{'layer':<12} {'primitive layout precision':<30} {'median ms':>10} {'ci95':>6} {'n':>4} "
          f"{'GMAC/s':>7} {'vs ref':>7} {'ws MiB':>8}")
    for name in names:
        node, weights, x = layer_node(name)
        fns = variants(node, weights, x)
        with torch.inference_mode():
            stats = measure_interleaved({k: (lambda f=f, i=i: f(i)) for k, (f, i, _) in fns.items()},
                                        threads=args.threads, time_cap_s=args.time_cap, target_ci=0.03,
                                        min_repeats=5, warmup=2)
        ref = next((s.median_ms for k, s in stats.items() if ".reference " in k), None)
        for k, s in sorted(stats.items(), key=lambda kv: kv[1].median_ms):
            speed = f"{ref / s.median_ms:6.1f}x" if ref else ""
            flag = "" if s.stable else " (unstable)"
            print(f"{name:<12} {k:<30} {s.median_ms:10.3f} {s.ci95_rel:6.1%} {s.n_repeats:4d} "
                  f"{node.macs / s.median_ms / 1e6:7.2f} {speed:>7} {fns[k][2] / 2**20:8.2f}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
