"""MobileNetV3 family (Howard et al. 2019): inverted residuals with squeeze-excite and hard-swish."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ConvBNAct, InvertedResidual, make_divisible
from perfpredict.zoo.spec import Family

# Paper tables 1 and 2: (kernel, expanded channels, out channels, use SE, activation, stride).
LARGE_BLOCKS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)
SMALL_BLOCKS = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)


class MobileNetV3(nn.Module):
    """Hard-swish 3x3/2 stem, bneck blocks, 1x1 conv, pool, linear + hard-swish, dropout, linear."""

    def __init__(
        self,
        blocks: tuple[tuple[int, int, int, bool, str, int], ...],
        width_mult: float = 1.0,
        stem_channels: int = 16,
        last_conv_channels: int = 960,
        last_channels: int = 1280,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        channels = make_divisible(stem_channels * width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, channels, 3, 2, act="hswish")]
        for kernel, expanded, out, use_se, act, stride in blocks:
            expanded = make_divisible(expanded * width_mult)
            out = make_divisible(out * width_mult)
            se_channels = make_divisible(expanded // 4) if use_se else 0
            layers.append(
                InvertedResidual(channels, out, kernel, stride, expanded, act, se_channels, "relu", "hsigmoid")
            )
            channels = out
        last_conv = make_divisible(last_conv_channels * width_mult)
        layers.append(ConvBNAct(channels, last_conv, 1, act="hswish"))
        self.features = nn.Sequential(*layers)
        last = make_divisible(last_channels * width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build MobileNetV3 from params (blocks, width_mult, stem/last_conv/last channels, num_classes, dropout)."""
    return MobileNetV3(
        params["blocks"],
        params["width_mult"],
        params["stem_channels"],
        params["last_conv_channels"],
        params["last_channels"],
        params["num_classes"],
        params["dropout"],
    )


def sample(rng: random.Random) -> dict[str, Any]:
    """Large or small template; random width, per-block kernel and expansion scale, some stride-1 blocks dropped."""
    large = rng.random() < 0.5
    template = LARGE_BLOCKS if large else SMALL_BLOCKS
    blocks = []
    for kernel, expanded, out, use_se, act, stride in template:
        if stride == 1 and blocks and blocks[-1][2] == out and rng.random() < 0.25:
            continue  # drop a repeated block (keeps channel/stride schedule intact)
        kernel = rng.choice((3, 5, 7))
        expanded = max(out, make_divisible(expanded * rng.choice((0.75, 1.0, 1.25))))
        blocks.append((kernel, expanded, out, use_se, act, stride))
    return {
        "blocks": tuple(blocks),
        "width_mult": rng.choice((0.5, 0.75, 1.0, 1.25)),
        "stem_channels": 16,
        "last_conv_channels": 960 if large else 576,
        "last_channels": 1280 if large else 1024,
        "dropout": 0.2,
    }


FAMILY = Family(
    name="mobilenet_v3",
    builder=build,
    sampler=sample,
    canonical={
        "mobilenet_v3_large": {
            "blocks": LARGE_BLOCKS, "width_mult": 1.0, "stem_channels": 16, "last_conv_channels": 960,
            "last_channels": 1280, "num_classes": 1000, "dropout": 0.2,
        },
        "mobilenet_v3_small": {
            "blocks": SMALL_BLOCKS, "width_mult": 1.0, "stem_channels": 16, "last_conv_channels": 576,
            "last_channels": 1024, "num_classes": 1000, "dropout": 0.2,
        },
    },
)  # fmt: skip
