"""Loader of the dependency-free C reference kernels (``_reference.c``).

On first use the C file is compiled with the system C compiler (``$CC``, else ``cc``, ``gcc`` or
``clang``) at ``-O2`` into a shared library cached under
:func:`perfpredict.cache.cache_dir`, keyed by the hash of the source and the compiler command, then loaded with
ctypes. ctypes releases the GIL during the call; the kernels themselves are single-threaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

from perfpredict.cache import cache_dir
from perfpredict.errors import PerfPredictError

SOURCE = Path(__file__).with_name("_reference.c")
CFLAGS: tuple[str, ...] = ("-O2", "-std=c99", "-fPIC", "-shared")
"""Compiler flags: -O2 only (no -march, no -ffast-math, no OpenMP): the vanilla baseline."""

_LOCK = threading.Lock()


class CompilerError(PerfPredictError):
    """The reference kernels could not be compiled (no C compiler, or the compiler failed)."""


def find_compiler() -> str:
    """The C compiler to use: ``$CC`` if set, else the first of cc, gcc, clang on PATH."""
    env = os.environ.get("CC")
    candidates = [env] if env else ["cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name.split()[0]) if name else None
        if path:
            return path
    raise CompilerError("conv.reference/gemm.reference need a C compiler, but none was found "
                        f"(tried {', '.join(c for c in candidates if c)}); install gcc or clang, or set CC")


def _library_path(compiler: str) -> Path:
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join((compiler, *CFLAGS)).encode())
    return cache_dir() / f"reference-{h.hexdigest()[:16]}.so"


def _compile(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no message"])[0]
            raise CompilerError(f"compiling {SOURCE.name} with {compiler} failed: {first}")
        os.replace(tmp, target)  # atomic: concurrent builders never load a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The compiled reference library (compiled on first call, then cached on disk and in memory)."""
    with _LOCK:
        compiler = find_compiler()
        path = _library_path(compiler)
        if not path.is_file():
            _compile(compiler, path)
        lib = ctypes.CDLL(str(path))
    f, i, p = ctypes.c_float, ctypes.c_int, ctypes.c_void_p
    lib.pp_conv2d_nchw.argtypes = [p, i, i, i, i, p, i, i, i, p, i, i, i, i, i, i, i, f, f, p, i, i]
    lib.pp_conv2d_nchw.restype = None
    lib.pp_gemm.argtypes = [p, p, p, p, i, i, i, i, f, f, f]
    lib.pp_gemm.restype = None
    return lib
