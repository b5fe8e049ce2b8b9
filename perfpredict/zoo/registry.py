"""Registry of model families, canonical instances, the seeded variant sampler and the model builder."""

from __future__ import annotations

import random
from typing import Any, Mapping

import torch
from torch import nn

from perfpredict.zoo import (
    classic,
    densenet,
    efficientnet,
    googlenet,
    kernels,
    mixnet,
    mnasnet,
    mobilenet,
    mobilenet_v3,
    resnet,
    shufflenet,
    squeezenet,
)
from perfpredict.zoo.spec import DEFAULT_INPUT_SHAPE, Family, ModelSpec, thaw
from perfpredict.zoo.weights import init_weights

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        resnet.FAMILY,
        mobilenet.FAMILY_V1,
        mobilenet.FAMILY_V2,
        mobilenet_v3.FAMILY,
        squeezenet.FAMILY,
        classic.VGG_FAMILY,
        classic.ALEXNET_FAMILY,
        googlenet.FAMILY,
        shufflenet.FAMILY,
        mnasnet.FAMILY,
        efficientnet.FAMILY,
        densenet.FAMILY,
    )
}

PROBES: dict[str, Family] = {kernels.FAMILY.name: kernels.FAMILY}
"""Families that are not models: kernel probes for layer campaigns (:mod:`perfpredict.zoo.kernels`)."""

SYNTHETIC: dict[str, Family] = {f.name: f for f in (mixnet.FAMILY, mixnet.FC_FAMILY)}
"""Families of random models built from the other families' blocks (:mod:`perfpredict.zoo.mixnet`): model campaigns
take them by name, no leave-one-family-out split holds them out."""

_ALL: dict[str, Family] = {**FAMILIES, **SYNTHETIC, **PROBES}

CANONICAL: dict[str, str] = {model: f.name for f in FAMILIES.values() for model in f.canonical}

NUM_CLASSES_CHOICES = (10, 100, 1000, 1000)


def list_families() -> list[str]:
    """Sorted names of the model families (not the kernel probes: :func:`list_probe_families`)."""
    return sorted(FAMILIES)


def list_probe_families() -> list[str]:
    """Sorted names of the kernel-probe families, which only layer campaigns draw from."""
    return sorted(PROBES)


def list_synthetic_families() -> list[str]:
    """Sorted names of the synthetic model families, which model campaigns draw from only when named."""
    return sorted(SYNTHETIC)


def list_models() -> list[str]:
    """Sorted canonical model names."""
    return sorted(CANONICAL)


def get_family(family: str) -> Family:
    """The :class:`Family` called ``family``; KeyError listing the known ones otherwise."""
    try:
        return _ALL[family]
    except KeyError:
        known = list_families() + list_synthetic_families() + list_probe_families()
        raise KeyError(f"unknown family {family!r}; known: {known}") from None


def get_spec(name: str, input_shape: tuple[int, int, int, int] = DEFAULT_INPUT_SHAPE, seed: int = 0) -> ModelSpec:
    """Spec of the canonical model ``name`` (published configuration, 1000 classes)."""
    if name not in CANONICAL:
        raise KeyError(f"unknown model {name!r}; known: {list_models()}")
    family = CANONICAL[name]
    return ModelSpec(family, name, dict(FAMILIES[family].canonical[name]), input_shape, seed)


def sample_variants(
    family: str,
    n: int,
    seed: int,
    resolutions: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> list[ModelSpec]:
    """``n`` distinct random variants of ``family``, deterministic for ``seed``.

    Each variant draws architecture params from the family sampler, an input resolution from
    ``resolutions`` (default: the family's, 96..224 step 32) and a class count (unless ``num_classes``
    is given). Names are ``<family>-v<index:04d>-<8 hex digest>``.
    """
    fam = get_family(family)
    resolutions = tuple(resolutions) if resolutions is not None else fam.resolutions
    too_small = [r for r in resolutions if r < fam.min_resolution]
    if too_small:
        raise ValueError(f"{family} needs input resolution >= {fam.min_resolution}, got {too_small}")
    rng = random.Random(f"perfpredict.zoo:{family}:{seed}")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    attempts = 0
    while len(specs) < n:
        attempts += 1
        if attempts > 100 * max(n, 1):
            raise RuntimeError(f"could not sample {n} distinct {family} variants")
        params = fam.sampler(rng)
        params["num_classes"] = num_classes if num_classes is not None else rng.choice(NUM_CLASSES_CHOICES)
        res = rng.choice(resolutions)
        spec = ModelSpec(family, family, params, (1, 3, res, res))
        digest = spec.digest()
        if digest in seen:
            continue
        seen.add(digest)
        name = f"{family}-v{len(specs):04d}-{digest[:8]}"
        specs.append(ModelSpec(family, name, params, spec.input_shape, seed=int(digest[:8], 16)))
    return specs


def build(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """Instantiate ``spec`` in eval mode with random weights drawn from ``seed`` (default ``spec.seed``).

    The global torch RNG state is left untouched. Modules are created on the meta device and then
    materialised and initialised by :func:`init_weights`, so construction costs one init pass.
    """
    fam = get_family(spec.family)
    with torch.device("meta"):
        model = fam.builder(spec.params, spec.resolution)
    model = model.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        init_weights(model)
    return model.eval()


def describe(spec: ModelSpec) -> dict[str, Any]:
    """JSON-serialisable description: family, name, params, input_shape, seed."""
    return {
        "family": spec.family,
        "name": spec.name,
        "params": {k: thaw(v) for k, v in spec.params.items()},
        "input_shape": list(spec.input_shape),
        "seed": spec.seed,
    }


def spec_from_dict(d: Mapping[str, Any]) -> ModelSpec:
    """The ModelSpec that :func:`describe` wrote ``d`` for (as stored in measurement records)."""
    from perfpredict.errors import DatasetError

    try:
        return ModelSpec(str(d["family"]), str(d["name"]), dict(d["params"]), tuple(d["input_shape"]),
                         int(d.get("seed", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"zoo spec {str(dict(d))[:80]}... is malformed ({exc})") from None
