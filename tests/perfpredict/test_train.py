"""Loading samples from a store, splits, the training loop, model card and the train/evaluate/predict CLI."""

import json
import random

import numpy as np
import pytest
from torch_geometric.data import Batch

from cli.main import main
from perfpredict.errors import DatasetError
from perfpredict.gnn import GNNConfig
from perfpredict.gnn_predictor import GNNPredictor
from perfpredict.runtime.executor import DISPATCH_REVISION
from perfpredict.samples import SplitError, load_samples, make_splits, parse_split, spec_from_dict
from perfpredict.train import TrainOptions, _forward, featurise_samples, run_evaluation, to_data, train_and_report

from .synthetic import DEVICE, random_plan, synthetic_node_latency, synthetic_samples, write_synthetic_store, zoo_graph, zoo_spec


@pytest.fixture(scope="module")
def source():
    return synthetic_samples(plans_per_graph=6, seed=2, layers=True)


@pytest.fixture(scope="module")
def store(source, tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("store") / "s.sqlite", source)


@pytest.fixture(scope="module")
def loaded(store):
    return load_samples(store)


def test_load_samples_rebuilds_graphs_plans_and_targets(source, loaded):
    assert len(loaded.models) == len(source.models) and len(loaded.layers) == len(source.layers)
    assert loaded.skipped == {"noise-recheck": 1, "graph_id mismatch or no zoo spec": 1}
    by_key = {(s.model_name, s.threads, s.plan.key): s for s in source.models}
    for s in loaded.models[:20]:
        ref = by_key[(s.model_name, s.threads, s.plan.key)]
        assert s.template.graph_id == ref.template.graph_id
        assert s.latency_ms == pytest.approx(ref.latency_ms) and s.peak_mem_bytes == int(ref.peak_mem_bytes)
    assert loaded.data_hash == load_samples(store_path=loaded.source).data_hash
    assert {s.template.node_names[0] for s in loaded.layers} <= {n for s in loaded.models for n in s.template.node_names}
    assert {s.campaign for s in loaded.layers} == {"synthetic"}  # the layer offsets' groups name it


def test_load_samples_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such"):
        load_samples(tmp_path / "absent.sqlite")


def test_splits_hold_out_variants_and_families(loaded):
    sp = make_splits(loaded, "random:0.5", 3)[0]
    train_names = {s.model_name for s in sp.train.models}
    test_names = {s.model_name for s in sp.test.models}
    assert train_names and test_names and not train_names & test_names
    assert not {s.model_name for s in sp.train.layers} & test_names
    lofo = make_splits(loaded, "lofo")
    assert [s.name for s in lofo] == [f"family:{f}" for f in loaded.families()]
    for s in lofo:
        fam = s.name.split(":")[1]
        assert {m.family for m in s.test.models} == {fam}
        assert fam not in {m.family for m in s.train.models} | {l.family for l in s.train.layers}
    # a new family whose layers were profiled alone: its models held out, its layer records kept
    (kept,) = make_splits(loaded, "family-layers:resnet")
    assert kept.name == "family-layers:resnet" and {m.family for m in kept.test.models} == {"resnet"}
    assert "resnet" not in {m.family for m in kept.train.models}
    assert sum(l.family == "resnet" for l in kept.train.layers) == sum(l.family == "resnet" for l in loaded.layers) > 0
    assert parse_split("none") == ("none", None)
    for bad in ("random:1.5", "family", "family-layers:", "bogus"):
        with pytest.raises(SplitError):
            parse_split(bad)


def test_family_shots_move_the_first_plans_of_each_held_out_model_into_training(loaded):
    from dataclasses import replace

    from perfpredict.plan import Plan

    kinds = ["random", "nhwc", "int8", "default", "fast-fp32", "mixed"]  # default and fast-fp32 come first
    named = [replace(s, plan=Plan(s.plan.choices, kinds[i % len(kinds)])) if s.family == "resnet" else s
             for i, s in enumerate(loaded.models)]
    samples = replace(loaded, models=named)
    (sp,) = make_splits(samples, "family-shots:resnet:2")
    assert sp.name == "family-shots:resnet:2"
    shots = [s for s in sp.train.models if s.family == "resnet"]
    groups = {(s.model_name, s.threads) for s in named if s.family == "resnet"}
    assert len(shots) == 2 * len(groups) and {s.plan.name for s in shots} == {"default", "fast-fp32"}
    test_ids = {id(s) for s in sp.test.models}
    assert {s.family for s in sp.test.models} == {"resnet"} and not {id(s) for s in shots} & test_ids
    assert len(sp.test.models) + len(shots) == sum(s.family == "resnet" for s in named)
    assert "resnet" not in {l.family for l in sp.train.layers}  # its layer records stay out, as in family:NAME
    assert parse_split("family-shots:mobilenet_v1:3") == ("family-shots", ("mobilenet_v1", 3))
    for bad in ("family-shots:resnet", "family-shots:resnet:0", "family-shots::2", "family-shots:resnet:x"):
        with pytest.raises(SplitError, match="family-shots:NAME:K"):
            parse_split(bad)


def test_training_is_seeded(loaded):
    opts = TrainOptions(epochs=3, seed=5)
    a = GNNPredictor(GNNConfig(hidden=16, layers=1)).fit(loaded, options=opts)
    b = GNNPredictor(GNNConfig(hidden=16, layers=1)).fit(loaded, options=opts)
    g = zoo_graph("resnet")
    plans = [random_plan(g, random.Random(k)) for k in range(3)]
    np.testing.assert_array_equal(a.predict(g, plans, DEVICE).latency_ms, b.predict(g, plans, DEVICE).latency_ms)


def test_train_and_report_writes_checkpoint_metrics_and_card(store, loaded, tmp_path):
    out = tmp_path / "m"
    metrics = train_and_report(store, out, split="random:0.5", seed=1, epochs=2, progress=False, samples=loaded)
    assert {p.name for p in out.iterdir()} == {"model.pt", "metrics.json", "README.md"}
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["split"] == metrics["split"] == "random:0.5:1"
    card = (out / "README.md").read_text()
    mape = on_disk["test"]["latency"]["mape"]
    assert f"| held-out | latency | {on_disk['test']['latency']['n']} | {mape:.2f} |" in card
    assert on_disk["command"] in card and "--split random:0.5 --seed 1 --epochs 2" in on_disk["command"]
    back = GNNPredictor.load(out)
    assert back.metrics["test"]["latency"]["mape"] == pytest.approx(mape)
    # the training devices travel with the checkpoint (transfer's zero-shot proxies)
    assert [d.to_dict() for d in back.training_devices()] == \
        list({s.device.to_json(indent=None): s.device.to_dict() for s in loaded.models}.values())
    with pytest.raises(SplitError, match="lofo"):
        train_and_report(store, tmp_path / "x", split="lofo", samples=loaded)


def test_run_evaluation_compares_predictors_on_the_same_splits(loaded, tmp_path):
    rows = run_evaluation(loaded, ["flops", "roofline"], "random:0.5", seed=0)
    assert [r["predictor"] for r in rows] == ["flops", "roofline"]
    assert rows[0]["test_samples"] == rows[1]["test_samples"] > 0
    assert rows[0]["metrics"]["latency"]["n"] == rows[0]["test_samples"]


def test_cli_no_progress_silences_the_progress_bars(store, capsys):
    args = ["evaluate", "--predictor", "flops", "--data", store, "--split", "random:0.5", "--json"]
    assert main(args) == 0
    assert "loading records" in capsys.readouterr().err
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["results"][0]["predictor"] == "flops"


def test_cli_train_evaluate_predict(store, tmp_path, capsys):
    out = tmp_path / "cli_model"
    assert main(["train", "--data", store, "-o", str(out), "--epochs", "2", "--split", "random:0.5", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["training"]["epochs_run"] == 2
    assert trained["training"]["options"]["patience"] == TrainOptions().patience
    assert main(["evaluate", "--predictor", str(out), "--predictor", "flops", "--data", store,
                 "--split", "family:resnet", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [r["predictor"] for r in ev["results"]] == [str(out), "flops"]
    assert all(r["split"] == "family:resnet" for r in ev["results"])
    from perfpredict.models import zoo_onnx_path

    onnx_path = str(zoo_onnx_path(spec_from_dict(zoo_spec("resnet"))))
    g = zoo_graph("resnet")
    plan_files = []
    for k in range(3):
        p = random_plan(g, random.Random(k))
        plan_files += ["--plan", str(p.save(tmp_path / f"plan{k}.json"))]
    assert main(["predict", onnx_path, *plan_files, "--device-features", "xeon_gold_6240", "--predictor", str(out),
                 "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert [r["plan"] for r in pred["predictions"]] == ["plan0", "plan1", "plan2"]
    assert all(r["latency_ms"] > 0 and r["peak_mem_mb"] > 0 for r in pred["predictions"])
    assert main(["predict", onnx_path, "--device-features", "xeon_gold_6240", "--predictor", str(tmp_path)]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_evaluate_scores_an_adapted_checkpoint_on_its_target_device_only(store, loaded, tmp_path):
    """An adapted checkpoint answers for its target device and thread count: evaluate scores it on those records
    (saying so) and names the target when the data has none of them."""
    from perfpredict.devices import load_device
    from perfpredict.transfer import CalibratedPredictor, ScaleCalibrator

    src = tmp_path / "src"
    train_and_report(store, src, split="random:0.5", seed=1, epochs=1, progress=False, samples=loaded)
    board = {"type": "board", "board": DEVICE.to_dict()}
    CalibratedPredictor(GNNPredictor.load(src), str(src / "model.pt"), DEVICE, [board], ScaleCalibrator(0.0),
                        {"method": "scale"}).save(tmp_path / "adapted")
    rows = run_evaluation(loaded, [str(tmp_path / "adapted")], "none")
    at_2 = sum(s.threads == 2 for s in loaded.models)
    assert 0 < rows[0]["test_samples"] == at_2 < len(loaded.models)
    assert rows[0]["metrics"]["latency"]["n"] == at_2 and "of its target device" in rows[0]["note"]
    other = load_device({**DEVICE.to_dict(), "name": "elsewhere"})
    CalibratedPredictor(GNNPredictor.load(src), str(src / "model.pt"), other, [board], ScaleCalibrator(0.0),
                        {"method": "scale"}).save(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="adapted to device 'elsewhere'.*no record of it"):
        run_evaluation(loaded, [str(tmp_path / "elsewhere")], "none")


def test_cli_evaluate_checks_checkpoints_before_loading_the_store(tmp_path, capsys, monkeypatch):
    import perfpredict.samples

    def never(*args, **kwargs):
        raise AssertionError("the store was loaded before the predictor was checked")

    monkeypatch.setattr(perfpredict.samples, "load_samples", never)
    assert main(["evaluate", "--predictor", "flops", "--predictor", str(tmp_path / "nope"),
                 "--data", str(tmp_path / "absent.db")]) == 1
    err = capsys.readouterr().err
    assert f"no predictor '{tmp_path / 'nope'}'" in err and "known:" in err
    empty = tmp_path / "empty"  # a directory that is there but holds no checkpoint
    empty.mkdir()
    assert main(["evaluate", "--predictor", str(empty), "--data", str(tmp_path / "absent.db")]) == 1
    err = capsys.readouterr().err
    assert f"{empty}: no checkpoint here" in err and "Traceback" not in err


def test_memory_correction_is_shrunk_to_what_the_validation_samples_support():
    from types import SimpleNamespace

    import torch

    from perfpredict.train import shrink_memory_correction

    class Net(torch.nn.Module):  # the GNN's calling convention, with only a memory head
        def __init__(self):
            super().__init__()
            self.mem_head = torch.nn.Sequential(torch.nn.Linear(1, 1))
            torch.nn.init.constant_(self.mem_head[0].weight, 0.4)
            torch.nn.init.constant_(self.mem_head[0].bias, 0.1)

        def encode_static(self, x):
            return x

        def forward(self, x_static, x_plan, log_prior, dev, edge_index, batch, num_graphs, mem, log_mem_prior):
            return SimpleNamespace(log_memory=log_mem_prior + self.mem_head(mem).squeeze(-1))

    def batch(mem, prior, y):
        return SimpleNamespace(x_static=None, x_plan=None, log_prior=None, dev=None, edge_index=None, batch=None,
                               num_graphs=len(y), mem=mem, log_mem_prior=prior, y_mem=y)

    mem = torch.linspace(-1, 1, 20).unsqueeze(1)
    prior = torch.full((20,), 13.0)
    net = Net()
    full = (0.4 * mem.squeeze(1) + 0.1)
    y = prior + 0.3 * full
    y[3] = float("nan")  # a sample without a memory target is ignored
    assert shrink_memory_correction(net, [batch(mem, prior, y)]) == pytest.approx(0.3)
    with torch.no_grad():
        torch.testing.assert_close(net(None, None, None, None, None, None, 20, mem, prior).log_memory,
                                   prior + 0.3 * full)
    exact_prior = Net()
    assert shrink_memory_correction(exact_prior, [batch(mem, prior, prior.clone())]) == 0.0
    assert float(exact_prior.mem_head[0].weight.abs().sum()) == 0.0
    no_targets = Net()
    assert shrink_memory_correction(no_targets, [batch(mem, prior, torch.full((20,), float("nan")))]) == 1.0


def _correction_gap(pred, samples):
    """Mean |log T_g - log sum_i t_i| over the samples: the size of the graph-level correction."""
    rows = featurise_samples(pred.space, samples.models)
    batch = Batch.from_data_list(to_data(rows, pred.normaliser, pred.space.static_dim))
    out = _forward(pred.model, batch)
    return float((out.log_latency - out.log_node_sum).abs().mean())


def test_node_sum_loss_keeps_the_graph_correction_a_residual(loaded):
    free = GNNPredictor(GNNConfig(hidden=16, layers=1)).fit(loaded, options=TrainOptions(epochs=40, seed=0,
                                                                                          node_sum_weight=0.0))
    tied = GNNPredictor(GNNConfig(hidden=16, layers=1)).fit(loaded, options=TrainOptions(epochs=40, seed=0,
                                                                                          node_sum_weight=1.0))
    gap_free, gap_tied = _correction_gap(free, loaded), _correction_gap(tied, loaded)
    assert gap_tied < 0.5 * gap_free, (gap_free, gap_tied)


def test_early_stopping_follows_the_patience(store, loaded, tmp_path, capsys):
    small = GNNConfig(hidden=16, layers=1)
    full = GNNPredictor(small).fit(loaded, options=TrainOptions(epochs=4, lr=0.0, patience=None))
    assert full.training["epochs_run"] == 4 and full.training["best_epoch"] == 0  # lr 0: nothing improves
    stopped = GNNPredictor(small).fit(loaded, options=TrainOptions(epochs=4, lr=0.0, patience=1))
    assert stopped.training["epochs_run"] == 2
    metrics = train_and_report(store, tmp_path / "p", split="random:0.5", seed=1, epochs=2, progress=False,
                               samples=loaded, options=TrainOptions(patience=7))
    assert metrics["command"].endswith("--epochs 2 --patience 7")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", store, "-o", str(tmp_path / "x"), "--patience", "0"])
    assert exc.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


def test_identity_dropout_blanks_op_and_primitive_columns_of_a_share_of_nodes(loaded):
    import torch

    from perfpredict.features import FeatureSpace
    from perfpredict.train import drop_identity, fit_normaliser, identity_absent

    space = FeatureSpace.current()
    rows = featurise_samples(space, loaded.models[:8])
    norm = fit_normaliser(rows)
    data = to_data(rows, norm, space.static_dim)
    absent = identity_absent(space, norm)
    n_op, n_prim = absent[0].numel(), absent[1].numel()
    assert n_op == len(space.ops) + 1 and n_prim == len(space.primitives) + 1
    before = data[0].x_static.clone()

    def batch():
        return Batch.from_data_list(data)

    ref = batch()
    kept = drop_identity(batch(), 0.0, absent, torch.Generator().manual_seed(0))
    assert torch.equal(kept.x_static, ref.x_static) and torch.equal(kept.x_plan, ref.x_plan)
    every = drop_identity(batch(), 0.999999, absent, torch.Generator().manual_seed(0))
    assert torch.equal(every.x_static[:, :n_op], absent[0].expand(ref.num_nodes, -1))
    assert torch.equal(every.x_plan[:, :n_prim], absent[1].expand(ref.num_nodes, -1))
    assert torch.equal(every.x_static[:, n_op:], ref.x_static[:, n_op:])  # shapes, categories, prior untouched
    assert torch.equal(every.x_plan[:, n_prim:], ref.x_plan[:, n_prim:])
    some = drop_identity(batch(), 0.3, absent, torch.Generator().manual_seed(0))
    blanked = (some.x_static[:, :n_op] != ref.x_static[:, :n_op]).any(dim=1).float().mean()
    assert 0.1 < float(blanked) < 0.5
    assert torch.equal(data[0].x_static, before)  # the shared per-template tensors are not modified


def test_identity_dropout_trains_and_is_recorded_in_the_rebuild_command(store, loaded, tmp_path, capsys):
    out = tmp_path / "drop"
    metrics = train_and_report(store, out, split="random:0.5", seed=1, epochs=2, progress=False, samples=loaded,
                               options=TrainOptions(identity_dropout=0.2))
    assert "--identity-dropout 0.2" in metrics["command"]
    assert metrics["training"]["options"]["identity_dropout"] == 0.2
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", store, "-o", str(tmp_path / "x"), "--identity-dropout", "1.5"])
    assert exc.value.code == 2 and "not a share in [0, 1)" in capsys.readouterr().err


def test_cli_train_network_size_reaches_the_checkpoint_and_the_rebuild_command(store, tmp_path, capsys):
    from perfpredict.gnn_predictor import load_predictor

    out = tmp_path / "wide"
    assert main(["train", "--data", store, "-o", str(out), "--epochs", "2", "--hidden", "24", "--gnn-layers", "2",
                 "--no-progress", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["command"].endswith("--hidden 24 --gnn-layers 2 --epochs 2")
    assert load_predictor(out).config == GNNConfig(hidden=24, layers=2)
    # the defaults are left out of the command, so the shipped card's command reads as before
    assert GNNConfig.of() == GNNConfig() and GNNConfig.of(layers=5) == GNNConfig(hidden=32, layers=5)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", store, "-o", str(tmp_path / "x"), "--hidden", "0"])
    assert exc.value.code == 2 and "--hidden" in capsys.readouterr().err


def _store_of_plans(path, family: str, plans, old_revision: dict[int, int]):
    """A store of one zoo model of ``family`` measured under ``plans``; the records whose index is in
    ``old_revision`` written as at that fusion revision (1: no ``fusion_revision``, as before revision 2)."""
    import dataclasses
    import json

    from perfpredict.dataset import make_record, open_store
    from perfpredict.measure import LatencyStats

    g, spec = zoo_graph(family), zoo_spec(family)
    stats = LatencyStats(median_ms=2.0, iqr_ms=0.02, mean_ms=2.0, min_ms=1.9, cv=0.01, n_repeats=20, ci95_rel=0.005,
                         stable=True, threads=1, warmup=3)
    recs = []
    for k, plan in enumerate(plans):
        rec = make_record(kind="model", device=DEVICE, campaign=f"c{k}", threads=1, stats=stats, graph_id=g.graph_id,
                          plan_json=plan, model_name=g.name, family=family, extra={"spec": spec})
        assert json.loads(rec.extra_json)["fusion_revision"] >= 3
        assert json.loads(rec.extra_json)["dispatch_revision"] == DISPATCH_REVISION
        if k in old_revision:
            old = {"spec": spec} if old_revision[k] == 1 else {"spec": spec, "fusion_revision": old_revision[k]}
            rec = dataclasses.replace(rec, extra_json=json.dumps(old))
        recs.append(rec)
    with open_store(path) as store:
        store.append_many(recs)
    return recs


def _whole_graph(family: str, conv: str):
    from perfpredict.plan import Choice, Plan

    return Plan({n.name: Choice(conv, "NHWC", "fp32") for n in zoo_graph(family).nodes if n.op == "Conv"})


def test_records_that_ran_a_swish_unfused_are_skipped(tmp_path):
    from perfpredict.plan import Plan
    from perfpredict.samples import folded_since

    dnnl = _whole_graph("efficientnet", "conv.dnnl")  # swish is a post-op of conv.dnnl
    onednn = _whole_graph("efficientnet", "conv.onednn")  # not of conv.onednn
    recs = _store_of_plans(tmp_path / "s.db", "efficientnet", (dnnl, onednn, dnnl), {0: 1, 1: 1})
    loaded = load_samples(tmp_path / "s.db")
    assert [s.key for s in loaded.models] == [recs[1].key, recs[2].key]
    assert loaded.skipped == {"ran swish/hardswish/sigmoid unfused (before fusion revision 2)": 1}
    tpl = loaded.models[0].template
    assert folded_since(tpl, dnnl, 1) == 2 and folded_since(tpl, onednn, 1) is None
    assert folded_since(tpl, Plan({}), 1) is None
    assert folded_since(tpl, dnnl, 2) == 3  # efficientnet's residual Adds fold into conv.dnnl since revision 3
    assert folded_since(tpl, dnnl, 3) is None


def test_records_that_ran_a_residual_add_unfused_are_skipped(tmp_path):
    from perfpredict.plan import Choice, Plan
    from perfpredict.samples import folded_since

    dnnl = _whole_graph("resnet", "conv.dnnl")  # the residual is a post-op of conv.dnnl
    onednn = _whole_graph("resnet", "conv.onednn")
    recs = _store_of_plans(tmp_path / "s.db", "resnet", (dnnl, onednn, dnnl), {0: 2, 1: 2})
    loaded = load_samples(tmp_path / "s.db")
    assert [s.key for s in loaded.models] == [recs[1].key, recs[2].key]
    assert loaded.skipped == {"ran a residual Add unfused (before fusion revision 3)": 1}
    tpl = loaded.models[0].template
    assert folded_since(tpl, dnnl, 2) == 3 and folded_since(tpl, onednn, 2) is None
    # an Add at another precision than its convolution does not fold
    adds = [n.name for n in zoo_graph("resnet").nodes if n.op == "Add"]
    mixed = Plan({**dnnl.choices, **{a: Choice("add.torch", "NHWC", "int8") for a in adds}})
    assert folded_since(tpl, mixed, 2) is None


def _with_steps(samples, rng):
    """The samples with step times: their synthetic node latencies up to 5% noise, every node its own group but the
    first two (one group) and the last (no step)."""
    import dataclasses

    out = []
    for s in samples:
        n = s.template.n_nodes
        grp = np.concatenate([[0], np.arange(n - 2), [-1]]).astype(np.int64)
        t = synthetic_node_latency(s.template, [s.plan], s.threads)[0]
        ms = np.concatenate([[t[0] + t[1]], t[2:-1]]) * rng.uniform(0.95, 1.05, n - 2)
        out.append(dataclasses.replace(s, steps=(grp, ms)))
    return out


def test_step_share_targets_sum_to_one_and_the_loss_pulls_node_shares_to_them(loaded):
    import torch

    from perfpredict.train import step_share_loss

    models = _with_steps(loaded.models[:6], np.random.default_rng(0))
    pred = GNNPredictor(GNNConfig(hidden=16, layers=1)).fit(loaded, options=TrainOptions(epochs=1, seed=0))
    rows = featurise_samples(pred.space, models + loaded.models[6:8])
    batch = Batch.from_data_list(to_data(rows, pred.normaliser, pred.space.static_dim))
    rep = ~torch.isnan(batch.step_share)
    per_graph = torch.zeros(batch.num_graphs).index_add_(0, batch.batch[rep], torch.exp(batch.step_share[rep]))
    torch.testing.assert_close(per_graph, torch.tensor([1.0] * 6 + [0.0] * 2))  # samples without steps: none
    assert int(rep.sum()) == sum(int((s.steps[1] > 0).sum()) for s in models)  # a fused node's step: none
    # the loss by hand: each group's share of the node sum (the first two nodes together, the last in no group)
    out = _forward(pred.model, batch)
    node = out.node_log_latency.detach()
    errs = []
    for g, s in enumerate(models):
        lo = int(batch.ptr[g])
        t = torch.exp(node[lo:lo + s.template.n_nodes])
        shares = (torch.cat([t[:2].sum()[None], t[2:-1]]) / t.sum())[torch.from_numpy(s.steps[1] > 0)]
        target = batch.step_share[lo:lo + s.template.n_nodes]
        errs.append(torch.log(shares) - target[~torch.isnan(target)])
    want = torch.nn.functional.smooth_l1_loss(torch.cat(errs), torch.zeros(sum(map(len, errs))), beta=0.1)
    torch.testing.assert_close(step_share_loss(out, batch, 0.1), want)
    assert step_share_loss(out, Batch.from_data_list(to_data(featurise_samples(pred.space, loaded.models[6:8]),
                                                             pred.normaliser, pred.space.static_dim)), 0.1) is None

    every = _with_steps(loaded.models, np.random.default_rng(1))

    def share_error(weight):
        fitted = GNNPredictor(GNNConfig(hidden=16, layers=1)).fit(
            dataclasses.replace(loaded, models=every), options=TrainOptions(epochs=45, seed=0, step_weight=weight,
                                                                            patience=None))
        b = Batch.from_data_list(to_data(featurise_samples(fitted.space, every), fitted.normaliser,
                                         fitted.space.static_dim))
        return float(step_share_loss(_forward(fitted.model, b), b, 0.1))

    import dataclasses

    assert share_error(10.0) < 0.5 * share_error(0.0)


def test_rebuild_command_names_the_step_weight():
    from perfpredict.train import _rebuild_command

    assert " --step-weight 0.3" in _rebuild_command("d.db", "out", "random:0.2", 0, None, step_weight=0.3)
    assert "--step-weight" not in _rebuild_command("d.db", "out", "random:0.2", 0, None)


def test_campaigns_choose_the_records_and_reach_the_rebuild_command_and_the_card(store, loaded, tmp_path, capsys):
    chosen = load_samples(store, campaigns=["synthetic"])
    assert chosen.skipped["not in the chosen campaigns"] == 1  # the other campaign's one record
    assert chosen.summary()["campaigns"] == ["synthetic"] and "campaigns" not in loaded.summary()
    with pytest.raises(DatasetError, match=r"no records of campaign\(s\) nope; the store holds mismatch, "
                                           r"noise-recheck, synthetic"):
        load_samples(store, campaigns=["synthetic", "nope"])
    out = tmp_path / "c"
    assert main(["train", "--data", store, "-o", str(out), "--epochs", "1", "--split", "random:0.5",
                 "--campaigns", "synthetic", "--no-progress", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["data"]["campaigns"] == ["synthetic"] and " --campaigns synthetic " in m["command"]
    assert "; campaigns `synthetic`" in (out / "README.md").read_text()
    assert main(["evaluate", "--predictor", "flops", "--data", store, "--split", "random:0.5",
                 "--campaigns", "synthetic", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["campaigns"] == ["synthetic"]
    assert main(["train", "--data", store, "-o", str(tmp_path / "x"), "--campaigns", "nope", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no records of campaign(s) nope; the store holds mismatch" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--predictor", "flops", "--data", store, "--campaigns", ","])
    assert exc.value.code == 2 and "expected comma-separated names" in capsys.readouterr().err
