"""Errors for bad input. The CLI prints their message as one line and exits non-zero, without a traceback.

Warnings for input a prediction had to fall back on (:class:`FeatureWarning`) are printed by the CLI as one line.
"""


class PerfPredictError(Exception):
    """Base class of every error caused by user input (files, flags, budgets)."""


class GraphError(PerfPredictError):
    """An ONNX file that cannot be loaded: malformed, truncated, an unsupported op or opset."""


class PlanError(PerfPredictError):
    """A plan that is illegal for its graph (unknown node, primitive, layout, precision or prune ratio)."""


class BoardError(PerfPredictError):
    """A board.json / DeviceSpec that is malformed or cannot be read."""


class DatasetError(PerfPredictError):
    """A measurement store that is unreadable or of a newer schema, or an invalid record."""


class FeatureError(PerfPredictError):
    """Inputs that cannot be featurised (e.g. a plan naming nodes the graph lacks, a node or graph description that
    is not one)."""


class MeasurementError(PerfPredictError):
    """A measurement that could not be taken (bad arguments, a failed workload subprocess)."""


class TransferError(PerfPredictError):
    """Bad input to a transfer: missing device features, too few measurements, unknown devices."""


class FeatureWarning(UserWarning):
    """An op, primitive or device fact the featuriser does not know (or the predictor never saw in training) was
    mapped to a fallback."""
