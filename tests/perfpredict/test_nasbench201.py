"""NAS-Bench-201 arch strings -> Graph: structure, shapes, MACs, degenerate cells, agreement with a torch export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from perfpredict.errors import GraphError
from perfpredict.graph import graph_summary, load_onnx
from perfpredict.nasbench201 import NUM_ARCHS, OPS, arch_string, edge_ops, live_edges, nb201_graph, nb201_onnx, parse_arch

ALL_CONV3 = arch_string(["nor_conv_3x3"] * 6)
ALL_NONE = arch_string(["none"] * 6)
ALL_SKIP = arch_string(["skip_connect"] * 6)
MIXED = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
# fixed part: stem conv + two reduction blocks + classifier (NAS-Bench-201's 7.78 MFLOPs minimum)
FIXED_MACS = (32 * 32 * 16 * 3 * 9  # stem
              + 16 * 16 * 32 * 16 * 9 + 16 * 16 * 32 * 32 * 9 + 16 * 16 * 32 * 16  # reduction 16 -> 32
              + 8 * 8 * 64 * 32 * 9 + 8 * 8 * 64 * 64 * 9 + 8 * 8 * 64 * 32  # reduction 32 -> 64
              + 64 * 10)  # classifier


def _ops(g):
    return graph_summary(g)["ops"]


def test_parse_and_roundtrip():
    cell = parse_arch(MIXED)
    assert cell[0] == (("avg_pool_3x3", 0),)
    assert cell[2] == (("nor_conv_1x1", 0), ("skip_connect", 1), ("skip_connect", 2))
    assert arch_string(edge_ops(MIXED)) == MIXED
    assert NUM_ARCHS == 15625 and len(OPS) == 5


@pytest.mark.parametrize("bad", ["", "|nor_conv_3x3~0|", "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_bad_arch_strings_raise(bad):
    with pytest.raises(GraphError):
        parse_arch(bad)


def test_known_macs_and_counts():
    g = nb201_graph(ALL_CONV3)
    assert FIXED_MACS == 7_783_040
    assert g.macs == 220_119_680  # NAS-Bench-201's largest network: 220.11 M multiply-adds
    ops = _ops(g)
    # 15 cells x 6 convs + stem + 2 x 3 in reduction blocks; BN folded into every conv
    assert ops["Conv"] == 15 * 6 + 1 + 6
    assert ops["Relu"] == 15 * 3 + 2 * 2 + 1  # one shared ReLU per source node (nodes 0, 1, 2)
    assert ops["Add"] == 15 * 3 + 2
    assert ops["BatchNormalization"] == 1  # only the final BN (after a sum) stays unfolded
    assert g.input_shape == (1, 3, 32, 32)
    assert g.nodes[-1].op == "Gemm" and g.nodes[-1].out_shape == (1, 10)
    convs = [n for n in g.nodes if n.op == "Conv"]
    assert {n.out_shape[1:] for n in convs} >= {(16, 32, 32), (32, 16, 16), (64, 8, 8)}


def test_all_none_cells_are_zero_multiplies():
    g = nb201_graph(ALL_NONE)
    ops = _ops(g)
    assert ops["Mul"] == 15 and ops["Conv"] == 7
    assert g.macs == FIXED_MACS
    # the network still runs end to end
    sess = ort.InferenceSession(nb201_onnx(ALL_NONE).SerializeToString())
    out = sess.run(None, {"input": np.ones((1, 3, 32, 32), np.float32)})[0]
    assert out.shape == (1, 10)


def test_all_skip_cells_are_sums():
    g = nb201_graph(ALL_SKIP)
    ops = _ops(g)
    assert ops["Add"] == 15 * 3 + 2 and "Mul" not in ops
    assert g.macs == FIXED_MACS


def test_dead_branches_removed_when_deployed_kept_when_eager():
    arch = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert live_edges(arch) == ((0, "skip_connect", 3),)
    assert nb201_graph(arch).macs == FIXED_MACS
    eager = nb201_graph(arch, mode="eager")
    assert eager.macs == FIXED_MACS + 5 * (32 * 32 * 16 * 16 * 9 + 16 * 16 * 32 * 32 * 9 + 8 * 8 * 64 * 64 * 9)
    ops = _ops(eager)
    assert ops["Mul"] == 15 * 4  # every none edge runs as x * 0
    assert ops["Add"] == 15 * 3 + 2  # node 2 sums 2 terms, node 3 sums 3
    # node 2 is all zeros: its only input edge comes from nothing, so its out-edge vanishes too
    arch2 = "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|"
    assert live_edges(arch2) == ((0, "nor_conv_1x1", 1), (1, "nor_conv_1x1", 3))


def test_eager_graphs_are_distinct_per_arch():
    a = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    b = "|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert nb201_graph(a).graph_id == nb201_graph(b).graph_id  # deployed: the dead conv is gone
    assert nb201_graph(a, mode="eager").graph_id != nb201_graph(b, mode="eager").graph_id
    with pytest.raises(GraphError):
        nb201_graph(a, mode="lazy")


def test_batch_and_mixed_shapes():
    g = nb201_graph(MIXED, batch=4)
    assert g.input_shape == (4, 3, 32, 32)
    pools = [n for n in g.nodes if n.op == "AveragePool" and n.attrs["kernel"] == (3, 3)]
    assert len(pools) == 15 and all(n.attrs["count_include_pad"] == 0 for n in pools)


def test_matches_torch_reference_export(tmp_path):
    """The hand-written ONNX equals a torch.nn build of the same network after export and loading."""
    torch = pytest.importorskip("torch")
    from torch import nn

    def rcb(cin, cout, k, s):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout))

    class Cell(nn.Module):
        def __init__(self, c, arch):
            super().__init__()
            self.cell = parse_arch(arch)
            self.ops = nn.ModuleDict()
            for j, node in enumerate(self.cell, start=1):
                for op, i in node:
                    if op.startswith("nor_conv"):
                        self.ops[f"{i}{j}"] = rcb(c, c, 1 if op.endswith("1x1") else 3, 1)
                    elif op == "avg_pool_3x3":
                        self.ops[f"{i}{j}"] = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

        def forward(self, x):
            vals = [x]
            for j, node in enumerate(self.cell, start=1):
                terms = [vals[i] if op == "skip_connect" else self.ops[f"{i}{j}"](vals[i]) for op, i in node]
                out = terms[0]
                for t in terms[1:]:
                    out = out + t
                vals.append(out)
            return vals[3]

    class Reduce(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.a, self.b = rcb(cin, cout, 3, 2), rcb(cout, cout, 3, 1)
            self.down = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

        def forward(self, x):
            return self.down(x) + self.b(self.a(x))

    arch = "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)]
    c = 16
    for stage in range(3):
        if stage:
            layers.append(Reduce(c, 2 * c))
            c *= 2
        layers += [Cell(c, arch) for _ in range(5)]
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    net = nn.Sequential(*layers).eval()
    path = tmp_path / "ref.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17)
    ref = load_onnx(path)
    ours = nb201_graph(arch)
    assert ours.macs == ref.macs and ours.param_count == ref.param_count
    assert _ops(ours) == _ops(ref)
