"""Peak memory of one inference: the allocator probe and the persistent RSS worker subprocess."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import pickle
import selectors
import subprocess
import sys
import tempfile
from typing import Any


from perfpredict.graph import Graph, load_onnx
from perfpredict.plan import Plan
from perfpredict.profile.campaign import random_inputs


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


class MemoryProbe:
    """A persistent worker subprocess measuring the peak memory of one inference of a graph under a plan.

    The worker keeps the last loaded graph. For each plan it builds the executable, runs it once, trims
    glibc's free memory, resets the high-water mark (/proc/self/clear_refs "5"), runs one forward pass and
    reports deployed weight bytes + the rise of VmHWM over the resident set at the reset (the figure
    :func:`perfpredict.runtime.measurement.measure_memory` reports, without a fresh process per plan).
    A worker that fails or exceeds ``timeout_s`` is killed and restarted; that plan gets no memory figure.
    """

    def __init__(self, timeout_s: float = 180.0) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="perfpredict-memprobe-")

    def _start(self) -> None:
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        self.proc = subprocess.Popen([sys.executable, "-m", "perfpredict.profile", "--memory-worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env, bufsize=1)

    def measure_built(self, exe: Any, xs: tuple[Any, ...], *, onnx_path: str | os.PathLike, threads: int,
                      seed: int = 0) -> dict[str, Any]:
        """:meth:`measure` of a built executable's graph, plan and calibration (``xs`` unused: the worker builds
        its own input from ``seed``)."""
        return self.measure(onnx_path, exe.source_graph.name, exe.plan, threads, seed=seed,
                            calibration=exe.calibration)

    def measure(self, onnx_path: str | os.PathLike, graph_name: str, plan: Plan, threads: int, *, seed: int = 0,
                calibration: Any = None) -> dict[str, Any]:
        """{"peak_bytes", "weight_bytes", "run_peak_bytes", "method"} or {"error": why}."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        cal_path = None
        if calibration is not None:
            cal_path = os.path.join(self._tmp.name, "calibration.pkl")
            with open(cal_path, "wb") as f:
                pickle.dump(calibration, f, protocol=pickle.HIGHEST_PROTOCOL)
        req = {"onnx": str(onnx_path), "name": graph_name, "plan": plan.to_dict(), "threads": threads,
               "seed": seed, "calibration": cal_path}
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            return {"error": "memory worker died"}
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(self.timeout_s)
        sel.close()
        if not ready:
            self.close()
            return {"error": f"memory worker timed out after {self.timeout_s:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            return {"error": "memory worker died"}
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self.close()
            return {"error": "memory worker sent garbage"}

    def close(self) -> None:
        """Stop the worker."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for s in (self.proc.stdin, self.proc.stdout):
                try:
                    if s:
                        s.close()
                except OSError:
                    pass
            self.proc = None

    def __enter__(self) -> "MemoryProbe":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
        self._tmp.cleanup()


class AllocatorProbe:
    """The ``"allocator"`` memory method for campaigns, in this process
    (:func:`perfpredict.runtime.measurement.allocated_memory`), with :class:`MemoryProbe`'s reply format."""

    def measure_built(self, exe: Any, xs: tuple[Any, ...], **_: Any) -> dict[str, Any]:
        """{"peak_bytes", "weight_bytes", "run_peak_bytes", "method"} of a built executable, or {"error": why}."""
        from dataclasses import asdict

        from perfpredict.errors import MeasurementError
        from perfpredict.runtime.measurement import allocated_memory

        try:
            return asdict(allocated_memory(exe, xs))
        except MeasurementError as exc:
            return {"error": str(exc)[:200]}

    def __enter__(self) -> "AllocatorProbe":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def memory_worker() -> None:
    """Main loop of the memory worker (``python -m perfpredict.profile --memory-worker``)."""
    import torch

    from perfpredict.measure import _reset_hwm, _status_kb
    from perfpredict.runtime import build_executable
    from perfpredict.runtime.measurement import _limit_malloc_caching
    from perfpredict.runtime.memory import weight_bytes

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies goes to the protocol stream
    _limit_malloc_caching()
    libc = _libc()
    graphs: dict[str, Graph] = {}
    for line in sys.stdin:
        try:
            req = json.loads(line)
            path = req["onnx"]
            if path not in graphs:
                graphs.clear()
                gc.collect()
                graphs[path] = load_onnx(path, name=req["name"])
            graph = graphs[path]
            calibration = None
            if req.get("calibration"):
                with open(req["calibration"], "rb") as f:
                    calibration = pickle.load(f)
            exe = build_executable(graph, Plan.from_dict(req["plan"]), threads=req["threads"],
                                   calibration=calibration)
            xs = exe.prepare_input(*random_inputs(graph, req.get("seed", 0)))
            exe.forward(*xs)
            gc.collect()
            if libc is not None:
                libc.malloc_trim(0)
            method = "clear_refs" if _reset_hwm() else "baseline-subtraction"
            base = _status_kb("VmRSS")
            exe.forward(*xs)
            hwm = _status_kb("VmHWM")
            run_peak = max(0, hwm - base) * 1024
            weights = weight_bytes(exe.graph, dict(exe.plan.choices))
            reply = {"peak_bytes": weights + run_peak, "weight_bytes": weights, "run_peak_bytes": run_peak,
                     "method": method}
            del exe, xs
            gc.collect()
            torch.set_num_threads(torch.get_num_threads())
        except Exception as exc:  # report and keep serving
            reply = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
