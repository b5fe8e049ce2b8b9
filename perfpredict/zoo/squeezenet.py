"""SqueezeNet family (Iandola et al. 2016) parametrised by the paper's Fire-module metaparameters."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.spec import Family


class Fire(nn.Module):
    """1x1 squeeze then parallel 1x1 and 3x3 expands, concatenated (ReLU everywhere, no BN)."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = expand1x1 + expand3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))], 1)


def fire_channels(params: Mapping[str, Any]) -> list[tuple[int, int, int]]:
    """(squeeze, expand1x1, expand3x3) per Fire module from base_e, incr_e, freq, pct_3x3, squeeze_ratio."""
    out = []
    for i in range(params["num_fires"]):
        e = params["base_e"] + params["incr_e"] * (i // params["freq"])
        e3 = max(1, int(params["pct_3x3"] * e))
        out.append((max(1, int(params["squeeze_ratio"] * e)), e - e3, e3))
    return out


class SqueezeNet(nn.Module):
    """Stem conv + max pool, Fire modules with ceil-mode max pools, 1x1 conv classifier, global pool."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        channels = params["stem_channels"]
        layers: list[nn.Module] = [
            nn.Conv2d(3, channels, params["stem_kernel"], 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        ]
        for i, (s, e1, e3) in enumerate(fire_channels(params)):
            if i in params["pool_before"]:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            fire = Fire(channels, s, e1, e3)
            layers.append(fire)
            channels = fire.out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(params["dropout"]),
            nn.Conv2d(channels, params["num_classes"], 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.features(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build SqueezeNet from params (stem_channels, stem_kernel, Fire metaparameters, pool_before, ...)."""
    return SqueezeNet(params)


def sample(rng: random.Random) -> dict[str, Any]:
    """Random v1.0 / v1.1 layout and Fire metaparameters (base_e, incr_e, pct_3x3, squeeze_ratio)."""
    v10 = rng.random() < 0.5
    return {
        "stem_channels": rng.choice((64, 96)),
        "stem_kernel": 7 if v10 else 3,
        "num_fires": 8,
        "pool_before": (3, 7) if v10 else (2, 4),
        "base_e": rng.choice((64, 96, 128, 192)),
        "incr_e": rng.choice((32, 64, 128)),
        "freq": rng.choice((1, 2)),
        "pct_3x3": rng.choice((0.25, 0.5, 0.75)),
        "squeeze_ratio": rng.choice((0.125, 0.25, 0.5)),
        "dropout": 0.5,
    }


FAMILY = Family(
    name="squeezenet",
    builder=build,
    sampler=sample,
    canonical={
        "squeezenet1_1": {
            "stem_channels": 64, "stem_kernel": 3, "num_fires": 8, "pool_before": (2, 4), "base_e": 128,
            "incr_e": 128, "freq": 2, "pct_3x3": 0.5, "squeeze_ratio": 0.125, "dropout": 0.5, "num_classes": 1000,
        },
    },
)  # fmt: skip
