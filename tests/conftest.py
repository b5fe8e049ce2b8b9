"""Shared fixtures: small ONNX models built with onnx.helper, so tests do not depend on the zoo."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_conv_model(path, *, cin=3, cout=8, k=3, stride=1, pad=1, groups=1, hw=16, with_bn=True, opset=13,
                    seed=0) -> str:
    """Conv (+BN) -> Relu -> GlobalAveragePool -> Flatten -> Gemm, written to ``path``."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((10, cout)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[k, k], strides=[stride] * 2,
                              pads=[pad] * 4, group=groups)]
    last = "c"
    if with_bn:
        for nm, val in (("g", rng.uniform(0.5, 1.5, cout)), ("beta", rng.standard_normal(cout)),
                        ("mu", rng.standard_normal(cout)), ("var", rng.uniform(0.5, 2.0, cout))):
            inits.append(numpy_helper.from_array(val.astype(np.float32), nm))
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["bn"], name="bn"))
        last = "bn"
    nodes += [helper.make_node("Relu", [last], ["r"], name="relu"),
              helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    """The commands that time on this machine warn when it is busy (``perfpredict.measure.contention_note``); the
    tests check their output, not the load of the machine they run on, so the check reports a quiet machine
    (tests/perfpredict/test_measure.py and tests/cli/test_output.py test the check itself)."""
    import perfpredict.measure

    monkeypatch.setattr(perfpredict.measure, "contention_note", lambda threads=None, **kw: None)


@pytest.fixture
def tiny_onnx(tmp_path):
    """Path of a small Conv+BN+Relu+GAP+Gemm ONNX model."""
    return make_conv_model(tmp_path / "tiny.onnx")
