"""Measure NeuSight's operator shapes on this machine's GPU (or CPU) into NeuSight's folder layout.

``bench_transfer_neusight.py --data DIR`` (and ``perfpredict.external.neusight``) read any folder laid out as
NeuSight's copy; this script makes one for a GPU the copy does not hold, so the leave-one-GPU-out evaluation
can hold out a GPU that nobody else measured. Shapes: every distinct shape of each operator in the copy's
measurement files (the union over its GPUs; ``--shapes-from`` reads another folder's), in a seeded random order
so that a run cut short by ``--time-budget`` has measured a fair sample, or the first ``--limit`` of them.
Each operator is built as NeuSight describes it: ``conv`` an ``nn.Conv2d(bias=False)`` on a B x Ci x H x H
input, ``linear`` a B x M x K input times a K x N weight, ``relu`` and ``add`` on B x H tensors; fp32 with
TF32 off (the copy's kernels are fp32 sgemm ones), cuDNN autotuning off as in PyTorch's default.

Protocol, per shape: ``--warmup`` untimed calls, then ``--repeats`` calls each timed alone (CUDA events on a
GPU, ``perf_counter`` around a synchronised call on the CPU); the median is the ``Latency`` (ms) and the
interquartile range over the median is kept as ``Spread``. Rows are appended to
``DIR/collect/<op>/p<torch version>/<device name>.csv`` as they are measured, so a stopped run resumes where it
stopped (shapes already in the file are skipped); ``--time-budget`` stops each operator after that many seconds.
On a GPU, ``DIR/device_configs/<device name>.json`` describes it in NeuSight's fields: SMs, L2 and memory as
the device reports them, the maximum SM clock from ``nvidia-smi``, fp32 cores per SM from the compute capability,
the fp32 peak from those, and the memory bandwidth from ``--mem-bw-gbs`` (the spec sheet, as NeuSight's files
give it) or else a measured device-to-device copy.

    python benchmarks/collect_neusight_ops.py --out DIR [--device cuda] [--ops conv,linear,relu,add]
        [--shapes-from DIR] [--limit N] [--warmup 3] [--repeats 10] [--time-budget S] [--mem-bw-gbs GBS]

The H200 of ``benchmarks/results/neusight_h200`` was measured with ``--warmup 2 --repeats 5 --time-budget 95
--mem-bw-gbs 4800`` and then again with ``--time-budget 60`` on the same folder, which measured the rest.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perfpredict.external.neusight import OPERATORS, SHAPE_COLUMNS, load_op  # noqa: E402
from perfpredict.measure import latency_stats  # noqa: E402

FP32_CORES_PER_SM = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 9): 128,
                     (9, 0): 128, (10, 0): 128, (12, 0): 128}
"""fp32 lanes per SM by CUDA compute capability (NVIDIA's architecture whitepapers)."""


def neusight_shapes(op: str, limit: int | None = None, seed: int = 0,
                    data: str | Path | None = None) -> list[tuple[int, ...]]:
    """The distinct shapes of ``op`` over every GPU of a NeuSight-layout folder (default: the copy) in a seeded
    random order (so a run stopped by its time budget has measured a fair sample); the first ``limit`` of them."""
    table = load_op(op, data)
    cols = [table.shape[c] for c in SHAPE_COLUMNS[op]]
    shapes = sorted(set(zip(*(c.tolist() for c in cols))))
    order = np.random.default_rng(seed).permutation(len(shapes))
    return [shapes[i] for i in order[:limit]]


def build_op(op: str, shape: Sequence[int], device: str) -> Callable[[], object]:
    """A zero-argument call running ``op`` at ``shape`` on ``device`` (inputs allocated once)."""
    import torch

    if op == "conv":
        b, ci, co, k, h, stride, pad = shape
        conv = torch.nn.Conv2d(ci, co, k, stride=stride, padding=pad, bias=False).to(device)
        x = torch.randn(b, ci, h, h, device=device)
        return lambda: conv(x)
    if op == "linear":
        b, m, n, k = shape
        x, w = torch.randn(b, m, k, device=device), torch.randn(k, n, device=device)
        return lambda: torch.matmul(x, w)
    b, h = shape
    x, y = torch.randn(b, h, device=device), torch.randn(b, h, device=device)
    return (lambda: torch.relu(x)) if op == "relu" else (lambda: torch.add(x, y))


def time_call(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> tuple[float, float]:
    """(median ms, interquartile range / median) of ``repeats`` calls of ``fn`` each timed alone."""
    import torch

    with torch.no_grad():
        for _ in range(warmup):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
            pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                     for _ in range(repeats)]
            for start, end in pairs:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize()
            ms = np.array([s.elapsed_time(e) for s, e in pairs])
        else:
            ms = np.empty(repeats)
            for i in range(repeats):
                t = time.perf_counter()
                fn()
                ms[i] = (time.perf_counter() - t) * 1e3
    stats = latency_stats(ms)
    return stats.median_ms, stats.iqr_ms / stats.median_ms if stats.median_ms > 0 else 0.0


def device_name(device: str) -> str:
    """The name rows and files carry: the GPU's name, or the CPU's model."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    from perfpredict.devices import static_host

    host = static_host()
    return (host.cpu_model if host and host.cpu_model else "cpu").replace("/", "-")


def copy_bandwidth_gbs(repeats: int = 10) -> float:
    """Measured device-to-device copy bandwidth (bytes read + written per second), GB/s: the best of ``repeats``."""
    import torch

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end))
    return 2 * src.numel() / (best * 1e-3) / 1e9


def gpu_descriptor(mem_bw_gbs: float | None) -> dict:
    """This GPU in NeuSight's descriptor fields (see the module docstring for where each comes from)."""
    import torch

    props = torch.cuda.get_device_properties(0)
    cc = (props.major, props.minor)
    if cc not in FP32_CORES_PER_SM:
        raise SystemExit(f"no fp32 cores-per-SM figure for compute capability {cc[0]}.{cc[1]}; "
                         f"known: {', '.join(f'{a}.{b}' for a, b in FP32_CORES_PER_SM)}")
    out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True)
    freq = float(out.stdout.split()[0])
    cores = FP32_CORES_PER_SM[cc]
    return {"Device": props.name, "Dev_Mem": round(props.total_memory / 2**30),
            "Mem_Bw": mem_bw_gbs or round(copy_bandwidth_gbs()), "Num_Sm": props.multi_processor_count,
            "Core_Per_SM": cores, "Freq": freq, "SingleFLOPs": round(2 * props.multi_processor_count * cores * freq / 1e3),
            "L2Cache": round(props.L2_cache_size / 2**20)}


def collect(op: str, shapes: Sequence[tuple[int, ...]], path: Path, device: str, name: str, torch_version: str,
            warmup: int, repeats: int, time_budget: float | None = None) -> int:
    """Measure ``shapes`` of ``op`` not yet in the CSV at ``path`` and append them; the number measured now."""
    cols = SHAPE_COLUMNS[op]
    header = ["OPName", "Latency", "Device", "Torch Version", *cols, "Spread"]
    done: set[tuple[int, ...]] = set()
    if path.exists():
        with open(path, newline="") as f:
            done = {tuple(int(r[c]) for c in cols) for r in csv.DictReader(f)}
    path.parent.mkdir(parents=True, exist_ok=True)
    todo = [s for s in shapes if tuple(s) not in done]
    start, n = time.monotonic(), 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if not done:
            w.writerow(header)
        for shape in todo:
            if time_budget is not None and time.monotonic() - start > time_budget:
                break
            ms, spread = time_call(build_op(op, shape, device), device, warmup, repeats)
            w.writerow([op, f"{ms:.6g}", name, torch_version, *shape, f"{spread:.4f}"])
            f.flush()
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder to write NeuSight's layout into")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--ops", default=",".join(OPERATORS), help=f"comma-separated, of {', '.join(OPERATORS)}")
    ap.add_argument("--limit", type=int, default=None, help="a seeded sample of this many shapes per operator")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shapes-from", default=None, metavar="DIR",
                    help="a NeuSight-layout folder whose shapes to measure (default: the NeuSight copy)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds per operator at most")
    ap.add_argument("--mem-bw-gbs", type=float, default=None,
                    help="the GPU's memory bandwidth for its descriptor (default: a measured copy)")
    args = ap.parse_args(argv)
    import torch

    ops = [o for o in args.ops.split(",") if o]
    unknown = [o for o in ops if o not in OPERATORS]
    if unknown:
        raise SystemExit(f"unknown operator(s) {', '.join(unknown)}; accepted: {', '.join(OPERATORS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out, name = Path(args.out), device_name(args.device)
    version = "p" + torch.__version__.split("+")[0]
    if args.device == "cuda":
        desc = gpu_descriptor(args.mem_bw_gbs)
        (out / "device_configs").mkdir(parents=True, exist_ok=True)
        (out / "device_configs" / f"{name.replace(' ', '_')}.json").write_text(json.dumps(desc, indent=4) + "\n")
        print(json.dumps(desc), file=sys.stderr)
    for op in ops:
        shapes = neusight_shapes(op, args.limit, args.seed, args.shapes_from)
        t = time.monotonic()
        n = collect(op, shapes, out / "collect" / op / version / f"{name}.csv", args.device, name, version,
                    args.warmup, args.repeats, args.time_budget)
        print(f"{op}: {n} shapes measured in {time.monotonic() - t:.0f} s ({len(shapes)} in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
