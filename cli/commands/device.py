"""`perfpredict device`: describe this machine as a board.json, or validate and show a board.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.argtypes import positive_int
from cli.output import print_json, print_table
from perfpredict.errors import BoardError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `device describe` and `device show`."""
    p = sub.add_parser("device", help="describe this machine or show a board.json",
                       description="Device descriptions (board.json): static facts from spec sheets or /proc and "
                                   "/sys, plus measured throughput, bandwidth and a latency fingerprint.")
    dsub = p.add_subparsers(dest="device_command", metavar="DEVICE_COMMAND", required=True)

    d = dsub.add_parser("describe", help="measure this machine and write its board.json")
    d.add_argument("-o", "--output", required=True, help="board.json file to write")
    d.add_argument("--threads", type=positive_int, default=None, help="torch threads for the measured figures "
                                                             "(default: torch's current setting)")
    d.add_argument("--quick", action="store_true", help="small sizes and few repeats (seconds; rough figures)")
    d.add_argument("--name", default=None, help="device name (default host-<cpu model>-<N>t)")
    d.add_argument("--json", action="store_true", help="print the description as JSON")
    d.set_defaults(func=_describe)

    s = dsub.add_parser("show", help="validate a board.json and print it")
    s.add_argument("board", help="board.json file")
    s.add_argument("--json", action="store_true", help="print the validated description as JSON")
    s.set_defaults(func=_show)


def _rows(spec) -> list[tuple[str, str]]:
    rows = []
    for key, value in spec.to_dict().items():
        if key == "fingerprint":
            for layer, ms in value.items():
                rows.append((f"fingerprint.{layer}", f"{ms:.4g} ms"))
        elif isinstance(value, list):
            rows.append((key, ", ".join(str(v) for v in value)))
        else:
            rows.append((key, str(value)))
    rows.append(("device_id", spec.device_id))
    return rows


def _describe(args: argparse.Namespace) -> int:
    from perfpredict.devices import describe_host

    if args.threads is not None and args.threads < 1:
        raise BoardError(f"--threads must be a positive integer, got {args.threads}")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise BoardError(f"{out}: directory {out.parent} does not exist")
    spec = describe_host(threads=args.threads, quick=args.quick, name=args.name)
    spec.save(out)
    if args.json:
        print_json({**spec.to_dict(), "device_id": spec.device_id, "path": str(out)})
    else:
        print_table(["field", "value"], _rows(spec))
        print(f"\nwrote {out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from perfpredict.devices import load_device

    spec = load_device(args.board)
    if args.json:
        print_json({**spec.to_dict(), "device_id": spec.device_id})
    else:
        print_table(["field", "value"], _rows(spec))
    return 0
