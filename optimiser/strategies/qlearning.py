"""Q-learning over per-layer choices, after QS-DNN (de Prado et al., "Automated Design Space Exploration
for optimised Deployment of DNN on Arm Cortex-A CPUs", IEEE TCAD 2020).

An episode walks the free nodes in topological order; at each node the agent picks one of its options
(the action), so one episode builds one plan. States describe the choices already made upstream:

* ``state="choice"`` (QS-DNN): the option index of the node's primary producer (the nearest free node
  on its first input);
* ``state="frontier"`` (the default): every earlier choice that still affects a cost from this step on
  (the "frontier" of the cost graph: producers whose tensors are still to be read, e.g. a residual
  skip, channel sources of nodes still to come, the ratio of a prune group with members still to
  come), each reduced to the class of options that cost the same (typically layout x precision x prune
  ratio). With additive costs this state is Markov: the step cost is a function of (state, action), so
  Q-learning converges to the optimum of the additive objective instead of averaging over contexts.
  The number of distinct states grows with the graph's width, so rows are created lazily.

Rewards. When additive tables are available (a :class:`NodeCostModel`; with a non-additive predictor
the roofline model's tables serve as shaping), each step is rewarded with minus its additive cost (its
own term plus its pair terms with nodes already chosen), and the last step also receives minus the
difference between the evaluated (penalised) objective and the sum of step costs. The return of an
episode is therefore always minus its evaluated objective, whatever the predictor; the per-step part
gives credit to the right layer (this is what exploits the additive structure). With
``reward="terminal"`` (QS-DNN) only the last step is rewarded. Rewards are divided by the default
plan's cost so values are O(1).

Learning. ``planning=True`` (the default, with additive tables and step rewards) makes every update
a full Bellman backup of all actions at the visited states, computed from the additive model (Dyna-Q /
real-time dynamic programming, Barto, Bradtke & Singh 1995): the step cost of every action and the
next state are known from the tables, so one episode updates whole rows instead of one entry; the part
of the return the tables do not explain (penalties, a non-additive predictor) is learned from samples
at the last step with learning rate ``alpha``. ``planning=False`` is plain tabular Q-learning
(``alpha``, ``gamma``). After every batch, the new episodes, ``replay`` episodes from the experience
buffer and the best episode so far are replayed backwards (end-of-episode information propagates in
one pass).

Initial values. ``init="anchored"`` (default) starts a new row at minus (the step cost given the state
+ an estimate of the later steps): an admissible bound (each later step at its cheapest action, pair
terms with the frontier at their known rows, others at their cheapest) plus ``anchor_weight`` times how
far a first greedy episode's real cost-to-go exceeded that bound at the same step. ``init="bound"``
uses the bound alone (optimistic: untried actions look promising until tried, a best-first search);
``init="zero"`` is QS-DNN's.

Budgets. An accuracy budget (the accuracy estimate is additive) is part of the state, as in a knapsack:
the budget used so far, in ``knapsack_buckets`` buckets, is a state feature and actions that would leave
too little budget for the cheapest completion are masked, so every episode meets the budget. Other
budgets (the additive memory term, or latency when another objective is primary) use Lagrangian
shaping: with additive tables, the step costs also carry each budgeted cost (accuracy drop, the
additive memory term, or latency when another objective is primary) times a Lagrange multiplier
(``lagrange_init``, in units where reaching the budget costs that multiple of the default plan's
primary cost); after each batch the multiplier is bisected on the batch's greedy plan: up when it broke
the budget, down when it had more than 10% to spare (by ``lagrange_step`` until both ends are bracketed,
then to their geometric mean); the tables are rebuilt and the values relearned.

Exploration. The first episode of every batch is greedy. ``explore="steps"`` (default) makes the others
deviate from the greedy action at about ``epsilon * steps`` (at least one) random steps, choosing the
deviation by a Boltzmann draw over the row (``temperature``, in units of the default plan's cost; 0:
uniform), so near-best alternatives are tried first; ``explore="epsilon"`` is per-step epsilon-greedy
with uniform random actions. ``epsilon`` is 1 for the first ``explore_fraction`` of the trial budget,
then decays from ``epsilon_start`` to ``epsilon_min`` (linearly, or QS-DNN's steps of 0.1).

The Q-table, the experience buffer and the episode count are saved (npz) so a search resumes.
``preset="qsdnn"`` selects QS-DNN's published settings (alpha 0.05, gamma 0.9, 50% of episodes at
epsilon 1 then steps of 0.1, zero init, producer-choice states, terminal reward, no model backups).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from optimiser.objectives import Costs
from optimiser.strategies.base import BaseStrategy, Candidate, Problem, StrategyError, register_strategy

__all__ = ["QLearning", "QSDNN_PRESET"]

QSDNN_PRESET = dict(alpha=0.05, gamma=0.9, explore_fraction=0.5, schedule="qsdnn", init="zero", state="choice",
                    reward="terminal")
"""QS-DNN's settings."""

_FORMAT = 2


class QLearning(BaseStrategy):
    """Tabular Q-learning over the free nodes of the space (see the module docstring)."""

    name = "qlearning"

    def __init__(self, problem: Problem, *, alpha: float = 1.0, gamma: float = 1.0, explore_fraction: float = 0.0,
                 epsilon_start: float = 0.1, epsilon_min: float = 0.0, schedule: str = "linear",
                 init: str = "anchored", anchor_weight: float = 0.75, state: str = "frontier", reward: str = "step",
                 planning: bool = True, explore: str = "steps", temperature: float = 0.002, replay: int = 8,
                 buffer_size: int = 5000, table_path: str | Path | None = None, resume: bool = True,
                 preset: str | None = None, lagrange_init: float = 0.05, lagrange_step: float = 2.0,
                 knapsack: bool = True, knapsack_buckets: int = 64, polish: bool = True):
        super().__init__(problem)
        if preset == "qsdnn":
            alpha, gamma, explore_fraction = QSDNN_PRESET["alpha"], QSDNN_PRESET["gamma"], 0.5
            schedule, init, state, reward, epsilon_start = "qsdnn", "zero", "choice", "terminal", 1.0
            explore, planning, polish = "epsilon", False, False
        elif preset is not None:
            raise StrategyError(f"unknown Q-learning preset '{preset}'; accepted: qsdnn")
        checks = {"schedule": (schedule, ("linear", "qsdnn")), "init": (init, ("anchored", "bound", "zero")),
                  "state": (state, ("frontier", "choice")), "reward": (reward, ("step", "terminal")),
                  "explore": (explore, ("steps", "epsilon"))}
        for key, (val, ok) in checks.items():
            if val not in ok:
                raise StrategyError(f"Q-learning option {key}='{val}' is not valid; accepted: {', '.join(ok)}")
        if not (0 < alpha <= 1 and 0 <= gamma <= 1 and 0 <= explore_fraction <= 1 and 0 <= epsilon_min <= 1
                and 0 <= epsilon_start <= 1):
            raise StrategyError("Q-learning needs 0 < alpha <= 1 and gamma, explore_fraction, epsilon_start, "
                                "epsilon_min in [0, 1]")
        self.alpha, self.gamma = alpha, gamma
        self.explore_fraction, self.schedule = explore_fraction, schedule
        self.epsilon_start, self.epsilon_min = epsilon_start, epsilon_min
        self.init, self.state_kind, self.reward_kind = init, state, reward
        self.replay, self.buffer_size = replay, buffer_size
        self.explore = explore
        self.temperature = temperature
        self.anchor_weight = anchor_weight
        self.planning = planning and problem.additive is not None and reward == "step"
        self.polish = polish and problem.additive is not None and reward == "step"
        self._polished: set[bytes] = set()
        sp = self.space
        self.steps = list(sp.free)
        self.step_of = {i: t for t, i in enumerate(self.steps)}
        add = problem.additive
        obj = problem.objective
        budgets = {"latency": obj.constraints.latency_ms, "memory": obj.constraints.memory_bytes,
                   "accuracy": obj.constraints.accuracy_drop_pct}
        self.constrained = [k for k, b in budgets.items() if b is not None and k != obj.primary] \
            if add is not None and reward == "step" else []
        self._budgets = {k: (budgets[k] or 1.0) for k in self.constrained}
        self._kinds = [k for k, b in budgets.items() if b is not None]  # order of Costs.violations
        # an additive accuracy budget becomes part of the state (knapsack): actions that would break it are masked
        self.knap = False
        acc_budget = obj.constraints.accuracy_drop_pct
        if (knapsack and add is not None and add.accuracy is not None and acc_budget is not None
                and obj.primary != "accuracy" and reward == "step" and state == "frontier"):
            u, _, c = add.table("accuracy")
            self.knap_budget = float(acc_budget - c)
            if self.knap_budget >= 0:
                self.knap = True
                self.knap_cost = {i: np.asarray(u[i], dtype=float) for i in self.steps}
                mins = [float(self.knap_cost[i].min()) for i in self.steps]
                self.knap_future = np.concatenate([np.cumsum(np.array(mins)[::-1])[::-1], [0.0]])
                self.knap_buckets = knapsack_buckets
                self.constrained = [k for k in self.constrained if k != "accuracy"]
                self._knap_penalty_cache: dict[tuple[int, int], float] = {}
        self.multipliers = {k: lagrange_init for k in self.constrained}
        self.lagrange_step = lagrange_step
        self._brackets: dict[str, tuple[float | None, float | None]] = {}
        self._init_kind = init
        # the pair structure (states) comes from the latency pairs, whatever the weights
        structure = add.table("latency")[1] if add is not None and ("latency" == obj.primary
                                                                   or "latency" in self.constrained) else []
        self.pairs_into: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in self.steps}
        self.pairs_from: dict[int, list[np.ndarray]] = {i: [] for i in self.steps}
        for s, d, m in structure:
            self.pairs_into[d].append((s, m))
            self.pairs_from[s].append(m)
        self._build_groups()
        self._build_features()
        self._build_transitions()
        self.unary, self.constant = None, 0.0
        if add is not None:
            self.unary, _, self.constant = add.table(obj.primary)
        self.scale = self._default_scale()
        self._apply_weights()
        self.episodes = 0
        self.buffer_idx = np.zeros((0, len(sp.nodes)), dtype=np.int64)
        self.buffer_rew = np.zeros((0, len(self.steps)))
        self.best_row: tuple[np.ndarray, np.ndarray] | None = None
        self.best_value = np.inf
        self.table_path = Path(table_path) if table_path else (
            Path(problem.workdir) / "qtable.npz" if problem.workdir else None)
        self.resumed = False
        if resume and self.table_path is not None and self.table_path.is_file():
            self._load(self.table_path)

    # ------------------------------------------------------------------ weights
    def _combined(self) -> tuple[list[np.ndarray] | None, list[tuple[int, int, np.ndarray]], float]:
        """The primary's tables plus each constrained cost's, weighted by its Lagrange multiplier (in units
        where reaching the budget costs ``multiplier`` times the default plan's primary cost)."""
        add = self.problem.additive
        if add is None:
            return None, [], 0.0
        unary, pairs, constant = add.table(self.problem.objective.primary)
        unary = [np.asarray(u, dtype=float).copy() for u in unary]
        pairs = [(s, d, np.asarray(m, dtype=float)) for s, d, m in pairs]
        for kind in self.constrained:
            f = self.multipliers[kind] * self.scale / self._budgets[kind]
            u2, p2, c2 = add.table(kind)
            for i, u in enumerate(u2):
                if len(unary[i]) == len(u):
                    unary[i] += f * np.asarray(u, dtype=float)
            pairs += [(s, d, f * np.asarray(m, dtype=float)) for s, d, m in p2]
            constant += f * c2
        return unary, pairs, constant

    def _apply_weights(self) -> None:
        """(Re)build the cost tables from the current multipliers and reset the values that depend on them."""
        unary, pairs, constant = self._combined()
        self.unary, self.constant = unary, constant
        merged: dict[tuple[int, int], np.ndarray] = {}
        for s, d, m in pairs:
            merged[(s, d)] = merged[(s, d)] + m if (s, d) in merged else m
        self.pairs_into = {i: [] for i in self.steps}
        self.pairs_out: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in self.steps}
        for (s, d), m in merged.items():
            self.pairs_into[d].append((s, m))
            self.pairs_out.setdefault(s, []).append((d, m))
        self.q = [{} for _ in self.steps]
        self.corr = {}
        self._cost_cache = {}
        self._bound_cache = {}
        self._knap_penalty_cache = {}
        self.rest = self._optimistic_rest()
        self._anchor = None
        self.init = self._init_kind
        if self._init_kind == "anchored" and self.unary is not None and self.state_kind == "frontier":
            # a greedy episode under the admissible bound anchors later estimates to a real cost-to-go
            self.init = "bound"
            path = self._episode(0.0)
            costs = self._step_costs(path)
            ctg = np.concatenate([np.cumsum(costs[::-1])[::-1], [0.0]])
            gap = [float(ctg[t]) - self._bound(t, self._state(t, path)) for t in range(len(self.steps))] + [0.0]
            self._anchor = (path, gap)
            self.init = "anchored"
            self.q = [{} for _ in self.steps]

    def _adapt_multipliers(self, cost: Costs) -> None:
        """Bisect each multiplier on the greedy plan: a broken budget means the multiplier is too small, a
        budget met with more than 10% to spare that it may be too large. Until both ends are known the
        multiplier moves by ``lagrange_step``; then it takes the geometric mean of the ends. Any change
        rebuilds the tables (the values learned so far are reset; the experience buffer is kept)."""
        if not self.constrained:
            return
        viol = dict(zip(self._kinds, cost.violations))
        changed = False
        for kind in self.constrained:
            v = viol.get(kind, 0.0)
            lam = self.multipliers[kind]
            lo, hi = self._brackets.get(kind, (None, None))
            if v > 1e-9:
                lo = lam if lo is None else max(lo, lam)
                if hi is not None and hi <= lo:
                    hi = None
                new = float(np.sqrt(lo * hi)) if hi is not None else float(min(lam * self.lagrange_step, 1e4))
            elif v < -0.1 and lam > 1e-6:
                hi = lam if hi is None else min(hi, lam)
                if lo is not None and lo >= hi:
                    lo = None
                new = float(np.sqrt(lo * hi)) if lo is not None else float(max(lam / self.lagrange_step, 1e-6))
            else:
                continue
            self._brackets[kind] = (lo, hi)
            if abs(new - lam) > 1e-3 * lam:
                self.multipliers[kind] = new
                changed = True
        if changed:
            self._apply_weights()

    # ------------------------------------------------------------------ structure
    def _build_groups(self) -> None:
        """Per step: the node of its prune group's first free member (-1 if it is the first or alone)."""
        sp = self.space
        self.leader: list[int] = []
        self.ratio_idx = {i: np.arange(sp.sizes[i]) % len(sp.ratios[sp.nodes[i]]) for i in self.steps}
        for i in self.steps:
            g = sp.group_of.get(sp.nodes[i])
            lead = -1
            if g is not None:
                members = [sp.pos[m] for m in sp.groups[g] if sp.pos[m] in self.step_of]
                first = min(members, key=lambda j: self.step_of[j])
                lead = first if first != i else -1
            self.leader.append(lead)

    def _primary_producer(self, i: int) -> int | None:
        """Nearest free node on the first-input chain above node ``i`` (through tied and fixed nodes)."""
        sp = self.space
        g = sp.graph
        node = g.nodes[i]
        for _ in range(len(g)):
            acts = node.activation_inputs
            prod = g.producer(acts[0]) if acts else None
            if prod is None:
                return None
            j = sp.pos[prod.name]
            if j in sp.tied:
                j = sp.tied[j][0]
            if j in self.step_of:
                return j
            node = g.nodes[j]
        return None

    def _option_classes(self, s: int) -> np.ndarray:
        """Options of node ``s`` grouped by identical future cost rows (and prune ratio for group leaders)."""
        mats = self.pairs_from[s]
        n = int(self.space.sizes[s])
        key = np.concatenate([np.round(m, 9) for m in mats], axis=1) if mats else np.zeros((n, 0))
        if s in self.leader:
            key = np.concatenate([key, self.ratio_idx[s][:, None].astype(float)], axis=1)
        return np.unique(key, axis=0, return_inverse=True)[1].reshape(-1)

    def _build_features(self) -> None:
        """Per step, the (node, option -> feature value) pairs its state is made of."""
        sp = self.space
        self._reps: dict[tuple[int, int], dict[int, int]] = {}
        self._succ_cache: dict[tuple[int, tuple[int, ...]], dict[tuple[int, ...], np.ndarray]] = {}
        self._classes_cache: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.features: list[list[tuple[int, np.ndarray]]] = []
        if self.state_kind == "choice":
            for i in self.steps:
                p = self._primary_producer(i)
                self.features.append([(p, np.arange(sp.sizes[p]))] if p is not None else [])
            return
        classes = {s: self._option_classes(s) for s in self.steps}
        last_use = {s: -1 for s in self.steps}
        for d in self.steps:
            for s, _ in self.pairs_into[d]:
                last_use[s] = max(last_use[s], self.step_of[d])
        for t, lead in enumerate(self.leader):
            if lead >= 0:
                last_use[lead] = max(last_use[lead], t)
        for t, i in enumerate(self.steps):
            frontier = [s for s in self.steps[:t] if last_use[s] >= t]
            self.features.append([(s, classes[s]) for s in frontier if classes[s].max() > 0])

    def _rep(self, t: int, j: int, value: int) -> int:
        """The first option of the ``j``-th state feature at step ``t`` whose feature value is ``value``."""
        reps = self._reps.get((t, j))
        if reps is None:
            values, first = np.unique(self.features[t][j][1], return_index=True)
            reps = self._reps[(t, j)] = dict(zip(values.tolist(), first.tolist()))
        return reps[value]

    def _build_transitions(self) -> None:
        """For the model-based backups: how the state at step t+1 follows from the state at t and the
        action at t, and each feature's option representatives."""
        self.next_from: list[list[tuple[str, int]]] = []
        for t in range(len(self.steps)):
            if t + 1 >= len(self.steps):
                self.next_from.append([])
                continue
            here = {node: k for k, (node, _) in enumerate(self.features[t])}
            src = []
            for node, _ in self.features[t + 1]:
                if node == self.steps[t]:
                    src.append(("action", 0))
                elif node in here:
                    src.append(("state", here[node]))
                else:  # cannot happen with frontier states; "choice" states have no model backups
                    src.append(("none", 0))
            self.next_from.append(src)

    # --- the accuracy budget in the state (knapsack)
    def _bucket(self, used: float) -> int:
        if self.knap_budget <= 0:
            return 0
        return int(min(self.knap_buckets - 1, max(0, int(used / self.knap_budget * self.knap_buckets))))

    def _bucket_floor(self, bucket: int) -> float:
        """The least budget use of a bucket (so masks derived from it are a superset of the exact ones)."""
        return bucket * self.knap_budget / self.knap_buckets if self.knap_budget > 0 else 0.0

    def _knap_mask(self, t: int, used: float) -> np.ndarray:
        room = self.knap_budget - used - self.knap_future[t + 1] + 1e-9
        return np.flatnonzero(self.knap_cost[self.steps[t]] <= room)

    def _used(self, idx: np.ndarray) -> np.ndarray:
        """Budget used before each step of the episode ``idx`` (length steps + 1)."""
        costs = [self.knap_cost[i][idx[i]] for i in self.steps]
        return np.concatenate([[0.0], np.cumsum(costs)])

    @staticmethod
    def _meet(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return b
        if b is None:
            return a
        return np.intersect1d(a, b)

    def _next_state(self, t: int, state: tuple[int, ...], action: int) -> tuple[int, ...]:
        out = []
        for (kind, k), (node, f) in zip(self.next_from[t], self.features[t + 1]):
            out.append(int(f[action]) if kind == "action" else state[k])
        if self.knap:
            used = self._bucket_floor(state[-1]) + float(self.knap_cost[self.steps[t]][action])
            out.append(self._bucket(used))
        return tuple(out)

    def _allowed_in_state(self, t: int, state: tuple[int, ...]) -> np.ndarray | None:
        mask = None
        lead = self.leader[t]
        if lead >= 0:
            for j, ((node, _), v) in enumerate(zip(self.features[t], state)):
                if node == lead:
                    rep = self._rep(t, j, v)
                    mask = np.flatnonzero(self.ratio_idx[self.steps[t]] == self.ratio_idx[lead][rep])
        if self.knap:
            mask = self._meet(mask, self._knap_mask(t, self._bucket_floor(state[-1])))
        return mask

    def _state(self, t: int, idx: np.ndarray, used: float | None = None) -> tuple[int, ...]:
        base = tuple(int(f[idx[node]]) for node, f in self.features[t])
        if not self.knap:
            return base
        if used is None:
            used = float(sum(self.knap_cost[i][idx[i]] for i in self.steps[:t]))
        return base + (self._bucket(used),)

    def _allowed(self, t: int, idx: np.ndarray, used: float | None = None) -> np.ndarray | None:
        lead = self.leader[t]
        mask = None
        if lead >= 0:
            i = self.steps[t]
            mask = np.flatnonzero(self.ratio_idx[i] == self.ratio_idx[lead][idx[lead]])
        if self.knap:
            if used is None:
                used = float(sum(self.knap_cost[i][idx[i]] for i in self.steps[:t]))
            knap = self._knap_mask(t, used)
            both = self._meet(mask, knap)
            mask = both if both is not None and len(both) else mask
        return mask

    def _successors(self, t: int, state: tuple[int, ...], n: int) -> dict[tuple[int, ...], np.ndarray]:
        """Actions at (t, state) grouped by the state they lead to (computed once per (t, state))."""
        key = (t, state)
        hit = self._succ_cache.get(key)
        if hit is not None:
            return hit
        if self.knap:
            groups: dict[tuple[int, ...], list[int]] = {}
            for a in range(n):
                groups.setdefault(self._next_state(t, state, a), []).append(a)
            out = {k: np.array(v) for k, v in groups.items()}
        else:
            out = {self._next_state(t, state, rep): acts for rep, acts in self._action_classes(t, n)}
        self._succ_cache[key] = out
        return out

    def _action_classes(self, t: int, n: int) -> list[tuple[int, np.ndarray]]:
        """The actions at step ``t`` grouped by the feature value they give the next state: (first, actions)."""
        hit = self._classes_cache.get(t)
        if hit is None:
            f = dict(self.features[t + 1])
            cur = self.steps[t]
            classes = f[cur] if cur in f else np.zeros(n, dtype=np.int64)
            hit = [(int(acts[0]), acts) for acts in (np.flatnonzero(classes == c) for c in np.unique(classes))]
            self._classes_cache[t] = hit
        return hit

    def _step_costs(self, idx: np.ndarray) -> np.ndarray:
        """Additive cost of each step of the episode ``idx`` (zeros without tables)."""
        out = np.zeros(len(self.steps))
        if self.unary is None:
            return out
        for t, i in enumerate(self.steps):
            a = idx[i]
            c = self.unary[i][a]
            for s, m in self.pairs_into[i]:
                c += m[idx[s], a]
            out[t] = c
        return out

    def _default_scale(self) -> float:
        """The default plan's additive primary cost (rewards are divided by it)."""
        add = self.problem.additive
        if add is None:
            return 1.0
        d = self.space.default_indices()[None, :]
        kind = self.problem.objective.primary
        total = {"latency": add.latency, "memory": add.memory_term, "accuracy": add.accuracy_term}[kind](d)[0]
        return abs(float(total)) if abs(total) > 1e-12 else 1.0

    def _optimistic_rest(self) -> np.ndarray:
        """For each step, a lower bound of the cost of all later steps (every pair at its cheapest row)."""
        n = len(self.steps)
        self._base: list[np.ndarray] = []
        self._pairs_out: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {i: [] for i in self.steps}
        if self.unary is None:
            self._low = np.zeros(n)
            self._suffix_low = np.zeros(n + 1)
            return np.zeros(n)
        for t, i in enumerate(self.steps):
            base = np.asarray(self.unary[i], dtype=float).copy()
            for s_node, m in self.pairs_into[i]:
                mins = m.min(axis=0)
                base += mins
                self._pairs_out[s_node].append((t, m, mins))
            self._base.append(base)
        self._low = np.array([float(b.min()) for b in self._base])
        self._suffix_low = np.concatenate([np.cumsum(self._low[::-1])[::-1], [0.0]])
        return self._suffix_low[1:].copy()

    def _row(self, t: int, state: tuple[int, ...]) -> np.ndarray:
        """The Q row of ``state`` at step ``t``, created on first use (see ``init``)."""
        row = self.q[t].get(state)
        if row is not None:
            return row
        i = self.steps[t]
        n = int(self.space.sizes[i])
        if self.init == "zero" or self.unary is None:
            row = np.zeros(n)
        elif self.init in ("bound", "anchored") and self.state_kind == "frontier":
            row = -self._cost_row(t, state)
            if t + 1 < len(self.steps):
                for nxt, acts in self._successors(t, state, n).items():
                    row[acts] -= self._estimate(t + 1, nxt)
            row = row / self.scale
        else:
            row = -(self._cost_row(t, state) + self.rest[t]) / self.scale
        self.q[t][state] = row
        return row

    def _knap_penalty(self, t: int, bucket: int) -> float:
        """How much the bound of steps t.. must rise because the accuracy budget left (at most what the
        bucket's floor leaves) cannot pay for every step's cheapest action: the savings of the cheapest
        actions over the cheapest free ones, bought greedily by saving per point (a fractional knapsack,
        an upper bound on the savings, so the bound stays admissible)."""
        key = (t, bucket)
        hit = self._knap_penalty_cache.get(key)
        if hit is not None:
            return hit
        room = max(0.0, self.knap_budget - self._bucket_floor(bucket))
        items = []
        full = 0.0
        for k in range(t, len(self.steps)):
            base = self._base[k]
            cost = self.knap_cost[self.steps[k]]
            free = cost <= 1e-12
            if not free.any():
                continue
            best_free = float(base[free].min())
            saving = best_free - base
            gain = float(saving.max())
            if gain <= 1e-12:
                continue
            paid = cost > 1e-12
            full += gain
            items.append((float((saving[paid] / cost[paid]).max()), gain))
        bought, left = 0.0, room
        for ratio, gain in sorted(items, reverse=True):
            if left <= 0:
                break
            take = min(gain, ratio * left)
            bought += take
            left -= take / ratio
        pen = max(0.0, full - bought)
        self._knap_penalty_cache[key] = pen
        return pen

    def _estimate(self, t: int, state: tuple[int, ...]) -> float:
        """Estimated cost of steps t.. from ``state``: the admissible bound, plus (anchored init) how much
        the anchor episode's real cost-to-go exceeded its bound at the same step."""
        b = self._bound(t, state)
        if self.knap:
            b += self._knap_penalty(t, state[-1])
        if self.init == "anchored" and self._anchor is not None:
            b += self.anchor_weight * self._anchor[1][t]
        return b

    def _bound(self, t: int, state: tuple[int, ...]) -> float:
        """Admissible bound of the cost of steps t.. given the frontier ``state`` at t: each later step at
        its cheapest action, its pair terms with frontier nodes at their known rows and the others at
        their cheapest rows."""
        key = (t, state)
        hit = self._bound_cache.get(key)
        if hit is not None:
            return hit
        total = float(self._suffix_low[t])
        adjust: dict[int, np.ndarray] = {}
        for j, ((node, _), v) in enumerate(zip(self.features[t], state)):
            rep = self._rep(t, j, v)
            for k, m, mins in self._pairs_out[node]:
                if k < t:
                    continue
                extra = m[rep] - mins
                adjust[k] = adjust[k] + extra if k in adjust else extra
        for k, extra in adjust.items():
            total += float((self._base[k] + extra).min()) - self._low[k]
        self._bound_cache[key] = total
        return total

    def _cost_row(self, t: int, state: tuple[int, ...]) -> np.ndarray:
        """Additive cost of every action at step ``t`` in ``state`` (exact for frontier states; pairs with
        nodes outside the state at their cheapest row)."""
        key = (t, state)
        hit = self._cost_cache.get(key)
        if hit is not None:
            return hit
        i = self.steps[t]
        cost = np.asarray(self.unary[i], dtype=float).copy()
        fixed = {node: (f, v) for (node, f), v in zip(self.features[t], state)}
        for s, m in self.pairs_into[i]:
            if s in fixed:
                f, v = fixed[s]
                ok = f == v
                cost += m[ok].min(axis=0) if ok.any() else m.min(axis=0)
            else:
                cost += m.min(axis=0)
        self._cost_cache[key] = cost
        return cost

    def _backup(self, t: int, state: tuple[int, ...]) -> None:
        """Full Bellman backup of every action at (t, state) from the additive model (Dyna / RTDP)."""
        row = self._row(t, state)
        new = -self._cost_row(t, state) / self.scale
        if t + 1 < len(self.steps):
            for nxt, acts in self._successors(t, state, len(row)).items():
                nrow = self._row(t + 1, nxt)
                allowed = self._allowed_in_state(t + 1, nxt)
                v = float(nrow[allowed].max() if allowed is not None and len(allowed) else nrow.max())
                new[acts] += self.gamma * v
        else:
            corr = self.corr.get(state)
            if corr is not None:
                new += corr
        if self.knap:
            allowed = self._allowed_in_state(t, state)
            if allowed is not None and len(allowed):
                masked = np.full(len(new), -1e9)
                masked[allowed] = new[allowed]
                new = masked
        row[:] = new

    # ------------------------------------------------------------------ acting
    def epsilon(self, episode: int | None = None) -> float:
        """Exploration rate at ``episode`` (default: the next one) under the trial budget."""
        e = self.episodes if episode is None else episode
        n = max(1, self.problem.n_trials)
        start = self.explore_fraction * n
        if e < start:
            return 1.0
        frac = min(1.0, (e - start) / max(1.0, n - start))
        if self.schedule == "qsdnn":  # 0.9, 0.8, ..., 0.1 in equal segments
            return max(self.epsilon_min, round(0.9 - 0.1 * int(frac * 9), 1))
        return max(self.epsilon_min, self.epsilon_start * (1.0 - frac))

    def _episode(self, eps: float) -> np.ndarray:
        sp = self.space
        idx = sp.default_indices()
        T = len(self.steps)
        if self.explore == "steps" and eps > 0 and T:
            # eps * T expected deviations, at least one: a local move around the greedy policy
            k = max(1, int(self.rng.binomial(T, eps)))
            deviate = set(self.rng.choice(T, size=min(k, T), replace=False).tolist())
        else:
            deviate = None
        used = 0.0
        for t, i in enumerate(self.steps):
            allowed = self._allowed(t, idx, used)
            explore = (t in deviate) if deviate is not None else (eps > 0 and self.rng.random() < eps)
            if explore and self.temperature > 0:  # Boltzmann over the row: near-best actions first
                row = self._row(t, self._state(t, idx, used))
                cand = allowed if allowed is not None else np.arange(len(row))
                z = (row[cand] - row[cand].max()) / self.temperature
                p = np.exp(z)
                a = int(self.rng.choice(cand, p=p / p.sum()))
            elif explore:
                a = int(self.rng.choice(allowed)) if allowed is not None else int(self.rng.integers(sp.sizes[i]))
            else:
                row = self._row(t, self._state(t, idx, used))
                cand = allowed if allowed is not None else np.arange(len(row))
                vals = row[cand]
                ties = cand[np.flatnonzero(vals >= vals.max() - 1e-12)]
                a = int(ties[0] if len(ties) == 1 else self.rng.choice(ties))
            idx[i] = a
            if self.knap:
                used += float(self.knap_cost[i][a])
        return sp.complete(idx)

    def ask(self, n: int = 1) -> list[Candidate]:
        """``n`` episodes generated with the current table: epsilon-greedy, except that the first of a
        batch is greedy once exploration is below 1 (so the best plan tracks the greedy policy) and, with
        ``polish``, the second is the best plan so far polished by :meth:`polish_indices` when that gives
        a plan not tried before."""
        out = []
        for k in range(n):
            if k == 1 and self.polish and self.best_row is not None:
                plan = self.polish_indices(self.best_row[0])
                key = plan.tobytes()
                if key not in self._polished and not np.array_equal(plan, self.best_row[0]):
                    self._polished.add(key)
                    out.append(self._candidate(plan))
                    continue
            eps = self.epsilon(self.episodes + k)
            out.append(self._candidate(self._episode(0.0 if k == 0 and eps < 1.0 else eps)))
        return out

    def polish_indices(self, idx: np.ndarray, passes: int = 3) -> np.ndarray:
        """The best of ``idx`` and its whole-graph relayouts (every node moved to its cheapest option in one
        layout, precision and prune ratio kept), each improved by iterated conditional modes on the additive
        tables: every free node in turn takes its cheapest option given all the others (its prune ratio
        kept, within the accuracy knapsack), for up to ``passes`` sweeps. Single-node moves settle the
        near-ties that learned values can leave on the wrong side; the relayouts are the coherent moves
        that single nodes cannot make through the conversion costs on both sides."""
        idx = np.array(idx, copy=True)
        if self.unary is None:
            return idx
        starts = [idx] + [self.space.relayout(idx, layout, self.unary) for layout in self.space.config.layouts]
        best, best_cost = idx, float(self._step_costs(idx).sum())
        for start in starts:
            cand = self._icm(start, passes)
            if self.knap and self._used(cand)[-1] > self.knap_budget + 1e-9:
                continue
            cost = float(self._step_costs(cand).sum())
            if cost < best_cost - 1e-12 * max(1.0, abs(self.scale)):
                best, best_cost = cand, cost
        return best

    def _icm(self, idx: np.ndarray, passes: int) -> np.ndarray:
        idx = np.array(idx, copy=True)
        used = float(self._used(idx)[-1]) if self.knap else 0.0
        for _ in range(passes):
            moved = False
            for i in self.steps:
                cur = int(idx[i])
                cand = np.flatnonzero(self.ratio_idx[i] == self.ratio_idx[i][cur])
                if self.knap:
                    room = self.knap_budget - (used - self.knap_cost[i][cur]) + 1e-9
                    cand = cand[self.knap_cost[i][cand] <= room]
                    if not len(cand):  # a start already over the budget: leave this node as it is
                        continue
                cost = np.asarray(self.unary[i], dtype=float)[cand].copy()
                for src, m in self.pairs_into[i]:
                    cost += m[idx[src], cand]
                for dst, m in self.pairs_out[i]:
                    cost += m[cand, idx[dst]]
                k = int(np.argmin(cost))
                here = np.flatnonzero(cand == cur)
                if len(here) and cost[k] < cost[here[0]] - 1e-12 * max(1.0, abs(self.scale)):
                    if self.knap:
                        used += float(self.knap_cost[i][cand[k]] - self.knap_cost[i][cur])
                    idx[i] = int(cand[k])
                    moved = True
            if not moved:
                break
        return self.space.complete(idx)

    # ------------------------------------------------------------------ learning
    def _rewards(self, idx: np.ndarray, value: float) -> np.ndarray:
        r = np.zeros(len(self.steps))
        if not len(r):
            return r
        if self.reward_kind == "step":
            costs = self._step_costs(idx)
            r[:] = -costs / self.scale
            r[-1] += -(value - self.constant - costs.sum()) / self.scale
        else:
            r[-1] = -value / self.scale
        return r

    def _update(self, idx: np.ndarray, rewards: np.ndarray) -> None:
        """One backward pass along the episode ``idx``: model backups (planning) or Q-learning updates."""
        used = self._used(idx) if self.knap else [None] * (len(self.steps) + 1)
        if self.planning:
            last = len(self.steps) - 1
            if last < 0:
                return
            s_last = self._state(last, idx, used[last])
            a = idx[self.steps[last]]
            corr = self.corr.setdefault(s_last, np.zeros(int(self.space.sizes[self.steps[last]])))
            target = rewards[last] + self._cost_row(last, s_last)[a] / self.scale
            corr[a] += self.alpha * (target - corr[a])
            for t in range(last, -1, -1):
                self._backup(t, self._state(t, idx, used[t]))
            return
        nxt = 0.0
        last = len(self.steps) - 1
        for t in range(last, -1, -1):
            a = idx[self.steps[t]]
            row = self._row(t, self._state(t, idx, used[t]))
            target = rewards[t] + (self.gamma * nxt if t < last else 0.0)
            row[a] += self.alpha * (target - row[a])
            allowed = self._allowed(t, idx, used[t])
            nxt = float(row[allowed].max() if allowed is not None else row.max())

    def tell(self, candidates: Sequence[Candidate], costs: Sequence[Costs]) -> None:
        """Learn from the evaluated episodes, then replay past ones and the best one."""
        super().tell(candidates, costs)
        new_idx, new_rew = [], []
        for cand, cost in zip(candidates, costs):
            r = self._rewards(cand.indices, cost.value)
            new_idx.append(cand.indices)
            new_rew.append(r)
            self._update(cand.indices, r)
            if cost.value < self.best_value:
                self.best_row = (cand.indices.copy(), r)
                self.best_value = cost.value
        self.episodes += len(candidates)
        if candidates:
            self._adapt_multipliers(costs[0])
        if new_idx:
            self.buffer_idx = np.concatenate([self.buffer_idx, np.stack(new_idx)])[-self.buffer_size:]
            self.buffer_rew = np.concatenate([self.buffer_rew, np.stack(new_rew)])[-self.buffer_size:]
        if self.replay and len(self.buffer_idx):
            for k in self.rng.integers(0, len(self.buffer_idx), size=self.replay):
                self._update(self.buffer_idx[k], self.buffer_rew[k])
        if self.best_row is not None:
            self._update(*self.best_row)

    @property
    def n_states(self) -> int:
        """Number of Q rows created so far."""
        return sum(len(q) for q in self.q)

    # ------------------------------------------------------------------ persistence
    def _settings(self) -> dict:
        return {"format": _FORMAT, "signature": self.space.signature, "objective": self.problem.objective.primary,
                "state": self.state_kind, "reward": self.reward_kind, "init": self._init_kind,
                "knapsack": self.knap}

    def save(self) -> None:
        """Write the Q-table, the experience buffer and the episode count to ``table_path`` (atomically)."""
        if self.table_path is None:
            return
        self.table_path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for t, rows in enumerate(self.q):
            width = len(self.features[t]) + (1 if self.knap else 0)
            keys = np.array(list(rows), dtype=np.int64).reshape(len(rows), width)
            arrays[f"k{t}"] = keys
            arrays[f"q{t}"] = np.stack(list(rows.values())) if rows else np.zeros((0, int(self.space.sizes[self.steps[t]])))
        meta = {**self._settings(), "episodes": self.episodes, "scale": self.scale, "best_value": float(self.best_value),
                "multipliers": self.multipliers}
        arrays.update(buffer_idx=self.buffer_idx, buffer_rew=self.buffer_rew, meta=np.array(json.dumps(meta)))
        if self.best_row is not None:
            arrays.update(best_idx=self.best_row[0], best_rew=self.best_row[1])
        tmp = self.table_path.with_name(self.table_path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(self.table_path)

    def _load(self, path: Path) -> None:
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(str(data["meta"]))
        except Exception as exc:  # a truncated or foreign file
            raise StrategyError(f"{path}: not a readable Q-table ({type(exc).__name__}); delete it to start afresh") \
                from None
        mine = self._settings()
        diff = [k for k in mine if meta.get(k) != mine[k]]
        if diff:
            raise StrategyError(f"{path}: the Q-table was saved for another search ({', '.join(diff)} differ); "
                                "use another output directory or delete the file")
        if meta.get("multipliers") and meta["multipliers"] != self.multipliers:
            self.multipliers = {k: float(v) for k, v in meta["multipliers"].items()}
            self._apply_weights()
        for t in range(len(self.steps)):
            keys, rows = data[f"k{t}"], data[f"q{t}"]
            self.q[t] = {tuple(int(x) for x in k): np.array(r, dtype=float) for k, r in zip(keys, rows)}
        self.buffer_idx = np.array(data["buffer_idx"])
        self.buffer_rew = np.array(data["buffer_rew"])
        self.episodes = int(meta["episodes"])
        self.scale = float(meta["scale"])
        if "best_idx" in data:
            self.best_row = (np.array(data["best_idx"]), np.array(data["best_rew"]))
            self.best_value = float(meta.get("best_value", np.inf))
        self.resumed = True
        self.resumed_from = (f"Q-table {path} ({self.episodes} earlier episodes; delete it, or use another "
                             "output directory, to start afresh)")


register_strategy("qlearning", QLearning)
