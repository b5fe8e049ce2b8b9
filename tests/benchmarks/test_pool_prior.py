from dataclasses import replace

import pytest

from benchmarks.pool_prior import fit_costs, memory_slowdown, pool_rows, summarise
from perfpredict.analytical import memory_cost
from perfpredict.features import FeatureSpace, device_rates, template_for
from perfpredict.models import load_model
from perfpredict.plan import Choice
from perfpredict.samples import LayerSample
from tests.perfpredict.test_features import DEVICE

CHOICES = (Choice("maxpool.torch", "NCHW"), Choice("maxpool.torch", "NCHW", "int8"), Choice("maxpool.torch", "NHWC"),
           Choice("maxpool.dnnl", "NHWC"))


@pytest.fixture(scope="module")
def pool():
    """resnet18's max pool as a layer sample per choice and thread count (latency filled in by each test)."""
    graph = load_model("resnet18")[0]
    i = [n.op for n in graph.nodes].index("MaxPool")
    node, tpl = graph.nodes[i], template_for(graph).subset([i])  # as the store's layer records: inputs matched
    return node, [LayerSample(tpl, {node.name: c}, DEVICE, t, 1.0, "resnet", "resnet18") for c in CHOICES
                  for t in (1, 2)]


@pytest.fixture(scope="module")
def spaces():
    return {"reference": replace(FeatureSpace.current(), schema_version=12), "current": FeatureSpace.current()}


def test_the_memory_term_is_the_bytes_over_the_bandwidth_and_the_current_prior_applies_the_cost(pool, spaces):
    node, samples = pool
    rows = pool_rows(samples, spaces)
    assert len(rows) == len(samples)
    for r, s in zip(rows, samples):
        scale = 0.25 if r["precision"] == "int8" else 1.0
        bw = device_rates(DEVICE, s.threads).bandwidth_gbs * 1e6
        assert r["memory_ms"] == pytest.approx((node.bytes_in + node.bytes_out) * scale / bw, rel=1e-6)
        assert r["window_ratio"] == pytest.approx(4.0 * node.flops / (node.bytes_in + node.bytes_out))
        cost = memory_cost(r["primitive"], r["layout"])
        extra = (cost.per_byte - 1.0 + cost.per_window_byte * r["window_ratio"]) * r["memory_ms"]
        assert r["prior_current"] - r["prior_reference"] == pytest.approx(extra, rel=1e-6)
        # a kernel whose bytes take 10x the bandwidth's time, at the prior's other terms, shows a slowdown of 10
        r["measured_ms"] = r["prior_reference"] + 9.0 * r["memory_ms"]
        assert memory_slowdown(r) == pytest.approx(10.0)


def test_the_pooled_table_leaves_out_the_excluded_stores(pool, spaces):
    _, samples = pool
    a = pool_rows(samples, spaces)
    b = [dict(r, measured_ms=100.0 * r["measured_ms"]) for r in a]
    payload, table = summarise({"a": a, "b": b}, {"b"}, "12")
    assert payload["pooled_stores"] == ["a"]
    assert {(g["store"], g["primitive"], g["layout"]) for g in payload["groups"]} == \
        {(s, c.primitive, c.layout) for s in "ab" for c in CHOICES}
    pooled = {(p["primitive"], p["layout"]): p for p in payload["pooled"]}
    groups_a = [g for g in payload["groups"] if g["store"] == "a" and g["primitive"] == "maxpool.torch"
                and g["layout"] == "NHWC"]
    assert pooled[("maxpool.torch", "NHWC")]["groups"] == len(groups_a) == 2  # fp32 at 1 and 2 threads
    assert "| maxpool.dnnl | NHWC | 2 |" in table


def test_the_fit_recovers_a_cost_linear_in_the_window_ratio(pool, spaces):
    # rows at two window ratios whose slowdown is 5 + 10 x ratio give back per_byte 5, per_window_byte 10; a kernel
    # seen at one window ratio only gets no fit
    _, samples = pool
    rows = []
    for r in pool_rows(samples, spaces):
        for ratio in (0.8, 1.8):
            row = dict(r, window_ratio=ratio)
            row["measured_ms"] = row["prior_reference"] + (4.0 + 10.0 * ratio) * row["memory_ms"]
            rows.append(row)
    fits = fit_costs(rows)
    assert set(fits) == {(c.primitive, c.layout, c.precision, t) for c in CHOICES for t in (1, 2)}
    for f in fits.values():
        assert f["per_byte"] == pytest.approx(5.0) and f["per_window_byte"] == pytest.approx(10.0)
    assert fit_costs(pool_rows(samples, spaces)) == {}
