"""GoogLeNet-style Inception family (Szegedy et al. 2015), with BN after every conv and no auxiliary heads."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ClassifierHead, ConvBNAct, make_divisible
from perfpredict.zoo.spec import Family

# Paper table 1, per inception module: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
# Stages 3, 4 and 5; a ceil-mode max pool (3x3/2, then 2x2/2) separates them.
INCEPTION_STAGES = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->kxk; 3x3 max pool->1x1) concatenated on channels."""

    def __init__(self, in_channels: int, config: tuple[int, ...], reduce_kernel: int = 5) -> None:
        super().__init__()
        c1, c3r, c3, c5r, c5, pool_proj = config
        self.branch1 = ConvBNAct(in_channels, c1, 1)
        self.branch2 = nn.Sequential(ConvBNAct(in_channels, c3r, 1), ConvBNAct(c3r, c3, 3))
        self.branch3 = nn.Sequential(ConvBNAct(in_channels, c5r, 1), ConvBNAct(c5r, c5, reduce_kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), ConvBNAct(in_channels, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """7x7/2 stem, pool, 1x1 and 3x3 convs, pool, three inception stages, global pool, dropout, linear."""

    def __init__(
        self,
        stages: tuple[tuple[tuple[int, ...], ...], ...],
        stem_channels: tuple[int, int] = (64, 192),
        reduce_kernel: int = 5,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        c1, c2 = stem_channels
        layers: list[nn.Module] = [
            ConvBNAct(3, c1, 7, 2),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            ConvBNAct(c1, c1, 1),
            ConvBNAct(c1, c2, 3),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        ]
        channels = c2
        for i, stage in enumerate(stages):
            if i == 1:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            elif i == 2:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            for config in stage:
                module = Inception(channels, config, reduce_kernel)
                layers.append(module)
                channels = module.out_channels
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build GoogLeNet from params (stages, stem_channels, reduce_kernel, num_classes, dropout)."""
    return GoogLeNet(
        params["stages"], params["stem_channels"], params["reduce_kernel"], params["num_classes"], params["dropout"]
    )


def sample(rng: random.Random) -> dict[str, Any]:
    """Random width multiplier, ordered subset of inception modules per stage, and 5x5/3x3 reduce branch."""
    width = rng.choice((0.25, 0.5, 0.75, 1.0))
    stages = []
    for stage in INCEPTION_STAGES:
        keep = sorted(rng.sample(range(len(stage)), rng.randint(1, len(stage))))
        stages.append(tuple(tuple(make_divisible(c * width) for c in stage[j]) for j in keep))
    return {
        "stages": tuple(stages),
        "stem_channels": (make_divisible(64 * width), make_divisible(192 * width)),
        "reduce_kernel": rng.choice((3, 5)),
        "dropout": 0.2,
    }


FAMILY = Family(
    name="googlenet",
    builder=build,
    sampler=sample,
    canonical={
        "googlenet": {
            "stages": INCEPTION_STAGES, "stem_channels": (64, 192), "reduce_kernel": 5, "num_classes": 1000,
            "dropout": 0.2,
        },
    },
)  # fmt: skip
