"""Fixtures of the transfer tests."""

from __future__ import annotations

import numpy as np
import pytest

from perfpredict.measure import torch_threads
from perfpredict.nasbench201 import nb201_graph
from perfpredict.transfer import MultiDeviceConfig, MultiDevicePredictor, encode_graph, fit_multi_device
from tests.perfpredict.transfer.stand_ins import nb201_archs, synthetic_latency


@pytest.fixture(scope="package")
def small_model(tmp_path_factory):
    """A multi-device model trained on three synthetic devices, saved as a checkpoint: (path, reference archs, devices)."""
    archs = nb201_archs(48, 1)
    graphs = [nb201_graph(a) for a in archs]
    devs = {"dev_a": (0.05, 1.0), "dev_b": (0.2, 0.8), "dev_c": (0.01, 1.2)}
    lat = np.stack([synthetic_latency(graphs, *p) for p in devs.values()], 1)
    with torch_threads(1):  # tiny tensors: extra threads only add contention
        model = fit_multi_device([encode_graph(g) for g in graphs], lat, list(devs),
                                 MultiDeviceConfig(hidden=32, layers=2, factors=4, epochs=60, batch_size=8, lr=3e-3))
    ref_archs = nb201_archs(6, 2)
    ref = {f"ref#{i}": model.factors([encode_graph(nb201_graph(a))])[0] for i, a in enumerate(ref_archs)}
    pred = MultiDevicePredictor(model, ref, {"dev_a": {}}, {"note": "test"})
    path = tmp_path_factory.mktemp("md") / "source"
    pred.save(path)
    return path, ref_archs, devs
