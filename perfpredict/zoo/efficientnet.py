"""EfficientNet family (Tan & Le 2019): MBConv with squeeze-excite and swish, compound width/depth scaling."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ClassifierHead, ConvBNAct, InvertedResidual, make_divisible
from perfpredict.zoo.spec import Family

# EfficientNet-B0 (paper table 1): (expansion, kernel, stride, out_channels, layers).
B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class EfficientNet(nn.Module):
    """Swish 3x3/2 stem, MBConv+SE stages (scaled by width/depth multipliers), 1x1 head conv, pool, linear."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...],
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        stem_channels: int = 32,
        se_ratio: float = 0.25,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        channels = make_divisible(stem_channels * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, act="swish")]
        for expansion, kernel, stride, out, n in stages:
            out = make_divisible(out * width_mult)
            for i in range(int(math.ceil(n * depth_mult))):
                se = max(1, int(channels * se_ratio))
                expanded = make_divisible(channels * expansion)
                layers.append(
                    InvertedResidual(
                        channels, out, kernel, stride if i == 0 else 1, expanded, "swish", se, "swish", "sigmoid"
                    )
                )
                channels = out
        head = 4 * channels
        layers.append(ConvBNAct(channels, head, 1, act="swish"))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(head, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build EfficientNet from params (stages, width_mult, depth_mult, stem_channels, se_ratio, ...)."""
    return EfficientNet(
        params["stages"],
        params["width_mult"],
        params["depth_mult"],
        params["stem_channels"],
        params["se_ratio"],
        params["num_classes"],
        params["dropout"],
    )


def sample(rng: random.Random) -> dict[str, Any]:
    """Random width/depth multipliers and per-stage kernel size and expansion ratio (first stage keeps 1)."""
    stages = tuple(
        (e if i == 0 else rng.choice((3, 4, 6)), rng.choice((3, 5)), s, c, n)
        for i, (e, _, s, c, n) in enumerate(B0_STAGES)
    )
    return {
        "stages": stages,
        "width_mult": rng.choice((0.5, 0.75, 1.0, 1.1, 1.2)),
        "depth_mult": rng.choice((0.75, 1.0, 1.1, 1.2, 1.4)),
        "stem_channels": 32,
        "se_ratio": 0.25,
        "dropout": 0.2,
    }


FAMILY = Family(
    name="efficientnet",
    builder=build,
    sampler=sample,
    canonical={
        "efficientnet_b0": {
            "stages": B0_STAGES, "width_mult": 1.0, "depth_mult": 1.0, "stem_channels": 32, "se_ratio": 0.25,
            "num_classes": 1000, "dropout": 0.2,
        },
    },
)  # fmt: skip
