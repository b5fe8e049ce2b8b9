"""perfpredict's optimiser: search per-layer deployment plans on predicted costs.

Public API (re-exported here):

* space: :class:`SearchSpace`, :class:`SpaceConfig`;
* objectives: :class:`Objective`, :class:`Constraints`, :class:`Costs`, :class:`Evaluator`,
  :class:`AdditiveCosts`, :func:`additive_costs`;
* strategies (one ask/tell interface, by name): :func:`make_strategy`, :func:`strategy_names`,
  :class:`Problem`, :class:`Candidate`, :class:`Strategy`, :func:`solve_exact`;
* the loop: :func:`run_search`, :class:`SearchConfig`, :class:`SearchResult`, :class:`RuntimeValidator`,
  :class:`LatencyCalibration`;
* accuracy: :class:`AccuracyMeter`, :func:`layer_sensitivity`, :class:`AdditiveAccuracy`,
  :func:`load_calibration`;
* Pareto: :func:`pareto_front`, :func:`hypervolume`;
* one call: :func:`optimise` with :class:`OptimiseOptions`, :func:`validate_on_device`,
  :func:`resolve_predictor`.
"""

from optimiser.accuracy import (AccuracyMeter, AdditiveAccuracy, CalibrationData, accuracy_tables,
                                layer_sensitivity, load_calibration, synthetic_calibration)
from optimiser.loop import LatencyCalibration, RuntimeValidator, SearchConfig, SearchResult, run_search
from optimiser.objectives import (OBJECTIVES, AdditiveCosts, Constraints, Costs, Evaluator, Objective,
                                  additive_costs)
from optimiser.pareto import hypervolume, pareto_front, pareto_mask
from optimiser.run import OptimiseOptions, optimise, resolve_predictor, validate_on_device
from optimiser.space import SearchSpace, SpaceConfig
from optimiser.strategies import Candidate, Problem, Strategy, make_strategy, strategy_names
from optimiser.strategies.exact import solve_exact

__all__ = [
    "OBJECTIVES", "AccuracyMeter", "AdditiveAccuracy", "AdditiveCosts", "CalibrationData", "Candidate",
    "Constraints", "Costs", "Evaluator", "LatencyCalibration", "Objective", "OptimiseOptions", "Problem",
    "RuntimeValidator", "SearchConfig", "SearchResult", "SearchSpace", "SpaceConfig", "Strategy",
    "accuracy_tables", "additive_costs", "hypervolume", "layer_sensitivity", "load_calibration", "make_strategy",
    "optimise", "pareto_front", "pareto_mask", "resolve_predictor", "run_search", "solve_exact",
    "strategy_names", "synthetic_calibration", "validate_on_device",
]
