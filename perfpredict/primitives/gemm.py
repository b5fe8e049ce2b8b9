"""fp32 fully-connected primitives for ``Gemm`` and ``MatMul`` nodes.

* ``gemm.blas``: ``torch.addmm`` / ``torch.matmul`` (MKL/oneDNN BLAS), honouring Gemm's transA, transB,
  alpha and beta; MatMul with any broadcastable operands.
* ``gemm.reference``: the C triple-loop GEMM of ``_reference.c`` (-O2, single-threaded).

Operands: ``B`` is ``weights["weight"]`` (or the initialiser named by the node's second input) as stored in
the ONNX file, i.e. (N, K) when ``trans_b`` is set, else (K, N); ``C`` is ``weights["bias"]`` (or the
third input's initialiser). Where ``B`` is not an initialiser it is the kernel's second input. The fused
activation of the context is applied to the output.
"""

from __future__ import annotations

import ctypes
from typing import Mapping

import numpy as np
import torch

from perfpredict.errors import PlanError
from perfpredict.graph import Node
from perfpredict.primitives.epilogue import parse_activation
from perfpredict.primitives.reference import library
from perfpredict.primitives.registry import Primitive, register
from perfpredict.runtime.kernel import BuildContext, Kernel

_F32 = 4


def gemm_operands(node: Node, weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(B, C) of a Gemm/MatMul node from its weights: role keys first, then initialiser names; None if absent."""

    def pick(role: str, index: int) -> np.ndarray | None:
        if role in weights:
            return weights[role]
        if len(node.inputs) > index and node.inputs[index] in weights:
            return weights[node.inputs[index]]
        return None

    return pick("weight", 1), (pick("bias", 2) if node.op == "Gemm" else None)


def b_is_initializer(node: Node) -> bool:
    """Whether the node's B operand is a weight (initialiser) rather than an activation."""
    return len(node.inputs) > 1 and node.inputs[1] in node.params


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.array(a, dtype=np.float32, order="C"))


def _check(name: str, ctx: BuildContext) -> None:
    if ctx.precision != "fp32":
        raise PlanError(f"{name} runs at fp32, not {ctx.precision}")


# --------------------------------------------------------------------------------------------- gemm.blas


def _build_blas(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check("gemm.blas", ctx)
    b_np, c_np = gemm_operands(node, weights)
    b_w, c = _tensor(b_np), _tensor(c_np)
    act = parse_activation(ctx.fused_activation)
    if node.op == "MatMul":

        def matmul(a: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            return act.apply_(torch.matmul(a, b_w if b_w is not None else rest[0]))

        return matmul

    at = node.attrs
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    trans_a, trans_b = bool(at.get("trans_a", 0)), bool(at.get("trans_b", 0))
    if c is not None and beta == 0.0:
        c = None

    def gemm(a: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        b = b_w if b_w is not None else rest[0]
        a = a.t() if trans_a else a
        b = b.t() if trans_b else b
        if c is None:
            y = torch.mm(a, b)
            if alpha != 1.0:
                y.mul_(alpha)
        else:
            y = torch.addmm(c, a, b, beta=beta, alpha=alpha)
        return act.apply_(y)

    return gemm


# --------------------------------------------------------------------------------------------- gemm.reference


def _reference_applies(node: Node) -> bool:
    if node.op == "Gemm":
        return True
    # MatMul: (..., K) @ (K, N) only
    return b_is_initializer(node) or (len(node.input_shapes) > 1 and len(node.input_shapes[1]) == 2)


def _build_reference(node: Node, weights: Mapping[str, np.ndarray], ctx: BuildContext) -> Kernel:
    _check("gemm.reference", ctx)
    lib = library()
    b_np, c_np = gemm_operands(node, weights)
    b_w = _tensor(b_np)
    if b_w is not None and b_w.dim() != 2:
        raise PlanError(f"gemm.reference needs a 2-D B operand; node '{node.name}' has shape {tuple(b_w.shape)}")
    at = node.attrs if node.op == "Gemm" else {}
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    trans_a, trans_b = bool(at.get("trans_a", 0)), int(bool(at.get("trans_b", 0)))
    m_out, n_out = int(np.prod(node.out_shape[:-1])), None
    c_full = None
    if c_np is not None and beta != 0.0:
        n_out = b_w.shape[0 if trans_b else 1] if b_w is not None else node.out_shape[-1]
        c_bcast = np.broadcast_to(beta * np.asarray(c_np, dtype=np.float32), (m_out, n_out))
        c_full = torch.from_numpy(np.array(c_bcast, dtype=np.float32, order="C"))
    act = parse_activation(ctx.fused_activation)
    lo, hi = float(act.lo), float(act.hi)

    def kernel(a: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        b = (b_w if b_w is not None else rest[0].to(torch.float32)).contiguous()
        a = (a.t() if trans_a else a).contiguous()
        k = a.shape[-1]
        lead = a.shape[:-1]
        a2 = a.reshape(-1, k)
        m = a2.shape[0]
        n = b.shape[0] if trans_b else b.shape[1]
        if c_full is not None and tuple(c_full.shape) != (m, n):
            raise PlanError(f"gemm.reference kernel of node '{node.name}' was built for a {m_out}x{n_out} "
                            f"output, got {m}x{n}")
        y = torch.empty((m, n), dtype=torch.float32)
        lib.pp_gemm(ctypes.c_void_p(a2.data_ptr()), ctypes.c_void_p(b.data_ptr()),
                    None if c_full is None else ctypes.c_void_p(c_full.data_ptr()), ctypes.c_void_p(y.data_ptr()),
                    m, n, k, trans_b, alpha, lo, hi)
        return y.view(*lead, n)

    return kernel


def _ws_reference(node: Node, precision: str, layout: str) -> int:
    # the broadcast (M, N) bias matrix
    has_c = node.op == "Gemm" and len(node.inputs) > 2 and bool(node.inputs[2])
    return int(np.prod(node.out_shape)) * _F32 if has_c else 0


register(Primitive(
    name="gemm.blas", ops=("Gemm", "MatMul"), layouts=("NCHW",), precisions=("fp32",), build=_build_blas,
    rank=0, description="BLAS GEMM via torch.addmm / torch.matmul (transA, transB, alpha, beta honoured)"))
register(Primitive(
    name="gemm.reference", ops=("Gemm", "MatMul"), layouts=("NCHW",), precisions=("fp32",),
    build=_build_reference, applies=_reference_applies, workspace_bytes=_ws_reference, rank=90,
    description="dependency-free C triple-loop GEMM at -O2, single-threaded (the vanilla baseline)"))

__all__ = ["b_is_initializer", "gemm_operands"]
