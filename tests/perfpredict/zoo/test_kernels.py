"""Kernel probes: every block kind exports to the zoo's ops at its size caps; layer campaigns only."""

from __future__ import annotations

import random
from collections import Counter

import onnx
import pytest

from perfpredict import zoo
from perfpredict.errors import PerfPredictError
from perfpredict.zoo import kernels
from perfpredict.zoo.spec import ModelSpec

_BLOCK_OPS = {
    "conv": {"Conv"}, "dwconv": {"Conv"}, "unary": {"HardSwish"}, "batchnorm": {"BatchNormalization"},
    "pool": {"MaxPool"}, "head": {"GlobalAveragePool", "Flatten", "Gemm"},
    "gate": {"GlobalAveragePool", "Sigmoid", "Mul"}, "concat": {"Concat"},
    "shuffle": {"Split", "Concat", "Reshape", "Transpose"}, "add": {"Add"},
}


def _spec(params: dict) -> ModelSpec:
    return ModelSpec(kernels.NAME, f"probe-{params['block']}", params, (1, 3, 224, 224))


@pytest.mark.parametrize("block", kernels.BLOCKS)
def test_every_block_exports_its_ops_and_no_shape_computation(block, tmp_path):
    params = {"block": block, "shrink": 8, "channels": 24, "kernel": 3, "stride": 2, "out": 40, "act": "hswish",
              "pool": "max3s2p1", "squeeze": 8, "gate": "sigmoid", "num_classes": 10}
    path = tmp_path / f"{block}.onnx"
    zoo.export_onnx(_spec(params), path)
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert set(ops) <= zoo.ALLOWED_OPS and "Shape" not in ops
    assert _BLOCK_OPS[block] <= set(ops), (block, ops)
    assert ops["AveragePool"] == 1 and ops["Conv"] >= 1  # the map size and the channels come first


def test_sampled_probes_are_deterministic_cover_every_block_and_respect_the_caps():
    a = zoo.sample_variants(kernels.NAME, 300, seed=3)
    assert [s.params for s in a] == [s.params for s in zoo.sample_variants(kernels.NAME, 300, seed=3)]
    assert {s.params["block"] for s in a} == set(kernels.BLOCKS)
    assert all(s.input_shape == (1, 3, 224, 224) for s in a)
    for s in a:
        p = s.params
        hw = (224 // p["shrink"]) ** 2
        assert kernels._block_macs(p) <= kernels.MAX_MACS and p["channels"] * hw <= kernels.MAX_ELEMENTS, p
    channels = [s.params["channels"] for s in a]
    assert min(channels) < 32 and max(channels) > 256  # log-uniform over the zoo's range
    assert any(c % 8 for c in channels)  # counts that pruning leaves, beside multiples of 8


def test_sampler_halves_the_wider_side_until_a_block_fits():
    rng = random.Random(0)
    for _ in range(2000):
        p = kernels.sample(rng)
        assert kernels._fits(p) or p["shrink"] >= 32, p


def test_probes_are_not_model_families_but_layer_campaigns_take_them():
    from perfpredict.profile import campaign_specs

    assert kernels.NAME not in zoo.list_families() and zoo.list_probe_families() == [kernels.NAME]
    assert zoo.get_family(kernels.NAME) is kernels.FAMILY
    with pytest.raises(PerfPredictError, match="unknown family kernels"):
        campaign_specs([kernels.NAME], 2, 0)  # a model campaign
    specs = campaign_specs([kernels.NAME], 2, 0, resolutions=(96, 128), probes=True)
    assert [s.family for s in specs] == [kernels.NAME] * 2 and specs[0].input_shape == (1, 3, 224, 224)
    assert kernels.NAME not in {s.family for s in campaign_specs(None, 0, 0, probes=True)}  # not by default


def test_layer_configs_drawn_from_probes_include_ops_that_only_one_model_family_has():
    from perfpredict.profile import collect_layer_configs

    specs = zoo.sample_variants(kernels.NAME, 40, seed=1)
    ops = {c.op for c in collect_layer_configs(specs, 500, 0)}
    assert {"Conv", "BatchNormalization", "Sigmoid", "Mul", "Reshape", "Transpose"} <= ops, ops
