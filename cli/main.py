"""The `perfpredict` command: a thin layer that parses arguments, calls the libraries and prints.

Each sub-command lives in its own module under :mod:`cli.commands` and exposes ``register(subparsers)``;
modules are discovered automatically, so adding a command is adding a file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from typing import Any

from perfpredict import __version__
from perfpredict.errors import FeatureWarning, PerfPredictError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that say what would be accepted, exit code 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered sub-command."""
    parser = _Parser(prog="perfpredict",
                     description="Predictor-driven, cross-device optimiser for deploying CNNs: measure on a proxy "
                                 "device, predict latency and peak memory with a GNN, search per-layer plans.")
    parser.add_argument("--version", action="version", version=f"perfpredict {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    import cli.commands as commands
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"cli.commands.{info.name}").register(sub)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    print(f"perfpredict: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("once", category=FeatureWarning)  # the fallbacks a prediction took: one line each
    warnings.showwarning = _show_warning
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PerfPredictError as exc:
        print(f"perfpredict: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("perfpredict: interrupted; work already measured or searched is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
