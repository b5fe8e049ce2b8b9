"""Mixed networks: every stage kind builds, runs and exports to the zoo's ops; model campaigns take them by name;
no leave-one-family-out split holds them out."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch

from perfpredict import zoo
from perfpredict.zoo import mixnet
from perfpredict.zoo.spec import ModelSpec

_STAGE_OPS = {
    "basic": {"Conv", "Add", "Relu"}, "bottleneck": {"Conv", "Add", "Relu"}, "mbconv": {"Conv", "Sigmoid", "Mul"},
    "fire": {"Conv", "Concat", "MaxPool"}, "dense": {"Concat", "BatchNormalization", "AveragePool"},
    "shuffle": {"Split", "Concat", "Reshape", "Transpose"}, "inception": {"Concat", "MaxPool"},
    "plain": {"Conv", "Relu", "MaxPool"},
}


def _params(kind: str, stem_pool: bool = False) -> dict:
    # the last stage is "swish" with squeeze-excite, so an mbconv stage exports Sigmoid and Mul
    stages = ((kind, 2, 48, "relu", 0, 4, 3), (kind, 1, 64, "relu6", 0, 3, 5), (kind, 2, 96, "swish", 1, 6, 3))
    return {"stem": 16, "stem_kernel": 3, "stem_pool": stem_pool, "stages": stages, "head_width": 0,
            "num_classes": 10}


@pytest.mark.parametrize("kind", mixnet.BLOCKS)
def test_every_stage_kind_runs_and_exports_its_blocks_ops(kind, tmp_path):
    spec = ModelSpec(mixnet.NAME, f"mixnet-{kind}", _params(kind), (1, 3, 64, 64))
    assert zoo.build(spec)(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    path = tmp_path / f"{kind}.onnx"
    zoo.export_onnx(spec, path)
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert set(ops) <= zoo.ALLOWED_OPS and "Shape" not in ops
    assert _STAGE_OPS[kind] <= set(ops), (kind, ops)


@pytest.mark.parametrize("stem_pool", [False, True])
def test_the_last_stages_downsample_until_the_network_has_its_total_stride(stem_pool):
    params = _params("plain", stem_pool)
    assert mixnet.strides(params) == [2, 2, 2]
    four = dict(params, stages=params["stages"] + (("plain", 1, 128, "relu", 0, 3, 3),))
    assert mixnet.strides(four) == ([1, 2, 2, 2] if stem_pool else [2, 2, 2, 2])
    spec = ModelSpec(mixnet.NAME, "m", dict(four, num_classes=10), (1, 3, 128, 128))
    features = zoo.build(spec).features(torch.randn(1, 3, 128, 128))
    assert features.shape[-1] == 128 // mixnet.TOTAL_STRIDE


def test_sampled_networks_are_deterministic_and_mix_every_stage_kind():
    a = zoo.sample_variants(mixnet.NAME, 60, seed=2, resolutions=(96, 128))
    assert [s.params for s in a] == [s.params for s in zoo.sample_variants(mixnet.NAME, 60, seed=2,
                                                                           resolutions=(96, 128))]
    kinds = Counter(k for s in a for k in mixnet.kinds(s.params))
    assert set(kinds) == set(mixnet.BLOCKS)
    assert kinds["mbconv"] == max(kinds.values())  # drawn thrice as often as any other
    assert all(3 <= len(s.params["stages"]) <= 4 and max(st[2] for st in s.params["stages"]) <= mixnet.MAX_WIDTH
               for s in a)


def test_model_campaigns_take_mixnets_by_name_only_and_no_family_split_holds_them_out():
    from perfpredict.profile import campaign_specs
    from perfpredict.samples import SampleSet, make_splits

    assert mixnet.NAME not in zoo.list_families() and zoo.list_synthetic_families() == [mixnet.NAME]
    assert zoo.get_family(mixnet.NAME) is mixnet.FAMILY
    specs = campaign_specs([mixnet.NAME, "resnet"], 2, 0, resolutions=(96,), canonical=False)
    assert Counter(s.family for s in specs) == {mixnet.NAME: 2, "resnet": 2}
    assert mixnet.NAME not in {s.family for s in campaign_specs(None, 1, 0, resolutions=(96,))}

    class _S:  # the two fields a family split reads
        def __init__(self, family):
            self.family, self.model_name = family, family

    samples = SampleSet([_S("resnet"), _S("vgg"), _S(mixnet.NAME)], [], "x", "h")
    splits = make_splits(samples, "lofo")
    assert [sp.name for sp in splits] == ["family:resnet", "family:vgg"]
    assert all(any(s.family == mixnet.NAME for s in sp.train.models) for sp in splits)
