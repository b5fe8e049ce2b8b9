"""Resolve what a user names as a model (an ONNX path or a zoo model name) into a :class:`Graph`.

Zoo models are exported once to ONNX and cached under :func:`perfpredict.cache.cache_dir`,
keyed by the spec's digest, so repeated commands do not pay for the export.
"""

from __future__ import annotations

import os
from pathlib import Path

from perfpredict.cache import cache_dir
from perfpredict.errors import GraphError
from perfpredict.graph import Graph, load_onnx


def zoo_onnx_path(spec) -> Path:
    """The cached ONNX file of zoo ``spec`` (exported on first use)."""
    from perfpredict.zoo import export_onnx

    path = cache_dir() / "zoo" / f"{spec.name}-{spec.digest()[:12]}-s{spec.seed}.onnx"
    if not path.is_file():
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
        export_onnx(spec, tmp)
        tmp.replace(path)
    return path


def graph_from_spec(spec) -> Graph:
    """The Graph of a zoo spec (via the cached ONNX export)."""
    return load_onnx(zoo_onnx_path(spec), name=spec.name)


def load_model(source: str | Path, *, resolution: int | None = None) -> tuple[Graph, Path]:
    """Load ``source`` (a path to an .onnx file, or a zoo model name) as a Graph; also return the ONNX path.

    ``resolution`` overrides the input height/width of a zoo model (ignored for ONNX files).
    """
    path = Path(source)
    if path.suffix == ".onnx" or path.exists():
        return load_onnx(path), path
    from perfpredict.zoo import get_spec, list_models

    name = str(source)
    if name not in list_models():
        raise GraphError(f"'{name}' is neither an ONNX file nor a zoo model; zoo models: {', '.join(list_models())}")
    spec = get_spec(name)
    if resolution:
        spec = spec.with_input_shape((1, 3, resolution, resolution))
    onnx_path = zoo_onnx_path(spec)
    return load_onnx(onnx_path, name=name), onnx_path
