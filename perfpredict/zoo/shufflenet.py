"""ShuffleNetV2 family (Ma et al. 2018): channel split, depthwise branch, concat and channel shuffle.

Channel split uses ``torch.split`` with Python-int sizes (one ONNX Split) and the shuffle uses
``view``/``transpose`` on the traced static shape, so the exported graph holds constant-shape Reshapes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import ClassifierHead, ConvBNAct
from perfpredict.zoo.spec import Family

# Paper table 5: output channels of conv1, stages 2-4 and conv5 for each width.
WIDTHS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across ``groups`` via reshape -> transpose -> reshape."""
    n, c, h, w = (int(s) for s in x.shape)
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split, transform one half, concat, shuffle. Stride 2: two downsampling branches, concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError("ShuffleNetV2 unit needs an even number of output channels")
        branch = out_channels // 2
        if stride == 1 and in_channels != out_channels:
            raise ValueError("stride-1 ShuffleNetV2 unit needs in_channels == out_channels")
        self.stride = stride
        self.split_sizes = [in_channels - branch, branch]
        if stride == 2:
            self.branch1 = nn.Sequential(
                ConvBNAct(in_channels, in_channels, kernel_size, 2, groups=in_channels, act="none"),
                ConvBNAct(in_channels, branch, 1),
            )
        branch_in = in_channels if stride == 2 else branch
        self.branch2 = nn.Sequential(
            ConvBNAct(branch_in, branch, 1),
            ConvBNAct(branch, branch, kernel_size, stride, groups=branch, act="none"),
            ConvBNAct(branch, branch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = torch.split(x, self.split_sizes, dim=1)
            out = torch.cat([x1, self.branch2(x2)], 1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """3x3/2 stem, 3x3/2 max pool, three stages of shuffle units, 1x1 conv5, global pool, linear."""

    def __init__(
        self,
        channels: tuple[int, int, int, int, int],
        repeats: tuple[int, int, int],
        kernel_sizes: tuple[int, int, int] = (3, 3, 3),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, channels[0], 3, 2), nn.MaxPool2d(3, 2, 1)]
        in_channels = channels[0]
        for out_channels, n, k in zip(channels[1:4], repeats, kernel_sizes):
            for i in range(n):
                layers.append(ShuffleUnit(in_channels, out_channels, 2 if i == 0 else 1, k))
                in_channels = out_channels
        layers.append(ConvBNAct(in_channels, channels[4], 1))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(channels[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """Build ShuffleNetV2 from params (channels, repeats, kernel_sizes, num_classes)."""
    return ShuffleNetV2(params["channels"], params["repeats"], params["kernel_sizes"], params["num_classes"])


def sample(rng: random.Random) -> dict[str, Any]:
    """Random published width, per-stage repeats and per-stage depthwise kernel."""
    return {
        "channels": WIDTHS[rng.choice(tuple(WIDTHS))],
        "repeats": (rng.randint(2, 6), rng.randint(4, 10), rng.randint(2, 6)),
        "kernel_sizes": tuple(rng.choice((3, 5, 7)) for _ in range(3)),
    }


FAMILY = Family(
    name="shufflenet_v2",
    builder=build,
    sampler=sample,
    canonical={
        "shufflenet_v2": {
            "channels": WIDTHS[1.0], "repeats": (4, 8, 4), "kernel_sizes": (3, 3, 3), "num_classes": 1000,
        },
    },
)  # fmt: skip
