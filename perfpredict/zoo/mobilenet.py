"""MobileNetV1 (depthwise-separable convs) and MobileNetV2 (inverted residuals, ReLU6) families."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ClassifierHead, ConvBNAct, InvertedResidual, make_divisible
from perfpredict.zoo.spec import Family

# MobileNetV1 (Howard et al. 2017, table 1): (out_channels, stride, kernel) per depthwise-separable block.
V1_BLOCKS = (
    (64, 1, 3), (128, 2, 3), (128, 1, 3), (256, 2, 3), (256, 1, 3), (512, 2, 3),
    (512, 1, 3), (512, 1, 3), (512, 1, 3), (512, 1, 3), (512, 1, 3),
    (1024, 2, 3), (1024, 1, 3),
)  # fmt: skip

# MobileNetV2 (Sandler et al. 2018, table 2): (expansion t, out_channels c, repeats n, stride s, kernel k).
V2_STAGES = (
    (1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3),
    (6, 96, 3, 1, 3), (6, 160, 3, 2, 3), (6, 320, 1, 1, 3),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """3x3/2 stem then depthwise kxk + pointwise 1x1 blocks (BN + ReLU), global pool, linear."""

    def __init__(
        self,
        blocks: tuple[tuple[int, int, int], ...],
        width_mult: float = 1.0,
        stem_channels: int = 32,
        num_classes: int = 1000,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = make_divisible(stem_channels * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, 2)]
        for out_channels, stride, kernel in blocks:
            out_channels = make_divisible(out_channels * width_mult)
            layers.append(ConvBNAct(channels, channels, kernel, stride, groups=channels))
            layers.append(ConvBNAct(channels, out_channels, 1))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MobileNetV2(nn.Module):
    """3x3/2 stem, inverted-residual stages, 1x1 conv to ``last_channels``, pool, dropout, linear."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...],
        width_mult: float = 1.0,
        stem_channels: int = 32,
        last_channels: int = 1280,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        channels = make_divisible(stem_channels * width_mult)
        last = make_divisible(last_channels * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, act="relu6")]
        for t, c, n, s, k in stages:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(
                    InvertedResidual(channels, out_channels, k, s if i == 0 else 1, channels * t, act="relu6")
                )
                channels = out_channels
        layers.append(ConvBNAct(channels, last, 1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(last, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_v1(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build MobileNetV1 from params (blocks, width_mult, stem_channels, num_classes, dropout)."""
    return MobileNetV1(
        params["blocks"], params["width_mult"], params["stem_channels"], params["num_classes"], params["dropout"]
    )


def build_v2(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build MobileNetV2 from params (stages, width_mult, stem_channels, last_channels, num_classes, dropout)."""
    return MobileNetV2(
        params["stages"],
        params["width_mult"],
        params["stem_channels"],
        params["last_channels"],
        params["num_classes"],
        params["dropout"],
    )


def sample_v1(rng: random.Random) -> dict[str, Any]:
    """Random width multiplier, number of 512-channel blocks (1..5) and per-block depthwise kernel."""
    n512 = rng.randint(1, 5)
    base = V1_BLOCKS[:6] + ((512, 1, 3),) * n512 + V1_BLOCKS[-2:]
    return {
        "blocks": tuple((c, s, rng.choice((3, 3, 5, 7))) for c, s, _ in base),
        "width_mult": rng.choice((0.25, 0.5, 0.75, 1.0, 1.25)),
        "stem_channels": 32,
        "dropout": 0.0,
    }


def sample_v2(rng: random.Random) -> dict[str, Any]:
    """Random width multiplier and per-stage expansion ratio, depth and kernel size."""
    stages = []
    for i, (t, c, n, s, _) in enumerate(V2_STAGES):
        t = t if i == 0 else rng.choice((3, 4, 6))
        n = n if i in (0, len(V2_STAGES) - 1) else rng.randint(max(1, n - 1), n + 1)
        stages.append((t, c, n, s, rng.choice((3, 5, 7))))
    return {
        "stages": tuple(stages),
        "width_mult": rng.choice((0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
        "stem_channels": 32,
        "last_channels": 1280,
        "dropout": 0.2,
    }


FAMILY_V1 = Family(
    name="mobilenet_v1",
    builder=build_v1,
    sampler=sample_v1,
    canonical={
        "mobilenet_v1": {
            "blocks": V1_BLOCKS, "width_mult": 1.0, "stem_channels": 32, "num_classes": 1000, "dropout": 0.0,
        },
    },
)  # fmt: skip

FAMILY_V2 = Family(
    name="mobilenet_v2",
    builder=build_v2,
    sampler=sample_v2,
    canonical={
        "mobilenet_v2": {
            "stages": V2_STAGES, "width_mult": 1.0, "stem_channels": 32, "last_channels": 1280,
            "num_classes": 1000, "dropout": 0.2,
        },
    },
)  # fmt: skip
