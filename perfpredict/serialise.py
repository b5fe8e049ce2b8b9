"""JSON of the plain types that checkpoints and cards hold (numpy scalars and arrays, dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np

__all__ = ["json_default"]


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
