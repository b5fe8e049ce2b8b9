"""Structured (output-channel) pruning by L1 norm, kept consistent across coupled layers.

Channel flow. Every tensor's axis 1 (channels of a 4-D tensor, features of a 2-D one) is a list of
channel ids. A dense Conv (groups 1) or a Gemm that :func:`perfpredict.plan.is_prunable` accepts creates
fresh ids it *owns*; ops that keep channels (activations, BN affine, pooling, Pad/Slice/Split on other
axes, depthwise convs) pass ids through; Concat on axis 1 concatenates them; Flatten/Reshape to
``(N, C*H*W)`` repeats each id H*W times (so a Gemm after a Flatten loses the matching feature columns).

Coupling rules (union-find over ids, a class of ids is kept or removed as a whole):

* Add / Mul (residuals, SE gating ``x * gate``, swish ``x * sigmoid(x)``) unite their inputs channel by
  channel; an input broadcast along axis 1 (one channel) is not coupled.
* Concat on another axis unites its inputs channel by channel.
* A depthwise conv (groups == in == out) passes ids through: its filters go with the channels it reads.
* Channels become *fixed* (never removed) when they reach a graph input or output, are read by a
  grouped conv that is not depthwise (or a depthwise conv with a channel multiplier), are split or
  sliced along axis 1 (Split, Slice), shuffled or reinterpreted (Transpose, any Reshape other than the
  flatten and ``(N, C) <-> (N, C, 1, 1)`` forms, Flatten on another axis), reduced or normalised over axis
  1 (ReduceMean, Softmax), padded on axis 1, or read by an op this module does not know.

Groups. Producers whose owned ids share a class form one :class:`PruneGroup` and share one ratio: the
**largest** ratio any member asks for. Classes are ranked by the L1 norm of the member filters they
hold, summed across the group; the lowest-ranked ``floor(ratio * n + 0.5)`` free classes are removed, keeping
at least one channel per member. A producer whose owned channels are all fixed cannot be pruned: a plan
asking it for a ratio is rejected with a :class:`PlanError` naming the node and the reason (shufflenet's
channel-split and shuffle make its block outputs fixed this way; its inner branch convs stay prunable).
Graph outputs never lose channels, so pruning leaves the output shape unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from perfpredict.errors import PlanError
from perfpredict.graph import Graph, Node, _cost
from perfpredict.plan import MAX_PRUNE, is_prunable

_PASS_THROUGH = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "BatchNormalization", "MaxPool",
                 "AveragePool", "GlobalAveragePool")


@dataclass(frozen=True)
class PruneGroup:
    """Prunable nodes that share one ratio because their output channels are coupled.

    ``channels`` counts the channel classes the ratio applies to; ``fixed_channels`` the members'
    channels that must stay (coupled to a fixed tensor).
    """

    members: tuple[str, ...]
    channels: int
    fixed_channels: int = 0


@dataclass(frozen=True)
class PruneResult:
    """A pruned graph, the channel indices each changed tensor keeps, and the ratio each group got."""

    graph: Graph
    kept: Mapping[str, np.ndarray]
    group_ratios: Mapping[tuple[str, ...], float]


class _ChannelFlow:
    """Channel ids of every tensor, their union-find classes, owners and fixing reasons."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.parent: list[int] = []
        self.owner: list[str | None] = []
        self.owner_channel: list[int] = []
        self.reason: dict[int, str] = {}  # root -> why the class is fixed
        self.chan: dict[str, np.ndarray | None] = {}
        self.const_axes: dict[tuple[str, str], int] = {}  # (node, constant) -> axis sliced with the output
        for t in graph.inputs:
            self.chan[t] = self._fresh_for(t, reason=f"it reaches graph input '{t}'")
        for node in graph.nodes:
            self._visit(node)
        for t in graph.outputs:
            self.fix(self.chan.get(t), f"it reaches graph output '{t}'")

    # ------------------------------------------------------------- union-find

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.reason:
            self.reason.setdefault(ra, self.reason.pop(rb))

    def union_all(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self.union(x, y)

    def fresh(self, n: int, owner: str | None = None, reason: str | None = None) -> np.ndarray:
        start = len(self.parent)
        ids = np.arange(start, start + n, dtype=np.int64)
        self.parent.extend(ids.tolist())
        self.owner.extend([owner] * n)
        self.owner_channel.extend(range(n))
        if reason is not None:
            for i in ids.tolist():
                self.reason[i] = reason
        return ids

    def _fresh_for(self, tensor: str, reason: str) -> np.ndarray | None:
        shape = self.graph.tensor_shapes.get(tensor, ())
        return self.fresh(int(shape[1]), reason=reason) if len(shape) >= 2 else None

    def fix(self, ids: np.ndarray | None, reason: str) -> None:
        if ids is None:
            return
        for i in ids.tolist():
            self.reason.setdefault(self.find(i), reason)

    # ------------------------------------------------------------- ops

    def _fixed_outputs(self, node: Node, reason: str) -> None:
        for t in node.activation_inputs:
            self.fix(self.chan.get(t), reason)
        for t in node.outputs:
            self.chan[t] = self._fresh_for(t, reason=f"it comes out of '{node.name}' ({node.op})")

    def _visit(self, node: Node) -> None:  # noqa: C901 - one branch per op
        op, a = node.op, node.attrs
        ins = node.activation_inputs
        x = self.chan.get(ins[0]) if ins else None
        out = node.outputs[0]
        reason = f"it feeds '{node.name}' ({node.op}"
        if op == "Conv":
            w_init = len(node.inputs) > 1 and node.inputs[1] in node.params
            groups, cin, cout = a["groups"], a["in_channels"], a["out_channels"]
            if not w_init or x is None:
                return self._fixed_outputs(node, reason + ", weights not constant)")
            if groups == 1:
                owns = is_prunable(self.graph, node)
                self.chan[out] = self.fresh(cout, owner=node.name if owns else None,
                                            reason=None if owns else f"it comes out of '{node.name}'")
            elif groups == cin == cout:
                self.chan[out] = x
            else:
                self._fixed_outputs(node, reason + f", grouped conv with groups={groups})")
        elif op == "Gemm":
            w_init = len(node.inputs) > 1 and node.inputs[1] in node.params
            if not w_init or a.get("trans_a") or x is None or len(node.in_shape) != 2:
                return self._fixed_outputs(node, reason + ")")
            owns = is_prunable(self.graph, node)
            self.chan[out] = self.fresh(int(node.out_shape[1]), owner=node.name if owns else None,
                                        reason=None if owns else f"it comes out of '{node.name}'")
        elif op == "MatMul":
            w_init = len(node.inputs) > 1 and node.inputs[1] in node.params
            if not w_init or x is None or len(node.in_shape) != 2 or self.graph.initializers[node.inputs[1]].ndim != 2:
                return self._fixed_outputs(node, reason + ")")
            self.chan[out] = self._fresh_for(out, reason=f"it comes out of '{node.name}' (MatMul)")
        elif op in _PASS_THROUGH:
            self.chan[out] = x
        elif op in ("Add", "Mul"):
            self._binary(node)
        elif op == "Concat":
            chans = [self.chan.get(t) for t in ins]
            if any(c is None for c in chans):
                return self._fixed_outputs(node, reason + ")")
            if a["axis"] == 1:
                self.chan[out] = np.concatenate(chans)
            else:
                for c in chans[1:]:
                    self.union_all(chans[0], c)
                self.chan[out] = chans[0]
        elif op == "Split":
            if a["axis"] == 1:
                self.fix(x, reason + ", a split along channels)")
                offsets = np.cumsum([0, *a["split"]])
                for k, t in enumerate(node.outputs):
                    self.chan[t] = None if x is None else x[offsets[k]:offsets[k + 1]]
            else:
                for t in node.outputs:
                    self.chan[t] = x
        elif op == "Slice":
            if 1 in a["axes"]:
                self._fixed_outputs(node, reason + ", a slice along channels)")
            else:
                self.chan[out] = x
        elif op == "ReduceMean":
            if 1 in a["axes"] or 0 in a["axes"]:
                self._fixed_outputs(node, reason + ")")
            else:
                self.chan[out] = x
        elif op == "Flatten":
            self._reshape(node, x, reason)
        elif op == "Reshape":
            self._reshape(node, x, reason)
        elif op == "Pad":
            rank = len(node.in_shape)
            pads = a["pads"]
            if rank >= 2 and (pads[1] or pads[rank + 1]):
                self._fixed_outputs(node, reason + ", padding channels)")
            else:
                self.chan[out] = x
        elif op == "Softmax":
            if a["axis"] == 1:
                self._fixed_outputs(node, reason + ", softmax over channels)")
            else:
                self.chan[out] = x
        else:  # Transpose and anything unknown
            self._fixed_outputs(node, reason + ")")

    def _binary(self, node: Node) -> None:
        out = node.outputs[0]
        out_shape = node.out_shape
        if len(out_shape) < 2:
            return self._fixed_outputs(node, f"it feeds '{node.name}' ({node.op})")
        c_out = out_shape[1]
        coupled = None
        for t in node.activation_inputs:
            shape = self.graph.tensor_shapes.get(t, ())
            ids = self.chan.get(t)
            if len(shape) != len(out_shape) or ids is None:
                return self._fixed_outputs(node, f"it feeds '{node.name}' ({node.op}, broadcast across ranks)")
            if shape[1] == 1 and c_out != 1:
                continue  # broadcast along channels: not coupled
            if coupled is None:
                coupled = ids
            else:
                self.union_all(coupled, ids)
        if coupled is None:
            return self._fixed_outputs(node, f"it feeds '{node.name}' ({node.op})")
        for p in node.params:
            arr = self.graph.initializers[p]
            axis = arr.ndim - (len(out_shape) - 1)  # axis 1 of the output, right-aligned
            if 0 <= axis < arr.ndim and arr.shape[axis] == c_out and c_out > 1:
                self.const_axes[(node.name, p)] = axis
            elif arr.ndim > len(out_shape):
                return self._fixed_outputs(node, f"it feeds '{node.name}' ({node.op})")
        self.chan[out] = coupled

    def _reshape(self, node: Node, x: np.ndarray | None, reason: str) -> None:
        out = node.outputs[0]
        src, dst = tuple(node.in_shape), tuple(node.out_shape)
        if x is not None and len(dst) == 2 and len(src) >= 2 and dst[0] == src[0] and \
                dst[1] == int(np.prod(src[1:])) and (node.op == "Reshape" or node.attrs.get("axis", 1) == 1):
            self.chan[out] = np.repeat(x, int(np.prod(src[2:], dtype=np.int64)))
        elif x is not None and src == dst:
            self.chan[out] = x
        elif x is not None and len(src) >= 2 and len(dst) >= 2 and src[:2] == dst[:2] and \
                all(d == 1 for d in src[2:]) and all(d == 1 for d in dst[2:]):
            self.chan[out] = x
        else:
            self._fixed_outputs(node, reason + ", a reshape across channels)")

    # ------------------------------------------------------------- classes and groups

    def owned(self) -> dict[str, list[int]]:
        """Owner node -> its channel ids, in channel order."""
        out: dict[str, list[int]] = {}
        for i, o in enumerate(self.owner):
            if o is not None:
                out.setdefault(o, []).append(i)
        return out

    def groups(self) -> tuple[list[PruneGroup], dict[str, str]]:
        """(prunable groups in topological order, unprunable owner -> reason)."""
        owned = self.owned()
        parent = {o: o for o in owned}

        def gfind(o: str) -> str:
            while parent[o] != o:
                parent[o] = parent[parent[o]]
                o = parent[o]
            return o

        class_owners: dict[int, list[str]] = {}
        for o, ids in owned.items():
            for i in ids:
                class_owners.setdefault(self.find(i), []).append(o)
        for r, os_ in class_owners.items():
            if r in self.reason:
                continue
            for o in os_[1:]:
                ra, rb = gfind(os_[0]), gfind(o)
                if ra != rb:
                    parent[rb] = ra
        order = {n.name: k for k, n in enumerate(self.graph.nodes)}
        members: dict[str, list[str]] = {}
        blocked: dict[str, str] = {}
        for o, ids in owned.items():
            roots = {self.find(i) for i in ids}
            if all(r in self.reason for r in roots):
                blocked[o] = self.reason[self.find(ids[0])]
            else:
                members.setdefault(gfind(o), []).append(o)
        groups = []
        for ms in members.values():
            ms.sort(key=order.__getitem__)
            roots = {self.find(i) for o in ms for i in owned[o]}
            free = sum(1 for r in roots if r not in self.reason)
            groups.append(PruneGroup(tuple(ms), free, len(roots) - free))
        groups.sort(key=lambda g: order[g.members[0]])
        return groups, blocked


def prune_groups(graph: Graph) -> list[PruneGroup]:
    """The prunable groups of ``graph``: nodes in one group share one prune ratio (see the module docstring)."""
    return _ChannelFlow(graph).groups()[0]


def unprunable_reasons(graph: Graph) -> dict[str, str]:
    """Nodes that :func:`perfpredict.plan.is_prunable` accepts but whose channels are all fixed -> why."""
    return _ChannelFlow(graph).groups()[1]


def _filter_l1(graph: Graph, node: Node) -> np.ndarray:
    w = np.abs(np.asarray(graph.initializers[node.inputs[1]], dtype=np.float64))
    if node.op == "Gemm" and not node.attrs.get("trans_b", 0):
        return w.sum(axis=0)
    return w.reshape(w.shape[0], -1).sum(axis=1)


def _removed_classes(flow: _ChannelFlow, group: PruneGroup, ratio: float, owned: Mapping[str, list[int]],
                     l1: Mapping[str, np.ndarray]) -> set[int]:
    score: dict[int, float] = {}
    class_owners: dict[int, list[str]] = {}
    left: dict[str, set[int]] = {}
    for m in group.members:
        for i in owned[m]:
            r = flow.find(i)
            left.setdefault(m, set()).add(r)
            if r in flow.reason:
                continue
            score[r] = score.get(r, 0.0) + float(l1[m][flow.owner_channel[i]])
            class_owners.setdefault(r, []).append(m)
    n_remove = int(ratio * len(score) + 0.5)  # round half up
    removed: set[int] = set()
    for r in sorted(score, key=lambda r: (score[r], r)):
        if len(removed) >= n_remove:
            break
        owners = set(class_owners[r])
        if any(len(left[m]) <= 1 for m in owners):
            continue  # every member keeps at least one channel
        for m in owners:
            left[m].discard(r)
        removed.add(r)
    return removed


def prune_graph(graph: Graph, ratios: Mapping[str, float]) -> PruneResult:
    """``graph`` with output channels removed per ``ratios`` (node -> share of channels to remove).

    Groups of coupled nodes use the largest ratio of their members. Raises :class:`PlanError` for a
    ratio outside [0, MAX_PRUNE] or on a node that cannot be pruned (naming the node and the reason).
    """
    flow = _ChannelFlow(graph)
    groups, blocked = flow.groups()
    member_of = {m: g for g in groups for m in g.members}
    for name, r in ratios.items():
        node = graph.node(name)
        if not 0.0 <= r <= MAX_PRUNE:
            raise PlanError(f"node '{name}': prune ratio {r} is outside [0, {MAX_PRUNE}]")
        if r <= 0:
            continue
        if name in blocked:
            raise PlanError(f"node '{name}' ({node.op}) cannot be pruned: {blocked[name]}")
        if name not in member_of:
            raise PlanError(f"node '{name}' ({node.op}) cannot be pruned: only dense Conv and Gemm nodes that do "
                            "not produce a graph output can")
    owned = flow.owned()
    removed: set[int] = set()
    applied: dict[tuple[str, ...], float] = {}
    for g in groups:
        ratio = max(float(ratios.get(m, 0.0)) for m in g.members)
        if ratio <= 0:
            continue
        l1 = {m: _filter_l1(graph, graph.node(m)) for m in g.members}
        removed |= _removed_classes(flow, g, ratio, owned, l1)
        applied[g.members] = ratio
    if not removed:
        return PruneResult(graph, {}, applied)
    return PruneResult(_rewrite(graph, flow, removed), _kept(flow, removed), applied)


def _kept(flow: _ChannelFlow, removed: set[int]) -> dict[str, np.ndarray]:
    out = {}
    for t, ids in flow.chan.items():
        if ids is None:
            continue
        keep = np.array([flow.find(i) not in removed for i in ids.tolist()], dtype=bool)
        if not keep.all():
            out[t] = np.flatnonzero(keep)
    return out


def _rewrite(graph: Graph, flow: _ChannelFlow, removed: set[int]) -> Graph:
    kept = _kept(flow, removed)
    shapes = dict(graph.tensor_shapes)
    for t, idx in kept.items():
        s = list(shapes[t])
        s[1] = len(idx)
        shapes[t] = tuple(s)
    inits = dict(graph.initializers)
    users: dict[str, int] = {}
    for node in graph.nodes:
        for p in node.params:
            users[p] = users.get(p, 0) + 1
    nodes = []
    for node in graph.nodes:
        ins = node.activation_inputs
        k_in = kept.get(ins[0]) if ins else None
        k_out = kept.get(node.outputs[0])
        params_changed = _prune_params(graph, node, k_in, k_out, flow, inits, users)
        changed = params_changed or any(t in kept for t in ins) or any(t in kept for t in node.outputs)
        nodes.append(_renode(node, shapes, inits) if changed else node)
    return Graph(name=graph.name, nodes=tuple(nodes), inputs=graph.inputs, outputs=graph.outputs,
                 initializers=inits, tensor_shapes=shapes)


def _prune_params(graph: Graph, node: Node, k_in: np.ndarray | None, k_out: np.ndarray | None,
                  flow: _ChannelFlow, inits: dict[str, np.ndarray], users: Mapping[str, int]) -> bool:
    """Slice the node's initialisers to the kept channels (in place in ``inits``); True if any changed."""
    changed = False

    def put(name: str, arr: np.ndarray) -> None:
        nonlocal changed
        if users.get(name, 1) > 1:
            raise PlanError(f"node '{node.name}': weight '{name}' is shared with another node, so its channels "
                            "cannot be pruned; leave the producers of its channels unpruned")
        inits[name] = np.ascontiguousarray(arr)
        changed = True

    op = node.op
    if op == "Conv" and node.inputs[1] in node.params:
        w = graph.initializers[node.inputs[1]]
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] in node.params else None
        depthwise = node.attrs["groups"] == node.attrs["in_channels"] == node.attrs["out_channels"] and \
            node.attrs["groups"] > 1
        if depthwise:
            k_out = k_in
        elif node.attrs["groups"] == 1 and k_in is not None:
            w = w[:, k_in]
            put(node.inputs[1], w)
        if k_out is not None:
            put(node.inputs[1], w[k_out])
            if bias is not None:
                put(bias, graph.initializers[bias][k_out])
    elif op == "Gemm" and node.inputs[1] in node.params:
        w = graph.initializers[node.inputs[1]]
        trans_b = bool(node.attrs.get("trans_b", 0))
        if k_in is not None:
            w = w[:, k_in] if trans_b else w[k_in]
            put(node.inputs[1], w)
        if k_out is not None:
            put(node.inputs[1], w[k_out] if trans_b else w[:, k_out])
            c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] in node.params else None
            if c is not None:
                arr = graph.initializers[c]
                if arr.ndim >= 1 and arr.shape[-1] == node.out_shape[-1]:
                    put(c, arr[..., k_out])
    elif op == "MatMul" and node.inputs[1] in node.params and k_in is not None:
        put(node.inputs[1], graph.initializers[node.inputs[1]][k_in])
    elif op == "BatchNormalization" and k_in is not None:
        for p in node.inputs[1:3]:
            put(p, graph.initializers[p][k_in])
    elif op in ("Add", "Mul") and k_out is not None:
        for p in node.params:
            axis = flow.const_axes.get((node.name, p))
            if axis is not None:
                put(p, np.take(graph.initializers[p], k_out, axis=axis))
    return changed


def with_shapes(node: Node, in_shapes: tuple[tuple[int, ...], ...], out_shapes: tuple[tuple[int, ...], ...]) -> Node:
    """``node`` with new activation input and output shapes and the attributes that follow from them (a Conv's
    channel counts, and its groups when depthwise; a Gemm's output features; a Reshape's target shape); costs are
    left as they were."""
    attrs = dict(node.attrs)
    if node.op == "Conv":
        depthwise = attrs["groups"] == attrs["in_channels"] == attrs["out_channels"] and attrs["groups"] > 1
        attrs["in_channels"] = int(in_shapes[0][1])
        attrs["out_channels"] = int(out_shapes[0][1])
        if depthwise:
            attrs["groups"] = int(out_shapes[0][1])
    elif node.op == "Gemm":
        attrs["out_features"] = int(out_shapes[0][-1])
    elif node.op == "Reshape":
        attrs["shape"] = tuple(out_shapes[0])
    return dataclasses.replace(node, input_shapes=in_shapes, output_shapes=out_shapes, attrs=attrs)


def _renode(node: Node, shapes: Mapping[str, tuple[int, ...]], inits: Mapping[str, np.ndarray]) -> Node:
    ins = node.activation_inputs
    in_shapes = tuple(tuple(shapes.get(t, s)) for t, s in zip(ins, node.input_shapes))
    out_shapes = tuple(tuple(shapes.get(t, s)) for t, s in zip(node.outputs, node.output_shapes))
    node = with_shapes(node, in_shapes, out_shapes)
    attrs = node.attrs
    macs, flops = _cost(node.op, attrs, in_shapes, out_shapes)
    param_count = int(sum(inits[p].size for p in node.params)) \
        if node.op in ("Conv", "Gemm", "MatMul", "BatchNormalization") else 0
    numel = lambda s: int(np.prod(s, dtype=np.int64)) if s else 1  # noqa: E731
    return dataclasses.replace(node, macs=int(macs), flops=int(flops), param_count=param_count,
                               bytes_in=4 * sum(numel(s) for s in in_shapes),
                               bytes_out=4 * sum(numel(s) for s in out_shapes))
