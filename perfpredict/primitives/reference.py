"""Loader of the dependency-free C reference kernels (``_reference.c``).

On first use the C file is compiled at ``-O2`` by :mod:`perfpredict.primitives.cbuild` (the system C
compiler, cached on disk by source hash) and loaded with ctypes; the kernels themselves are single-threaded.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

from perfpredict.primitives.cbuild import load_library

SOURCE = Path(__file__).with_name("_reference.c")
CFLAGS: tuple[str, ...] = ("-O2", "-std=c99", "-fPIC", "-shared")
"""Compiler flags: -O2 only (no -march, no -ffast-math, no OpenMP): the vanilla baseline."""


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled reference library (compiled on first call, then cached on disk and in memory)."""
    lib = load_library(SOURCE, CFLAGS, purpose="conv.reference/gemm.reference")
    f, i, p = ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    lib.pp_conv2d_nchw.argtypes = [p, i, i, i, i, p, i, i, i, p, i, i, i, i, i, i, i, f, f, p, i, i]
    lib.pp_conv2d_nchw.restype = None
    lib.pp_gemm.argtypes = [p, p, p, p, i, i, i, i, f, f, f]
    lib.pp_gemm.restype = None
    return lib
