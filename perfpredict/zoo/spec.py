"""Model specifications and the family descriptor every zoo family module provides."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

DEFAULT_RESOLUTIONS = (96, 128, 160, 192, 224)
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)


def freeze(value: Any) -> Any:
    """Recursively turn lists into tuples so parameter values are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        raise TypeError("nested mappings are not allowed in model params")
    return value


def thaw(value: Any) -> Any:
    """Recursively turn tuples into lists (JSON-friendly view of a parameter value)."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSpec:
    """A fully determined model: family, unique name, architecture params, input shape and weight seed.

    ``params`` is a plain dict whose values are ints, floats, strings, bools or (nested) tuples of
    those; it is copied and frozen on construction and the spec hashes by value.
    """

    family: str
    name: str
    params: dict[str, Any]
    input_shape: tuple[int, int, int, int] = DEFAULT_INPUT_SHAPE
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", {k: freeze(v) for k, v in sorted(self.params.items())})
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be (N, 3, H, W), got {self.input_shape}")
        object.__setattr__(self, "input_shape", shape)

    def __hash__(self) -> int:
        return hash((self.family, self.name, tuple(self.params.items()), self.input_shape, self.seed))

    @property
    def resolution(self) -> tuple[int, int]:
        """Input (H, W)."""
        return self.input_shape[2], self.input_shape[3]

    def with_input_shape(self, input_shape: tuple[int, int, int, int]) -> ModelSpec:
        """Same architecture at another input shape (same name; VGG/AlexNet classifiers follow the resolution)."""
        return ModelSpec(self.family, self.name, self.params, input_shape, self.seed)

    def digest(self) -> str:
        """Stable hex digest of family, params and input shape (independent of name and seed)."""
        payload = json.dumps([self.family, {k: thaw(v) for k, v in self.params.items()}, self.input_shape])
        return hashlib.sha1(payload.encode()).hexdigest()


Builder = Callable[[Mapping[str, Any], tuple[int, int]], nn.Module]
Sampler = Callable[[random.Random], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    """A parametric model family.

    ``builder(params, (H, W))`` returns an un-initialised module; ``sampler(rng)`` returns the
    architecture params of a random variant (without ``num_classes``, which the zoo adds);
    ``canonical`` maps published model names to their params.
    """

    name: str
    builder: Builder
    sampler: Sampler
    canonical: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    min_resolution: int = 32
