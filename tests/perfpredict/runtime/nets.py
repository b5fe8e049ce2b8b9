"""Small hand-built ONNX networks for runtime tests (random weights, static shapes)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from perfpredict.graph import Graph, load_onnx


def _conv(name: str, x: str, y: str, cin: int, cout: int, k: int, rng: np.random.Generator, *, groups: int = 1,
          pad: int | None = None, inits: list) -> onnx.NodeProto:
    w = (rng.standard_normal((cout, cin // groups, k, k)) / np.sqrt(cin // groups * k * k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    p = k // 2 if pad is None else pad
    return helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, kernel_shape=[k, k],
                            pads=[p] * 4, group=groups)


def residual_se_net(seed: int = 0, hw: int = 12) -> onnx.ModelProto:
    """conv1-relu -> conv2-relu -> conv3 -> Add(residual) -> relu -> maxpool -> SE (gap, conv, relu, conv, sigmoid,
    Mul) -> depthwise conv -> relu -> conv4 (1x1) -> Flatten (6*6 pixels per channel) -> Gemm (output)."""
    rng = np.random.default_rng(seed)
    inits: list = []
    n = [
        _conv("conv1", "x", "c1", 3, 8, 3, rng, inits=inits), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _conv("conv2", "r1", "c2", 8, 8, 3, rng, inits=inits), helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        _conv("conv3", "r2", "c3", 8, 8, 3, rng, inits=inits),
        helper.make_node("Add", ["r1", "c3"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["r3"], name="relu3"),
        helper.make_node("MaxPool", ["r3"], ["m"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["m"], ["g"], name="gap"),
        _conv("se1", "g", "s1", 8, 4, 1, rng, inits=inits), helper.make_node("Relu", ["s1"], ["sr"], name="se_relu"),
        _conv("se2", "sr", "s2", 4, 8, 1, rng, inits=inits),
        helper.make_node("Sigmoid", ["s2"], ["sg"], name="se_gate"),
        helper.make_node("Mul", ["m", "sg"], ["se"], name="se_mul"),
        _conv("dw", "se", "d", 8, 8, 3, rng, groups=8, inits=inits), helper.make_node("Relu", ["d"], ["dr"], name="dw_relu"),
        _conv("conv4", "dr", "c4", 8, 6, 1, rng, inits=inits),
        helper.make_node("Flatten", ["c4"], ["f"], name="flatten", axis=1),
    ]
    feat = 6 * (hw // 2) ** 2
    inits += [numpy_helper.from_array((rng.standard_normal((10, feat)) / np.sqrt(feat)).astype(np.float32), "fc.w"),
              numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc.b")]
    n.append(helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1))
    graph = helper.make_graph(n, "residual_se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def residual_se_graph(seed: int = 0, hw: int = 12) -> Graph:
    """:func:`residual_se_net` loaded as a Graph."""
    return load_onnx(residual_se_net(seed, hw), name="residual_se")


def fire_net(seed: int = 0, hw: int = 16) -> onnx.ModelProto:
    """A squeezenet fire module twice over: conv-relu -> (squeeze 1x1-relu -> expand 1x1-relu and expand 3x3-relu ->
    channel Concat) x 2 -> conv 1x1 (output)."""
    rng = np.random.default_rng(seed)
    inits: list = []
    n = [_conv("stem", "x", "c0", 3, 16, 3, rng, inits=inits), helper.make_node("Relu", ["c0"], ["r0"], name="stem_relu")]
    x, cin = "r0", 16
    for f in (1, 2):
        n += [
            _conv(f"sq{f}", x, f"s{f}", cin, 8, 1, rng, inits=inits),
            helper.make_node("Relu", [f"s{f}"], [f"sr{f}"], name=f"sq{f}_relu"),
            _conv(f"e1_{f}", f"sr{f}", f"a{f}", 8, 16, 1, rng, inits=inits),
            helper.make_node("Relu", [f"a{f}"], [f"ar{f}"], name=f"e1_{f}_relu"),
            _conv(f"e3_{f}", f"sr{f}", f"b{f}", 8, 24, 3, rng, inits=inits),
            helper.make_node("Relu", [f"b{f}"], [f"br{f}"], name=f"e3_{f}_relu"),
            helper.make_node("Concat", [f"ar{f}", f"br{f}"], [f"cat{f}"], name=f"cat{f}", axis=1),
        ]
        x, cin = f"cat{f}", 40
    n.append(_conv("head", x, "y", cin, 10, 1, rng, inits=inits))
    graph = helper.make_graph(n, "fire", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fire_graph(seed: int = 0, hw: int = 16) -> Graph:
    """:func:`fire_net` loaded as a Graph."""
    return load_onnx(fire_net(seed, hw), name="fire")


def stem_net(seed: int = 0, hw: int = 32, stride: int = 2) -> onnx.ModelProto:
    """A classifier's stem: conv 3x3 (3 -> 32 channels, ``stride``) - relu -> maxpool 3x3 stride 2 (ceil mode) -> conv
    1x1 - relu -> conv 3x3 (output)."""
    rng = np.random.default_rng(seed)
    inits: list = []
    stem = _conv("stem", "x", "c0", 3, 32, 3, rng, inits=inits)
    stem.attribute.append(helper.make_attribute("strides", [stride, stride]))
    n = [stem, helper.make_node("Relu", ["c0"], ["r0"], name="stem_relu"),
         helper.make_node("MaxPool", ["r0"], ["m"], name="pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
         _conv("pw", "m", "c1", 32, 16, 1, rng, inits=inits), helper.make_node("Relu", ["c1"], ["r1"], name="pw_relu"),
         _conv("head", "r1", "y", 16, 8, 3, rng, inits=inits)]
    side = -(-(((hw + 2 - 3) // stride + 1) - 3) // 2) + 1  # the stem's output side, then the pool's (ceil mode)
    graph = helper.make_graph(n, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, side, side])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def stem_graph(seed: int = 0, hw: int = 32) -> Graph:
    """:func:`stem_net` loaded as a Graph."""
    return load_onnx(stem_net(seed, hw), name="stem")


def swish_se_net(seed: int = 0, hw: int = 16, channels: int = 32, batch: int = 1) -> onnx.ModelProto:
    """An efficientnet block's core, on ``batch`` images: conv 3x3 (3 -> 16) - swish -> conv 1x1 (16 -> ``channels``)
    - swish -> squeeze-excite (gap, conv, relu, conv, sigmoid, Mul) -> conv 1x1 (output, 16 channels)."""
    rng = np.random.default_rng(seed)
    inits: list = []

    def swish(x: str, y: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Sigmoid", [x], [f"{y}.s"], name=f"{y}_sigmoid"),
                helper.make_node("Mul", [x, f"{y}.s"], [y], name=f"{y}_mul")]

    n = [_conv("conv1", "x", "c1", 3, 16, 3, rng, inits=inits), *swish("c1", "a1"),
         _conv("conv2", "a1", "c2", 16, channels, 1, rng, inits=inits), *swish("c2", "a2"),
         helper.make_node("GlobalAveragePool", ["a2"], ["g"], name="gap"),
         _conv("se1", "g", "s1", channels, 8, 1, rng, inits=inits),
         helper.make_node("Relu", ["s1"], ["sr"], name="se_relu"),
         _conv("se2", "sr", "s2", 8, channels, 1, rng, inits=inits),
         helper.make_node("Sigmoid", ["s2"], ["sg"], name="se_gate"),
         helper.make_node("Mul", ["a2", "sg"], ["se"], name="se_mul"),
         _conv("conv3", "se", "y", channels, 16, 1, rng, inits=inits)]
    graph = helper.make_graph(n, "swish_se",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def swish_se_graph(seed: int = 0, hw: int = 16, channels: int = 32, batch: int = 1) -> Graph:
    """:func:`swish_se_net` loaded as a Graph."""
    return load_onnx(swish_se_net(seed, hw, channels, batch), name="swish_se")


def double_gate_graph(seed: int = 0, hw: int = 8) -> Graph:
    """conv-relu -> a gate (gap, conv, sigmoid) -> two gate products in a row, (a * g) * g -> conv 1x1 (output)."""
    rng = np.random.default_rng(seed)
    inits: list = []
    n = [_conv("c1", "x", "c", 3, 16, 3, rng, inits=inits), helper.make_node("Relu", ["c"], ["a"], name="relu"),
         helper.make_node("GlobalAveragePool", ["a"], ["p"], name="gap"),
         _conv("se", "p", "s", 16, 16, 1, rng, inits=inits), helper.make_node("Sigmoid", ["s"], ["g"], name="gate"),
         helper.make_node("Mul", ["a", "g"], ["m1"], name="mul1"),
         helper.make_node("Mul", ["m1", "g"], ["m2"], name="mul2"),
         _conv("c2", "m2", "y", 16, 8, 1, rng, inits=inits)]
    graph = helper.make_graph(n, "double_gate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, hw, hw])], inits)
    return load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), name="double_gate")


def blocks_fire_graph(seed: int = 0, hw: int = 16, batch: int = 1, tap: bool = False) -> Graph:
    """Fire modules whose channels fill whole blocks of 16: a stem (conv 3x3, 3 -> 16 channels - relu -> maxpool 3x3
    stride 2, ceil mode) -> (squeeze 1x1 -> expand 1x1 and expand 3x3 -> channel Concat, each conv with a relu) x 2
    (16 + 32 and 16 + 16 channels) -> maxpool 2x2 -> a head conv 1x1 of 10 channels (output ``y``) and a
    GlobalAveragePool -> conv 1x1 (output ``gy``); with ``tap``, the first concat is an output too."""
    rng = np.random.default_rng(seed)
    inits: list = []

    def conv_relu(name: str, x: str, cin: int, cout: int, k: int) -> list[onnx.NodeProto]:
        return [_conv(name, x, f"{name}.c", cin, cout, k, rng, inits=inits),
                helper.make_node("Relu", [f"{name}.c"], [name], name=f"{name}_relu")]

    n = [*conv_relu("stem", "x", 3, 16, 3),
         helper.make_node("MaxPool", ["stem"], ["m0"], name="pool0", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    x, cin = "m0", 16
    for f, (e1, e3) in ((1, (16, 32)), (2, (16, 16))):
        n += [*conv_relu(f"sq{f}", x, cin, 16, 1), *conv_relu(f"e1_{f}", f"sq{f}", 16, e1, 1),
              *conv_relu(f"e3_{f}", f"sq{f}", 16, e3, 3),
              helper.make_node("Concat", [f"e1_{f}", f"e3_{f}"], [f"cat{f}"], name=f"cat{f}", axis=1)]
        x, cin = f"cat{f}", e1 + e3
    n += [helper.make_node("MaxPool", [x], ["m2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
          _conv("head", "m2", "y", cin, 10, 1, rng, inits=inits),
          helper.make_node("GlobalAveragePool", ["m2"], ["g"], name="gap"),
          _conv("fc", "g", "gy", cin, 16, 1, rng, inits=inits)]
    side = -(-(hw - 3) // 2) + 1  # after the stem's pool (ceil mode)
    f = helper.make_tensor_value_info
    outputs = [f("y", TensorProto.FLOAT, [batch, 10, side // 2, side // 2]),
               f("gy", TensorProto.FLOAT, [batch, 16, 1, 1])]
    if tap:
        outputs.append(f("cat1", TensorProto.FLOAT, [batch, 48, side, side]))
    graph = helper.make_graph(n, "blocks_fire", [f("x", TensorProto.FLOAT, [batch, 3, hw, hw])], outputs, inits)
    return load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), name="blocks_fire")


def planar_stem_graph(seed: int = 0, hw: int = 32, dense: bool = False) -> Graph:
    """A stem with no pool after it: conv 3x3 (3 -> 16 channels, stride 2) - relu -> a depthwise conv 3x3 (stride 2)
    - relu and a conv 1x1 (16 -> 32) - relu, or with ``dense`` a conv 3x3 (16 -> 32, stride 2) - relu -> a head conv
    1x1 of 8 channels."""
    rng = np.random.default_rng(seed)
    inits: list = []
    stem = _conv("stem", "x", "c0", 3, 16, 3, rng, inits=inits)
    stem.attribute.append(helper.make_attribute("strides", [2, 2]))
    n = [stem, helper.make_node("Relu", ["c0"], ["r0"], name="stem_relu")]
    if dense:
        n += [_conv("conv", "r0", "c2", 16, 32, 3, rng, inits=inits)]
    else:
        n += [_conv("dw", "r0", "c1", 16, 16, 3, rng, groups=16, inits=inits),
              helper.make_node("Relu", ["c1"], ["r1"], name="dw_relu"),
              _conv("pw", "r1", "c2", 16, 32, 1, rng, inits=inits)]
    n[-3 if not dense else -1].attribute.append(helper.make_attribute("strides", [2, 2]))
    n += [helper.make_node("Relu", ["c2"], ["r2"], name="relu2"), _conv("head", "r2", "y", 32, 8, 1, rng, inits=inits)]
    side = ((hw - 1) // 2) // 2 + 1
    graph = helper.make_graph(n, "planar_stem",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, side, side])], inits)
    return load_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), name="planar_stem")
