"""Measure NAS-Bench-201 architectures on this machine's GPU (or CPU) into HELP's layout.

``bench_transfer_help.py --data DIR`` and ``perfpredict bench transfer --data DIR`` read any folder laid out as
HELP's copy; this script makes one for a device the copy does not hold, so HELP's few-shot evaluation can hold
out hardware that nobody else measured. Each architecture runs as NAS-Bench-201's reference PyTorch code runs
it eagerly (what HELP timed, and what ``nb201_graph(mode="eager")`` describes): stem Conv3x3-BN, three stages
of 5 cells (16, 32, 64 channels) joined by residual reduction blocks, final BN-ReLU, global pooling and a
linear classifier; in a cell every edge runs (``none`` as ``x.mul(0.)``, each ``nor_conv`` with its own
ReLU-Conv-BN), BN in inference mode, random weights, fp32 (TF32 off), one 32x32 input of ``--batch`` images.

Protocol, per architecture: the network is built and moved to the device, then ``--warmup`` untimed calls and
``--repeats`` calls each timed alone (CUDA events on a GPU, ``perf_counter`` on the CPU); the median is the
latency (ms), the interquartile range over the median its spread. Order: the architectures HELP's protocol needs
of a held-out device first (its 10 reference architectures and archs [0, 1900): the shot pool and the 1,000
queries), then all others, each group in a seeded random order, so a run cut by ``--time-budget`` has what the
evaluation needs and a fair sample of the rest. Rows are appended to ``DIR/raw/<name>.csv`` as they are measured
(a stopped run resumes; measured archs are skipped), then ``DIR/nasbench201_latency_ms.csv`` is rewritten with
one column per device of ``DIR/raw`` (``nan`` where an arch is not measured), with the reference archs in
``DIR/hardware_embedding_index.json`` (so the folder loads on its own), and ``DIR/devices.json`` describes each
device and its run.

    python benchmarks/collect_nb201_latency.py --out DIR [--device cuda|cpu] [--name NAME] [--batch 1]
        [--threads N] [--needed-only] [--warmup 2] [--repeats 5] [--time-budget S]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.collect_neusight_ops import device_name, time_call  # noqa: E402
from perfpredict.errors import DatasetError  # noqa: E402
from perfpredict.external.help import HELP_TRAIN_POOL, load_help  # noqa: E402
from perfpredict.nasbench201 import parse_arch  # noqa: E402

QUERIES = 1000
"""HELP's query count: a held-out device needs archs [0, pool + QUERIES) and the reference archs."""
BEACON = 0
"""Arch index timed after every arch, to follow the machine's speed (``|avg_pool_3x3~0|+|nor_conv_1x1~0|...``)."""
DETREND_WINDOW = 51
"""Archs in the running median that takes drift out of a raw file without a beacon."""


def nb201_module(arch: str, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10):
    """NAS-Bench-201's CIFAR network for ``arch`` as an eager torch module (see the module docstring)."""
    import torch
    from torch import nn

    def relu_conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
        return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))

    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mul(0.0)

    def edge(op: str, c: int) -> nn.Module:
        if op == "none":
            return Zero()
        if op == "skip_connect":
            return nn.Identity()
        if op == "avg_pool_3x3":
            return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        return relu_conv_bn(c, c, 3 if op == "nor_conv_3x3" else 1)

    class Cell(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.nodes = parse_arch(arch)
            self.edges = nn.ModuleList(nn.ModuleList(edge(op, c) for op, _ in node) for node in self.nodes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            values = [x]
            for node, ops in zip(self.nodes, self.edges):
                values.append(sum(op(values[src]) for (_, src), op in zip(node, ops)))
            return values[-1]

    class Reduction(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.a, self.b = relu_conv_bn(cin, cout, 3, 2), relu_conv_bn(cout, cout, 3)
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)) + self.shortcut(x)

    layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)]
    c = channels
    for stage in range(3):
        if stage:
            layers.append(Reduction(c, 2 * c))
            c *= 2
        layers.extend(Cell(c) for _ in range(cells_per_stage))
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers).eval()


def measurement_order(n: int, reference: Sequence[int], pool: int, seed: int = 0,
                      needed_only: bool = False) -> list[int]:
    """Arch indices to measure: those HELP's protocol needs of a held-out device (the reference archs and
    [0, pool + QUERIES)) in a seeded random order, then (unless ``needed_only``) the others likewise."""
    rng = np.random.default_rng(seed)
    needed = np.union1d(np.arange(min(n, pool + QUERIES)), np.asarray(reference, int))
    order = rng.permutation(needed).tolist()
    if not needed_only:
        order += rng.permutation(np.setdiff1d(np.arange(n), needed)).tolist()
    return [int(i) for i in order]


def read_raw(path: Path) -> dict[int, tuple[float, float, float]]:
    """Measured rows of a raw file in measurement order: arch index -> (median ms, spread, beacon ms); the
    beacon is ``nan`` in files written before it was timed."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {int(r["index"]): (float(r["latency_ms"]), float(r["spread"]), float(r.get("beacon_ms") or "nan"))
                for r in csv.DictReader(f)}


def collect(archs: Sequence[str], order: Sequence[int], path: Path, device: str, batch: int, warmup: int,
            repeats: int, time_budget: float | None = None, progress: bool = True, beacon: int = BEACON) -> int:
    """Measure the archs of ``order`` not yet in the raw file at ``path`` and append them; the number measured.
    After each arch the beacon arch (built once) is timed the same way, so each row carries the machine's speed
    of its moment."""
    import torch

    done = read_raw(path)
    todo = [i for i in order if i not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    start, n = time.monotonic(), 0
    x = torch.randn(batch, 3, 32, 32, device=device)
    ref = nb201_module(archs[beacon]).to(device)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if not done:
            w.writerow(["index", "latency_ms", "spread", "beacon_ms"])
        for i in todo:
            if time_budget is not None and time.monotonic() - start > time_budget:
                break
            net = nb201_module(archs[i]).to(device)
            ms, spread = time_call(lambda: net(x), device, warmup, repeats)
            ref_ms, _ = time_call(lambda: ref(x), device, warmup, repeats)
            w.writerow([i, f"{ms:.6g}", f"{spread:.4f}", f"{ref_ms:.6g}"])
            f.flush()
            n += 1
            if progress and n % 500 == 0:
                print(f"  {n} archs in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return n


def lag1(values: np.ndarray) -> float:
    """Lag-1 autocorrelation: about 0 (within 3 / sqrt(n)) for archs timed in random order on a steady machine."""
    v = np.asarray(values, float)
    return float(np.corrcoef(v[:-1], v[1:])[0, 1]) if len(v) > 2 and v.std() > 0 else 0.0


def drift_corrected(rows: dict[int, tuple[float, float, float]], window: int = DETREND_WINDOW) -> tuple[dict[int, float], dict]:
    """Latencies of ``rows`` (a raw file, in measurement order) with the machine's drift taken out, and how.

    With a beacon in every row: ``ms * median(beacon) / beacon``. Without one, where the log latencies are
    autocorrelated in measurement order beyond 3 / sqrt(n) (the archs were timed in random order, so that is
    drift): ``ms * median(ms) / m``, ``m`` the running median of the ``window`` latencies timed around it. Else
    as measured."""
    from scipy.ndimage import median_filter

    idx = list(rows)
    ms = np.array([rows[i][0] for i in idx])
    beacon = np.array([rows[i][2] for i in idx])
    before = lag1(np.log(ms))
    if len(ms) and np.isfinite(beacon).all() and (beacon > 0).all():
        fixed, how = ms * np.median(beacon) / beacon, "beacon"
    elif len(ms) > window and before > 3 / np.sqrt(len(ms)):
        level = np.exp(median_filter(np.log(ms), size=window, mode="nearest"))
        fixed, how = ms * np.median(ms) / level, f"running median of {window}"
    else:
        fixed, how = ms, "none"
    return dict(zip(idx, fixed.tolist())), {"correction": how, "lag1_raw": round(before, 3),
                                            "lag1_corrected": round(lag1(np.log(fixed)), 3)}


def write_table(out: Path, archs: Sequence[str], reference: Sequence[int]) -> tuple[Path, dict[str, dict]]:
    """Rewrite ``out/nasbench201_latency_ms.csv`` from every raw file of ``out/raw`` (drift taken out by
    :func:`drift_corrected`; ``nan`` where unmeasured), with ``out/hardware_embedding_index.json`` (the reference
    archs) beside it so the folder loads on its own; the table's path and each device's correction."""
    (out / "hardware_embedding_index.json").write_text(json.dumps({"nasbench201": [int(i) for i in reference]}) + "\n")
    cols, how = {}, {}
    for p in sorted((out / "raw").glob("*.csv")):
        cols[p.stem], how[p.stem] = drift_corrected(read_raw(p))
    table = out / "nasbench201_latency_ms.csv"
    tmp = table.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["nb201_index", "arch_str", *cols])
        for i, a in enumerate(archs):
            w.writerow([i, a, *(f"{c[i]:.6g}" if i in c else "nan" for c in cols.values())])
    tmp.replace(table)
    return table, how


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write HELP's layout into")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--name", default=None, help="device column name (default: the device's model and batch)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    ap.add_argument("--needed-only", action="store_true",
                    help="only the archs a held-out device needs (reference archs and [0, 1900))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds of measuring at most")
    ap.add_argument("--rewrite", action="store_true", help="measure nothing: rewrite the table from DIR/raw")
    args = ap.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available() and not args.rewrite:
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    if args.batch < 1 or args.warmup < 0 or args.repeats < 1:
        raise SystemExit("--batch and --repeats must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out = Path(args.out)
    try:  # the architecture list and reference archs: the folder's own when rewriting, else HELP's copy
        data = load_help("nasbench201", out if args.rewrite else None, devices=[])
    except DatasetError as exc:
        raise SystemExit(f"collect_nb201_latency: {exc}") from None
    meta_path = out / "devices.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if not args.rewrite:
        model = device_name(args.device)
        name = args.name or f"{re.sub(r'[^a-z0-9]+', '_', model.lower()).strip('_')}_{args.batch}"
        order = measurement_order(len(data), data.reference_index, HELP_TRAIN_POOL["nasbench201"], args.seed,
                                  args.needed_only)
        t = time.monotonic()
        n = collect(data.archs, order, out / "raw" / f"{name}.csv", args.device, args.batch, args.warmup,
                    args.repeats, args.time_budget)
        seconds = time.monotonic() - t
        rows = read_raw(out / "raw" / f"{name}.csv")
        spread = np.array([r[1] for r in rows.values()])
        meta[name] = {"device": model, "kind": args.device, "batch": args.batch,
                      "threads": torch.get_num_threads() if args.device == "cpu" else None,
                      "torch": torch.__version__, "warmup": args.warmup, "repeats": args.repeats,
                      "archs_measured": len(rows), "median_spread": float(np.median(spread)) if len(spread) else None,
                      "seconds_last_run": round(seconds, 1)}
        print(f"{name}: {n} archs measured in {seconds:.0f} s ({len(rows)} of {len(data)} in all; median spread "
              f"{meta[name]['median_spread'] or 0:.3f})", file=sys.stderr)
    _, how = write_table(out, data.archs, data.reference_index)
    for dev, h in how.items():
        meta.setdefault(dev, {})["drift"] = h
        print(f"{dev}: drift correction {h['correction']} (lag-1 autocorrelation {h['lag1_raw']} -> "
              f"{h['lag1_corrected']})", file=sys.stderr)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
