"""DenseNet-BC family (Huang et al. 2017): pre-activation dense layers, concatenated features, transitions."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.spec import Family


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) then BN-ReLU-3x3 conv (growth) over the concatenated inputs."""

    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.bottleneck = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, bn_size * growth, 1, bias=False),
        )
        self.conv = nn.Sequential(
            nn.BatchNorm2d(bn_size * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        return self.conv(self.bottleneck(x))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; each sees every earlier feature map; output is their concatenation."""

    def __init__(self, in_channels: int, num_layers: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression) then 2x2/2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2, 2),
        )


class DenseNet(nn.Module):
    """7x7/2 stem + BN-ReLU + 3x3/2 max pool, dense blocks with transitions, final BN-ReLU, pool, linear."""

    def __init__(
        self,
        growth: int = 32,
        blocks: tuple[int, ...] = (6, 12, 24, 16),
        init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, init_features, 7, 2, 3, bias=False),
            nn.BatchNorm2d(init_features),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        channels = init_features
        for i, num_layers in enumerate(blocks):
            block = DenseBlock(channels, num_layers, growth, bn_size)
            layers.append(block)
            channels = block.out_channels
            if i < len(blocks) - 1:
                out = int(channels * compression)
                layers.append(Transition(channels, out))
                channels = out
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.fc(x)


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build DenseNet from params (growth, blocks, init_features, bn_size, compression, num_classes)."""
    return DenseNet(
        params["growth"],
        tuple(params["blocks"]),
        params["init_features"],
        params["bn_size"],
        params["compression"],
        params["num_classes"],
    )


def sample(rng: random.Random) -> dict[str, Any]:
    """Random growth rate, layers per block, stem width and bottleneck size."""
    return {
        "growth": rng.choice((12, 16, 24, 32, 48)),
        "blocks": (rng.randint(2, 6), rng.randint(4, 12), rng.randint(6, 24), rng.randint(4, 16)),
        "init_features": rng.choice((32, 48, 64, 96)),
        "bn_size": rng.choice((2, 4)),
        "compression": 0.5,
    }


FAMILY = Family(
    name="densenet",
    builder=build,
    sampler=sample,
    canonical={
        "densenet121": {
            "growth": 32, "blocks": (6, 12, 24, 16), "init_features": 64, "bn_size": 4, "compression": 0.5,
            "num_classes": 1000,
        },
    },
)  # fmt: skip
