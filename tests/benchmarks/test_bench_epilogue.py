"""The epilogue benchmark's choice of layers and its handling of a bad model name."""

from __future__ import annotations

from benchmarks import bench_epilogue


def test_the_layers_are_the_convolutions_the_runtime_folds_an_activation_into():
    layers = bench_epilogue.fused_convolutions("efficientnet_b0", 64)
    acts = {g[7] for g in layers}
    assert acts == {"swish", "sigmoid"}  # the swish of every conv, the gate's sigmoid of each squeeze-excite
    depthwise = [g for g in layers if g[5] > 1]
    assert depthwise and all(g[0] == g[1] == g[5] for g in depthwise)
    assert sum(layers.values()) > len(layers)  # repeated blocks share a geometry
    assert not bench_epilogue.fused_convolutions("resnet18", 64) or all(
        g[7] == "relu" for g in bench_epilogue.fused_convolutions("resnet18", 64))


def test_an_unknown_model_is_one_line_and_exit_2(capsys):
    assert bench_epilogue.main(["--model", "no_such_net"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_net" in err[0]
