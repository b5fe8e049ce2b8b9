"""fp32 Gemm/MatMul primitives against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfpredict.primitives import candidates, default_primitive, get_primitive
from perfpredict.runtime.kernel import BuildContext
from tests.perfpredict.primitives.onnx_layers import gemm_layer, rel_err

CASES = [
    ("transB-bias", dict(m=1, k=64, n=10)),
    ("transB-batch", dict(m=5, k=33, n=17)),
    ("noTrans", dict(m=3, k=20, n=7, trans_b=0)),
    ("alpha-beta", dict(m=4, k=16, n=9, alpha=0.5, beta=2.0)),
    ("beta0", dict(m=2, k=16, n=9, beta=0.0)),
    ("bias-row", dict(m=3, k=8, n=6, c_shape=(1, "n"))),
    ("bias-full", dict(m=3, k=8, n=6, c_shape=("m", "n"))),
    ("bias-col", dict(m=3, k=8, n=6, c_shape=("m", 1))),
    ("no-bias", dict(m=2, k=12, n=5, c_shape=None)),
    ("matmul", dict(m=4, k=24, n=6, op="MatMul")),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gemm_primitives_match_onnxruntime(case):
    layer = gemm_layer(**case[1])
    names = {p.name for p in candidates(layer.node, precision="fp32")}
    # gemm.dnnl: a Gemm with constant B and C (MatMul goes to the others)
    assert names == {"gemm.blas", "gemm.reference"} | ({"gemm.dnnl"} if layer.node.op == "Gemm" else set())
    assert default_primitive(layer.node).name == "gemm.blas"
    for name in sorted(names):
        kernel = get_primitive(name).build(layer.node, layer.weights, BuildContext())
        with torch.inference_mode():
            y = kernel(torch.from_numpy(layer.x))
        assert tuple(y.shape) == layer.node.out_shape
        err = rel_err(y.numpy(), layer.expected)
        assert err <= 1e-4, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("act,lo,hi", [("relu", 0, None), ("relu6", 0, 6), ("clip:-1:0.5", -1, 0.5)])
def test_gemm_fused_activation(act, lo, hi):
    layer = gemm_layer(m=4, k=32, n=12)
    scaled = {k: v * 8 for k, v in layer.weights.items()}
    want = np.clip(layer.expected * 8, lo, hi)
    for name in ("gemm.blas", "gemm.reference", "gemm.dnnl"):
        y = get_primitive(name).build(layer.node, scaled, BuildContext(fused_activation=act))(torch.from_numpy(layer.x))
        assert rel_err(y.numpy(), want) <= 1e-4, name


def test_pruned_gemm_uses_weight_shapes():
    layer = gemm_layer(m=2, k=16, n=10)
    keep = np.array([0, 3, 4, 9])
    weights = {"weight": layer.weights["weight"][keep], "bias": layer.weights["bias"][keep]}
    for name in ("gemm.blas", "gemm.reference", "gemm.dnnl"):
        y = get_primitive(name).build(layer.node, weights, BuildContext())(torch.from_numpy(layer.x))
        assert rel_err(y.numpy(), layer.expected[:, keep]) <= 1e-4, name


def test_weights_may_be_keyed_by_initialiser_name():
    layer = gemm_layer(m=2, k=8, n=4)
    by_name = {layer.node.inputs[1]: layer.weights["weight"], layer.node.inputs[2]: layer.weights["bias"]}
    y = get_primitive("gemm.reference").build(layer.node, by_name, BuildContext())(torch.from_numpy(layer.x))
    assert rel_err(y.numpy(), layer.expected) <= 1e-4


def test_matmul_with_two_activations():
    layer = gemm_layer(m=3, k=5, n=4, op="MatMul")
    b = torch.from_numpy(layer.weights["weight"])
    for name in ("gemm.blas", "gemm.reference"):
        y = get_primitive(name).build(layer.node, {}, BuildContext())(torch.from_numpy(layer.x), b)
        assert rel_err(y.numpy(), layer.expected) <= 1e-4, name


def test_gemm_dnnl_refuses_what_it_cannot_run():
    """A MatMul of two activations is not gemm.dnnl's, nor is int8; another batch than the
    node's makes a primitive for that batch."""
    from perfpredict.errors import PlanError

    layer = gemm_layer(m=1, k=16, n=8)
    prim = get_primitive("gemm.dnnl")
    with pytest.raises(PlanError, match="fp32"):
        prim.build(layer.node, layer.weights, BuildContext(precision="int8"))
    two = gemm_layer(m=3, k=5, n=4, op="MatMul")
    assert not prim.supports(two.node)
    kernel = prim.build(layer.node, layer.weights, BuildContext())
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    want = x @ layer.weights["weight"].T + layer.weights["bias"]
    assert rel_err(kernel(torch.from_numpy(x)).numpy(), want) <= 1e-4
    with pytest.raises(PlanError, match=r"\(M, 16\)"):
        kernel(torch.zeros(2, 15))

