"""ONNX export of every canonical model and sampled variants: op set, static graph, ORT parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from perfpredict import zoo
from perfpredict.zoo.spec import ModelSpec

SMALL = (1, 3, 64, 64)  # every family supports 64x64 (AlexNet needs >= 63)
TINY = {"vgg11": (1, 3, 32, 32)}  # keeps the canonical 4096-wide classifier but a 512-wide flatten
# Shape-computing ops must not appear; Identity would mean deduplicated (aliased) initialisers.
FORBIDDEN_OPS = {"Shape", "Gather", "Unsqueeze", "Constant", "ConstantOfShape", "Range", "Identity"}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_export(spec: ModelSpec, path: Path) -> None:
    zoo.export_onnx(spec, path, batch=spec.input_shape[0])
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    assert ops <= zoo.ALLOWED_OPS, f"{spec.name}: unexpected ops {sorted(ops - zoo.ALLOWED_OPS)}"
    assert not ops & FORBIDDEN_OPS, f"{spec.name}: {sorted(ops & FORBIDDEN_OPS)}"
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]

    x = torch.randn(spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = zoo.build(spec)(x).numpy()
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x.numpy()})
    atol = 1e-3 * float(np.abs(expected).max()) + 1e-6
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=atol, err_msg=spec.name)


@pytest.mark.parametrize("name", zoo.list_models())
def test_canonical_export(name: str, tmp_path: Path) -> None:
    _check_export(zoo.get_spec(name, TINY.get(name, SMALL)), tmp_path / f"{name}.onnx")


@pytest.mark.parametrize("family", zoo.list_families())
def test_variant_export(family: str, tmp_path: Path) -> None:
    for spec in zoo.sample_variants(family, 2, seed=5, resolutions=(64,)):
        _check_export(spec, tmp_path / f"{spec.name}.onnx")


def test_shufflenet_batch2_reshape_is_constant(tmp_path: Path) -> None:
    spec = zoo.sample_variants("shufflenet_v2", 1, seed=1, resolutions=(64,))[0].with_input_shape((2, 3, 64, 64))
    path = tmp_path / "shuffle.onnx"
    _check_export(spec, path)
    proto = onnx.load(str(path))
    initializers = {t.name for t in proto.graph.initializer}
    ops = [node.op_type for node in proto.graph.node]
    assert "Split" in ops and "Transpose" in ops
    for node in proto.graph.node:
        if node.op_type in ("Reshape", "Split"):
            assert all(name in initializers for name in node.input[1:]), node


def test_export_family_variants(tmp_path: Path) -> None:
    paths = zoo.export_family_variants("squeezenet", 2, seed=0, out_dir=tmp_path / "sq")
    specs = zoo.sample_variants("squeezenet", 2, seed=0)
    assert [p.name for p in paths] == [f"{s.name}.onnx" for s in specs]
    for path, spec in zip(paths, specs):
        dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
        assert tuple(dims) == spec.input_shape
        assert zoo.onnx_op_types(path) <= zoo.ALLOWED_OPS
