"""gemm.dnnl: a fully-connected ``Gemm`` run as a 1x1 convolution on one pixel by oneDNN through its C API.

A classifier at batch 1 is a matrix-vector product that reads its whole weight matrix once per run, by then
usually evicted from the caches by the layers before it. ``gemm.blas`` (torch's ``addmm``) takes longest there:
on the classifier of mobilenet_v2 (1280 -> 1000) it was the second costliest step of the lossless plan on the Zen 5
VM, 0.46 ms against ONNX Runtime's 0.17 (``benchmarks/results/breakdown_zen5.json``). The same product is a 1x1
convolution of K input and N output channels over an (M, K, 1, 1) input: oneDNN's 1x1 kernel takes the weights
reordered once into its blocked format at build and reads them on every thread (the ``conv.dnnl`` machinery of
:mod:`perfpredict.primitives.dnnl`, one ctypes call per run, the bias and a fused activation as post-ops).

It applies to a Gemm of a 2-D activation ``A`` (no transA) with a constant ``B`` (either orientation) and an
optional constant ``C``; ``alpha`` and ``beta`` are folded into the weights and the bias. A ``C`` that is one row
for every output row ((N,), (1, N), a scalar) is oneDNN's bias and the clamp its post-op; any other ``C`` is added
after the call, and the clamp applied then.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from perfpredict.errors import PlanError
from perfpredict.graph import Node
from perfpredict.primitives.conv import ConvGeometry, _post_op
from perfpredict.primitives.dnnl import _ACTIVATIONS, _Primitive
from perfpredict.primitives.epilogue import parse_activation
from perfpredict.primitives.gemm import b_is_initializer, gemm_operands
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel


def _bias_row(c: np.ndarray | None, n: int) -> np.ndarray | None:
    """``C`` as one (N,) row when it is the same for every output row, else None."""
    if c is None:
        return np.zeros(n, np.float32)
    c = np.asarray(c, np.float32)
    if c.size == 1:
        return np.full(n, float(c.reshape(-1)[0]), np.float32)
    if c.shape in ((n,), (1, n)):
        return c.reshape(n)
    return None


def _applies(node: Node) -> bool:
    if node.op != "Gemm" or not b_is_initializer(node) or int(node.attrs.get("trans_a", 0)):
        return False
    if len(node.in_shape) != 2 or len(node.out_shape) != 2 or not torch.backends.mkldnn.is_available():
        return False
    c_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    return c_name is None or c_name in node.params


def _operands(node: Node, weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None,
                                                                       torch.Tensor | None]:
    """(weights as (N, K, 1, 1), bias row (N,) or None, the ``C`` to add after the call or None), alpha and beta
    folded in."""
    b, c = gemm_operands(node, weights)
    if b is None:
        raise PlanError(f"gemm.dnnl: node '{node.name}' has no constant B operand (weight)")
    at = node.attrs
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    w = np.asarray(b, np.float32)
    w = alpha * (w if int(at.get("trans_b", 0)) else w.T)  # (N, K)
    n = w.shape[0]
    if c is None or beta == 0.0:
        row, after = None, None
    else:
        row = _bias_row(c, n)
        after = None if row is not None else torch.from_numpy(np.ascontiguousarray(beta * np.asarray(c, np.float32)))
        row = None if row is None else np.ascontiguousarray(beta * row)
    return np.ascontiguousarray(w.reshape(n, -1, 1, 1), dtype=np.float32), row, after


def _build(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    if ctx.precision != "fp32":
        raise PlanError(f"gemm.dnnl runs at fp32, not {ctx.precision}")
    if not _applies(node):
        raise PlanError(f"gemm.dnnl cannot run node '{node.name}': it takes a Gemm of a 2-D input (no transA) with "
                        "constant B and C")
    w, bias, after = _operands(node, weights)
    n_out, k_in = w.shape[0], w.shape[1]
    geo = ConvGeometry(k_in, n_out, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1)
    if after is None:  # the clamp is oneDNN's post-op (or the part of it oneDNN cannot do, after the call)
        kind, scalars, rest = _post_op(ctx.fused_activation)
    else:  # C is added after the call, and the clamp after it
        kind, scalars, rest = "none", [], parse_activation(ctx.fused_activation)
    lo, hi = (scalars + [0.0, 0.0])[:2]
    act = _ACTIVATIONS[kind]
    prims: dict[int, _Primitive] = {}

    def primitive(m: int) -> _Primitive:
        p = prims.get(m)
        if p is None:
            p = prims[m] = _Primitive(node, geo, (m, k_in, 1, 1), w, bias, act, lo, hi)
        return p

    primitive(int(node.in_shape[0]))  # the weights are reordered now, not on the first call

    def kernel(a: torch.Tensor) -> torch.Tensor:
        if a.dtype != torch.float32 or a.dim() != 2 or a.shape[1] != k_in:
            raise PlanError(f"gemm.dnnl node '{node.name}' takes float32 (M, {k_in}) input, got {a.dtype} "
                            f"{list(a.shape)}")
        x = a.contiguous().view(a.shape[0], k_in, 1, 1)  # (M, K, 1, 1) is both NCHW and NHWC
        p = primitive(int(a.shape[0]))
        y = torch.empty((a.shape[0], n_out))
        p.execute("gemm.dnnl", node, x, y.view(a.shape[0], n_out, 1, 1))
        if after is not None:
            y.add_(after)
        return rest.apply_(y)

    return kernel


GEMM_DNNL = register(Primitive(
    name="gemm.dnnl", ops=("Gemm",), layouts=("NCHW",), precisions=("fp32",), build=_build, applies=_applies,
    rank=4,
    description="Gemm as a oneDNN 1x1 convolution on one pixel through oneDNN's C API (weights reordered once at "
                "build, read on every thread; a bias row and a clamp as post-ops); 2-D A, constant B and C"))

__all__ = ["GEMM_DNNL"]
