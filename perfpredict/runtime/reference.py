"""Comparisons with ONNX Runtime, the reference the runtime's results are checked against.

:func:`ort_session` opens an ONNX file in ONNX Runtime's CPU provider (all graph optimisations on,
``threads`` intra-op threads, one inter-op thread); :func:`check_against_ort` runs a graph under a plan
and the same file in ONNX Runtime on the same input and returns the relative error of the outputs
(max |ours - ort| / max |ort|, the largest over the graph's outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfpredict.errors import GraphError
from perfpredict.graph import Graph
from perfpredict.plan import Plan
from perfpredict.runtime.calibration import max_rel_err


def ort_session(onnx_path: str | Path, threads: int | None = None):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An ONNX Runtime CPU session of ``onnx_path`` with ``threads`` intra-op threads (ORT's default if None)."""
    import onnxruntime as ort

    path = Path(onnx_path)
    if not path.is_file():
        raise GraphError(f"{path}: no such ONNX file")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_run(session, *xs: np.ndarray) -> list[np.ndarray]:  # noqa: ANN001 - onnxruntime.InferenceSession
    """Run ``session`` on the inputs (in the session's input order); every output as a numpy array."""
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(xs):
        raise GraphError(f"the ONNX model takes {len(names)} input(s), got {len(xs)}")
    feeds = {n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(names, xs)}
    return [np.asarray(o) for o in session.run(None, feeds)]


def check_against_ort(graph: Graph, plan: Plan | None, onnx_path: str | Path, x: np.ndarray | tuple[np.ndarray, ...],
                      *, threads: int | None = None) -> float:
    """Largest relative error between ``graph`` run under ``plan`` and ONNX Runtime on ``onnx_path``, for input ``x``."""
    from perfpredict.runtime.executor import build_executable

    xs = x if isinstance(x, tuple) else (x,)
    exe = build_executable(graph, plan, threads=threads)
    ours = exe.run(*xs)
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = ort_run(ort_session(onnx_path, threads), *xs)
    if len(ours) != len(theirs):
        raise GraphError(f"graph '{graph.name}' has {len(ours)} outputs but the ONNX model has {len(theirs)}")
    return max(max_rel_err(a, b) for a, b in zip(ours, theirs))
