"""`perfpredict dataset`: summarise a measurement store, export it to CSV / Parquet, or merge stores."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.argtypes import positive_int
from cli.output import print_json, print_table
from perfpredict.errors import DatasetError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `dataset info`, `dataset export` and `dataset merge`."""
    p = sub.add_parser("dataset", help="summarise, export or merge measurement stores",
                       description="The measurement store (SQLite, append-only) written by `perfpredict profile`.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="DATASET_COMMAND", required=True)

    i = dsub.add_parser("info", help="counts by kind, device, threads, family, campaign (with the machines that "
                                     "measured each); noise floor")
    i.add_argument("store", help="store file (path or sqlite:///path)")
    i.add_argument("--json", action="store_true", help="print JSON for scripts")
    i.set_defaults(func=_info)

    e = dsub.add_parser("export", help="write the records to CSV or Parquet (format from the suffix)")
    e.add_argument("store", help="store file (path or sqlite:///path)")
    e.add_argument("-o", "--output", required=True, help="out.csv or out.parquet")
    e.add_argument("--kind", choices=("layer", "model"), default=None, help="only records of this kind")
    e.add_argument("--campaign", default=None, help="only records of this campaign")
    e.add_argument("--threads", type=positive_int, default=None, help="only records measured at this thread count")
    e.add_argument("--json", action="store_true", help="print JSON for scripts")
    e.set_defaults(func=_export)

    m = dsub.add_parser("merge", help="append the records of other stores to a store (e.g. several devices' "
                                      "campaigns, to train one predictor on all of them)")
    m.add_argument("store", help="destination store (created if missing)")
    m.add_argument("sources", nargs="+", help="stores whose records are appended (records already present are "
                                              "skipped)")
    m.add_argument("--json", action="store_true", help="print JSON for scripts")
    m.set_defaults(func=_merge)


def _open(path: str):
    from perfpredict.dataset import open_store

    return open_store(path, create=False)


def _info(args: argparse.Namespace) -> int:
    with _open(args.store) as store:
        info = store.info()
    if args.json:
        print_json(info)
        return 0
    print(f"store {info['path']} (schema {info['schema_version']}): {info['records']} records, "
          f"{info['devices']} device description(s)")
    print(f"measured {info['first_timestamp']} .. {info['last_timestamp']}; unstable {info['unstable']}; "
          f"with measured peak memory {info['with_peak_mem']}\n")
    for title in ("by_kind", "by_threads", "by_campaign", "by_device", "by_device_id", "by_description", "by_family"):
        if title == "by_campaign":  # which machine measured each campaign (a store may mix several)
            where = info["by_campaign_device"]
            rows = [(k, n, ", ".join(where[k]) if len(where[k]) == 1 else
                     ", ".join(f"{d} ({m})" for d, m in where[k].items())) for k, n in sorted(info[title].items())]
            print_table(["campaign", "records", "device(s)"], rows)
        else:
            print_table([title.replace("by_", ""), "records"], sorted(info[title].items()))
        print()
    noise = info.get("noise")
    if noise:
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.1f}%"
        print(f"noise floor: {noise['n']} re-measured records; within 5%: {pct(noise['within_5pct'])}, "
              f"within 10%: {pct(noise['within_10pct'])}, median relative difference "
              f"{pct(noise['median_rel_diff'])}")
        for kind, nk in info.get("noise_by_kind", {}).items():
            print(f"  {kind} records ({nk['n']}): re-measured within 10%: {pct(nk['within_10pct'])}; a predictor of "
                  f"the true latency would score about MAPE {pct(nk['truth_mape'])}, within 5%: "
                  f"{pct(nk['truth_within_5pct'])}, within 10%: {pct(nk['truth_within_10pct'])} against the stored "
                  "figures (estimate: i.i.d. symmetric noise, see perfpredict.measure.noise_floor)")
            b = nk.get("beacon")
            if b:
                print(f"    of them timed beside the beacon ({b['n']}): normalised by it (--latency-stat beacon), "
                      f"re-measured within 10%: {pct(b['within_10pct'])}, true-latency MAPE about "
                      f"{pct(b['truth_mape'])}, within 10%: {pct(b['truth_within_10pct'])}; the same re-checks "
                      f"raw: within 10%: {pct(b['raw']['within_10pct'])}, MAPE about {pct(b['raw']['truth_mape'])}")
        by_campaign = info.get("noise_by_campaign", {})
        for campaign, nc in by_campaign.items() if len(by_campaign) > 1 else ():
            b = nc.get("beacon")
            print(f"  re-checks of campaign {campaign} ({nc['n']}): true-latency MAPE about {pct(nc['truth_mape'])}"
                  + (f"; beacon-normalised about {pct(b['truth_mape'])}, within 10%: {pct(b['truth_within_10pct'])}"
                     if b else ""))
    else:
        print("noise floor: no re-measurements yet (run `perfpredict profile noise`)")
    return 0


def _export(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise DatasetError(f"{out}: export format is chosen by suffix; accepted: .csv, .parquet")
    if not out.parent.is_dir():
        raise DatasetError(f"{out}: directory {out.parent} does not exist")
    filters = {k: v for k, v in (("kind", args.kind), ("campaign", args.campaign), ("threads", args.threads))
               if v is not None}
    with _open(args.store) as store:
        n = store.export(out, **filters)
    if args.json:
        print_json({"output": str(out), "rows": n})
    else:
        print(f"wrote {n} records to {out}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from perfpredict.dataset import open_store

    added = {}
    with open_store(args.store) as dest:
        for src in args.sources:
            with _open(src) as other:
                added[src] = dest.merge_from(other)
        total = len(dest)
    if args.json:
        print_json({"store": args.store, "added": added, "records": total})
    else:
        for src, n in added.items():
            print(f"{src}: {n} records added")
        print(f"{args.store}: {total} records")
    return 0
