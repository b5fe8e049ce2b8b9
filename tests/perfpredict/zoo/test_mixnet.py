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


@pytest.mark.parametrize("resolution", [64, 96, 128])
def test_fc_networks_are_mixnets_ending_in_alexnets_classifier_over_a_small_map(resolution, tmp_path):
    import random

    # the same stages as mixnet draws from the same generator, only the head differs
    plain, fc = mixnet.sample(random.Random(5)), mixnet.sample_fc(random.Random(5))
    assert {k: v for k, v in fc.items() if k not in ("head_width", "fc_hidden")} == \
        {k: v for k, v in plain.items() if k != "head_width"}
    assert fc["head_width"] == 0 and fc["fc_hidden"] in mixnet.FC_HIDDEN
    params = dict(_params("plain"), fc_hidden=256, num_classes=10)  # ends at 96 channels
    spec = ModelSpec(mixnet.FC_NAME, "fc", params, (1, 3, resolution, resolution))
    net = zoo.build(spec)
    assert net(torch.randn(1, 3, resolution, resolution)).shape == (1, 10)
    cells = resolution // 16 * (resolution // 16)  # three stages at stride 2 after the stem: a sixteenth
    while cells > mixnet.FC_MAX_CELLS:
        cells //= 4
    gemms = [m for m in net.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(g.in_features, g.out_features) for g in gemms] == [(96 * cells, 256), (256, 256), (256, 10)]
    path = tmp_path / "fc.onnx"
    zoo.export_onnx(spec, path)
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert set(ops) <= zoo.ALLOWED_OPS and ops["Gemm"] == 3 and ops["Flatten"] == 1


def test_model_campaigns_take_mixnets_by_name_only_and_no_family_split_holds_them_out():
    from perfpredict.profile import campaign_specs
    from perfpredict.samples import SampleSet, make_splits

    assert mixnet.NAME not in zoo.list_families() and zoo.list_synthetic_families() == [mixnet.NAME, mixnet.FC_NAME]
    assert zoo.get_family(mixnet.NAME) is mixnet.FAMILY and zoo.get_family(mixnet.FC_NAME) is mixnet.FC_FAMILY
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
