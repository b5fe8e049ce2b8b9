import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from perfpredict.errors import GraphError
from perfpredict.graph import SUPPORTED_OPS, load_onnx
from tests.conftest import make_conv_model


def test_load_folds_batchnorm_and_fixes_batch(tiny_onnx):
    g = load_onnx(tiny_onnx)
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    assert g.input_shape == (1, 3, 16, 16)
    conv = g.nodes[0]
    assert conv.attrs["kernel"] == (3, 3) and conv.attrs["pads"] == (1, 1, 1, 1)
    assert conv.macs == 8 * 16 * 16 * 3 * 9
    assert conv.param_count == 8 * 3 * 9 + 8
    assert conv.bytes_out == 8 * 16 * 16 * 4


def test_bn_folding_preserves_function(tiny_onnx):
    """Running the folded conv by hand equals ORT on the unfolded model."""
    import torch
    g = load_onnx(tiny_onnx)
    conv = g.nodes[0]
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    w, b = (g.initializers[p] for p in conv.params)
    y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=1)
    y = torch.relu(y).mean(dim=(2, 3))
    fc_w, fc_b = (g.initializers[p] for p in g.nodes[-1].params)
    ours = y.numpy() @ fc_w.T + fc_b
    ref = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.max(np.abs(ours - ref)) / np.max(np.abs(ref)) < 1e-4


def test_edges_in_topological_order(tiny_onnx):
    g = load_onnx(tiny_onnx)
    assert all(e.src < e.dst for e in g.edges)
    assert [n.name for n in g.consumers("conv")] == ["relu"]
    assert len(g.graph_id) == 16 and g.graph_id == load_onnx(tiny_onnx).graph_id


def test_depthwise_and_stride_attributes(tmp_path):
    g = load_onnx(make_conv_model(tmp_path / "dw.onnx", cin=8, cout=8, groups=8, stride=2, with_bn=False))
    conv = g.nodes[0]
    assert conv.attrs["groups"] == 8 and conv.attrs["stride"] == (2, 2)
    assert conv.out_shape == (1, 8, 8, 8)
    assert conv.macs == 8 * 8 * 8 * 1 * 9


def test_unsupported_op_names_op_node_and_list(tmp_path):
    node = helper.make_node("LRN", ["x"], ["y"], name="norm1", size=3)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "lrn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(GraphError, match=r"unsupported op 'LRN' at node 'norm1'; supported ops: Conv"):
        load_onnx(path)


def test_truncated_and_missing_files(tmp_path, tiny_onnx):
    data = open(tiny_onnx, "rb").read()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(GraphError, match="not a readable ONNX model|invalid ONNX|no nodes"):
        load_onnx(bad)
    with pytest.raises(GraphError, match="no such ONNX file"):
        load_onnx(tmp_path / "nope.onnx")


def test_only_the_batch_dimension_may_be_symbolic(tmp_path):
    def relu_model(dims):
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
        path = tmp_path / f"relu_{dims[2]}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
        return path

    assert load_onnx(relu_model(["N", 3, 8, 8]), batch=2).tensor_shapes["x"] == (2, 3, 8, 8)
    with pytest.raises(GraphError, match=r"^relu_H: input 'x' has a symbolic dimension 2 \('H'\); only the batch"):
        load_onnx(relu_model(["N", 3, "H", "W"]))


def test_opset_out_of_range(tmp_path):
    path = make_conv_model(tmp_path / "old.onnx", opset=9, with_bn=False)
    with pytest.raises(GraphError, match="opset 9 is not supported"):
        load_onnx(path)


def test_identity_and_dropout_removed(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Identity", ["a"], ["b"], name="id"),
             helper.make_node("Dropout", ["b"], ["y"], name="drop")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    g = load_onnx(path)
    assert [n.op for n in g.nodes] == ["Relu"] and g.nodes[0].outputs == ("y",) and g.outputs == ("y",)


def test_supported_ops_cover_the_issue_list():
    for op in ["Conv", "Gemm", "MatMul", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add", "Concat",
               "Split", "Slice", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape",
               "Transpose", "Pad", "Softmax", "Dropout", "Identity"]:
        assert op in SUPPORTED_OPS
