"""Plain convolutional families: VGG (Simonyan & Zisserman 2015) and AlexNet (Krizhevsky et al. 2012).

The fully connected classifier is sized from the input resolution (the flattened feature map), which
at 224x224 gives the published 512*7*7 (VGG) and 256*6*6 (AlexNet) inputs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ConvBNAct, make_divisible
from perfpredict.zoo.spec import Family

# Conv channels per stage (each stage ends in a 2x2/2 max pool) for VGG configurations A, B, D, E.
VGG_STAGES = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}

# AlexNet (single-tower variant, "one weird trick"): (out_channels, kernel, stride, padding, pool_after).
ALEXNET_CONVS = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)


def fc_classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """AlexNet's and VGG's classifier: two hidden fully connected layers of ``hidden`` units (ReLU, dropout)."""
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class PlainCNN(nn.Module):
    """Feature extractor followed by flatten and a fully connected classifier."""

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg_feature_size(num_stages: int, resolution: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after ``num_stages`` 2x2/2 max pools."""
    h, w = resolution
    for _ in range(num_stages):
        h, w = h // 2, w // 2
    return h, w


def build_vgg(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build VGG from params (stages, batch_norm, hidden, dropout, num_classes) at the given input (H, W)."""
    h, w = vgg_feature_size(len(params["stages"]), resolution)
    if h < 1 or w < 1:
        raise ValueError(f"VGG with {len(params['stages'])} pools needs a larger input than {resolution}")
    layers: list[nn.Module] = []
    channels = 3
    for stage in params["stages"]:
        for out_channels in stage:
            layers.append(ConvBNAct(channels, out_channels, 3, bn=params["batch_norm"]))
            channels = out_channels
        layers.append(nn.MaxPool2d(2, 2))
    classifier = fc_classifier(channels * h * w, params["hidden"], params["num_classes"], params["dropout"])
    return PlainCNN(nn.Sequential(*layers), classifier)


def sample_vgg(rng: random.Random) -> dict[str, Any]:
    """Random depth configuration (A/B/D/E), width multiplier, BN on/off and classifier width."""
    width = rng.choice((0.25, 0.5, 0.75, 1.0))
    stages = rng.choice(list(VGG_STAGES.values()))
    return {
        "stages": tuple(tuple(make_divisible(c * width) for c in stage) for stage in stages),
        "batch_norm": rng.random() < 0.5,
        "hidden": rng.choice((512, 1024, 2048, 4096)),
        "dropout": 0.5,
    }


def alexnet_feature_size(
    convs: tuple[tuple[int, int, int, int, bool], ...], resolution: tuple[int, int]
) -> tuple[int, int]:
    """Spatial size after the AlexNet conv/pool stack (3x3/2 max pools, floor mode)."""
    dims = []
    for size in resolution:
        for _, kernel, stride, padding, pool in convs:
            size = (size + 2 * padding - kernel) // stride + 1
            if pool:
                size = (size - 3) // 2 + 1
            if size < 1:
                break
        dims.append(size)
    return dims[0], dims[1]


def build_alexnet(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build AlexNet from params (convs, hidden, dropout, num_classes) at the given input (H, W)."""
    h, w = alexnet_feature_size(params["convs"], resolution)
    if h < 1 or w < 1:
        raise ValueError(f"AlexNet needs a larger input than {resolution}")
    layers: list[nn.Module] = []
    channels = 3
    for out_channels, kernel, stride, padding, pool in params["convs"]:
        layers.append(nn.Conv2d(channels, out_channels, kernel, stride, padding))
        layers.append(nn.ReLU(inplace=True))
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
        channels = out_channels
    classifier = fc_classifier(channels * h * w, params["hidden"], params["num_classes"], params["dropout"])
    return PlainCNN(nn.Sequential(*layers), classifier)


def sample_alexnet(rng: random.Random) -> dict[str, Any]:
    """Random conv width multiplier, first-layer kernel and classifier width."""
    width = rng.choice((0.25, 0.5, 0.75, 1.0, 1.25))
    first_kernel = rng.choice((7, 9, 11))
    convs = tuple(
        (make_divisible(c * width), first_kernel if i == 0 else k, s, (first_kernel - 7) // 2 if i == 0 else p, pool)
        for i, (c, k, s, p, pool) in enumerate(ALEXNET_CONVS)
    )
    return {"convs": convs, "hidden": rng.choice((1024, 2048, 4096)), "dropout": 0.5}


VGG_FAMILY = Family(
    name="vgg",
    builder=build_vgg,
    sampler=sample_vgg,
    canonical={
        "vgg11": {
            "stages": VGG_STAGES["vgg11"], "batch_norm": False, "hidden": 4096, "dropout": 0.5, "num_classes": 1000,
        },
    },
)  # fmt: skip

ALEXNET_FAMILY = Family(
    name="alexnet",
    builder=build_alexnet,
    sampler=sample_alexnet,
    canonical={"alexnet": {"convs": ALEXNET_CONVS, "hidden": 4096, "dropout": 0.5, "num_classes": 1000}},
    min_resolution=64,
)
