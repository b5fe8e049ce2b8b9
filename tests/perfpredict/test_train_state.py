"""Resumable training: a run killed after some epochs goes on from the last one and ends as an unbroken run."""

import dataclasses

import pytest
import torch

import perfpredict.train as train_module
from perfpredict.gnn import GNNConfig
from perfpredict.gnn_predictor import GNNPredictor
from perfpredict.samples import load_samples
from perfpredict.train import TrainOptions, train_and_report
from perfpredict.train_state import state_path

from .synthetic import synthetic_samples, write_synthetic_store

SMALL = GNNConfig(hidden=16, layers=1)
# dropout and identity dropout draw from torch's generators, layer batches and shuffles from numpy's
OPTS = TrainOptions(epochs=5, seed=3, patience=None, identity_dropout=0.2, layer_offsets=True)
DROPOUT = GNNConfig(hidden=16, layers=1, dropout=0.2)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    store = write_synthetic_store(tmp_path_factory.mktemp("store") / "s.sqlite",
                                  synthetic_samples(plans_per_graph=4, seed=1, layers=True))
    return load_samples(store)


def _killed_after(epochs: int, monkeypatch):
    """Make the validation of epoch ``epochs`` raise, as a kill between two epochs would stop the run."""
    real, calls = train_module._abs_log_errors, []

    def validation(*args, **kwargs):
        calls.append(1)
        if len(calls) > epochs:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_abs_log_errors", validation)


def test_a_killed_run_resumes_and_ends_as_an_unbroken_one(loaded, tmp_path, monkeypatch, capsys):
    unbroken = GNNPredictor(DROPOUT).fit(loaded, options=OPTS, state_dir=tmp_path / "unbroken")
    assert state_path(tmp_path / "unbroken", 3).is_file() and "resumed_at_epoch" not in unbroken.training
    with monkeypatch.context() as m:
        _killed_after(2, m)
        with pytest.raises(KeyboardInterrupt):
            GNNPredictor(DROPOUT).fit(loaded, options=OPTS, state_dir=tmp_path / "killed")
    assert torch.load(state_path(tmp_path / "killed", 3), weights_only=True)["next_epoch"] == 2
    resumed = GNNPredictor(DROPOUT).fit(loaded, options=OPTS, state_dir=tmp_path / "killed")
    assert "training goes on from epoch 2 of 5" in capsys.readouterr().err
    assert resumed.training["resumed_at_epoch"] == 2 and resumed.training["epochs_run"] == 5
    assert resumed.training["best_epoch"] == unbroken.training["best_epoch"]
    assert resumed.training["history_tail"] == unbroken.training["history_tail"]
    for (k, a), b in zip(unbroken.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    # a finished run's state holds its end: running again trains nothing more and gives the same network
    again = GNNPredictor(DROPOUT).fit(loaded, options=OPTS, state_dir=tmp_path / "killed")
    assert again.training["resumed_at_epoch"] == 5
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                  resumed.model.state_dict().values()))


def test_a_state_of_other_options_or_a_broken_file_is_not_resumed(loaded, tmp_path, capsys):
    GNNPredictor(SMALL).fit(loaded, options=TrainOptions(epochs=2, seed=3), state_dir=tmp_path)
    other = GNNPredictor(SMALL).fit(loaded, options=TrainOptions(epochs=2, seed=3, lr=1e-3), state_dir=tmp_path)
    assert "was written for other data, options or network; training starts afresh" in capsys.readouterr().err
    assert "resumed_at_epoch" not in other.training
    # the same store, options and sample counts, other targets (as another --latency-stat gives): not resumed
    GNNPredictor(SMALL).fit(loaded, options=TrainOptions(epochs=2, seed=3), state_dir=tmp_path)
    capsys.readouterr()
    slower = dataclasses.replace(loaded, models=[dataclasses.replace(m, latency_ms=m.latency_ms * 1.1)
                                                 for m in loaded.models])
    fresh = GNNPredictor(SMALL).fit(slower, options=TrainOptions(epochs=2, seed=3), state_dir=tmp_path)
    assert "training starts afresh" in capsys.readouterr().err and "resumed_at_epoch" not in fresh.training
    state_path(tmp_path, 3).write_bytes(b"not a state")
    GNNPredictor(SMALL).fit(loaded, options=TrainOptions(epochs=2, seed=3), state_dir=tmp_path)
    assert "not a readable training state" in capsys.readouterr().err


def test_train_and_report_removes_the_state_once_the_checkpoint_is_written(loaded, tmp_path, monkeypatch):
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        _killed_after(1, m)
        with pytest.raises(KeyboardInterrupt):
            train_and_report(loaded.source, out, split="random:0.5", seed=2, epochs=3, progress=False,
                             samples=loaded, config=SMALL, ensemble=2)
    assert state_path(out, 2).is_file() and not (out / "model.pt").exists()
    metrics = train_and_report(loaded.source, out, split="random:0.5", seed=2, epochs=3, progress=False,
                               samples=loaded, config=SMALL, ensemble=2)
    assert (out / "model.pt").is_file() and not list(out.glob("train_state_*"))
    assert metrics["training"]["resumed_at_epoch"] == 1  # the first member's record, which the kill stopped


def test_a_killed_evaluation_goes_on_from_its_finished_rows_and_training(loaded, tmp_path, monkeypatch, capsys):
    from perfpredict.train import run_evaluation

    opts = TrainOptions(epochs=3, seed=1, patience=None)
    args = (loaded, ["flops", "gnn"], "lofo", 0, opts)
    unbroken = run_evaluation(*args)
    with monkeypatch.context() as m:
        _killed_after(4, m)  # the second split's gnn, after its first epoch
        with pytest.raises(KeyboardInterrupt):
            run_evaluation(*args, work_root=tmp_path)
    (work,) = tmp_path.iterdir()
    assert len((work / "rows.jsonl").read_text().splitlines()) == 3  # flops, gnn of the first split; flops
    resumed = run_evaluation(*args, work_root=tmp_path)
    err = capsys.readouterr().err
    assert "the evaluation goes on; 3 of" in err and "training goes on from epoch 1 of 3" in err
    assert [(r["split"], r["predictor"]) for r in resumed] == [(r["split"], r["predictor"]) for r in unbroken]
    for a, b in zip(unbroken, resumed):
        assert b["metrics"]["latency"]["mape"] == pytest.approx(a["metrics"]["latency"]["mape"], rel=1e-9)
    assert not list(tmp_path.iterdir())  # done: the work folder is gone
