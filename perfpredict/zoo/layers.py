"""Building blocks shared by several zoo families (conv-BN-activation, squeeze-excite, inverted residual)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "relu6", "hswish", "hsigmoid", "swish", "sigmoid", "none")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class Swish(nn.Module):
    """Swish / SiLU written as ``x * sigmoid(x)`` so it exports to Sigmoid + Mul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def activation(name: str) -> nn.Module:
    """Return the activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hswish":
        return nn.Hardswish()
    if name == "hsigmoid":
        return nn.Hardsigmoid()
    if name == "swish":
        return Swish()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


class ConvBNAct(nn.Sequential):
    """Conv2d (same padding) followed by optional BatchNorm and optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str = "relu",
        bn: bool = True,
        padding: int | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=not bn)
        ]
        if bn:
            layers.append(nn.BatchNorm2d(out_channels))
        if act != "none":
            layers.append(activation(act))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce, activation, 1x1 expand, gate, channel-wise Mul."""

    def __init__(self, channels: int, squeeze_channels: int, act: str = "relu", gate: str = "hsigmoid") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = activation(act)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    """MBConv block: optional 1x1 expansion, depthwise kxk, optional SE, linear 1x1 projection, skip if shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expanded_channels: int,
        act: str = "relu6",
        se_channels: int = 0,
        se_act: str = "relu",
        se_gate: str = "hsigmoid",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(ConvBNAct(in_channels, expanded_channels, 1, act=act))
        layers.append(
            ConvBNAct(expanded_channels, expanded_channels, kernel_size, stride, groups=expanded_channels, act=act)
        )
        if se_channels > 0:
            layers.append(SqueezeExcite(expanded_channels, se_channels, act=se_act, gate=se_gate))
        layers.append(ConvBNAct(expanded_channels, out_channels, 1, act="none"))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class ClassifierHead(nn.Module):
    """Global average pool to 1x1, flatten, optional dropout, linear classifier."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))
