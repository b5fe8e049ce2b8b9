"""The tiny workload of the profiling tests: squeezenet 1.1 at 32x32, a stand-in board, a quick protocol."""

from __future__ import annotations

from perfpredict.devices import load_example_board
from perfpredict.profile import Protocol
from perfpredict.zoo import get_spec

DEV = load_example_board("xeon_gold_6240")
TINY = Protocol(warmup=3, min_repeats=3, max_repeats=5, target_ci=0.05, time_cap_s=0.005, max_call_ms=200.0)


def tiny_spec():
    """Squeezenet 1.1 at 32x32: every campaign's model in these tests."""
    return get_spec("squeezenet1_1").with_input_shape((1, 3, 32, 32))
