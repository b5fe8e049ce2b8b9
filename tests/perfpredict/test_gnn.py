"""The GNN predictor: priors at initialisation, fitting a known function, batching, persistence, costs.

Targets are synthetic (tests/perfpredict/synthetic.py): these tests check behaviour, never accuracy figures.
"""

import random
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from perfpredict.features import FeatureSpace, encode_plans, plan_node_features, template_for
from perfpredict.gnn import GNNConfig
from perfpredict.gnn_predictor import CheckpointError, GNNPredictor, load_predictor

from perfpredict.plan import Choice, Plan, default_plan
from perfpredict.primitives import candidates
from perfpredict.predictor import NodeCostModel, Predictor
from perfpredict.samples import make_splits
from perfpredict.train import TrainOptions, evaluate

from .synthetic import DEVICE, random_plan, synthetic_samples, zoo_graph


@pytest.fixture(scope="module")
def samples():
    return synthetic_samples(plans_per_graph=16, seed=0)


@pytest.fixture(scope="module")
def split(samples):
    return make_splits(samples, "random:0.34", 0)[0]


@pytest.fixture(scope="module")
def trained(split):
    return GNNPredictor(GNNConfig(hidden=32, layers=2)).fit(split.train, options=TrainOptions(epochs=60, seed=0))


def test_untrained_network_predicts_the_analytical_priors(samples):
    pred = GNNPredictor().fit(samples, options=TrainOptions(epochs=0))
    g = zoo_graph("resnet")
    plans = [random_plan(g, random.Random(3)) for _ in range(5)]
    out = pred.predict(g, plans, DEVICE)
    tpl = template_for(g)
    pf = plan_node_features(tpl, encode_plans(tpl, plans, pred.space), pred.space, DEVICE)
    np.testing.assert_allclose(out.latency_ms, pf.prior_ms.sum(axis=1), rtol=1e-4)
    np.testing.assert_allclose(out.peak_mem_bytes, pf.memory_prior, rtol=1e-4)


def test_fits_a_known_additive_function(trained, split):
    train_metrics = evaluate(trained, split.train)
    test_metrics = evaluate(trained, split.test)
    prior = GNNPredictor(GNNConfig(hidden=32, layers=2)).fit(split.train, options=TrainOptions(epochs=0))
    prior_metrics = evaluate(prior, split.test)
    # 60 epochs on 64 plans: where training lands moves with the seed (train MAPE 3-16% over seeds 0-3), so the
    # fit is held against the analytical prior it starts from rather than to a fixed figure
    assert train_metrics["latency"]["mape"] < 0.5 * evaluate(prior, split.train)["latency"]["mape"]
    assert train_metrics["memory"]["mape"] < 5.0
    assert test_metrics["latency"]["mape"] < 0.5 * prior_metrics["latency"]["mape"]
    assert test_metrics["memory"]["mape"] < 0.5 * prior_metrics["memory"]["mape"]
    assert test_metrics["latency"]["spearman"] > 0.8


def test_batching_and_chunking_do_not_change_predictions(trained):
    g = zoo_graph("mobilenet_v2")
    plans = [random_plan(g, random.Random(k)) for k in range(7)]
    batch = trained.predict(g, plans, DEVICE)
    single = [trained.predict(g, [p], DEVICE) for p in plans]
    np.testing.assert_allclose(batch.latency_ms, [s.latency_ms[0] for s in single], rtol=1e-5)
    np.testing.assert_allclose(batch.peak_mem_bytes, [s.peak_mem_bytes[0] for s in single], rtol=1e-5)
    trained.max_nodes_per_batch = len(g.nodes) * 2  # forces chunks of two plans
    try:
        chunked = trained.predict(g, plans, DEVICE)
    finally:
        trained.max_nodes_per_batch = 150_000
    np.testing.assert_allclose(chunked.latency_ms, batch.latency_ms, rtol=1e-5)
    mixed = trained.predict([g, zoo_graph("resnet"), g], [plans[0], Plan({}), plans[1]], DEVICE)
    assert mixed.latency_ms[0] == pytest.approx(batch.latency_ms[0], rel=1e-5)
    assert mixed.latency_ms[2] == pytest.approx(batch.latency_ms[1], rel=1e-5)
    assert np.all(mixed.latency_ms > 0) and np.all(mixed.peak_mem_bytes > 0)


def test_threads_change_the_prediction(trained):
    g = zoo_graph("resnet")
    one = trained.predict(g, [Plan({})], DEVICE, threads=1).latency_ms[0]
    two = trained.predict(g, [Plan({})], DEVICE, threads=2).latency_ms[0]
    assert two < one  # the synthetic target runs 1/0.6 times slower on one thread


def test_save_load_round_trip(trained, tmp_path):
    path = trained.save(tmp_path / "ckpt")
    assert path.name == "model.pt" and path.stat().st_size < 5_000_000
    back = GNNPredictor.load(tmp_path / "ckpt")
    g = zoo_graph("squeezenet")
    plans = [random_plan(g, random.Random(k)) for k in range(4)]
    a, b = trained.predict(g, plans, DEVICE), back.predict(g, plans, DEVICE)
    np.testing.assert_array_equal(a.latency_ms, b.latency_ms)
    np.testing.assert_array_equal(a.peak_mem_bytes, b.peak_mem_bytes)
    meta = torch.load(path, weights_only=True)
    for key in ("perfpredict_version", "feature_schema_version", "feature_space", "training", "metrics", "versions"):
        assert key in meta
    assert meta["training"]["data_hash"] == "synthetic-0"
    assert "Conv" in meta["feature_space"]["ops"]
    assert isinstance(back, Predictor) and isinstance(back, NodeCostModel)


@pytest.mark.parametrize("version", [8, 9, 10, 11])  # 8 lacks log_traits_prior_ms, 8-9 slow_path, 8-10 chained,
# 8-11 give a Clip its own one-hots
def test_a_checkpoint_of_a_previous_feature_schema_loads_and_predicts(samples, tmp_path, version):
    old = GNNPredictor(GNNConfig(hidden=16, layers=1))
    old.space = replace(FeatureSpace.current(), schema_version=version)
    old.fit(samples, options=TrainOptions(epochs=2, seed=0))
    path = old.save(tmp_path / f"v{version}")
    assert torch.load(path, weights_only=True)["feature_schema_version"] == version
    back = GNNPredictor.load(path)
    assert back.space.schema_version == version
    assert back.space.plan_dim == FeatureSpace.current().plan_dim - (11 - version)
    g = zoo_graph("squeezenet")
    plans = [random_plan(g, random.Random(k)) for k in range(3)]
    np.testing.assert_array_equal(back.predict(g, plans, DEVICE).latency_ms, old.predict(g, plans, DEVICE).latency_ms)


def test_other_schema_version_or_garbage_is_a_clear_error(trained, tmp_path):
    path = trained.save(tmp_path / "ckpt")
    payload = torch.load(path, weights_only=True)
    payload["feature_schema_version"] = 999
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="feature schema version 999"):
        GNNPredictor.load(tmp_path / "old.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        GNNPredictor.load(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        GNNPredictor.load(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not trained"):
        GNNPredictor().predict(zoo_graph("resnet"), [Plan({})], DEVICE)


def test_load_predictor_resolves_names(trained, tmp_path, monkeypatch):
    trained.save(tmp_path / "trained_models" / "tiny")
    monkeypatch.chdir(tmp_path)
    assert isinstance(load_predictor("tiny"), GNNPredictor)
    with pytest.raises(CheckpointError, match="known: .*tiny"):
        load_predictor("absent")


@pytest.mark.parametrize("model", ["resnet", "mobilenet_v2"])
def test_plan_latencies_run_locally_but_equal_whole_predictions(trained, model):
    g = zoo_graph(model)
    tpl = template_for(g)
    rng = random.Random(3)
    plans = []
    for k in range(24):  # one to three nodes changed (primitive, layout, precision, pruning), and whole plans
        full = random_plan(g, random.Random(k)).choices
        names = rng.sample(sorted(full), k=min(len(full), 1 + k % 3)) if k < 20 else sorted(full)
        plans.append(Plan({nm: full[nm] for nm in names}))
    plans.append(Plan({}))
    whole = trained.predict_plans(tpl, plans, DEVICE).latency_ms
    np.testing.assert_allclose(trained.plan_latencies(tpl, plans, DEVICE), whole, rtol=2e-5)
    trained.max_nodes_per_batch = 4 * len(g.nodes)  # chunks of one plan
    try:
        np.testing.assert_allclose(trained.plan_latencies(tpl, plans, DEVICE), whole, rtol=2e-5)
    finally:
        trained.max_nodes_per_batch = 150_000


@pytest.fixture()
def ungrouped(trained):
    """The trained predictor with a pair term for every option (``pair_groups`` off), restored afterwards."""
    trained.pair_groups = False
    trained.__dict__.pop("_cost_cache", None)
    try:
        yield trained
    finally:
        trained.pair_groups = True
        trained.__dict__.pop("_cost_cache", None)


def test_pairwise_costs_are_exact_for_single_and_pair_changes(ungrouped):
    trained = ungrouped
    g = zoo_graph("resnet")
    base = default_plan(g)
    convs = [n for n in g.nodes if n.op == "Conv"][:2]
    opts = {n.name: [base.choices[n.name]] + [Choice(p.name, p.layouts[-1], p.precisions[0])
                                              for p in candidates(n)[:3]] for n in convs}
    costs = trained.node_costs(g, DEVICE, opts)
    total_default = trained.predict(g, [base], DEVICE).latency_ms[0]
    shares = {n.name: c[0] for n, c in zip(convs, costs.values())}
    # the default option of every node: node costs of the named nodes are their shares of T(default)
    a, b = convs
    for k, o in enumerate(opts[a.name]):
        t = trained.predict(g, [base.with_choice(a.name, o)], DEVICE).latency_ms[0]
        assert costs[a.name][k] - shares[a.name] == pytest.approx(t - total_default, rel=1e-4, abs=1e-6)
    edge = trained.edge_costs(g, DEVICE, a.name, b.name, opts[a.name], opts[b.name])
    assert edge.shape == (len(opts[a.name]), len(opts[b.name]))
    np.testing.assert_allclose(edge[0, :], 0.0, atol=1e-6)
    for i, oa in enumerate(opts[a.name]):
        for j, ob in enumerate(opts[b.name]):
            t = trained.predict(g, [base.with_choice(a.name, oa).with_choice(b.name, ob)], DEVICE).latency_ms[0]
            expect = t - total_default
            got = (costs[a.name][i] - shares[a.name]) + (costs[b.name][j] - shares[b.name]) + edge[i, j]
            assert got == pytest.approx(expect, rel=1e-4, abs=1e-6)
    mem = trained.node_memory(g, DEVICE, opts)
    assert all(v.shape == (len(opts[k]),) and np.all(v >= 0) for k, v in mem.items())
    assert (a.name, b.name) in list(trained.cost_pairs(g))


def test_options_that_differ_only_in_primitive_share_the_cheapest_ones_pair_term(trained, monkeypatch):
    g = zoo_graph("resnet")
    base = default_plan(g)
    a, b = [n for n in g.nodes if n.op == "Conv"][:2]
    nhwc = [Choice(p.name, "NHWC") for p in candidates(a, layout="NHWC", precision="fp32")]
    assert len(nhwc) >= 3  # several primitives in one (layout, precision, prune) group
    opts = {a.name: [base.choices[a.name]] + nhwc, b.name: [base.choices[b.name]] + nhwc}
    costs = trained.node_costs(g, DEVICE, opts)
    predicted = []
    real = trained.plan_latencies
    monkeypatch.setattr(trained, "plan_latencies", lambda tpl, plans, dev: predicted.append(len(plans))
                        or real(tpl, plans, dev))
    edge = trained.edge_costs(g, DEVICE, a.name, b.name, opts[a.name], opts[b.name])
    assert edge.shape == (len(opts[a.name]), len(opts[b.name]))
    assert sum(predicted) == 2 * 2  # the default and one NHWC representative on each side
    np.testing.assert_allclose(edge[0, :], 0.0, atol=1e-6)  # exact at the default plan
    rep_a = 1 + int(np.argmin(costs[a.name][1:]))  # the cheapest NHWC option represents the group
    rep_b = 1 + int(np.argmin(costs[b.name][1:]))
    for i in range(1, len(opts[a.name])):
        np.testing.assert_array_equal(edge[i, :], edge[rep_a, :])
    for j in range(1, len(opts[b.name])):
        np.testing.assert_array_equal(edge[:, j], edge[:, rep_b])
    total = trained.predict(g, [base], DEVICE).latency_ms[0]
    both = trained.predict(g, [base.with_choice(a.name, opts[a.name][rep_a])
                               .with_choice(b.name, opts[b.name][rep_b])], DEVICE).latency_ms[0]
    shares = {a.name: costs[a.name][0], b.name: costs[b.name][0]}
    got = (costs[a.name][rep_a] - shares[a.name]) + (costs[b.name][rep_b] - shares[b.name]) + edge[rep_a, rep_b]
    assert got == pytest.approx(both - total, rel=1e-4, abs=1e-6)  # exact between representatives


def test_ops_never_seen_in_training_warn_and_stay_finite(trained):
    from perfpredict.features import FeatureWarning

    seen = zoo_graph("resnet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeatureWarning)
        trained.predict(seen, [default_plan(seen)], DEVICE)
    g = zoo_graph("efficientnet")  # Sigmoid and Mul: no training family has them
    with pytest.warns(FeatureWarning, match="ops Sigmoid.*never appeared in this predictor's training data"):
        out = trained.predict(g, [default_plan(g)], DEVICE)
    assert np.isfinite(out.latency_ms).all() and (out.latency_ms > 0).all()


def test_layers_measured_from_a_users_onnx_teach_ops_no_training_family_has(split, tmp_path):
    # `perfpredict profile layers --model FILE.onnx` is what the unseen-op warning advises: after it, no warning
    from perfpredict.dataset import open_store
    from perfpredict.features import FeatureWarning
    from perfpredict.models import zoo_onnx_path
    from perfpredict.profile import Protocol, run_layer_campaign
    from perfpredict.samples import load_samples
    from perfpredict.zoo import spec_from_dict

    from .synthetic import zoo_spec

    onnx = zoo_onnx_path(spec_from_dict(zoo_spec("efficientnet")))  # Sigmoid and Mul: no training family has them
    with open_store(tmp_path / "u.db") as store:
        run_layer_campaign(store, threads=(2,), models=[onnx], ops=("Sigmoid", "Mul"), n_configs=4,
                           protocol=Protocol(warmup=1, min_repeats=3, max_repeats=3, time_cap_s=0.005),
                           devices={2: DEVICE}, progress=False)
    measured = load_samples(tmp_path / "u.db", kinds=("layer",)).layers
    assert {s.template.ops[0] for s in measured} == {"Sigmoid", "Mul"}
    pred = GNNPredictor(GNNConfig(hidden=8, layers=1)).fit(replace(split.train, layers=split.train.layers + measured),
                                                           options=TrainOptions(epochs=1, seed=0))
    g = zoo_graph("efficientnet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FeatureWarning)
        pred.predict(g, [default_plan(g)], DEVICE)
    assert not [str(w.message) for w in caught if "ops " in str(w.message)]


def test_nodes_of_an_op_never_seen_in_training_keep_their_prior(trained):
    from perfpredict.features import FeatureWarning, threads_of

    g = zoo_graph("efficientnet")  # Sigmoid and Mul: no training family has them
    tpl = template_for(g)
    plans = [default_plan(g), random_plan(g, random.Random(1)), random_plan(g, random.Random(2))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureWarning)
        pf = trained.featurise(tpl, plans, DEVICE, threads_of(DEVICE))
        nodes = trained.node_latencies(tpl, plans, DEVICE)
        whole = trained.predict_plans(tpl, plans, DEVICE).latency_ms
        local = trained.plan_latencies(tpl, plans[1:], DEVICE)
    unseen = np.isin(tpl.ops, ["Sigmoid", "Mul"])
    assert unseen.any()
    # the fallback prior (an int8 Mul at its float bytes) times each plan's graph-level factor where the correction
    # is off
    assert (pf.fallback_ms[:, unseen] > pf.prior_ms[:, unseen]).any()
    ratio = nodes / pf.fallback_ms
    for row in ratio:
        np.testing.assert_allclose(row[unseen], row[unseen][0], rtol=1e-5)
        assert np.ptp(np.log(row[~unseen])) > 0.01  # elsewhere the network's correction moves each node
    np.testing.assert_allclose(local, whole[1:], rtol=2e-5)  # the local pass follows the same rule
