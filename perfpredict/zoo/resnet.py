"""ResNet family (He et al. 2016) with basic and bottleneck blocks; stride on the 3x3 conv (v1.5)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ConvBNAct, make_divisible
from perfpredict.zoo.spec import Family


class BasicBlock(nn.Module):
    """Two kxk convs with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvBNAct(in_channels, width, kernel_size, stride)
        self.conv2 = ConvBNAct(width, out_channels, kernel_size, act="none")
        self.downsample = (
            ConvBNAct(in_channels, out_channels, 1, stride, act="none")
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, kxk (strided), 1x1 expand by 4, with identity or projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = ConvBNAct(in_channels, width, 1)
        self.conv2 = ConvBNAct(width, width, kernel_size, stride)
        self.conv3 = ConvBNAct(width, out_channels, 1, act="none")
        self.downsample = (
            ConvBNAct(in_channels, out_channels, 1, stride, act="none")
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """7x7/2 stem, 3x3/2 max pool, four stages of residual blocks, global pool, linear classifier."""

    def __init__(
        self,
        block: str,
        depths: tuple[int, ...],
        widths: tuple[int, ...],
        stem_channels: int = 64,
        kernel_size: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        block_cls = BLOCKS[block]
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_channels, 7, 2),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        channels = stem_channels
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block_cls(channels, width, stride, kernel_size))
                channels = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build a ResNet from params (block, depths, widths, stem_channels, kernel_size, num_classes)."""
    return ResNet(
        params["block"],
        tuple(params["depths"]),
        tuple(params["widths"]),
        params["stem_channels"],
        params["kernel_size"],
        params["num_classes"],
    )


def sample(rng: random.Random) -> dict[str, Any]:
    """Random block type, per-stage depth and width multiplier."""
    block = rng.choice(("basic", "bottleneck"))
    max_depths = (3, 3, 3, 3) if block == "basic" else (3, 4, 6, 3)
    width_mult = rng.choice((0.25, 0.5, 0.75, 1.0, 1.25))
    return {
        "block": block,
        "depths": tuple(rng.randint(1, d) for d in max_depths),
        "widths": tuple(make_divisible(w * width_mult) for w in (64, 128, 256, 512)),
        "stem_channels": make_divisible(64 * width_mult),
        "kernel_size": 3,
    }


_BASE = {"widths": (64, 128, 256, 512), "stem_channels": 64, "kernel_size": 3, "num_classes": 1000}

FAMILY = Family(
    name="resnet",
    builder=build,
    sampler=sample,
    canonical={
        "resnet18": {"block": "basic", "depths": (2, 2, 2, 2), **_BASE},
        "resnet50": {"block": "bottleneck", "depths": (3, 4, 6, 3), **_BASE},
    },
)
