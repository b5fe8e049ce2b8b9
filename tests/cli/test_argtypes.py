"""Numeric flags reject values they cannot mean, with one line naming what is accepted, before any work."""

import pytest

from cli.main import main

BAD_COUNTS = [
    (["predict", "m.onnx", "--device-features", "b.json", "--threads"], "0", "a positive integer"),
    (["predict", "m.onnx", "--device-features", "b.json", "--threads"], "-2", "a positive integer"),
    (["measure", "m.onnx", "--resolution"], "0", "a positive integer"),
    (["measure", "m.onnx", "--time-cap-s"], "-1", "a positive number"),
    (["train", "--data", "d.db", "-o", "out", "--threads"], "0", "a positive integer"),
    (["train", "--data", "d.db", "-o", "out", "--seed"], "-1", "an integer >= 0"),
    (["evaluate", "--predictor", "flops", "--data", "d.db", "--epochs"], "0", "a positive integer"),
    (["transfer", "--predictor", "p", "--device-features", "b.json", "-o", "o", "--measure-on", "local", "-k"],
     "-1", "an integer >= 0"),
    (["profile", "models", "--store", "s.db", "--plans-per-model"], "0", "a positive integer"),
    (["profile", "models", "--store", "s.db", "--max-minutes"], "nan", "a positive number"),
    (["profile", "noise", "--store", "s.db", "--repeat"], "-1", "an integer >= 0"),
    (["zoo", "sample", "resnet", "-o", "dir", "-n"], "0", "a positive integer"),
    (["dataset", "export", "d.db", "-o", "x.csv", "--threads"], "zero", "a positive integer"),
]


@pytest.mark.parametrize("args, value, accepted", BAD_COUNTS, ids=[" ".join(a[:2] + [a[-1]]) for a, _, _ in BAD_COUNTS])
def test_a_count_or_duration_out_of_range_is_a_usage_error(args, value, accepted, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"{args[-1]}: expected {accepted}, got" in err and value in err and "Traceback" not in err
