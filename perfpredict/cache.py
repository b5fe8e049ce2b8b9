"""perfpredict's one cache directory: exported zoo models, compiled reference kernels, machine descriptions and
encoded public datasets live under it, each in its own sub-folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PERFPREDICT_CACHE``, else ``$XDG_CACHE_HOME/perfpredict``, else ``~/.cache/perfpredict``."""
    root = os.environ.get("PERFPREDICT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perfpredict"
