"""The adapted predictor's batched path and the device it accepts."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.devices import load_device
from perfpredict.transfer import CalibratedPredictor, ScaleCalibrator, TransferError
from tests.perfpredict.transfer.stand_ins import PlanAwareSource


def test_adapted_predictor_batched_path_and_its_device():
    """The batched (template) path takes the thread count as the source's does (``evaluate`` passes it), and an
    adapted predictor refuses a machine that only shares its target's name, or another thread count."""
    facts = {"schema_version": 1, "name": "host", "kind": "cpu", "cpu_model": "CPU A", "cores": 2}
    board = load_device({**facts, "threads_used": 2})
    src = PlanAwareSource()
    cal = ScaleCalibrator().fit(np.array([[1.0], [2.0]]), np.array([3.0, 6.0]))
    adapted = CalibratedPredictor(src, "unused", board, [{"type": "board", "board": board.to_dict()}], cal)
    p = adapted.predict_plans("template", [None, None], board, 2)
    np.testing.assert_allclose(p.latency_ms, [6.0, 6.0])
    np.testing.assert_allclose(p.peak_mem_bytes, [10.0, 10.0])
    assert adapted.node_latencies("template", [None], board, 2).sum() == pytest.approx(6.0)
    assert set(src.threads_seen) == {2}
    twin = load_device({**facts, "cpu_model": "CPU B", "threads_used": 2})  # same name, another machine
    with pytest.raises(TransferError, match="device_id"):
        adapted.predict_plans("template", [None], twin)
    with pytest.raises(TransferError, match="at 2 threads, not 1"):
        adapted.predict_plans("template", [None], load_device({**facts, "threads_used": 1}))
