"""Search strategies behind one ask/tell interface; importing this package registers the built-in ones:
"qlearning" (QS-DNN), "tpe" and "nsga2" (Optuna), "exact" (ILP with HiGHS) and "random"."""

from optimiser.strategies.base import (BaseStrategy, Candidate, Problem, Strategy, StrategyError, make_strategy,
                                       register_strategy, strategy_names)
from optimiser.strategies import exact, optuna_search, qlearning, random_search  # noqa: F401  (registration)

__all__ = ["BaseStrategy", "Candidate", "Problem", "Strategy", "StrategyError", "make_strategy",
           "register_strategy", "strategy_names"]
