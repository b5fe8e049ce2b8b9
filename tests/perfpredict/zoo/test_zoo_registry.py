"""Registry, specs and published configurations of the canonical zoo models."""

from __future__ import annotations

import json

import pytest

from perfpredict import zoo
from perfpredict.zoo.spec import ModelSpec

CANONICAL = [
    "alexnet", "densenet121", "efficientnet_b0", "googlenet", "mnasnet", "mobilenet_v1", "mobilenet_v2",
    "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet50", "shufflenet_v2", "squeezenet1_1", "vgg11",
]  # fmt: skip
FAMILIES = [
    "alexnet", "densenet", "efficientnet", "googlenet", "mnasnet", "mobilenet_v1", "mobilenet_v2",
    "mobilenet_v3", "resnet", "shufflenet_v2", "squeezenet", "vgg",
]  # fmt: skip

# Parameter counts of the published configurations at 224x224 / 1000 classes (they equal the
# well-known reference implementations; googlenet uses the paper's true 5x5 branch, which is
# 380,928 parameters more than the common 3x3-branch implementation's 6,624,904).
PUBLISHED_PARAMS = {
    "alexnet": 61_100_840,
    "densenet121": 7_978_856,
    "efficientnet_b0": 5_288_548,
    "googlenet": 6_624_904 + 380_928,
    "mnasnet": 4_383_312,
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "shufflenet_v2": 2_278_604,
    "squeezenet1_1": 1_235_496,
    "vgg11": 132_863_336,
}

# Published multiply-accumulates (conv + linear) at 224x224, with a 3 % tolerance.
PUBLISHED_MACS = {
    "alexnet": 714e6,
    "densenet121": 2.83e9,
    "efficientnet_b0": 386e6,
    "mnasnet": 314e6,
    "mobilenet_v1": 569e6,
    "mobilenet_v2": 300e6,
    "mobilenet_v3_large": 217e6,
    "mobilenet_v3_small": 56.5e6,
    "resnet18": 1.814e9,
    "resnet50": 4.089e9,
    "shufflenet_v2": 146e6,
    "squeezenet1_1": 349e6,
    "vgg11": 7.609e9,
}


def test_lists_are_sorted_and_complete() -> None:
    assert zoo.list_families() == FAMILIES
    assert zoo.list_models() == CANONICAL


def test_get_spec_defaults_and_unknown_names() -> None:
    spec = zoo.get_spec("resnet18")
    assert spec.family == "resnet"
    assert spec.name == "resnet18"
    assert spec.input_shape == (1, 3, 224, 224)
    assert spec.params["num_classes"] == 1000
    with pytest.raises(KeyError):
        zoo.get_spec("resnet1000")
    with pytest.raises(KeyError):
        zoo.sample_variants("lenet", 1, 0)


def test_every_family_has_a_canonical_model() -> None:
    families = {zoo.get_spec(name).family for name in zoo.list_models()}
    assert families == set(zoo.list_families())


def test_spec_is_hashable_and_frozen_by_value() -> None:
    a = ModelSpec("resnet", "x", {"depths": [2, 2], "block": "basic"}, (1, 3, 64, 64))
    b = ModelSpec("resnet", "x", {"block": "basic", "depths": (2, 2)}, [1, 3, 64, 64])
    assert a == b and hash(a) == hash(b)
    assert a.params["depths"] == (2, 2)
    assert a.resolution == (64, 64)
    assert a.with_input_shape((1, 3, 96, 96)).input_shape == (1, 3, 96, 96)
    with pytest.raises(ValueError):
        ModelSpec("resnet", "x", {}, (1, 1, 64, 64))


def test_describe_is_json_serialisable() -> None:
    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        info = json.loads(json.dumps(zoo.describe(spec)))
        assert info["family"] == spec.family
        assert info["name"] == name
        assert info["input_shape"] == [1, 3, 224, 224]
        assert info["params"]["num_classes"] == 1000


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_published_configuration(name: str) -> None:
    stats = zoo.model_stats(zoo.get_spec(name))
    assert stats["params"] == PUBLISHED_PARAMS[name]
    if name in PUBLISHED_MACS:
        assert stats["macs"] == pytest.approx(PUBLISHED_MACS[name], rel=0.03)
