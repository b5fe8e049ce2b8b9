"""`perfpredict profile`: measurement campaigns on this machine (layers, whole models, noise re-checks)."""

from __future__ import annotations

import argparse
import sys

from cli.argtypes import names, nonneg_int, positive_float, positive_int
from cli.output import add_progress_option, print_json, print_table, warn_if_busy
from perfpredict.beacon import DRIFT_TOLERANCE, SCALING_TOLERANCE
from perfpredict.errors import PerfPredictError


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'")
    return out


def _floats(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'")
    return out


def _common(p: argparse.ArgumentParser, *, time_cap: float, max_call: float) -> None:
    p.add_argument("--store", required=True, help="measurement store (created if missing)")
    p.add_argument("--threads", type=_ints, default=[1, 2], help="comma-separated thread counts (default 1,2)")
    p.add_argument("--families", type=names, default=None,
                   help="comma-separated zoo families (default: every model family; mixnet, random networks of "
                        "every family's blocks, and mixnet_fc, the same with AlexNet's fully connected classifier, "
                        "only when named; layer campaigns also take kernels, the kernel "
                        "probes that cover ops and shapes no family has)")
    p.add_argument("--resolutions", type=_ints, default=[96, 128],
                   help="input resolutions the zoo models are drawn at (default 96,128)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampled variants, configurations and plans")
    p.add_argument("--campaign", default=None, help="campaign name stored in every record")
    p.add_argument("--time-cap-s", type=positive_float, default=time_cap,
                   help=f"seconds of timed repeats per candidate at most (default {time_cap:g})")
    p.add_argument("--target-ci", type=positive_float, default=0.05,
                   help="relative 95%% CI of the median to reach (default 0.05)")
    p.add_argument("--max-call-ms", type=positive_float, default=max_call,
                   help=f"skip (and log) candidates slower than this per call (default {max_call:g})")
    p.add_argument("--device", default=None, help="board.json to record as the device (default: describe this "
                                                  "machine at each thread count, once per store)")
    p.add_argument("--quick-device", action="store_true", help="quick describe_host (rough figures, seconds)")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="stop cleanly after this wall time (resume by running the same command again)")
    p.add_argument("--stop-after", type=positive_int, default=None,
                   help="stop cleanly once the store holds this many records of the campaign")
    add_progress_option(p)
    p.add_argument("--json", action="store_true", help="print the campaign report as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `profile layers`, `profile models`, `profile noise` and `profile memory`."""
    p = sub.add_parser("profile", help="measurement campaigns on this machine into a store",
                       description="Profiling campaigns: real measurements on this machine (the proxy device) "
                                   "written to an append-only store. A campaign killed at any point resumes "
                                   "where it stopped when run again with the same arguments. On a shared machine "
                                   "set OMP_WAIT_POLICY=PASSIVE (see datasets/README.md).")
    psub = p.add_subparsers(dest="profile_command", metavar="PROFILE_COMMAND", required=True)

    la = psub.add_parser("layers", help="layer configurations in isolation under every primitive/layout/"
                                        "precision/prune ratio")
    _common(la, time_cap=0.025, max_call=20.0)
    la.add_argument("--n-configs", type=positive_int, default=200, help="layer configurations to draw (default 200)")
    la.add_argument("--n-variants-per-family", type=positive_int, default=4,
                    help="sampled variants per family the configurations come from (default 4)")
    la.add_argument("--prune-ratios", type=_floats, default=[0.0, 0.25, 0.5],
                    help="prune ratios of dense Conv/Gemm layers (default 0,0.25,0.5)")
    la.add_argument("--ops", type=names, default=None, help="only these ONNX ops (e.g. Conv,Gemm)")
    la.add_argument("--primitives", type=names, default=None,
                    help="only these primitives, on the layers all of them for the op run (e.g. "
                         "conv.winograd4,conv.dnnl: a "
                         "new primitive measured beside the one it competes with); an unknown name is an error "
                         "that lists the registered ones")
    la.add_argument("--model", action="append", default=None, metavar="FILE.onnx",
                    help="measure the layers of this ONNX model (repeat for several) instead of the zoo families' "
                         "(with --families, both); its records take the file's stem as family and model name and "
                         "keep each node, so a predictor trained on the store learns ops and shapes the zoo lacks")
    la.set_defaults(func=_layers)

    mo = psub.add_parser("models", help="whole models (the zoo's or your ONNX files) under sampled plans (latency "
                                        "and peak memory)")
    _common(mo, time_cap=0.2, max_call=400.0)
    mo.add_argument("--n-variants-per-family", type=positive_int, default=4,
                    help="sampled variants per family besides the canonical models (default 4)")
    mo.add_argument("--plans-per-model", type=positive_int, default=8,
                    help="plans per model and thread count (default 8)")
    mo.add_argument("--plans", choices=("mixed", "swaps"), default="mixed",
                    help="which plans: 'mixed' (default, fixed plans then random and layer-record-biased mixes) or "
                         "'swaps' (the whole-graph conv.dnnl plan, then it with a few convolutions, or a band of "
                         "output heights, moved to another primitive)")
    mo.add_argument("--no-canonical", action="store_true", help="sampled variants only")
    mo.add_argument("--model", action="append", default=None, metavar="FILE.onnx",
                    help="measure this ONNX model under sampled plans (repeat for several) instead of the zoo's "
                         "(with --families, both); its records take the file's stem as family and model name and "
                         "carry the graph, so a predictor trained or tuned on the store learns the model itself")
    mo.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    mo.add_argument("--no-beacon", action="store_true",
                    help="do not time the beacon workload (perfpredict.beacon) beside each model's plans; by default "
                         "it is, so that the 'beacon' latency target can take the machine's drift out")
    mo.add_argument("--allow-drift", action="store_true",
                    help="store the records even when the beacon beside the first model runs unlike the store's "
                         f"earlier campaigns on the same device (over {DRIFT_TOLERANCE:g}x faster or slower, or a "
                         f"two-thread / one-thread ratio {SCALING_TOLERANCE:g}x off, as another OpenMP wait policy "
                         "gives); by default the campaign stops with an error before storing them")
    mo.add_argument("--memory-method", choices=("allocator", "rss"), default="allocator",
                    help="peak memory from torch's allocator (exact, repeatable; the default) or from the resident "
                         "set in a worker subprocess (also sees memory outside torch, noisier)")
    mo.add_argument("--memory-threads", type=_ints, default=None,
                    help="thread counts at which peak memory is measured (default: the smallest of --threads)")
    mo.add_argument("--layer-campaign", default="layers",
                    help="layer campaign whose records bias the fast plans (default 'layers')")
    mo.add_argument("--block", type=positive_int, default=1, metavar="N",
                    help="timed calls per turn of the round-robin, after 2 untimed ones when N > 1: steady-state "
                         "turns instead of one cold call per turn (default 1, as the shipped stores and their layer "
                         "records were timed and as the optimiser's on-device validation times plans)")
    mo.set_defaults(func=_models)

    no = psub.add_parser("noise", help="re-measure a random sample of records (noise floor)",
                         description="Re-measures a seeded random sample of stored records, each rebuilt as its "
                                     "campaign built it (a zoo model, or your ONNX file while it is still where it "
                                     "was measured from) and timed as its campaign timed it, and stores the results "
                                     "as noise-recheck records: how often two measurements agree (the noise floor).")
    no.add_argument("--store", required=True, help="an existing measurement store")
    no.add_argument("--sample", type=positive_int, default=200, help="records to re-measure (default 200)")
    no.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sample")
    no.add_argument("--kinds", type=names, default=["layer", "model"], help="record kinds (default layer,model)")
    no.add_argument("--repeat", type=nonneg_int, default=0, help="recheck number, to recheck the same records again")
    no.add_argument("--campaigns", type=names, default=None,
                    help="comma-separated campaigns whose records are re-measured (default: every campaign)")
    no.add_argument("--time-cap-s", type=positive_float, default=None,
                    help="seconds of timed repeats per candidate at most (default: the campaigns' default, 0.025 for "
                         "layers and 0.2 for models); give the --time-cap-s the re-checked campaign ran with")
    add_progress_option(no)
    no.add_argument("--json", action="store_true", help="print the report as JSON")
    no.set_defaults(func=_noise)

    me = psub.add_parser("memory", help="re-measure the peak memory of stored model records by the allocator method",
                         description="Measures again, by torch's allocator (exact, repeatable), the peak memory of "
                                     "every model record whose figure came from the resident set, and stores the "
                                     "results as memory-only records that training attaches to their originals. "
                                     "Resumable.")
    me.add_argument("--store", required=True, help="an existing measurement store")
    me.add_argument("--max-minutes", type=positive_float, default=None, help="stop cleanly after this wall time")
    add_progress_option(me)
    me.add_argument("--json", action="store_true", help="print the report as JSON")
    me.set_defaults(func=_memory)

    st = psub.add_parser("steps", help="time stored model records' forward passes step by step (where the time goes)",
                         description="Rebuilds stored model records as their campaigns built them and times each "
                                     "scheduled step of the forward pass on its own (median of --repeats passes), "
                                     "summed per graph node with the activations folded into it and the conversions "
                                     "it reads. Stored as step-time records (campaign step-times) that training "
                                     "attaches to their originals: node-level targets for the GNN "
                                     "(perfpredict train --step-weight). Records of your ONNX files are rebuilt "
                                     "from the file while it is still where it was measured from. Resumable.")
    st.add_argument("--store", required=True, help="an existing measurement store")
    st.add_argument("--campaigns", type=names, default=None,
                    help="comma-separated model campaigns whose records are timed (default: every one)")
    st.add_argument("--threads", type=_ints, default=None,
                    help="only the records at these thread counts (default: all; each runs at its own count)")
    st.add_argument("--repeats", type=positive_int, default=7,
                    help="timed passes per record (default 7, after 2 untimed)")
    st.add_argument("--max-minutes", type=positive_float, default=None, help="stop cleanly after this wall time")
    add_progress_option(st)
    st.add_argument("--json", action="store_true", help="print the report as JSON")
    st.set_defaults(func=_steps)


def _protocol(args: argparse.Namespace, model: bool):
    from perfpredict.profile import MODEL_PROTOCOL, Protocol

    base = MODEL_PROTOCOL if model else Protocol()
    block = getattr(args, "block", 1)  # argparse checked it and the other numbers positive
    return Protocol(warmup=base.warmup, min_repeats=base.min_repeats, max_repeats=base.max_repeats,
                    target_ci=args.target_ci, time_cap_s=args.time_cap_s, max_call_ms=args.max_call_ms,
                    block=block, block_warmup=2 if block > 1 else 0)


def _devices(args: argparse.Namespace):
    if args.device is None:
        return None
    from perfpredict.devices import load_device

    spec = load_device(args.device)
    return {t: spec for t in args.threads}


def _open(path: str, create: bool = True):
    from perfpredict.dataset import open_store

    return open_store(path, create=create)


def _print_report(rep, as_json: bool) -> None:
    d = rep.to_dict()
    if as_json:
        print_json(d)
        return
    rows = [("campaign", d["campaign"]), ("store", d["store"]), ("threads", ",".join(map(str, d["threads"]))),
            ("planned", d["planned"]), ("stored now", d["stored"]), ("already stored", d["already"]),
            ("skipped", d["skipped_total"]), ("stored unstable", d["unstable"]),
            ("elapsed", f"{d['elapsed_s']:.1f} s")]
    if d["stopped_early"]:
        rows.append(("stopped early", "yes (--max-minutes); run again to resume"))
    for reason, n in sorted(d["skipped"].items()):
        rows.append((f"  skipped: {reason}", n))
    for k, v in d["extra"].items():
        rows.append((k, v))
    print_table(["report", "value"], rows)


def _layers(args: argparse.Namespace) -> int:
    from perfpredict.profile import LAYER_CAMPAIGN, onnx_sources, run_layer_campaign

    protocol = _protocol(args, model=False)
    models = onnx_sources(args.model or ())  # a missing or malformed file is an error before the store is made
    with _open(args.store) as store:
        warn_if_busy(args.threads)
        rep = run_layer_campaign(store, threads=args.threads, families=args.families, n_configs=args.n_configs,
                                 seed=args.seed, n_variants_per_family=args.n_variants_per_family,
                                 resolutions=args.resolutions, prune_ratios=args.prune_ratios, ops=args.ops,
                                 primitives=args.primitives, protocol=protocol,
                                 campaign=args.campaign or LAYER_CAMPAIGN,
                                 devices=_devices(args), quick_device=args.quick_device,
                                 max_minutes=args.max_minutes, stop_after=args.stop_after,
                                 models=models, progress=not args.no_progress)
    _print_report(rep, args.json)
    return 0


def _models(args: argparse.Namespace) -> int:
    from perfpredict.profile import MODEL_CAMPAIGN, onnx_sources, run_model_campaign

    protocol = _protocol(args, model=True)
    models = onnx_sources(args.model or ())  # a missing or malformed file is an error before the store is made
    with _open(args.store) as store:
        warn_if_busy(args.threads)
        rep = run_model_campaign(store, models=models, threads=args.threads, families=args.families,
                                 n_variants_per_family=args.n_variants_per_family,
                                 plans_per_model=args.plans_per_model, seed=args.seed, resolutions=args.resolutions,
                                 canonical=not args.no_canonical, protocol=protocol, memory=not args.no_memory,
                                 memory_threads=args.memory_threads, memory_method=args.memory_method,
                                 campaign=args.campaign or MODEL_CAMPAIGN, layer_campaign=args.layer_campaign,
                                 devices=_devices(args), quick_device=args.quick_device,
                                 max_minutes=args.max_minutes, stop_after=args.stop_after,
                                 progress=not args.no_progress, plans=args.plans, beacon=not args.no_beacon,
                                 allow_drift=args.allow_drift)
    new = rep.extra.get("beacon_check", {}).get("new_machine")
    if new:
        print(f"note: the store holds no beacon reference for machine '{new}'; its records start their own "
              "(compare them with other machines' records only through a model of the device)", file=sys.stderr)
    _print_report(rep, args.json)
    return 0


def _noise(args: argparse.Namespace) -> int:
    from perfpredict.profile import run_noise

    bad = [k for k in args.kinds if k not in ("layer", "model")]
    if bad:
        raise PerfPredictError(f"--kinds: unknown kind(s) {', '.join(bad)}; accepted: layer, model")
    with _open(args.store, create=False) as store:
        warn_if_busy()
        rep = run_noise(store, sample=args.sample, seed=args.seed, kinds=args.kinds, repeat=args.repeat,
                        campaigns=args.campaigns, progress=not args.no_progress, time_cap_s=args.time_cap_s)
    _print_report(rep, args.json)
    if not args.json:
        sys.stdout.flush()
    return 0


def _steps(args: argparse.Namespace) -> int:
    from perfpredict.profile import run_step_times

    with _open(args.store, create=False) as store:
        warn_if_busy(args.threads)
        rep = run_step_times(store, campaigns=args.campaigns, threads=args.threads, repeats=args.repeats,
                             max_minutes=args.max_minutes, progress=not args.no_progress)
    _print_report(rep, args.json)
    return 0


def _memory(args: argparse.Namespace) -> int:
    from perfpredict.profile import run_memory_remeasure

    with _open(args.store, create=False) as store:
        warn_if_busy()
        rep = run_memory_remeasure(store, max_minutes=args.max_minutes, progress=not args.no_progress)
    _print_report(rep, args.json)
    return 0
