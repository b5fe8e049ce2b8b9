"""Fixtures of the profiling tests."""

from __future__ import annotations

import os

import pytest

from perfpredict.profile import zoo_graph
from tests.perfpredict.profile.tiny import tiny_spec


@pytest.fixture(scope="package")
def cache(tmp_path_factory):
    """A private zoo export cache (the tiny squeezenet exported once for the package's tests)."""
    path = tmp_path_factory.mktemp("zoo-cache")
    old = os.environ.get("PERFPREDICT_CACHE")
    os.environ["PERFPREDICT_CACHE"] = str(path)
    zoo_graph(tiny_spec())
    yield path
    if old is None:
        os.environ.pop("PERFPREDICT_CACHE", None)
    else:
        os.environ["PERFPREDICT_CACHE"] = old
