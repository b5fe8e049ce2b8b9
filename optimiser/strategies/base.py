"""The one ask/tell interface every search strategy implements, and the registry of strategies by name.

A strategy proposes candidate plans (``ask(n)``: a batch, so the predictor is called batched), is told
their costs (``tell``), and keeps the best plan seen (``best``). The search loop owns evaluation; a
strategy sees only the :class:`Problem`: the space, the objective, and, when the predictor is additive
(a :class:`perfpredict.predictor.NodeCostModel`), its cost tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from perfpredict.errors import PerfPredictError
from perfpredict.plan import Plan

from optimiser.objectives import AdditiveCosts, Costs, Evaluator, Objective
from optimiser.space import SearchSpace

__all__ = ["Candidate", "Problem", "Strategy", "BaseStrategy", "register_strategy", "make_strategy",
           "strategy_names", "StrategyError"]


class StrategyError(PerfPredictError):
    """A strategy that cannot run with the given problem or options (unknown name, missing additive model...)."""


@dataclass(frozen=True, eq=False)
class Candidate:
    """A proposed plan: a trial number, the option index of every node, and the strategy's own handle."""

    number: int
    indices: np.ndarray
    space: SearchSpace = field(repr=False)
    handle: Any = field(default=None, repr=False)

    @property
    def plan(self) -> Plan:
        """The plan these indices encode."""
        return self.space.decode(self.indices, name=f"trial-{self.number}")


@dataclass
class Problem:
    """What a strategy searches: the space, the objective, the additive tables (when the predictor has
    them), the evaluator (for strategies that verify their own answer, e.g. the exact solver's memory
    sweep), the trial budget, a seed, and where to keep state (Q-table, Optuna study)."""

    space: SearchSpace
    objective: Objective
    evaluator: Evaluator | None = None
    additive: AdditiveCosts | None = None
    additive_is_exact: bool = False
    n_trials: int = 300
    seed: int = 0
    workdir: Path | None = None
    storage: str | None = None
    study_name: str | None = None


@runtime_checkable
class Strategy(Protocol):
    """Ask/tell search over a :class:`Problem`."""

    name: str

    def ask(self, n: int = 1) -> list[Candidate]:
        """Up to ``n`` new candidates (fewer, or none, when the strategy is finished)."""
        ...

    def tell(self, candidates: Sequence[Candidate], costs: Sequence[Costs]) -> None:
        """Report the costs of candidates returned by :meth:`ask`."""
        ...

    @property
    def best(self) -> tuple[Candidate, Costs] | None:
        """The best candidate told so far (feasible first, then least violation) and its costs."""
        ...

    @property
    def finished(self) -> bool:
        """True when asking more would not help (e.g. the exact solver after its answer)."""
        ...

    def save(self) -> None:
        """Persist resumable state (a no-op for stateless strategies)."""
        ...


class BaseStrategy:
    """Shared bookkeeping: trial numbering, the best candidate, a seeded RNG."""

    name = "base"

    def __init__(self, problem: Problem):
        self.problem = problem
        self.space = problem.space
        self.rng = np.random.default_rng(problem.seed)
        self._number = 0
        self._best: tuple[Candidate, Costs] | None = None
        self.told = 0
        self.resumed_from: str | None = None
        """What an earlier, interrupted or finished search left that this one goes on from (None: a fresh
        search); the run's report names it."""

    def _candidate(self, indices: np.ndarray, handle: Any = None) -> Candidate:
        c = Candidate(self._number, np.asarray(indices, dtype=np.int64), self.space, handle)
        self._number += 1
        return c

    def ask(self, n: int = 1) -> list[Candidate]:  # pragma: no cover - abstract
        raise NotImplementedError

    def tell(self, candidates: Sequence[Candidate], costs: Sequence[Costs]) -> None:
        """Track the best candidate; subclasses extend this to learn."""
        for cand, cost in zip(candidates, costs):
            self.told += 1
            if self._best is None or cost.rank_key() < self._best[1].rank_key():
                self._best = (cand, cost)

    @property
    def best(self) -> tuple[Candidate, Costs] | None:
        return self._best

    @property
    def finished(self) -> bool:
        return False

    def save(self) -> None:
        """Nothing to persist by default."""


_STRATEGIES: dict[str, Callable[..., BaseStrategy]] = {}


def register_strategy(name: str, factory: Callable[..., BaseStrategy]) -> None:
    """Register a strategy factory ``factory(problem, **options)`` under ``name``."""
    _STRATEGIES[name] = factory


def strategy_names() -> list[str]:
    """Registered strategy names."""
    _load_builtin()
    return sorted(_STRATEGIES)


def make_strategy(name: str, problem: Problem, **options: Any) -> BaseStrategy:
    """Build the strategy registered as ``name`` for ``problem``."""
    _load_builtin()
    if name not in _STRATEGIES:
        raise StrategyError(f"unknown strategy '{name}'; accepted: {', '.join(sorted(_STRATEGIES))}")
    return _STRATEGIES[name](problem, **options)


def _load_builtin() -> None:
    import optimiser.strategies  # noqa: F401  (registers the built-in strategies)
