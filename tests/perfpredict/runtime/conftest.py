"""Fixtures of the runtime tests: zoo models exported once per session at their smallest resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from perfpredict import zoo
from perfpredict.graph import Graph, load_onnx


@pytest.fixture(scope="session")
def zoo_model(tmp_path_factory) -> Callable[[str], tuple[Graph, Path]]:
    """name -> (graph, onnx path) of a zoo model at its family's minimum resolution (exported once)."""
    cache: dict[str, tuple[Graph, Path]] = {}
    folder = tmp_path_factory.mktemp("zoo")

    def get(name: str) -> tuple[Graph, Path]:
        if name not in cache:
            spec = zoo.get_spec(name)
            r = zoo.get_family(spec.family).min_resolution
            path = zoo.export_onnx(spec.with_input_shape((1, 3, r, r)), folder / f"{name}.onnx")
            cache[name] = (load_onnx(path, name=name), path)
        return cache[name]

    return get


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run the runtime tests on one torch thread: on a shared 2-core machine two spinning OpenMP threads make
    small models up to 20x slower. Tests that need other counts pass ``threads=`` explicitly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
