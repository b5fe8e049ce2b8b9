"""Skip the external-data tests when the public data sets are not beside the repository."""

from __future__ import annotations

import pytest

from perfpredict.external import ENV_VAR, external_root


def _require(name: str):
    root = external_root()
    if not (root / name).is_dir():
        pytest.skip(f"external data {root / name} not found (set ${ENV_VAR} to the folder holding {name}/)")
    return root / name


@pytest.fixture(scope="session")
def help_root():
    """The HELP copy (skips when absent)."""
    return _require("HELP")


@pytest.fixture(scope="session")
def neusight_root():
    """The NeuSight copy (skips when absent)."""
    return _require("NeuSight")
