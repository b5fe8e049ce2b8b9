"""Proxy devices: int8 dot-product support matched, Amdahl across thread counts."""

from __future__ import annotations

import numpy as np

from perfpredict.devices import load_device


def test_zero_shot_proxies_match_the_targets_int8_dot_product_support():
    from perfpredict.transfer import int8_dot_product, zero_shot_proxies

    def cpu(name, isa):
        return load_device({"schema_version": 1, "name": name, "kind": "cpu", "cores": 2, "isa_features": isa})

    zen3, zen4, amx = cpu("zen3", ["avx2", "fma"]), cpu("zen4", ["avx512f", "avx512_vnni"]), cpu("spr", ["amx_int8"])
    arm, bare = cpu("a76", ["neon", "asimddp"]), cpu("hand-written", [])
    assert [int8_dot_product(d) for d in (zen3, zen4, amx, arm, bare)] == [False, True, True, True, None]
    assert zero_shot_proxies(zen3, [zen4, amx, arm, bare, zen3]) == [bare, zen3]
    assert zero_shot_proxies(zen4, [zen3, amx, arm, bare]) == [amx, arm, bare]
    assert zero_shot_proxies(bare, [zen3, zen4]) == [zen3, zen4]  # a board that does not say: every device


def test_amdahl_extrapolates_from_one_and_two_threads():
    from perfpredict.transfer import amdahl_latency

    one = np.array([8.0, 8.0, 8.0, 0.0, 8.0])
    two = np.array([4.0, 8.0, 6.0, 0.0, 9.0])  # all parallel, all serial, half-half, zero, slower at 2 (clipped)
    np.testing.assert_allclose(amdahl_latency(one, two, 16), [0.5, 8.0, 4.0 + 4.0 / 16, 0.0, 8.0])
    np.testing.assert_allclose(amdahl_latency(one, two, 2), [4.0, 8.0, 6.0, 0.0, 8.0])
