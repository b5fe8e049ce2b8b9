"""Kernel probes: one-block networks whose layers cover the op and shape space independently of any model family.

A layer campaign drawn from the model families measures only the layers those families have, so a predictor that
is tested on a family it never saw meets ops (a batch norm that no convolution folds, squeeze-excite gates,
channel shuffles) and shapes its training never had. nn-Meter samples its kernels' configurations instead; these
probes do the same within the zoo: each variant is an average pool that sets the spatial size, a 1x1 convolution
that sets the channels (a ReLU after it), then one block of the kinds the families are built from, at a random
size. Only layer campaigns use them (``perfpredict profile layers --families kernels``): they are not models, and
:func:`perfpredict.zoo.list_families` leaves them out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfpredict.zoo.layers import activation
from perfpredict.zoo.spec import Family

NAME = "kernels"

BLOCKS = ("conv", "dwconv", "unary", "batchnorm", "pool", "head", "gate", "concat", "shuffle", "add")
"""Block kinds, drawn with the weights of :data:`_BLOCK_WEIGHTS` (convolutions most, as the models run them most)."""

_BLOCK_WEIGHTS = (5, 3, 2, 1, 1, 1, 1, 1, 1, 1)
_UNARY = ("relu", "relu6", "hswish", "hsigmoid", "sigmoid", "swish")
_POOLS = ("max3s2p1", "max3s2ceil", "max2s2", "avg2s2")
_SHRINK = (1, 2, 4, 8, 16, 32)  # the input's (224 px) average pool: maps of 224 down to 7 px
MAX_MACS = 400e6
"""Multiply-accumulates a probe's block may cost at most (its channels are halved until it fits)."""
MAX_ELEMENTS = 2 ** 21
"""Elements a probe's input or output map may hold at most (8 MB fp32; the zoo's largest maps hold about 1M)."""


def _channels(rng: random.Random, lo: int = 8, hi: int = 1024) -> int:
    """Log-uniform in [lo, hi]; a multiple of 8 four times out of five (pruned layers keep any count)."""
    c = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    return max(8, int(round(c / 8)) * 8) if rng.random() < 0.8 else max(2, c)


def _fits(p: Mapping[str, Any]) -> bool:
    hw = (224 // p["shrink"]) ** 2
    out = p.get("out", 0) if p["block"] in ("conv", "concat") else 0
    return _block_macs(p) <= MAX_MACS and max(p["channels"], out) * hw <= MAX_ELEMENTS


def _block_macs(p: Mapping[str, Any]) -> float:
    hw = (224 // p["shrink"]) ** 2
    c = p["channels"]
    if p["block"] == "conv":
        return c * p["out"] * p["kernel"] ** 2 * hw / p["stride"] ** 2
    if p["block"] == "dwconv":
        return c * p["kernel"] ** 2 * hw / p["stride"] ** 2
    if p["block"] == "concat":
        return c * p["out"] * hw
    return c * hw


def sample(rng: random.Random) -> dict[str, Any]:
    """A random block (:data:`BLOCKS`), its size and the map size it runs at."""
    block = rng.choices(BLOCKS, _BLOCK_WEIGHTS)[0]
    p: dict[str, Any] = {"block": block, "shrink": rng.choice(_SHRINK), "channels": _channels(rng)}
    if block == "conv":
        p["kernel"] = rng.choices((1, 3, 5, 7), (9, 8, 1, 1))[0]
        p["stride"] = rng.choices((1, 2), (3, 1))[0]
        p["out"] = _channels(rng)
    elif block == "dwconv":
        p["kernel"] = rng.choices((3, 5, 7), (6, 3, 1))[0]
        p["stride"] = rng.choices((1, 2), (3, 1))[0]
    elif block == "unary":
        p["act"] = rng.choice(_UNARY)
    elif block == "pool":
        p["pool"] = rng.choice(_POOLS)
    elif block == "head":
        p["out"] = rng.choice((10, 100, 1000, _channels(rng, 64, 4096)))
    elif block == "gate":
        p["squeeze"] = max(8, p["channels"] // rng.choice((4, 8, 16)))
        p["gate"] = rng.choice(("sigmoid", "hsigmoid"))
    elif block == "concat":
        p["out"] = _channels(rng)
    while not _fits(p):  # big maps take fewer channels: halve the wider side
        key = "out" if block in ("conv", "concat") and p["out"] > p["channels"] else "channels"
        if p[key] <= 8:
            if p["shrink"] >= max(_SHRINK):
                break
            p["shrink"] *= 2  # 8 channels still too many: a smaller map
            continue
        p[key] = max(8, p[key] // 2)
    if block == "shuffle":  # two equal halves
        p["channels"] = max(16, p["channels"] // 2 * 2)
    return p


class _Pool(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind == "avg2s2":
            self.pool: nn.Module = nn.AvgPool2d(2, 2)
        elif kind == "max2s2":
            self.pool = nn.MaxPool2d(2, 2)
        elif kind == "max3s2ceil":
            self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        else:
            self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class _Gate(nn.Module):
    """Squeeze-excite: x * gate(conv(relu(conv(mean(x)))))."""

    def __init__(self, c: int, squeeze: int, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, c, 1)
        self.gate = activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(torch.relu(self.reduce(s))))


class _Concat(nn.Module):
    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.branch = nn.Conv2d(c, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.relu(self.branch(x))], 1)


class _Shuffle(nn.Module):
    """ShuffleNet v2's channel split, shuffle and concatenation (static shapes: no Shape op in the export)."""

    def __init__(self, c: int, size: int) -> None:
        super().__init__()
        self.c, self.size = c, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.c, self.size
        a, b = torch.split(x, [c // 2, c - c // 2], dim=1)
        y = torch.cat([a, torch.relu(b)], 1)
        return y.view(1, 2, c // 2, s, s).transpose(1, 2).reshape(1, c, s, s)


class _Add(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(x)


class _Head(nn.Module):
    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class KernelProbe(nn.Module):
    """Average pool (the map size), 1x1 convolution and ReLU (the channels), then the block under test."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        c, block = params["channels"], params["block"]
        self.shrink = nn.AvgPool2d(params["shrink"]) if params["shrink"] > 1 else nn.Identity()
        self.stem = nn.Conv2d(3, c, 1)
        if block == "conv":
            k = params["kernel"]
            self.block: nn.Module = nn.Conv2d(c, params["out"], k, params["stride"], k // 2)
        elif block == "dwconv":
            k = params["kernel"]
            self.block = nn.Conv2d(c, c, k, params["stride"], k // 2, groups=c)
        elif block == "unary":
            self.block = activation(params["act"])
        elif block == "batchnorm":
            self.block = nn.BatchNorm2d(c)
        elif block == "pool":
            self.block = _Pool(params["pool"])
        elif block == "head":
            self.block = _Head(c, params["out"])
        elif block == "gate":
            self.block = _Gate(c, params["squeeze"], params["gate"])
        elif block == "concat":
            self.block = _Concat(c, params["out"])
        elif block == "shuffle":
            self.block = _Shuffle(c, 224 // params["shrink"])
        elif block == "add":
            self.block = _Add()
        else:
            raise ValueError(f"unknown kernel probe block {block!r}; known: {', '.join(BLOCKS)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(torch.relu(self.stem(self.shrink(x))))


def build(params: Mapping[str, Any], resolution: tuple[int, int]) -> nn.Module:
    """The probe of ``params`` (:func:`sample`'s keys; ``num_classes`` is ignored)."""
    return KernelProbe(params)


FAMILY = Family(name=NAME, builder=build, sampler=sample, canonical={}, resolutions=(224,), min_resolution=224)
