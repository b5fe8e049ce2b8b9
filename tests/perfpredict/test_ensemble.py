"""GNNEnsemble: members of consecutive seeds, the averaged answers, the checkpoint and the train CLI's --ensemble."""

import json
import random

import numpy as np
import pytest
import torch

from cli.main import main
from perfpredict.ensemble import GNNEnsemble
from perfpredict.features import template_for
from perfpredict.gnn import GNNConfig
from perfpredict.gnn_predictor import CheckpointError, GNNPredictor, load_predictor
from perfpredict.plan import Choice, Plan
from perfpredict.predictor import NodeCostModel, Predictor
from perfpredict.samples import load_samples
from perfpredict.train import TrainOptions, obtain_predictor, train_and_report

from .synthetic import DEVICE, random_plan, synthetic_samples, write_synthetic_store, zoo_graph

SMALL = GNNConfig(hidden=16, layers=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("store") / "s.sqlite",
                                 synthetic_samples(plans_per_graph=4, seed=3, layers=True))


@pytest.fixture(scope="module")
def loaded(store):
    return load_samples(store)


@pytest.fixture(scope="module")
def ensemble(loaded):
    return GNNEnsemble(3, SMALL).fit(loaded, options=TrainOptions(epochs=2, seed=4))


@pytest.fixture(scope="module")
def graph_and_plans():
    g = zoo_graph("resnet")
    return g, [Plan({}), *(random_plan(g, random.Random(k)) for k in range(4))]


def test_members_are_the_single_trainings_of_consecutive_seeds(loaded, ensemble, graph_and_plans):
    g, plans = graph_and_plans
    assert ensemble.training["ensemble"]["seeds"] == [4, 5, 6] and len(ensemble.members) == 3
    alone = GNNPredictor(SMALL).fit(loaded, options=TrainOptions(epochs=2, seed=5))
    np.testing.assert_array_equal(ensemble.members[1].predict(g, plans, DEVICE).latency_ms,
                                  alone.predict(g, plans, DEVICE).latency_ms)


def test_latency_is_the_geometric_mean_and_memory_the_mean_of_the_members(ensemble, graph_and_plans):
    g, plans = graph_and_plans
    outs = [m.predict(g, plans, DEVICE) for m in ensemble.members]
    got = ensemble.predict(g, plans, DEVICE)
    lats = np.array([o.latency_ms for o in outs])
    assert not np.allclose(lats[0], lats[1])  # the seeds differ, so the average is not trivially one member
    np.testing.assert_allclose(got.latency_ms, np.prod(lats, axis=0) ** (1 / 3), rtol=1e-9)
    np.testing.assert_allclose(got.peak_mem_bytes, np.mean([o.peak_mem_bytes for o in outs], axis=0), rtol=1e-9)


def test_node_latencies_and_plan_latencies_agree_with_predict(ensemble, graph_and_plans):
    g, plans = graph_and_plans
    tpl = template_for(g)
    lat = ensemble.predict_plans(tpl, plans, DEVICE).latency_ms
    nodes = ensemble.node_latencies(tpl, plans, DEVICE)
    assert nodes.shape == (len(plans), tpl.n_nodes) and (nodes >= 0).all()
    np.testing.assert_allclose(nodes.sum(axis=1), lat, rtol=1e-5)
    one_change = [Plan({}).with_choice(*next(iter(p.choices.items()))) for p in plans[1:] if p.choices]
    np.testing.assert_allclose(ensemble.plan_latencies(tpl, one_change, DEVICE),
                               ensemble.predict_plans(tpl, one_change, DEVICE).latency_ms, rtol=1e-4)
    # what every member learned (a member's validation tenth, drawn with its seed, holds records the others train on)
    assert set(ensemble.known_primitives) == set.intersection(*(set(m.known_primitives) for m in ensemble.members))


def test_node_costs_differ_as_the_ensemble_predictions_do(ensemble):
    """The optimiser's additive costs (NodeCostModel through the pairwise expansion) work on the ensemble."""
    g = zoo_graph("squeezenet")
    conv = next(n for n in g.nodes if n.op == "Conv")
    opts = {conv.name: [Choice("conv.onednn"), Choice("conv.im2col")]}
    costs = ensemble.node_costs(g, DEVICE, opts)[conv.name]
    lat = ensemble.predict(g, [Plan({}).with_choice(conv.name, o) for o in opts[conv.name]], DEVICE).latency_ms
    assert costs[1] - costs[0] == pytest.approx(lat[1] - lat[0], abs=1e-5 * lat[0])  # float32 forwards
    assert isinstance(ensemble, NodeCostModel) and isinstance(ensemble, Predictor)


def test_checkpoint_round_trip_and_single_loader_refuses_it(ensemble, graph_and_plans, tmp_path):
    g, plans = graph_and_plans
    file = ensemble.save(tmp_path / "ens")
    back = load_predictor(tmp_path / "ens")
    assert isinstance(back, GNNEnsemble) and back.source_path == file and len(back.members) == 3
    np.testing.assert_allclose(back.predict(g, plans, DEVICE).latency_ms, ensemble.predict(g, plans, DEVICE).latency_ms,
                               rtol=1e-6)
    assert back.training["ensemble"]["seeds"] == [4, 5, 6]
    with pytest.raises(CheckpointError, match="gnn-ensemble.*load_predictor"):
        GNNPredictor.load(tmp_path / "ens")
    payload = torch.load(file, weights_only=True)
    payload["members"] = []
    torch.save(payload, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no members"):
        load_predictor(tmp_path / "empty.pt")


def test_members_of_other_vocabularies_are_refused(ensemble):
    other = GNNPredictor(SMALL)
    other.space = ensemble.members[0].space.__class__.from_dict(
        {**ensemble.members[0].space.to_dict(), "primitives": ["conv.torch"]})
    with pytest.raises(CheckpointError, match="featurise differently"):
        GNNEnsemble(members=[ensemble.members[0], other])


def test_obtain_predictor_trains_an_ensemble_kind(loaded):
    pred = obtain_predictor("gnn-ensemble", loaded, TrainOptions(epochs=1, seed=0))
    assert isinstance(pred, GNNEnsemble) and len(pred.members) == 3


def test_train_and_cli_write_an_ensemble_checkpoint_and_card(store, loaded, tmp_path, capsys):
    out = tmp_path / "m"
    metrics = train_and_report(store, out, split="random:0.5", seed=1, epochs=1, progress=False, samples=loaded,
                               ensemble=2)
    assert "--ensemble 2" in metrics["command"] and metrics["ensemble"] == 2
    card = (out / "README.md").read_text()
    assert "Ensemble of 2 GNN" in card and "seeds 1, 2" in card
    assert isinstance(load_predictor(out), GNNEnsemble)
    assert main(["train", "--data", store, "-o", str(tmp_path / "c"), "--epochs", "1", "--split", "random:0.5",
                 "--ensemble", "2"]) == 0
    assert "2 members, best epochs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", store, "-o", str(tmp_path / "d"), "--ensemble", "0"])
    assert exc.value.code == 2
    assert "--ensemble" in capsys.readouterr().err
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["training"]["ensemble"]["size"] == 2


def test_known_primitives_are_those_the_training_data_varied(ensemble):
    """A primitive registered when the predictor trained but never measured is in its vocabulary with a pinned
    column: the optimiser must not search it, so it is not among the learned primitives."""
    member = ensemble.members[0]
    vocab, known = list(member.space.primitives), set(member.known_primitives)
    ds = member.space.static_dim
    pinned = {p for j, p in enumerate(vocab) if np.isinf(member.normaliser.node_std[ds + j])}
    assert known == set(vocab) - pinned and known and pinned
    assert set(ensemble.known_primitives) <= known
