"""Loaders of public multi-device latency datasets (HELP, NeuSight), read in place, never copied.

The data lives outside the repository: ``$PERFPREDICT_EXTERNAL`` if set, else ``<repo>/../shared/external``
(the layout CI provides). :func:`external_root` resolves it; the loaders take explicit folders too, so a
copy holding other devices (e.g. the reserved evaluation devices) can be read with the same code.
"""

from __future__ import annotations

import os
from pathlib import Path

from perfpredict.errors import DatasetError

ENV_VAR = "PERFPREDICT_EXTERNAL"


def external_root() -> Path:
    """The folder holding the external datasets: ``$PERFPREDICT_EXTERNAL`` or ``<repo>/../shared/external``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "external"


def external_dataset(name: str) -> Path:
    """The folder of one external dataset (``HELP``, ``NeuSight``); a :class:`DatasetError` if it is absent."""
    root = external_root()
    path = root / name
    if not path.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(f"external dataset folder {path} not found (set ${ENV_VAR} to the folder holding "
                           f"{name}/; present there: {', '.join(have) or 'nothing'})")
    return path


def with_copy(folders: "list[str | Path] | None", name: str) -> "list[str | Path] | None":
    """The ``folders`` given, then the public copy ``name`` where there is one, so devices they lack come from it
    (None when no folder is given: the loaders then read the copy alone)."""
    if not folders:
        return None
    try:
        return [*folders, external_dataset(name)]
    except DatasetError:
        return list(folders)


__all__ = ["ENV_VAR", "external_root", "external_dataset", "with_copy"]
