"""Printing helpers shared by the sub-commands: JSON for scripts, aligned tables for people."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, Sequence


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-progress``: the command's progress bars (on stderr) are off, for logs and scripts."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr (for logs and scripts)")


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as a left-aligned text table."""
    rows = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def slow_path_note(plan: str, nodes: list[str]) -> str:
    """One line naming the depthwise layers a plan runs in int8 on fbgemm's slow generic path."""
    shown = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
    return (f"note: plan {plan} runs {len(nodes)} depthwise layer(s) in int8 with a channel count that is not a "
            f"multiple of 8, on fbgemm's slow generic path ({shown}); fp32 or a prune ratio that leaves a "
            "multiple of 8 avoids it")


def warn_if_busy(threads: int | Sequence[int] | None = None) -> None:
    """Before timing on this machine: one ``perfpredict: warning:`` line on stderr when other work leaves fewer CPUs
    free than ``threads`` (the most of them, for a list; default every CPU) need (:func:`perfpredict.measure.
    contention_note`; a quarter of a second of watching the machine)."""
    from perfpredict.measure import contention_note

    if threads is not None and not isinstance(threads, int):
        threads = max(threads, default=None)
    note = contention_note(threads)
    if note:
        print(f"perfpredict: warning: {note}", file=sys.stderr)
