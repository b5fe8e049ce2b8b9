"""Optuna samplers behind the ask/tell interface: TPE ("tpe") and NSGA-II ("nsga2"), with constraints.

Each factorised variable of the space (a node's implementation, a prune group's ratio) is one
categorical parameter named after the node (``prune:<first member>`` for ratios), so any sampled trial
is a legal plan. Budgets are trial constraints (``Trial.set_constraint``: the relative violation of each
budget, <= 0 when met), which TPE and NSGA-II use to prefer feasible trials. With several objectives the study is multi-objective
(NSGA-II, or TPE's multi-objective mode) and the Pareto front is Optuna's best trials.

The study lives in Optuna storage: ``storage`` is any database URL Optuna accepts (e.g.
``sqlite:///runs/optuna.db``) or None for memory. The sampler works on an in-memory copy (a database
transaction per suggested parameter would make a search of a large model take minutes) and
:meth:`OptunaSearch.save` appends the finished trials to the stored study; the search loop saves at
every validation, at the end and on Ctrl-C. A study with the same name in the same storage is resumed:
its finished trials are loaded into the sampler and count towards ``best``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from optimiser.objectives import Costs
from optimiser.strategies.base import BaseStrategy, Candidate, Problem, StrategyError, register_strategy

__all__ = ["OptunaSearch", "default_study_name"]

def default_study_name(problem: Problem, sampler: str) -> str:
    """``<graph>-<space signature>-<sampler>-<objectives>``: the same search resumes the same study."""
    objs = "+".join(problem.objective.names)
    return f"{problem.space.graph.name}-{problem.space.signature}-{sampler}-{objs}"


class OptunaSearch(BaseStrategy):
    """An Optuna study driven with ask/tell. ``sampler`` is "tpe" or "nsga2"; extra keyword options go to
    the sampler (e.g. ``n_startup_trials``, ``multivariate`` for TPE; ``population_size`` for NSGA-II)."""

    def __init__(self, problem: Problem, sampler: str = "tpe", storage: str | None = None,
                 study_name: str | None = None, **sampler_options: Any):
        super().__init__(problem)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.name = sampler
        self.sampler_name = sampler
        obj = problem.objective
        c = obj.constraints
        self._constraint_names = [k for k, v in (("latency", c.latency_ms), ("memory", c.memory_bytes),
                                                 ("accuracy", c.accuracy_drop_pct)) if v is not None]
        if sampler == "tpe":
            opts = {"n_startup_trials": 10, "constant_liar": True, **sampler_options}
            samp = optuna.samplers.TPESampler(seed=problem.seed, **opts)
        elif sampler == "nsga2":
            samp = optuna.samplers.NSGAIISampler(seed=problem.seed, **sampler_options)
        else:
            raise StrategyError(f"unknown Optuna sampler '{sampler}'; accepted: tpe, nsga2")
        self.storage = storage if storage is not None else problem.storage
        self.study_name = study_name or problem.study_name or default_study_name(problem, sampler)
        directions = ["minimize"] * len(obj.names)
        self.persist = None
        if self.storage is not None:
            try:
                self.persist = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                                   directions=directions, load_if_exists=True)
            except ValueError as exc:  # e.g. a study of that name with other directions
                raise StrategyError(f"Optuna study '{self.study_name}': {exc}") from None
            except Exception as exc:  # storage URL errors come from SQLAlchemy / Optuna
                raise StrategyError(f"Optuna storage '{self.storage}' cannot be used: "
                                    f"{str(exc).splitlines()[0]}") from None
        self.study = optuna.create_study(study_name=self.study_name, sampler=samp, directions=directions)
        self._choices = {v.name: tuple(range(v.size)) for v in self.space.variables}
        self._synced = 0
        self.resumed_trials = self._resume()
        if self.resumed_trials:
            self.resumed_from = (f"Optuna study '{self.study_name}' in {self.storage}: its {self.resumed_trials} "
                                 "earlier trials guide the sampler and count towards the best plan")

    def _resume(self) -> int:
        from optuna.trial import TrialState

        if self.persist is None:
            return 0
        trials = [t for t in self.persist.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        self.study.add_trials(trials)
        self._synced = len(self.study.get_trials(deepcopy=False))
        done = 0
        for t in trials:
            if t.state != TrialState.COMPLETE or "latency_ms" not in t.user_attrs:
                continue
            try:
                idx = self.space.from_variables(t.params)
            except Exception:  # a trial of another space: ignore
                continue
            u = t.user_attrs
            cost = self.problem.objective.score(u["latency_ms"], u["peak_mem_bytes"], u["accuracy_drop_pct"])
            BaseStrategy.tell(self, [self._candidate(idx)], [cost])
            done += 1
        return done

    def ask(self, n: int = 1) -> list[Candidate]:
        """``n`` new trials (pending trials are handled by the sampler's constant liar)."""
        out = []
        for _ in range(n):
            trial = self.study.ask()
            values = {name: trial.suggest_categorical(name, ch) for name, ch in self._choices.items()}
            out.append(self._candidate(self.space.from_variables(values), handle=trial))
        return out

    def tell(self, candidates: Sequence[Candidate], costs: Sequence[Costs]) -> None:
        """Store each trial's costs and violations, then tell Optuna its objective value(s)."""
        super().tell(candidates, costs)
        for cand, cost in zip(candidates, costs):
            trial = cand.handle
            if trial is None:
                continue
            for name, v in zip(self._constraint_names, cost.violations):
                trial.set_constraint(name, float(v))
            trial.set_user_attr("latency_ms", cost.latency_ms)
            trial.set_user_attr("peak_mem_bytes", cost.peak_mem_bytes)
            trial.set_user_attr("accuracy_drop_pct", cost.accuracy_drop_pct)
            vals = [float(v) if np.isfinite(v) else 1e300 for v in cost.values]
            self.study.tell(trial, vals if len(vals) > 1 else vals[0])

    def save(self) -> None:
        """Append the trials finished since the last save to the persistent study (one transaction each)."""
        from optuna.trial import TrialState

        if self.persist is None:
            return
        trials = self.study.get_trials(deepcopy=False)
        done = len(trials)
        while done > self._synced and trials[done - 1].state == TrialState.RUNNING:
            done -= 1  # keep pending trials for the next save
        new = [t for t in trials[self._synced:done] if t.state == TrialState.COMPLETE]
        if new:
            self.persist.add_trials(new)
        self._synced = done


def _tpe(problem: Problem, **options: Any) -> OptunaSearch:
    return OptunaSearch(problem, "tpe", **options)


def _nsga2(problem: Problem, **options: Any) -> OptunaSearch:
    return OptunaSearch(problem, "nsga2", **options)


register_strategy("tpe", _tpe)
register_strategy("nsga2", _nsga2)
