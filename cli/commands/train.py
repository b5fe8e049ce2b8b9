"""`perfpredict train`: train the GNN predictor on a measurement store and write a versioned checkpoint."""

from __future__ import annotations

import argparse

from cli.argtypes import add_campaigns, nonneg_float, nonneg_int, positive_int, share
from cli.output import add_progress_option, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add `train`."""
    p = sub.add_parser("train", help="train the GNN latency / memory predictor on a measurement store",
                       description="Train on the split's training part (early stopping on held-out variants), "
                                   "evaluate on its test part, and write OUT/model.pt, OUT/metrics.json and the "
                                   "model card OUT/README.md. While it trains, OUT/train_state_seed<S>.pt holds the "
                                   "last finished epoch: run the same command again after a kill and training "
                                   "goes on from there.")
    p.add_argument("--data", required=True, help="measurement store (path, sqlite:///path, or a name under datasets/)")
    p.add_argument("-o", "--output", required=True, help="checkpoint directory, e.g. trained_models/proxy")
    p.add_argument("--split", default="random:0.2",
                   help="random:FRACTION[:SEED] (held-out variants, default random:0.2), family:NAME "
                        "(leave one family out), family-layers:NAME (its models out, its layer records kept), "
                        "family-shots:NAME:K (its models out but the first K plans of each) or none (train on "
                        "everything)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (splits, initialisation, batching)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs of the cosine learning-rate schedule (default 150)")
    p.add_argument("--patience", type=positive_int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs without a better validation score (default 30; --epochs or more: "
                        "never; the best-validation epoch is kept)")
    p.add_argument("--ensemble", type=positive_int, default=1, metavar="N",
                   help="train N GNNs with seeds SEED, SEED+1, ... and ship them as one predictor (geometric-mean "
                        "latency, mean memory): steadier on model families the data lacks, N times the training "
                        "and prediction time (default 1)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads while training (default 1)")
    p.add_argument("--identity-dropout", type=share, default=0.0, metavar="SHARE",
                   help="share of nodes whose op and primitive identity is hidden in each training batch, so the "
                        "predictor learns to cost ops it never saw from their category and shapes (default 0)")
    p.add_argument("--session-offsets", action="store_true",
                   help="learn one latency offset per measurement session (device, threads, runtime revision, day) "
                        "but each device's latest, so the network predicts the runtime as it runs now rather than a "
                        "blend of campaigns measured days apart (see perfpredict.sessions; default off)")
    p.add_argument("--layer-offsets", action="store_true",
                   help="learn one level offset per device, thread count and campaign for the layer records "
                        "(kernels measured alone, often on another day), so they teach the kernels' relative costs "
                        "and the model records their level (default off)")
    p.add_argument("--synthetic-offsets", action="store_true",
                   help="learn one level offset per device and thread count for the records of synthetic networks "
                        "(the mixnet and mixnet_fc families), so they teach how blocks cost in context and the "
                        "deployed families the level (default off)")
    p.add_argument("--step-weight", type=nonneg_float, default=0.0, metavar="W",
                   help="weight of the step-share loss: each node's share of the predicted latency against its share "
                        "of the forward pass timed step by step, for records with step-time records in the store "
                        "(perfpredict profile steps; default 0: off)")
    p.add_argument("--hidden", type=positive_int, default=None, metavar="WIDTH",
                   help="width of the network's node embeddings and heads (default 32)")
    p.add_argument("--gnn-layers", type=positive_int, default=None, metavar="N",
                   help="message-passing (GraphSAGE) layers: how far along the graph a node sees (default 3)")
    p.add_argument("--latency-stat", choices=("median", "min", "beacon"), default="median",
                   help="latency target: the records' median (default), fastest timed repeat, or median scaled to the "
                        "store's typical machine speed by the beacon timed beside it (model records without one are "
                        "skipped; see perfpredict.beacon)")
    p.add_argument("--memory-method", choices=("auto", "allocator", "rss", "any"), default="auto",
                   help="peak-memory target: torch-allocator figures (exact), resident-set figures, allocator where there is one "
                        "else resident set, or auto (allocator when the store has any; default)")
    add_campaigns(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_progress_option(p)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from perfpredict.gnn import GNNConfig
    from perfpredict.train import TrainOptions, metrics_rows, resolve_dataset, train_and_report

    data = resolve_dataset(args.data)
    metrics = train_and_report(data, args.output, split=args.split, seed=args.seed, epochs=args.epochs,
                               progress=not args.no_progress, options=TrainOptions(seed=args.seed, threads=args.threads,
                                                                    identity_dropout=args.identity_dropout,
                                                                    session_offsets=args.session_offsets,
                                                                    layer_offsets=args.layer_offsets,
                                                                    synthetic_offsets=args.synthetic_offsets,
                                                                    step_weight=args.step_weight,
                                                                    **({"patience": args.patience}
                                                                       if args.patience else {})),
                               latency_stat=args.latency_stat, memory_method=args.memory_method,
                               ensemble=args.ensemble, config=GNNConfig.of(args.hidden, args.gnn_layers),
                               campaigns=args.campaigns)
    if args.json:
        print_json(metrics)
        return 0
    tr = metrics["training"]
    ens = tr.get("ensemble")
    runs = (f"{ens['size']} members, best epochs {', '.join(map(str, ens['best_epochs']))}, {ens['seconds']} s"
            if ens else f"{tr['epochs_run']} epochs, best {tr['best_epoch']}, {tr['seconds']} s")
    print(f"trained on {tr['train_model_samples']} model + {tr['train_layer_samples']} layer samples "
          f"({runs}); checkpoint {args.output}/model.pt")
    if metrics.get("test"):
        print(f"held-out ({metrics['split']}):")
        print_table(*metrics_rows([("held-out", metrics["test"])]))
    else:
        print("no held-out part (split none)")
    return 0
