"""ONNX export of zoo models with the legacy (TorchScript) exporter and a static, constant-free graph."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from perfpredict.zoo.registry import build, sample_variants
from perfpredict.zoo.spec import ModelSpec

ALLOWED_OPS: frozenset[str] = frozenset(
    {
        "Conv", "Gemm", "MatMul", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "Add",
        "Concat", "Split", "Slice", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten",
        "Reshape", "Transpose", "Pad", "Softmax", "Dropout", "Identity", "BatchNormalization",
    }
)  # fmt: skip
"""ONNX op types every zoo model is allowed to export to."""


def constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move every ``Constant`` node of the main graph into an initializer of the same name (in place)."""
    graph = model.graph
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type != "Constant":
            continue
        attr = node.attribute[0]
        if attr.name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
        else:
            tensor = numpy_helper.from_array(_constant_array(attr.name, onnx.helper.get_attribute_value(attr)))
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        del graph.node[index]
    return model


def _constant_array(attr_name: str, value: object) -> np.ndarray:
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if attr_name not in dtypes:
        raise ValueError(f"unsupported Constant attribute {attr_name!r}")
    return np.asarray(value, dtype=dtypes[attr_name])


def onnx_op_types(path: str | Path) -> set[str]:
    """Set of op types in the main graph of the ONNX file at ``path``."""
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def export_onnx(spec: ModelSpec, path: str | Path, opset: int = 17, batch: int = 1) -> Path:
    """Build ``spec`` and export it to ``path`` as a static-shape ONNX graph (batch ``batch``).

    Uses the legacy exporter with constant folding, then moves remaining Constant nodes into
    initializers and runs the ONNX checker. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build(spec)
    x = torch.zeros((batch, *spec.input_shape[1:]))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=["input"],
            output_names=["output"],
        )
    proto = onnx.load(str(path))
    if any(node.op_type == "Constant" for node in proto.graph.node):
        onnx.save(constants_to_initializers(proto), str(path))
    onnx.checker.check_model(str(path))
    return path


def export_family_variants(family: str, n: int, seed: int, out_dir: str | Path, opset: int = 17) -> list[Path]:
    """Sample ``n`` variants of ``family`` with ``seed`` and export each to ``out_dir/<name>.onnx``."""
    out_dir = Path(out_dir)
    return [export_onnx(spec, out_dir / f"{spec.name}.onnx", opset) for spec in sample_variants(family, n, seed)]
