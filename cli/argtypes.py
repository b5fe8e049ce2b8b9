"""argparse ``type=`` converters for bounded numbers, with messages that say what is accepted."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def bounded(kind: type, *, positive: bool) -> Callable[[str], float]:
    """A converter to ``kind`` (int or float) accepting numbers > 0 (``positive``) or >= 0, never inf/nan."""
    noun = "integer" if kind is int else "number"
    what = f"a positive {noun}" if positive else f"{'an' if kind is int else 'a'} {noun} >= 0"

    def convert(text: str):  # noqa: ANN202 - int or float
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v

    convert.__name__ = what.replace(" ", "_")
    return convert


positive_int = bounded(int, positive=True)
nonneg_int = bounded(int, positive=False)
positive_float = bounded(float, positive=True)
nonneg_float = bounded(float, positive=False)


def share(text: str) -> float:
    """A converter accepting a share in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a share in [0, 1)")
    return value


def names(text: str) -> list[str]:
    """A converter of comma-separated names to a list (at least one)."""
    out = [x.strip() for x in text.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got '{text}'")
    return out


def add_campaigns(p: argparse.ArgumentParser) -> None:
    """Add ``--campaigns``: which of a store's campaigns to load (:func:`perfpredict.samples.load_samples`)."""
    p.add_argument("--campaigns", type=names, default=None, metavar="C1,C2+C3,...",
                   help="comma-separated campaigns whose records are used (default: every campaign); A+B names "
                        "campaigns that timed the same models and plans again (other sessions): one sample per "
                        "record they share, at the geometric mean of their latencies")


def add_zero_shot(p: argparse.ArgumentParser) -> None:
    """Add ``--zero-shot``: how a checkpoint answers for a device it did not train on."""
    from perfpredict.proxy_route import ROUTES

    p.add_argument("--zero-shot", choices=ROUTES, default="proxy",
                   help="for a board whose device the checkpoint did not train on: 'proxy' predicts on the "
                        "trained device nearest by fingerprint, scaled by the fingerprint ratio (default; needs a "
                        "fingerprint in the board, else the board's features are used), 'board' uses the board's "
                        "features directly")
