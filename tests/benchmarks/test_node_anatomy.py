import dataclasses

import numpy as np
import pytest

from benchmarks.node_anatomy import (analytical_prior, by_family_kind, by_mac_bin, by_op, group_costs, kernel_class,
                                    markdown)
from tests.perfpredict.synthetic import synthetic_node_latency, synthetic_samples


class _Skewed:
    """Predicts the synthetic node latencies exactly, but ``factor`` times them on the nodes of one kernel class."""

    def __init__(self, kernel, factor):
        self.kernel, self.factor = kernel, factor

    def node_latencies(self, template, plans, device, threads=None):
        node = synthetic_node_latency(template, plans, threads)[0].copy()
        for i in range(template.n_nodes):
            if kernel_class(template, plans[0], i) == self.kernel:
                node[i] *= self.factor
        return node[None]


@pytest.fixture(scope="module")
def with_steps():
    """Samples whose measured step times are the synthetic node latencies, one group per node (the last in none),
    and whose recorded latency is twice the steps' sum (steps and record differ in level, as unchained steps do)."""
    out = []
    for s in synthetic_samples(plans_per_graph=3, seed=1, families=("resnet", "mobilenet_v2")).models:
        n = s.template.n_nodes
        t = synthetic_node_latency(s.template, [s.plan], s.threads)[0]
        grp = np.concatenate([np.arange(n - 1), [-1]]).astype(np.int64)
        out.append(dataclasses.replace(s, steps=(grp, t[:-1].copy()), latency_ms=2.0 * float(t[:-1].sum())))
    return out


def test_group_costs_scale_the_steps_to_the_record_and_find_the_skewed_kernel(with_steps):
    kinds = {s.key: "k" for s in with_steps}
    classes = {kernel_class(s.template, s.plan, i) for s in with_steps for i in range(s.template.n_nodes)}
    kernel = next(c for c in sorted(classes) if c.startswith("Conv"))
    rows = group_costs(_Skewed(kernel, 1.5), with_steps, kinds)
    for s in with_steps:  # the measured groups add up to the record's latency
        assert sum(r["meas_ms"] for r in rows if r["record"] == s.key) == pytest.approx(s.latency_ms)
    # measured = 2x the steps, predicted = the node latencies: 0.5 everywhere, 0.75 on the skewed kernel
    skewed = [r for r in rows if r["kernel"] == kernel and r["meas_ms"] > 0]
    assert skewed and all(r["pred_ms"] / r["meas_ms"] == pytest.approx(0.75) for r in skewed)
    rest = [r for r in rows if r["kernel"] not in (kernel, "(no step)") and r["meas_ms"] > 0]
    assert rest and all(r["pred_ms"] / r["meas_ms"] == pytest.approx(0.5) for r in rest)
    assert all(r["pred_ms"] == 0 for r in rows if r["meas_ms"] == 0 and r["kernel"] != "(no step)")  # fused: 0 ms
    assert any(r["kernel"] == "(no step)" and r["pred_ms"] > 0 for r in rows)  # the last node is in no group

    table = by_family_kind(rows)
    assert {(r["family"], r["kind"]) for r in table} == {(s.family, "k") for s in with_steps}
    for r in table:
        assert 0.5 < r["ratio"] < 0.75 + 1e-9
    bins = by_mac_bin(rows, kernel, "k")
    assert bins and all(b["ratio"] == pytest.approx(0.75) and b["us_per_mmac"] > 0 for b in bins)
    assert by_mac_bin(rows, kernel, "other kind") == []
    md = markdown({"meta": {"data": "d", "family": "resnet", "samples_with_steps": len(with_steps), "host": "h",
                            "seconds": 1.0, "kernel": kernel, "kind": "k"},
                   "by_family_kind": table, "by_mac_bin": bins})
    assert "**resnet** (held out)" in md and kernel in md


def test_records_without_steps_are_left_out(with_steps):
    plain = [dataclasses.replace(s, steps=None) for s in with_steps[:3]]
    assert group_costs(_Skewed("none", 1.0), plain, {}) == []


def test_a_store_without_step_times_is_named(tmp_path):
    from benchmarks.node_anatomy import main
    from tests.perfpredict.synthetic import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.db", synthetic_samples(plans_per_graph=2, families=("resnet",)))
    with pytest.raises(SystemExit, match="carries step times .*perfpredict profile steps"):
        main(["--data", store, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out.json").exists()


def test_by_op_sets_the_prior_and_the_network_against_the_measured_share(with_steps):
    kinds = {s.key: "k" for s in with_steps}
    # the prior: 4x the synthetic node latencies on MaxPool nodes, as they are elsewhere (measured = 2x the steps)
    def prior(s):
        t = synthetic_node_latency(s.template, [s.plan], s.threads)[0].copy()
        t[[op == "MaxPool" for op in s.template.ops]] *= 4.0
        return t

    rows = group_costs(_Skewed("none", 1.0), with_steps, kinds, prior=prior)
    table = by_op(rows, min_share=0.0)
    assert {r["op"] for r in table} >= {"Conv", "MaxPool"}
    for fam in {s.family for s in with_steps}:
        assert sum(r["share"] for r in table if r["family"] == fam) == pytest.approx(100.0)
    for r in table:
        assert r["ratio"] == pytest.approx(0.5)
        assert r["prior_ratio"] == pytest.approx(2.0 if r["op"] == "MaxPool" else 0.5)
        assert r["layout"] in ("NCHW", "NHWC")
    assert all(r["share"] >= 5.0 for r in by_op(rows, min_share=5.0))
    md = markdown({"meta": {"data": "d", "family": None, "samples_with_steps": 1, "host": "h", "seconds": 1.0,
                            "kernel": "k", "kind": None}, "by_family_kind": [], "by_mac_bin": [], "by_op": table})
    assert "| MaxPool |" in md and "prior / measured" in md


def test_the_analytical_prior_follows_the_plan_not_the_network(with_steps):
    from perfpredict.plan import Choice, Plan

    s = with_steps[0]
    conv = next(i for i, op in enumerate(s.template.ops) if op == "Conv" and s.template.macs[i] > 0)
    name = s.template.node_names[conv]
    fp32 = dataclasses.replace(s, plan=Plan({name: Choice("conv.onednn")}))
    int8 = dataclasses.replace(s, plan=Plan({name: Choice("conv.int8", precision="int8")}))
    a, b = analytical_prior(fp32), analytical_prior(int8)
    assert a.shape == (s.template.n_nodes,) and (a >= 0).all() and a[conv] > 0
    assert b[conv] != pytest.approx(a[conv])  # the node's primitive and precision price it
    others = [i for i in range(s.template.n_nodes) if i != conv and s.template.ops[i] == "Conv"]
    assert np.allclose(a[others], b[others])  # plain Convs elsewhere keep their price
