"""The primitive registry: every executable implementation of an op, with what it accepts and costs.

A :class:`Primitive` declares the ops and nodes it applies to, the data layouts it consumes and produces
(a primitive's output layout equals its input layout), the precisions it supports, its workspace bytes
(``workspace_bytes(node, precision, layout)``: temporary memory a call holds beside its input and output),
the fused activations beyond clamps it applies (``epilogues``, names of
:data:`~perfpredict.primitives.epilogue.ELTWISE`) and a ``build`` function that turns a node plus weights into
a callable kernel. Adding an implementation is one call to :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from perfpredict.errors import PlanError
from perfpredict.graph import Node

LAYOUTS: tuple[str, ...] = ("NCHW", "NHWC")
PRECISIONS: tuple[str, ...] = ("fp32", "int8")


def _always(node: Node) -> bool:
    return True


def _no_workspace(node: Node, precision: str, layout: str) -> int:
    return 0


@dataclass(frozen=True)
class Primitive:
    """One registered implementation of an op.

    ``build(node, weights, ctx)`` returns the kernel; its exact calling convention is the runtime's
    (see :mod:`perfpredict.runtime`). ``rank`` orders candidates: the lowest-ranked legal primitive of a
    node is its default choice. ``epilogues`` names the eltwise activations (``"swish"``, ``"hardswish"``,
    ``"sigmoid"``) its kernels apply when the runtime folds one into the node, and ``"residual"`` when they add a
    residual tensor (a folded ``Add``); clamps (relu, relu6, clip) every conv and GEMM primitive applies.
    """

    name: str
    ops: tuple[str, ...]
    layouts: tuple[str, ...]
    precisions: tuple[str, ...]
    build: Callable[..., Any]
    applies: Callable[[Node], bool] = _always
    workspace_bytes: Callable[[Node, str, str], int] = _no_workspace
    rank: int = 100
    description: str = ""
    tunable: bool = field(default=True)
    epilogues: tuple[str, ...] = ()

    def folds(self, activation: str | None, residual: bool = False) -> bool:
        """Whether this primitive's kernels apply ``activation`` (a ``fused_activation`` spec; None: none), after
        adding a residual tensor when ``residual``, when the runtime folds them into the node: a clamp always, an
        eltwise activation or a residual when :attr:`epilogues` lists it."""
        from perfpredict.primitives.epilogue import ELTWISE, RESIDUAL

        return (activation not in ELTWISE or activation in self.epilogues) \
            and (not residual or RESIDUAL in self.epilogues)

    def supports(self, node: Node, layout: str | None = None, precision: str | None = None) -> bool:
        """Whether this primitive can run ``node`` (in ``layout`` at ``precision`` when given)."""
        return (node.op in self.ops and self.applies(node)
                and (layout is None or layout in self.layouts)
                and (precision is None or precision in self.precisions))


_REGISTRY: dict[str, Primitive] = {}


def register(primitive: Primitive) -> Primitive:
    """Add ``primitive`` to the registry (its name must be new) and return it."""
    if primitive.name in _REGISTRY:
        raise ValueError(f"primitive '{primitive.name}' is already registered")
    from perfpredict.primitives.epilogue import ELTWISE, RESIDUAL

    unknown = [e for e in primitive.epilogues if e not in (*ELTWISE, RESIDUAL)]
    if unknown:
        raise ValueError(f"primitive '{primitive.name}': unknown epilogues {unknown}; accepted "
                         f"{(*ELTWISE, RESIDUAL)}")
    bad = [x for x in primitive.layouts if x not in LAYOUTS] + [p for p in primitive.precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"primitive '{primitive.name}': unknown layouts/precisions {bad}; accepted "
                         f"layouts {LAYOUTS}, precisions {PRECISIONS}")
    _REGISTRY[primitive.name] = primitive
    return primitive


def _ensure_loaded() -> None:
    # importing the package registers the built-in primitives
    import perfpredict.primitives  # noqa: F401


def get_primitive(name: str) -> Primitive:
    """The primitive called ``name``; a :class:`PlanError` lists the known names otherwise."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PlanError(f"unknown primitive '{name}'; known primitives: {', '.join(sorted(_REGISTRY))}") from None


def all_primitives() -> list[Primitive]:
    """Every registered primitive, by name."""
    _ensure_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def candidates(node: Node, layout: str | None = None, precision: str | None = None) -> list[Primitive]:
    """Primitives that can run ``node``, best default first."""
    _ensure_loaded()
    found = [p for p in _REGISTRY.values() if p.supports(node, layout, precision)]
    return sorted(found, key=lambda p: (p.rank, p.name))


def primitive_family(name: str) -> str:
    """The implementation behind a primitive's name: the part after the op up to any ``_`` suffix, so ``conv.dnnl``,
    ``conv.dnnl_int8`` and ``maxpool.dnnl`` are all ``dnnl`` (oneDNN's C API)."""
    return name.split(".", 1)[-1].split("_")[0]


def default_primitive(node: Node) -> Primitive:
    """The default primitive of ``node`` (fp32; the lowest rank)."""
    found = candidates(node, precision="fp32")
    if not found:
        raise PlanError(f"no primitive is registered for node '{node.name}' (op {node.op})")
    return found[0]
