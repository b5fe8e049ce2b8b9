"""What campaigns measure: zoo specs (families, seeded variants, resolutions) and a user's ONNX files."""

from __future__ import annotations

import functools
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


from perfpredict.errors import PerfPredictError
from perfpredict.graph import Graph

DEFAULT_RESOLUTIONS = (96, 128)


def campaign_specs(families: Sequence[str] | None, n_variants_per_family: int, seed: int,
                   resolutions: Sequence[int] = DEFAULT_RESOLUTIONS, *, canonical: bool = True,
                   probes: bool = False) -> list:
    """Zoo ModelSpecs of a campaign: per family its canonical models (at a resolution drawn from
    ``resolutions``) and ``n_variants_per_family`` seeded sampled variants at those resolutions, ordered so
    that families take turns. With ``probes`` the kernel-probe families (:mod:`perfpredict.zoo.kernels`) may be
    named too (they have their own input size; layer campaigns only)."""
    from perfpredict import zoo

    fams = _check_families(families, probes)
    if n_variants_per_family < 0:
        raise PerfPredictError(f"variants per family must be >= 0, got {n_variants_per_family}")
    res = tuple(int(r) for r in resolutions)
    if not res or min(res) < 32:
        raise PerfPredictError(f"resolutions must be integers >= 32, got {list(resolutions)}")
    rng = random.Random(f"perfpredict.profile:{seed}")
    per_family: list[list] = []
    for fam in fams:
        mine = []
        if canonical:
            for name in zoo.list_models():
                spec = zoo.get_spec(name)
                if spec.family == fam:
                    r = rng.choice(res)
                    mine.append(spec.with_input_shape((1, 3, r, r)))
        if n_variants_per_family:
            mine.extend(zoo.sample_variants(fam, n_variants_per_family, seed,
                                            resolutions=None if fam in zoo.list_probe_families() else res))
        per_family.append(mine)
    # families take turns, so a campaign stopped early still covers every family
    return [fam[i] for i in range(max(map(len, per_family), default=0)) for fam in per_family if i < len(fam)]


def onnx_sources(paths: Sequence[str | os.PathLike | OnnxSource]) -> list[OnnxSource]:
    """The user's ONNX files of a campaign, loaded, by absolute path (what their records keep, so re-checks find the
    file from any folder); a missing or malformed one, or two of one stem (they would share a model name in the
    store), is an error."""
    out = [p if isinstance(p, OnnxSource) else OnnxSource(Path(p).absolute()) for p in paths]
    missing = [str(s.path) for s in out if not s.path.is_file()]
    if missing:
        raise PerfPredictError(f"no such ONNX file: {', '.join(missing)}")
    stems = Counter(s.name for s in out)
    twice = sorted(n for n, c in stems.items() if c > 1)
    if twice:
        raise PerfPredictError(f"ONNX files share a file name ({', '.join(twice)}): their records would share a "
                               "model name; rename one")
    for src in out:
        src.graph  # noqa: B018 - loads it: a malformed file is an error here, before anything is measured
    return out


def campaign_sources(models: Sequence[str | os.PathLike | OnnxSource] | None, families: Sequence[str] | None,
                     specs: Sequence | None, draw: Callable[[], list]) -> list:
    """What a campaign measures: the user's ONNX files (:func:`onnx_sources`) first, then ``specs``, or where none
    are given the zoo models ``draw`` returns, unless only ONNX files and no ``families`` are named."""
    if specs is None:
        specs = [] if models and not families else draw()
    return [*onnx_sources(models or ()), *specs]


def _check_families(families: Sequence[str] | None, probes: bool = False) -> list[str]:
    from perfpredict import zoo

    known = zoo.list_families() + zoo.list_synthetic_families() + (zoo.list_probe_families() if probes else [])
    if not families:
        return zoo.list_families()
    bad = [f for f in families if f not in known]
    if bad:
        raise PerfPredictError(f"unknown famil{'y' if len(bad) == 1 else 'ies'} {', '.join(bad)}; "
                               f"known: {', '.join(known)}")
    return list(dict.fromkeys(families))


def spec_dict(spec) -> dict[str, Any]:
    """The zoo spec as stored in records (family, name, params, input_shape, seed)."""
    from perfpredict.zoo import describe

    return describe(spec)


def zoo_graph(spec) -> tuple[Graph, Path]:
    """The Graph of a zoo spec and its (cached) ONNX file."""
    from perfpredict.models import graph_from_spec, zoo_onnx_path

    return graph_from_spec(spec), zoo_onnx_path(spec)


def model_source(item) -> tuple[Graph, Path, dict[str, Any]]:
    """(graph, ONNX file, what its model records keep to rebuild the graph) of a zoo spec or a user's ONNX file."""
    if isinstance(item, OnnxSource):
        from perfpredict.graph_json import pack_graph

        return item.graph, item.path, {"onnx": str(item.path), "graph": pack_graph(item.graph)}
    graph, path = zoo_graph(item)
    return graph, path, {"spec": spec_dict(item)}


@dataclass(frozen=True)
class OnnxSource:
    """A user's ONNX model that a layer or model campaign measures (``perfpredict profile layers|models --model
    FILE``): its records take the file's stem as family and model name."""

    path: Path

    @property
    def name(self) -> str:
        """The file's stem: the records' family and model name."""
        return self.path.stem

    family = name

    @functools.cached_property
    def graph(self) -> Graph:
        """The model's Graph (loaded once)."""
        from perfpredict.models import load_model

        return load_model(self.path)[0]

    def digest(self) -> str:
        """The graph's structure hash (seeds the plans drawn for it, as a zoo spec's digest does)."""
        return self.graph.graph_id
