"""Fixtures of the optimiser tests: a small residual CNN built with onnx.helper, and a board."""

from __future__ import annotations

import pytest

from tests.optimiser.models import make_residual_model


@pytest.fixture(scope="session")
def resid_path(tmp_path_factory):
    """Path of the small residual model."""
    return make_residual_model(tmp_path_factory.mktemp("models") / "resid.onnx")


@pytest.fixture(scope="session")
def resid_graph(resid_path):
    """The small residual model as a Graph."""
    from perfpredict.graph import load_onnx

    return load_onnx(resid_path)


@pytest.fixture(scope="session")
def board():
    """A shipped example board without measured figures (the roofline's defaults apply)."""
    from perfpredict.devices import load_example_board

    return load_example_board("raspberry_pi_4")


@pytest.fixture(scope="session")
def roofline():
    """The analytical predictor."""
    from perfpredict.analytical import RooflineModel

    return RooflineModel()
