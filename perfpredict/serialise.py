"""JSON of the plain types that checkpoints and cards hold (numpy scalars and arrays, dataclasses)."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np

__all__ = ["json_default", "plain"]


def json_default(obj: Any) -> Any:
    """``default=`` for :func:`json.dumps`: numpy values as Python numbers and lists, dataclasses as dicts,
    anything else as its ``str``."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return str(obj)


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON types only (what a checkpoint loaded with ``weights_only=True`` may hold)."""
    return json.loads(json.dumps(obj, default=json_default))
