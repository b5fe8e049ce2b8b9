"""The calling convention between the runtime and the primitives it runs.

A primitive's ``build(node, weights, ctx)`` receives the node, its (already pruned) weights as float32
numpy arrays keyed by role (``"weight"``, ``"bias"``, or the initialiser names for other ops), and a
:class:`BuildContext`; it returns a :data:`Kernel`: a callable taking the node's activation inputs as
torch tensors and returning its output tensor (a tuple for multi-output ops such as Split).

Tensors are logically NCHW everywhere; ``layout`` is their memory format (NHWC = torch.channels_last).
At ``int8`` a kernel takes and returns quantised tensors (torch.quint8, per-tensor affine) whose scales
come from calibration (``ctx.in_qparams`` / ``ctx.out_qparams``); weights are quantised per channel by the
kernel itself at build time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Kernel = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantisation parameters of an activation (quint8)."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class BuildContext:
    """What a primitive needs besides the node and its weights to build its kernel.

    ``fused_activation`` is an elementwise op folded into this node by the runtime ("relu", "relu6",
    "clip:<lo>:<hi>", or None): the kernel must apply it to its output. With ``fused_residual`` the kernel takes a
    second input, a tensor of its output's shape and layout (at int8 quantised with the last of ``in_qparams``),
    which it adds to its output before the activation: a folded residual ``Add``. At int8, with a folded activation,
    ``pre_activation_qparams`` is the calibrated grid of the node's own output, before the activation (a kernel may
    quantise onto it and map the codes through a table of the activation, as ``conv.dnnl_int8`` does for swish).
    """

    layout: str = "NCHW"
    precision: str = "fp32"
    fused_activation: str | None = None
    fused_residual: bool = False
    in_qparams: tuple[QParams, ...] = ()
    out_qparams: QParams | None = None
    pre_activation_qparams: QParams | None = None
