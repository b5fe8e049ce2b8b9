"""Measurement sessions: each device's reference session, and training that predicts it."""

import json
from dataclasses import replace

import numpy as np
import pytest

from perfpredict.gnn import GNNConfig
from perfpredict.gnn_predictor import GNNPredictor
from perfpredict.plan import Plan
from perfpredict.samples import SampleSet
from perfpredict.sessions import Sessions, campaign_of
from perfpredict.train import TrainOptions, evaluate, evaluate_by_session, model_card, predict_samples

from .synthetic import synthetic_samples


def _tag(s, campaign, dispatch, stamp, scale=1.0):
    return replace(s, campaign=campaign, dispatch_revision=dispatch, timestamp=stamp, latency_ms=s.latency_ms * scale)


def test_the_reference_is_the_newest_dispatch_then_the_latest_day_per_device_and_threads():
    base = synthetic_samples(plans_per_graph=3, families=("resnet",), variants=1).models
    one, two = [s for s in base if s.threads == 1], [s for s in base if s.threads == 2]
    models = [_tag(one[0], "old-chained", 3, "2026-12-01T10:00"), _tag(one[1], "new-stepwise", 1, "2026-12-03T09:00"),
              _tag(two[0], "a", 1, "2026-12-01T10:00"), _tag(two[1], "b", 1, "2026-12-02T08:00"),
              _tag(two[2], "c", 1, "2026-12-02T11:00")]
    sessions = Sessions.of(models)
    assert sorted(sessions.references.values()) == sorted([sessions.session(models[0]), sessions.session(models[3])])
    # campaigns started on the same day under the same runtime share a session (and its offset)
    assert sessions.session(models[3]) == sessions.session(models[4]) != sessions.session(models[2])
    assert len(sessions) == 2
    assert sessions.index(models[0]) == sessions.index(models[3]) == sessions.index(models[4]) == 2  # no offset
    assert {sessions.index(models[1]), sessions.index(models[2])} == {0, 1}
    assert sessions.session(_tag(one[0], "never-seen", 1, "")) is None
    assert sessions.index(_tag(one[0], "never-seen", 1, "")) == 2
    assert campaign_of(models[1]) in sessions.of_campaign


def _median_ratio(pred, samples):
    lat, _ = predict_samples(pred, samples)
    return float(np.exp(np.median(np.log(lat / np.array([s.latency_ms for s in samples])))))


def test_training_predicts_the_reference_session_and_learns_the_others_offsets():
    # the same plans measured in two sessions: an older one in which everything ran 1.6x slower, and the reference;
    # without offsets the network predicts a blend of the two, with them the reference
    src = synthetic_samples(plans_per_graph=8, seed=3)
    new = [_tag(s, "new", 3, "2026-12-03") for s in src.models]
    old = [_tag(s, "old", 1, "2026-12-01", 1.6) for s in src.models]
    data = SampleSet(new[::2] + old[1::2], [], "synthetic", "sessions")
    fit = dict(epochs=120, seed=0)
    with_offsets = GNNPredictor(GNNConfig(hidden=16, layers=2)).fit(data, options=TrainOptions(session_offsets=True,
                                                                                                **fit))
    without = GNNPredictor(GNNConfig(hidden=16, layers=2)).fit(data, options=TrainOptions(**fit))
    assert abs(np.log(_median_ratio(with_offsets, new))) < 0.08
    assert np.log(_median_ratio(without, new)) > 0.15
    scales = with_offsets.training["session_scales"]
    assert len(scales) == 2 and all("|d1|2026-12-01" in k for k in scales)
    # learnt within 20% of 1.6: since schema 13 the prior prices this synthetic world's NCHW max pools (whose known
    # cost is their FLOPs plus a fixed cost) 30x above it, a correction the small network takes epochs to learn
    assert all(1.45 < v < 1.9 for v in scales.values()), scales
    assert "session_scales" not in without.training
    # scored by session: the reference's records alone, and every record with its session's scale
    by_session = evaluate_by_session(with_offsets, data, with_offsets.training)
    assert by_session["reference"]["latency"]["n"] == len(new[::2])
    assert by_session["corrected"]["latency"]["mape"] < 0.6 * evaluate(with_offsets, data)["latency"]["mape"]
    assert evaluate_by_session(without, data, without.training) is None


def test_cli_train_with_session_offsets_records_them_and_the_flag(tmp_path, capsys):
    from cli.main import main

    from .synthetic import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.sqlite", synthetic_samples(plans_per_graph=4, seed=1))
    out = tmp_path / "ck"
    assert main(["train", "--data", store, "-o", str(out), "--epochs", "3", "--session-offsets", "--no-progress",
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert " --session-offsets" in metrics["command"]
    assert metrics["training"]["reference_sessions"] and "session_scales" in metrics["training"]
    assert metrics["test_by_session"]["reference"]["latency"]["n"] > 0
    assert "reference sessions" in (out / "README.md").read_text()


def test_layer_offsets_learn_the_level_of_layer_records_measured_on_a_slower_day():
    # the kernels measured alone ran 1.6x slower than in the model records: with layer offsets the network learns
    # that level apart (one scale per device and thread count) instead of pulling its nodes towards it
    src = synthetic_samples(plans_per_graph=8, seed=4, layers=True)
    slow = [replace(s, latency_ms=s.latency_ms * 1.6) for s in src.layers]
    data = SampleSet(src.models, slow, "synthetic", "layer-offsets")
    fit = dict(epochs=40, seed=0)
    with_offsets = GNNPredictor(GNNConfig(hidden=16, layers=2)).fit(data, options=TrainOptions(layer_offsets=True,
                                                                                                **fit))
    without = GNNPredictor(GNNConfig(hidden=16, layers=2)).fit(data, options=TrainOptions(**fit))
    scales = with_offsets.training["layer_scales"]
    assert sorted(scales) == [f"{src.layers[0].device.device_id}|1|", f"{src.layers[0].device.device_id}|2|"]
    assert all(v > 1.1 for v in scales.values()) and 1.25 < np.exp(np.mean(np.log(list(scales.values())))) < 2.0, \
        scales
    assert "layer_scales" not in without.training
    # a kernel alone is then priced at its level inside the models, not pulled towards the slower day's
    assert abs(np.log(_layer_ratio(with_offsets, src.layers))) < abs(np.log(_layer_ratio(without, src.layers)))


def _layer_ratio(pred, layers):
    """Median predicted / target latency of layer samples, each as the one-node graph it is."""
    ratios = [pred.predict_plans(s.template, [Plan(dict(s.choices))], s.device, s.threads).latency_ms[0] / s.latency_ms
              for s in layers]
    return float(np.exp(np.median(np.log(ratios))))


def test_synthetic_offsets_keep_the_random_networks_level_apart_from_the_deployed_families():
    # the synthetic networks' records run 1.5x slower than the deployed families' for a reason the features miss:
    # with synthetic offsets the network learns that level as one scale per device and thread count, and prices the
    # deployed families at their own level instead of a blend
    src = synthetic_samples(plans_per_graph=8, seed=5)
    first = src.models[0].family
    deployed = [s for s in src.models if s.family == first]
    synth = [replace(s, family="mixnet", latency_ms=s.latency_ms * 1.5) for s in src.models if s.family != first]
    data = SampleSet(deployed + synth, [], "synthetic", "synthetic-offsets")
    fit = dict(epochs=40, seed=0)
    with_offsets = GNNPredictor(GNNConfig(hidden=16, layers=2)).fit(data, options=TrainOptions(synthetic_offsets=True,
                                                                                                **fit))
    without = GNNPredictor(GNNConfig(hidden=16, layers=2)).fit(data, options=TrainOptions(**fit))
    scales = with_offsets.training["synthetic_scales"]
    device = deployed[0].device.device_id
    assert sorted(scales) == [f"{device}|1", f"{device}|2"]
    assert all(v > 1.1 for v in scales.values()) and 1.25 < np.exp(np.mean(np.log(list(scales.values())))) < 1.9, \
        scales
    assert "synthetic_scales" not in without.training
    assert abs(np.log(_median_ratio(with_offsets, deployed))) < 0.08
    assert abs(np.log(_median_ratio(with_offsets, deployed))) < abs(np.log(_median_ratio(without, deployed)))
    # scored as the model card scores a held-out part: the deployed families alone, and every record at its level
    by_level = evaluate_by_session(with_offsets, data, with_offsets.training)
    assert by_level["reference"]["latency"]["n"] == len(deployed)
    assert by_level["corrected"]["latency"]["mape"] < evaluate(with_offsets, data)["latency"]["mape"]
    assert evaluate_by_session(without, data, without.training) is None
    card = model_card({"training": with_offsets.training, "test": evaluate(with_offsets, data),
                       "test_by_session": by_level}, "ck")
    assert "synthetic networks (`perfpredict.zoo.mixnet`)" in card and "| deployed families |" in card


@pytest.mark.parametrize("flag, layers, scales", [("--layer-offsets", True, "layer_scales"),
                                                   # the store holds no synthetic family: nothing to offset
                                                   ("--synthetic-offsets", False, None)])
def test_cli_train_with_level_offsets_records_the_flag(tmp_path, capsys, flag, layers, scales):
    from cli.main import main

    from .synthetic import write_synthetic_store

    store = write_synthetic_store(tmp_path / "s.sqlite", synthetic_samples(plans_per_graph=4, seed=1, layers=layers))
    out = tmp_path / "ck"
    assert main(["train", "--data", store, "-o", str(out), "--epochs", "3", flag, "--no-progress", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert f" {flag}" in metrics["command"]
    assert metrics["training"]["options"][flag[2:].replace("-", "_")] is True
    if scales:
        assert metrics["training"][scales]
    assert "synthetic_scales" not in metrics["training"]
