"""Compile-once loading of the C sources that ship with the primitives (``_reference.c``, ``_dnnl.c``).

A source is compiled with the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into a shared
library cached under :func:`perfpredict.cache.cache_dir`, keyed by the hash of the source and the whole
compiler command, then loaded with ctypes (which releases the GIL during calls). The library is written to a
temporary file and renamed into place, so concurrent builders never load a half-written one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from perfpredict.cache import cache_dir
from perfpredict.errors import PerfPredictError

_LOCK = threading.Lock()


class CompilerError(PerfPredictError):
    """A shipped C source could not be compiled (no C compiler, or the compiler failed)."""


def find_compiler(purpose: str = "the C kernels") -> str:
    """The C compiler to use: ``$CC`` if set, else the first of cc, gcc, clang on PATH; ``purpose`` names what
    needs it in the error."""
    env = os.environ.get("CC")
    candidates = [env] if env else ["cc", "gcc", "clang"]
    for name in candidates:
        path = shutil.which(name.split()[0]) if name else None
        if path:
            return path
    raise CompilerError(f"{purpose} need a C compiler, but none was found "
                        f"(tried {', '.join(c for c in candidates if c)}); install gcc or clang, or set CC")


def library_path(source: Path, command: Sequence[str]) -> Path:
    """Where the library compiled from ``source`` by ``command`` (compiler, flags, linker arguments) is cached."""
    h = hashlib.sha256(source.read_bytes())
    h.update(" ".join(command).encode())
    return cache_dir() / f"{source.stem.lstrip('_')}-{h.hexdigest()[:16]}.so"


def compile_library(source: Path, compiler: str, flags: Sequence[str], target: Path,
                    link: Sequence[str] = ()) -> None:
    """Compile ``source`` with ``compiler`` and ``flags`` (linker arguments ``link`` after the source) into
    ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *flags, "-o", tmp, str(source), *link], capture_output=True, text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["no message"])[0]
            raise CompilerError(f"compiling {source.name} with {compiler} failed: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_library(source: Path, flags: Sequence[str], *, link: Sequence[str] = (),
                 purpose: str = "the C kernels") -> ctypes.CDLL:
    """``source`` compiled with ``flags`` (and linker arguments ``link``), from the cache when it is there;
    ``purpose`` names what needs it in errors."""
    with _LOCK:
        compiler = find_compiler(purpose)
        path = library_path(source, [compiler, *flags, *link])
        if not path.is_file():
            compile_library(source, compiler, flags, path, link)
        return ctypes.CDLL(str(path))
