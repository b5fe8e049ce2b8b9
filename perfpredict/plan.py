"""Deployment plans: per node, which primitive runs it, in which layout, at which precision, how pruned.

JSON schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "graph_id": "9f2c...",            # optional: Graph.graph_id the plan was made for
      "name": "resnet18-fast",          # optional
      "choices": {
        "<node name>": {"primitive": "conv.winograd", "layout": "NCHW", "precision": "fp32", "prune": 0.0},
        ...
      }
    }

Nodes missing from ``choices`` run their default (:func:`default_choice`). ``layout`` is one of the
primitive's layouts (NCHW or NHWC), ``precision`` fp32 or int8, ``prune`` the share of output channels
removed by L1 norm (0 <= prune < 1, Conv and Gemm nodes whose outputs can be pruned only). The runtime
inserts layout conversions and quantise/dequantise wherever neighbouring choices disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from perfpredict.errors import PlanError
from perfpredict.graph import Graph, Node
from perfpredict.primitives import LAYOUTS, PRECISIONS, default_primitive, get_primitive

SCHEMA_VERSION = 1
MAX_PRUNE = 0.9


@dataclass(frozen=True)
class Choice:
    """How one node is deployed."""

    primitive: str
    layout: str = "NCHW"
    precision: str = "fp32"
    prune: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this choice."""
        return {"primitive": self.primitive, "layout": self.layout, "precision": self.precision,
                "prune": self.prune}


@dataclass(frozen=True)
class Plan:
    """A mapping from node name to :class:`Choice`; nodes not named run their default."""

    choices: Mapping[str, Choice] = field(default_factory=dict)
    name: str = ""
    graph_id: str | None = None

    def choice(self, node: Node | str) -> Choice | None:
        """The explicit choice for ``node``, or None when it runs its default."""
        return self.choices.get(node if isinstance(node, str) else node.name)

    def resolve(self, graph: Graph) -> dict[str, Choice]:
        """Every node of ``graph`` mapped to its effective choice (defaults filled in)."""
        return {n.name: self.choices.get(n.name) or default_choice(n) for n in graph.nodes}

    def with_choice(self, node: str, choice: Choice) -> "Plan":
        """A copy of this plan with ``node`` set to ``choice``."""
        return Plan({**self.choices, node: choice}, self.name, self.graph_id)

    @property
    def key(self) -> str:
        """A stable text identity of the plan's choices (for hashing and deduplication)."""
        return json.dumps({k: v.to_dict() for k, v in sorted(self.choices.items())}, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this plan (see the module docstring)."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if self.graph_id:
            out["graph_id"] = self.graph_id
        if self.name:
            out["name"] = self.name
        out["choices"] = {k: c.to_dict() for k, c in self.choices.items()}
        return out

    def to_json(self) -> str:
        """The plan as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write the plan to ``path`` as JSON, atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "plan") -> "Plan":
        """Parse the JSON form; a :class:`PlanError` names the bad field."""
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: a plan must be a JSON object with a 'choices' object")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise PlanError(f"{where}: schema_version {version} is not supported (this version reads {SCHEMA_VERSION})")
        unknown = set(data) - {"schema_version", "graph_id", "name", "choices"}
        if unknown:
            raise PlanError(f"{where}: unknown keys {sorted(unknown)}; accepted: schema_version, graph_id, name, choices")
        raw = data.get("choices")
        if not isinstance(raw, Mapping):
            raise PlanError(f"{where}: 'choices' must be an object mapping node names to choices")
        choices = {}
        for node, c in raw.items():
            if not isinstance(c, Mapping) or "primitive" not in c:
                raise PlanError(f"{where}: choice for node '{node}' must be an object with at least 'primitive'")
            extra = set(c) - {"primitive", "layout", "precision", "prune"}
            if extra:
                raise PlanError(f"{where}: choice for node '{node}' has unknown keys {sorted(extra)}; accepted: "
                                "primitive, layout, precision, prune")
            try:
                choices[node] = Choice(str(c["primitive"]), str(c.get("layout", "NCHW")),
                                       str(c.get("precision", "fp32")), float(c.get("prune", 0.0)))
            except (TypeError, ValueError):
                raise PlanError(f"{where}: choice for node '{node}' has a non-numeric 'prune'") from None
        return cls(choices, str(data.get("name", "")), data.get("graph_id"))

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read a plan JSON file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlanError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, str(path))


def default_choice(node: Node) -> Choice:
    """The choice a node runs with when the plan does not name it: default primitive, NCHW, fp32, unpruned."""
    prim = default_primitive(node)
    return Choice(prim.name, "NCHW" if "NCHW" in prim.layouts else prim.layouts[0], "fp32", 0.0)


def default_plan(graph: Graph) -> Plan:
    """The plan that runs every node with its default choice (what a framework does out of the box)."""
    return Plan({n.name: default_choice(n) for n in graph.nodes}, name="default", graph_id=graph.graph_id)


def is_prunable(graph: Graph, node: Node) -> bool:
    """Whether ``node``'s output channels may be pruned: a dense Conv or a Gemm that is not a graph output."""
    if any(o in graph.outputs for o in node.outputs):
        return False
    if node.op == "Conv":
        return node.attrs["groups"] == 1 and node.attrs["out_channels"] > 1
    return node.op == "Gemm"


def validate_plan(graph: Graph, plan: Plan) -> None:
    """Check ``plan`` against ``graph``; a :class:`PlanError` names the node and what would be accepted."""
    if plan.graph_id and plan.graph_id != graph.graph_id:
        raise PlanError(f"plan '{plan.name or 'plan'}' was made for graph {plan.graph_id}, not for "
                        f"'{graph.name}' ({graph.graph_id}); a plan of this model comes from `perfpredict optimise` "
                        "on it, or leave graph_id out of a hand-written one")
    for name, c in plan.choices.items():
        node = graph.node(name) if name in {n.name for n in graph.nodes} else None
        if node is None:
            raise PlanError(f"plan names node '{name}', which graph '{graph.name}' does not have")
        prim = get_primitive(c.primitive)
        if node.op not in prim.ops or not prim.applies(node):
            from perfpredict.primitives import candidates
            legal = ", ".join(p.name for p in candidates(node)) or "none"
            raise PlanError(f"node '{name}' ({node.op}): primitive '{c.primitive}' does not apply; legal: {legal}")
        if c.layout not in prim.layouts:
            raise PlanError(f"node '{name}': primitive '{c.primitive}' runs in layouts {list(prim.layouts)}, "
                            f"not '{c.layout}' (known layouts {list(LAYOUTS)})")
        if c.precision not in prim.precisions:
            raise PlanError(f"node '{name}': primitive '{c.primitive}' supports precisions "
                            f"{list(prim.precisions)}, not '{c.precision}' (known {list(PRECISIONS)})")
        if not 0.0 <= c.prune <= MAX_PRUNE:
            raise PlanError(f"node '{name}': prune ratio {c.prune} is outside [0, {MAX_PRUNE}]")
        if c.prune > 0 and not is_prunable(graph, node):
            raise PlanError(f"node '{name}' ({node.op}) cannot be pruned: only dense Conv and Gemm nodes that "
                            "do not produce a graph output can")
