"""MnasNet family (Tan et al. 2019, the B1 network without squeeze-excite): MBConv stages with ReLU."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ClassifierHead, ConvBNAct, InvertedResidual, make_divisible
from perfpredict.zoo.spec import Family

# (out_channels, kernel, stride, expansion, repeats) for the six MBConv stacks of MnasNet-B1.
STAGES = (
    (24, 3, 2, 3, 3),
    (40, 5, 2, 3, 3),
    (80, 5, 2, 6, 3),
    (96, 3, 1, 6, 2),
    (192, 5, 2, 6, 4),
    (320, 3, 1, 6, 1),
)


class MnasNet(nn.Module):
    """3x3/2 stem, depthwise-separable conv, MBConv stacks, 1x1 conv, global pool, dropout, linear."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...],
        width_mult: float = 1.0,
        stem_channels: tuple[int, int] = (32, 16),
        last_channels: int = 1280,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        c0 = make_divisible(stem_channels[0] * width_mult)
        c1 = make_divisible(stem_channels[1] * width_mult)
        layers: list[nn.Module] = [
            ConvBNAct(3, c0, 3, 2),
            ConvBNAct(c0, c0, 3, groups=c0),
            ConvBNAct(c0, c1, 1, act="none"),
        ]
        channels = c1
        for out, kernel, stride, expansion, repeats in stages:
            out = make_divisible(out * width_mult)
            for i in range(repeats):
                layers.append(
                    InvertedResidual(channels, out, kernel, stride if i == 0 else 1, channels * expansion, act="relu")
                )
                channels = out
        layers.append(ConvBNAct(channels, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(last_channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build MnasNet from params (stages, width_mult, stem_channels, last_channels, num_classes, dropout)."""
    return MnasNet(
        params["stages"],
        params["width_mult"],
        params["stem_channels"],
        params["last_channels"],
        params["num_classes"],
        params["dropout"],
    )


def sample(rng: random.Random) -> dict[str, Any]:
    """Random width multiplier and per-stage kernel, expansion ratio and repeats."""
    stages = tuple(
        (out, rng.choice((3, 5, 7)), stride, rng.choice((3, 6)), rng.randint(max(1, n - 1), n + 1))
        for out, _, stride, _, n in STAGES
    )
    return {
        "stages": stages,
        "width_mult": rng.choice((0.5, 0.75, 1.0, 1.3)),
        "stem_channels": (32, 16),
        "last_channels": 1280,
        "dropout": 0.2,
    }


FAMILY = Family(
    name="mnasnet",
    builder=build,
    sampler=sample,
    canonical={
        "mnasnet": {
            "stages": STAGES, "width_mult": 1.0, "stem_channels": (32, 16), "last_channels": 1280,
            "num_classes": 1000, "dropout": 0.2,
        },
    },
)  # fmt: skip
