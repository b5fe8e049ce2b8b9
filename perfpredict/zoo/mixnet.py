"""Mixed networks: random CNNs whose stages are drawn from the blocks of every model family.

A predictor tested on a family it never saw meets that family's blocks in contexts no training model had: a
squeeze-excite gate between swish convolutions, a dense block's unfused batch norms, a channel shuffle. Layer
records teach each kernel alone, on the day they were timed; whole models teach kernels in context. These
networks put the blocks of all the families (residual, bottleneck, inverted residual with and without
squeeze-excite, fire, dense, shuffle, inception, plain convolutions) into one random network each, stage by stage,
with random widths, depths and activations, so that model campaigns can measure blocks in contexts that no single
family shows. They are models (a stem, stages, a classifier head) but not a family anyone deploys: model campaigns
take them by name (``perfpredict profile models --families mixnet``), :func:`perfpredict.zoo.list_families` leaves
them out, and no leave-one-family-out split holds them out (:func:`perfpredict.zoo.list_synthetic_families`).

``mixnet_fc`` (:data:`FC_FAMILY`) draws the same kind of networks but ends them as AlexNet and VGG do: the last
feature map flattened (max pooled to 4x4 cells at most) into two hidden fully connected layers of 1,024-4,096
units, tens to hundreds of MB of weights that a forward pass streams from memory. Only those two families have such
heads otherwise, and each is the other's only example when a split holds one out. A family of its own, so that
``mixnet``'s sampled networks stay as measured.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.classic import fc_classifier
from perfpredict.zoo.densenet import DenseBlock
from perfpredict.zoo.googlenet import Inception
from perfpredict.zoo.layers import ClassifierHead, ConvBNAct, InvertedResidual, make_divisible
from perfpredict.zoo.resnet import BasicBlock, Bottleneck
from perfpredict.zoo.shufflenet import ShuffleUnit
from perfpredict.zoo.spec import Family
from perfpredict.zoo.squeezenet import Fire

NAME = "mixnet"
FC_NAME = "mixnet_fc"
FC_HIDDEN = (1024, 2048, 4096)
"""Hidden units of ``mixnet_fc``'s fully connected classifier."""
FC_MAX_CELLS = 16
"""Spatial cells of the map that ``mixnet_fc`` flattens at most (max pools halve larger maps), as VGG has at 128 px."""

BLOCKS = ("basic", "bottleneck", "mbconv", "fire", "dense", "shuffle", "inception", "plain")
"""Stage kinds, each built from the blocks of the family it is named after."""

_WEIGHTS = (1, 1, 3, 1, 1, 1, 1, 1)  # inverted residuals thrice as often: four of the twelve families are built of them

_ACTS = ("relu", "relu6", "hswish", "swish")
_GATES = {"relu": "sigmoid", "relu6": "hsigmoid", "hswish": "hsigmoid", "swish": "sigmoid"}
MAX_WIDTH = 640
"""Output channels of a stage at most."""
TOTAL_STRIDE = 32
"""Downsampling of the whole network (stem, optional stem pool, then the last stages at stride 2)."""


def sample(rng: random.Random) -> dict[str, Any]:
    """Random architecture params: the stem, then 3-4 stages of (kind, depth, width, activation, squeeze-excite,
    expansion, kernel)."""
    stem = rng.choice((16, 24, 32, 48, 64))
    n_stages = rng.randint(3, 4)
    stages = []
    width = stem
    for _ in range(n_stages):
        width = min(MAX_WIDTH, make_divisible(width * rng.uniform(1.3, 2.6)))
        stages.append((rng.choices(BLOCKS, _WEIGHTS)[0], rng.randint(1, 3), width, rng.choice(_ACTS),
                       int(rng.random() < 0.5), rng.choice((3, 4, 6)), rng.choice((3, 3, 5))))
    return {"stem": stem, "stem_kernel": rng.choice((3, 3, 7)), "stem_pool": rng.random() < 0.5,
            "stages": tuple(stages), "head_width": rng.choice((0, 0, 1024, 1280))}


def sample_fc(rng: random.Random) -> dict[str, Any]:
    """:func:`sample`'s params without the 1x1 head, plus ``fc_hidden``, the hidden units of an AlexNet-style
    classifier."""
    return {**sample(rng), "head_width": 0, "fc_hidden": rng.choice(FC_HIDDEN)}


def strides(params: Mapping[str, Any]) -> list[int]:
    """Each stage's stride: 2 for the last stages until the network downsamples :data:`TOTAL_STRIDE` times."""
    n = len(params["stages"])
    strided = min(n, (TOTAL_STRIDE // (4 if params["stem_pool"] else 2)).bit_length() - 1)
    # the budget goes to the last stages: the early ones keep the larger maps of a network that stops early
    return [1] * (n - strided) + [2] * strided


def _stage(kind: str, c_in: int, depth: int, width: int, stride: int, act: str, se: bool, expansion: int,
           kernel: int) -> tuple[nn.Module, int]:
    """One stage of ``kind`` from ``c_in`` channels: its module and output channels."""
    blocks: list[nn.Module] = []
    if kind in ("basic", "bottleneck"):
        block = BasicBlock if kind == "basic" else Bottleneck
        w = width // block.expansion
        for d in range(depth):
            blocks.append(block(c_in, w, stride if d == 0 else 1))
            c_in = w * block.expansion
        return nn.Sequential(*blocks), c_in
    if kind == "mbconv":
        for d in range(depth):
            expanded = make_divisible(c_in * expansion)
            squeeze = max(8, make_divisible(expanded // 4)) if se else 0
            blocks.append(InvertedResidual(c_in, width, kernel, stride if d == 0 else 1, expanded, act,
                                           squeeze, "relu", _GATES[act]))
            c_in = width
        return nn.Sequential(*blocks), c_in
    if kind == "shuffle":
        if stride == 1:
            blocks.append(ConvBNAct(c_in, width, 1))
        for d in range(depth):
            blocks.append(ShuffleUnit(c_in if d == 0 and stride == 2 else width, width, stride if d == 0 else 1,
                                      kernel))
        return nn.Sequential(*blocks), width
    if kind == "dense":
        growth = max(8, make_divisible(width / 8))
        dense = DenseBlock(c_in, 2 * depth, growth, 4)
        blocks += [dense, nn.BatchNorm2d(dense.out_channels), nn.ReLU(inplace=True),
                   nn.Conv2d(dense.out_channels, width, 1, bias=False)]
        if stride == 2:
            blocks.append(nn.AvgPool2d(2, 2))
        return nn.Sequential(*blocks), width
    if stride == 2:
        blocks.append(nn.MaxPool2d(3, 2, 1) if kind != "plain" else nn.MaxPool2d(2, 2))
    for _ in range(depth):
        if kind == "fire":
            blocks.append(Fire(c_in, max(8, make_divisible(width / 8)), width // 2, width - width // 2))
        elif kind == "inception":
            q = width // 4
            blocks.append(Inception(c_in, (q, max(8, q // 2), q, max(8, q // 4), q, width - 3 * q), kernel))
        elif kind == "plain":
            blocks += [nn.Conv2d(c_in, width, kernel, 1, kernel // 2), nn.ReLU(inplace=True)]
        else:
            raise ValueError(f"unknown mixnet stage {kind!r}; known: {', '.join(BLOCKS)}")
        c_in = width
    return nn.Sequential(*blocks), width


class MixNet(nn.Module):
    """Stem (a strided convolution, optionally a max pool), the sampled stages, optional 1x1 head, classifier: a
    global pool and one linear layer, or with ``fc_hidden`` the flattened map and AlexNet's fully connected layers."""

    def __init__(self, params: Mapping[str, Any], resolution: tuple[int, int] = (64, 64)) -> None:
        super().__init__()
        stem = params["stem"]
        layers: list[nn.Module] = [ConvBNAct(3, stem, params["stem_kernel"], 2)]
        if params["stem_pool"]:
            layers.append(nn.MaxPool2d(3, 2, 1))
        c = stem
        for (kind, depth, width, act, se, expansion, kernel), stride in zip(params["stages"], strides(params)):
            stage, c = _stage(kind, c, depth, width, stride, act, bool(se), expansion, kernel)
            layers.append(stage)
        if params["head_width"]:
            layers.append(ConvBNAct(c, params["head_width"], 1))
            c = params["head_width"]
        self.features = nn.Sequential(*layers)
        num_classes = params.get("num_classes", 1000)
        if params.get("fc_hidden"):
            h, w = _feature_size(self.features, resolution)
            pools: list[nn.Module] = []
            while h * w > FC_MAX_CELLS:  # VGG's last pools: at most 4x4 cells reach the first fully connected layer
                pools.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            self.head = nn.Sequential(*pools, nn.Flatten(1),
                                      fc_classifier(c * h * w, params["fc_hidden"], num_classes, 0.5))
        else:
            self.head = ClassifierHead(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _feature_size(features: nn.Module, resolution: tuple[int, int]) -> tuple[int, int]:
    """Height and width of ``features``' output at ``resolution``, by a pass on the meta device (no compute)."""
    with torch.no_grad(), torch.device("meta"):
        out = copy.deepcopy(features).to("meta").eval()(torch.empty(1, 3, *resolution))
    return int(out.shape[-2]), int(out.shape[-1])


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """The network of ``params`` (:func:`sample`'s or :func:`sample_fc`'s keys plus ``num_classes``) at ``resolution``;
    any resolution of 64 px or more."""
    return MixNet(params, tuple(resolution))


def kinds(params: Mapping[str, Any]) -> Sequence[str]:
    """The stage kinds of ``params``, in order."""
    return [s[0] for s in params["stages"]]


FAMILY = Family(name=NAME, builder=build, sampler=sample, canonical={}, min_resolution=64)
FC_FAMILY = Family(name=FC_NAME, builder=build, sampler=sample_fc, canonical={}, min_resolution=64)
