"""The fused-activation epilogue of conv and GEMM kernels: ``BuildContext.fused_activation``.

Clamp specs, which every conv and GEMM primitive applies: ``None`` (identity), ``"relu"`` ([0, inf)),
``"relu6"`` ([0, 6]) and ``"clip:<lo>:<hi>"`` (either bound may be ``inf``/``-inf``). One :class:`Clamp` serves
library kernels (applied in place after the op), the C reference kernels (bounds passed in) and quantised
kernels (``relu`` variants of the ops plus a clamp).

Eltwise specs (:data:`ELTWISE`): ``"swish"`` (``x * sigmoid(x)``, an ONNX Sigmoid + Mul pair),
``"hardswish"`` (ONNX HardSwish) and ``"sigmoid"`` (ONNX Sigmoid). Only primitives that list one in
``Primitive.epilogues`` (oneDNN post-ops) receive it: the runtime folds such an activation only into those
(:func:`perfpredict.runtime.executor.plan_fusions`).

A residual (:data:`RESIDUAL`, ``BuildContext.fused_residual``): a tensor of the output's shape added to the output
before the activation, a folded ``Add``; likewise only into primitives whose ``epilogues`` list it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from perfpredict.errors import PlanError

ACCEPTED = ("relu", "relu6", "clip:<lo>:<hi>")

ELTWISE: tuple[str, ...] = ("swish", "hardswish", "sigmoid")
"""Fused activations that are not clamps; a primitive applies one only if its ``epilogues`` lists it."""

RESIDUAL = "residual"
"""The epilogue of a primitive that adds a residual tensor to its output (a folded ``Add``) before the activation."""


@dataclass(frozen=True)
class Clamp:
    """An output clamp to ``[lo, hi]``; ``-inf``/``inf`` mean no bound on that side."""

    lo: float = -math.inf
    hi: float = math.inf

    @property
    def is_identity(self) -> bool:
        """True when neither bound is finite."""
        return self.lo == -math.inf and self.hi == math.inf

    @property
    def is_relu(self) -> bool:
        """True for a plain relu ([0, inf))."""
        return self.lo == 0.0 and self.hi == math.inf

    def apply_(self, y: torch.Tensor) -> torch.Tensor:
        """Clamp ``y`` in place (fp32) and return it."""
        if self.is_identity:
            return y
        if self.is_relu:
            return y.relu_()
        return y.clamp_(None if self.lo == -math.inf else self.lo, None if self.hi == math.inf else self.hi)


def parse_activation(spec: str | None) -> Clamp:
    """The clamp that a ``fused_activation`` spec denotes; a :class:`PlanError` for an unknown spec."""
    if spec is None or spec == "":
        return Clamp()
    if spec == "relu":
        return Clamp(0.0, math.inf)
    if spec == "relu6":
        return Clamp(0.0, 6.0)
    if spec.startswith("clip:"):
        parts = spec.split(":")
        try:
            lo, hi = float(parts[1]), float(parts[2])
            if len(parts) != 3 or math.isnan(lo) or math.isnan(hi) or lo > hi:
                raise ValueError
        except (ValueError, IndexError):
            raise PlanError(f"fused activation '{spec}' is malformed; expected 'clip:<lo>:<hi>' with lo <= hi") \
                from None
        return Clamp(lo, hi)
    if spec in ELTWISE:
        raise PlanError(f"fused activation '{spec}' is not a clamp; only primitives listing it in their epilogues "
                        "apply it (see split_activation)")
    raise PlanError(f"unknown fused activation '{spec}'; accepted: {', '.join(ACCEPTED + ELTWISE)} or none")


def split_activation(spec: str | None) -> tuple[str | None, Clamp]:
    """``spec`` as (eltwise name of :data:`ELTWISE` or None, clamp): what a primitive with eltwise post-ops
    applies; a :class:`PlanError` for an unknown spec."""
    if spec in ELTWISE:
        return spec, Clamp()
    return None, parse_activation(spec)
