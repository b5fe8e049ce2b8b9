"""`perfpredict zoo`: list the model zoo, export canonical models or sampled variants to ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.argtypes import nonneg_int, positive_int
from cli.output import print_json, print_table
from perfpredict.errors import PerfPredictError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `zoo list`, `zoo export` and `zoo sample`."""
    p = sub.add_parser("zoo", help="list the model zoo and export models to ONNX",
                       description="The model zoo: parametric CNN families written in torch.nn, canonical published "
                                   "instances and a seeded variant sampler, exported to ONNX.")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)

    ls = zsub.add_parser("list", help="list canonical models and families")
    ls.add_argument("--json", action="store_true", help="print JSON for scripts")
    ls.set_defaults(func=_list)

    ex = zsub.add_parser("export", help="export a canonical model to ONNX")
    ex.add_argument("name", help="canonical model name (see `perfpredict zoo list`)")
    ex.add_argument("-o", "--output", required=True, help="ONNX file to write")
    ex.add_argument("--resolution", type=positive_int, default=224, help="input height and width (default 224)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (11..21, default 17)")
    ex.set_defaults(func=_export)

    sm = zsub.add_parser("sample", help="export N seeded random variants of a family")
    sm.add_argument("family", help="family name (see `perfpredict zoo list`)")
    sm.add_argument("-n", type=positive_int, default=10, help="number of variants (default 10)")
    sm.add_argument("--seed", type=nonneg_int, default=0, help="sampler seed (default 0)")
    sm.add_argument("-o", "--output-dir", required=True, help="folder for the ONNX files")
    sm.add_argument("--json", action="store_true", help="print JSON for scripts")
    sm.set_defaults(func=_sample)


def _list(args: argparse.Namespace) -> int:
    from perfpredict.zoo import describe, get_spec, list_families, list_models

    models = [describe(get_spec(m)) for m in list_models()]
    if args.json:
        print_json({"families": list_families(), "models": models})
        return 0
    print_table(["model", "family", "input"], [(m["name"], m["family"], "x".join(map(str, m["input_shape"])))
                                               for m in models])
    print(f"\nfamilies (sample variants with `perfpredict zoo sample FAMILY`): {', '.join(list_families())}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from perfpredict.zoo import export_onnx, get_spec, list_models

    if args.name not in list_models():
        raise PerfPredictError(f"unknown zoo model '{args.name}'; known: {', '.join(list_models())}")
    if not 11 <= args.opset <= 21:
        raise PerfPredictError(f"--opset {args.opset} is not supported; accepted: 11 to 21")
    spec = get_spec(args.name).with_input_shape((1, 3, args.resolution, args.resolution))
    try:
        path = export_onnx(spec, args.output, opset=args.opset)
    except ValueError as exc:
        raise PerfPredictError(f"cannot export {args.name} at resolution {args.resolution}: {exc}") from None
    print(f"wrote {path}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from perfpredict.zoo import export_family_variants, list_families

    if args.family not in list_families():
        raise PerfPredictError(f"unknown family '{args.family}'; known: {', '.join(list_families())}")
    if args.n < 1:
        raise PerfPredictError(f"-n must be at least 1, got {args.n}")
    paths = export_family_variants(args.family, args.n, args.seed, Path(args.output_dir))
    if args.json:
        print_json([str(p) for p in paths])
    else:
        for p in paths:
            print(p)
    return 0
