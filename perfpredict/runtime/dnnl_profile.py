"""oneDNN's own timing of each call it makes, for forward passes whose calls run inside chains.

:meth:`~perfpredict.runtime.executor.Executable.step_times` times the per-step path: one Python step per op. A
chained forward pass (:mod:`perfpredict.runtime.chain`) makes its oneDNN calls in one C call each chain, so nothing
in Python sees them one by one. oneDNN's verbose mode does: at level 2 it prints an ``exec`` line for every
primitive it executes, with the primitive's kind, implementation, problem, attributes and execution time.
:func:`profile_calls` switches it on through oneDNN's C API (``dnnl_set_verbose``) for a few passes, reads what
oneDNN prints to the process's standard output (redirected to a temporary file at the descriptor level meanwhile)
and parses the ``exec`` lines into :class:`DnnlCall` records; :func:`summarise_calls` sums them by kind,
implementation, shape class and epilogue. Printing a line per call slows the pass a little, so the times of a
profiled pass are oneDNN's execution times alone, not the pass's wall time.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence


@dataclass(frozen=True)
class DnnlCall:
    """One primitive execution as oneDNN reported it: ``kind`` (convolution, pooling, binary, reorder, concat),
    ``impl`` (e.g. ``brgconv_1x1:avx512_core_vnni``), ``problem`` (oneDNN's shape descriptor), ``attrs`` (its
    attributes: scales, zero points, post-ops) and ``ms`` (its execution time)."""

    kind: str
    impl: str
    problem: str
    attrs: str
    ms: float

    @property
    def shape_class(self) -> str:
        """For a convolution: depthwise, 1x1 (on a 1x1 map when ``ih1``), or KxK; else empty."""
        if self.kind != "convolution":
            return ""
        m = re.match(r"(?:g(\d+))?mb\d+_ic(\d+)oc(\d+)_ih(\d+)oh\d+kh(\d+)", self.problem)
        if m is None:
            return ""
        groups, ic, oc, ih, kh = (int(v) if v else 1 for v in m.groups())
        if groups > 1 and groups == ic == oc:
            return "depthwise"
        if kh == 1:
            return "1x1 on a 1x1 map" if ih == 1 else "1x1"
        return f"{kh}x{kh}"

    @property
    def epilogue(self) -> str:
        """The post-ops oneDNN applied (``+``-joined names such as ``eltwise_swish``, ``sum``), or empty."""
        m = re.search(r"attr-post-ops:(\S+)", self.attrs)
        if m is None:
            return ""
        return "+".join(p.split(":")[0] for p in m.group(1).split("+"))


def parse_verbose(lines: Iterable[str]) -> list[DnnlCall]:
    """The ``exec`` lines of oneDNN's verbose output as calls (other lines are skipped)."""
    out = []
    for line in lines:
        fields = line.rstrip("\n").split(",")
        if len(fields) < 10 or fields[0] not in ("onednn_verbose", "dnnl_verbose"):
            continue
        if "exec" not in fields[1:3]:  # a timestamp may come first
            continue
        at = fields.index("exec")
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        out.append(DnnlCall(fields[at + 2], fields[at + 3], fields[-2], fields[at + 6], ms))
    return out


def _set_verbose(level: int) -> None:
    from perfpredict.primitives.dnnl import dnnl_paths

    lib = ctypes.CDLL(str(dnnl_paths()[1]))
    if lib.dnnl_set_verbose(ctypes.c_int(level)) != 0:
        raise RuntimeError(f"oneDNN refused verbose level {level}")


def profile_calls(fn: Callable[[], Any], passes: int = 20) -> list[DnnlCall]:
    """Run ``fn`` ``passes`` times with oneDNN's verbose mode at level 2 and return the calls it reported (all
    passes; divide by ``passes`` for one). Standard output is redirected while it runs: oneDNN prints there."""
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            _set_verbose(2)
            try:
                for _ in range(passes):
                    fn()
            finally:
                _set_verbose(0)
                libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return parse_verbose(tmp.read().decode(errors="replace").splitlines())


def summarise_calls(calls: Sequence[DnnlCall], passes: int) -> list[dict[str, Any]]:
    """Calls summed by (kind, implementation, shape class, epilogue), largest first: per pass, the calls and their
    milliseconds, the microseconds per call and the share of all oneDNN time."""
    total = sum(c.ms for c in calls) or 1.0
    groups: dict[tuple[str, str, str, str], list[DnnlCall]] = {}
    for c in calls:
        groups.setdefault((c.kind, c.impl, c.shape_class, c.epilogue), []).append(c)
    rows = [{"kind": k[0], "impl": k[1], "shape": k[2], "epilogue": k[3], "calls": len(v) / passes,
             "ms": sum(c.ms for c in v) / passes, "us_per_call": 1e3 * sum(c.ms for c in v) / len(v),
             "share": sum(c.ms for c in v) / total} for k, v in groups.items()]
    return sorted(rows, key=lambda r: -r["ms"])
