"""CLI subcommands around the model: train, launch (dist_sync), evaluate, check.

Each ``_cmd_*`` turns arguments into a call of the stage's public function; no stage logic here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    _class_weights_arg,
    _int_list,
    _positive_float,
    _positive_int,
    _print_warnings,
    _recorded_warnings,
)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network on a dataset and export the model",
        description="Train on DATASET_DIR's train split with MXNet, keep the best epoch on the "
        "val split and export MODEL_DIR (model-symbol.json, model-NNNN.params, model.json, "
        "log.csv, train.log, accuracy.png, checkpoints/). --recipe default (ResNet-10, "
        "standardised input, class weights, flips and turns, SGD lr 0.05 momentum 0.9 wd 1e-4, "
        "30 epochs, lr/10 at 60%% and 85%%, epoch by val AUC where a threshold gives sensitivity and "
        "specificity >= 0.5) learns on real tissue; --recipe study is the 2018 study exactly (its CNN, "
        "input/255, Xavier, SGD lr 0.001 momentum 0.8, batch 32, 100 epochs, epoch by "
        "accuracy). Any option below overrides the recipe's value.",
    )
    p.add_argument("dataset", type=Path, help="dataset folder written by `dataset`")
    p.add_argument("-o", "--out", type=Path, required=True, help="model folder to create")
    p.add_argument(
        "--recipe",
        default="default",
        choices=("default", "study"),
        help="settings to start from (default: the recipe that learns on real tissue)",
    )
    p.add_argument(
        "--network",
        default=None,
        choices=("study", "resnet10", "resnet18"),
        help="architecture (recipe: resnet10 / study)",
    )
    p.add_argument(
        "--conv-filters",
        type=_int_list,
        default=None,
        metavar="N,N",
        help="filters of the study CNN's convolutions (default 32,64)",
    )
    p.add_argument(
        "--dense-units",
        type=_int_list,
        default=None,
        metavar="N,N,N",
        help="units of the study CNN's sigmoid dense layers (default 256,128,64)",
    )
    _add_train_optimiser(p)
    _add_train_run(p)
    p.set_defaults(handler=_cmd_train)


def _add_train_optimiser(p: argparse.ArgumentParser) -> None:
    """``train``'s optimisation options: epochs, batch, SGD, learning-rate steps, weights, seed."""
    p.add_argument("--epochs", type=_positive_int, default=None, help="epochs (recipe: 30 / 100)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="batch size (32)")
    p.add_argument(
        "--lr", type=_positive_float, default=None, help="SGD learning rate (0.05 / 0.001)"
    )
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum (0.9 / 0.8)")
    p.add_argument("--wd", type=float, default=None, help="weight decay (1e-4 / 0)")
    p.add_argument(
        "--lr-steps",
        type=_int_list,
        default=None,
        metavar="E,E",
        help="epochs at whose start the learning rate is multiplied by --lr-factor "
        "(recipe: 60%%,85%% of the epochs / none)",
    )
    p.add_argument("--lr-factor", type=_positive_float, default=None, help="(default 0.1)")
    p.add_argument(
        "--class-weights",
        type=_class_weights_arg,
        default=None,
        metavar="dataset|none|W,W",
        help="loss weight per class: 'dataset' (inverse frequencies), 'none' or numbers "
        "(recipe: dataset / none)",
    )
    p.add_argument(
        "--optimizer",
        default=None,
        choices=("sgd", "adam"),
        help="optimiser (recipe: sgd / sgd; --momentum applies to sgd)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="epochs of linear learning-rate warm-up (recipe: 1 / 0)",
    )
    p.add_argument(
        "--init",
        default=None,
        choices=("xavier", "scaled"),
        help="weight initialisation (recipe: scaled / xavier)",
    )
    p.add_argument(
        "--standardise",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="standardise the input per channel with the train split's mean and std "
        "(recipe: yes / no)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")


def _add_train_run(p: argparse.ArgumentParser) -> None:
    """``train``'s run options: devices, kvstore, epoch selection, threads, logs, resume."""
    p.add_argument("--ctx", default="cpu", help="cpu (default), gpu(0) or gpu(0),gpu(1)")
    p.add_argument(
        "--kvstore",
        default="local",
        choices=("local", "device", "dist_sync", "dist_device_sync", "dist_async"),
        help="gluon.Trainer kvstore (default local)",
    )
    p.add_argument(
        "--select",
        default=None,
        help="validation metric that picks the exported epoch: auc, balanced_accuracy, "
        "accuracy, loss or sensitivity@specificity>=F (recipe: auc / accuracy)",
    )
    p.add_argument(
        "--select-floor",
        type=float,
        default=None,
        help="only epochs where a threshold gives val sensitivity and specificity >= this can "
        "be exported "
        "(recipe: 0.5 / 0)",
    )
    p.add_argument(
        "--target-sensitivity",
        type=_positive_float,
        default=None,
        help="the stored threshold reaches this sensitivity on val (recipe: 0.95 / 0.99)",
    )
    p.add_argument(
        "--augment",
        nargs="?",
        const="flips",
        default=None,
        choices=("flips", "colour"),
        help="flips: random mirror and 90-degree turns; colour: those and HED, brightness and "
        "contrast jitter (no value: flips; recipe: colour / none)",
    )
    p.add_argument(
        "--no-augment", dest="augment", action="store_const", const=False, help="no augmentation"
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all)")
    p.add_argument(
        "--log-interval", type=_positive_int, default=50, help="batches between Speed lines (50)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--quiet", action="store_true", help="no log lines on stdout")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted (OUT.partial) or finished model",
    )
    resume.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def _cmd_train(args: argparse.Namespace) -> int:
    from ..model.networks import StudyConfig
    from ..train.loop import train

    sizes = {
        **({"conv_filters": tuple(args.conv_filters)} if args.conv_filters else {}),
        **({"dense_units": tuple(args.dense_units)} if args.dense_units else {}),
    }
    study = StudyConfig(**sizes) if sizes else None
    result = train(
        args.dataset,
        args.out,
        recipe=args.recipe,
        network=args.network,
        study=study,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        wd=args.wd,
        lr_steps=args.lr_steps,
        lr_factor=args.lr_factor,
        class_weights=args.class_weights,
        seed=args.seed,
        ctx=args.ctx,
        kvstore=args.kvstore,
        resume=args.resume,
        select=args.select,
        select_floor=args.select_floor,
        target_sensitivity=args.target_sensitivity,
        augment=args.augment,
        standardise=args.standardise,
        init=args.init,
        warmup=args.warmup,
        optimizer=args.optimizer,
        n_threads=args.threads,
        progress=not args.no_progress and sys.stderr.isatty(),
        log_interval=args.log_interval,
        overwrite=args.overwrite,
        log=(lambda line: None) if args.quiet else print,
    )
    b = result.best
    print(f"model:     {result.model_dir} (epoch {result.best_epoch} by {result.select})")
    print(
        f"val:       accuracy {b['val_accuracy']:.4f}, sensitivity {b['val_sensitivity']:.4f}, "
        f"specificity {b['val_specificity']:.4f}, AUC {b['val_auc']:.4f}"
    )
    print(
        f"threshold: {result.threshold:.4g} ({len(result.history)} epochs, {result.seconds:.1f} s)"
    )
    return 0


def _add_launch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="run `train --kvstore dist_sync` here: a scheduler, servers and workers on 127.0.0.1",
        description="Start MXNet's parameter-server roles on this machine (127.0.0.1 only) and "
        "run TRAIN_ARGS in every worker with --kvstore dist_sync; rank 0 writes the model folder, "
        "rank k MODEL.rankk. For several machines set the DMLC_* variables yourself (README). "
        "Example: prostate-fast launch --workers 2 -- train DATASET -o MODEL --epochs 10",
    )
    p.add_argument("--workers", type=_positive_int, default=2, help="worker processes (2)")
    p.add_argument("--servers", type=_positive_int, default=1, help="server processes (1)")
    p.add_argument(
        "--port",
        type=_positive_int,
        default=None,
        help="scheduler port on 127.0.0.1 (default: a free one)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=24 * 3600.0,
        help="seconds before every process is stopped (one day)",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="folder of scheduler.log, server-N.log, worker-N.log (default: temporary)",
    )
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        metavar="-- train DATASET -o MODEL ...",
        help="the `train` command line of every worker",
    )
    p.set_defaults(handler=_cmd_launch)


def _cmd_launch(args: argparse.Namespace) -> int:
    from ..train.distributed import launch_local

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args or train_args[0] != "train":
        raise ValueError(
            "launch needs a train command line after --, e.g. "
            "`launch --workers 2 -- train DATASET -o MODEL`"
        )
    codes = launch_local(
        train_args,
        n_workers=args.workers,
        n_servers=args.servers,
        port=args.port,
        timeout=args.timeout,
        log_dir=args.log_dir,
    )
    failed = [c for c in codes if c != 0]  # a worker's own status, else 1 (stopped by a signal)
    return 0 if not failed else failed[0] if failed[0] > 0 else 1


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model as a screening test on a dataset split",
        description="Run MODEL_DIR on DATASET_DIR's split; print the study's confusion matrices "
        "(pooled and per slide) with accuracy, sensitivity, specificity, PPV, NPV and ROC AUC; "
        "write report.json, report.txt, slides.csv, predictions.csv, roc.png, confusion.png.",
    )
    p.add_argument("model", type=Path, help="model folder written by `train`")
    p.add_argument("dataset", type=Path, help="dataset folder written by `dataset`")
    p.add_argument("--split", default="val", help="split to evaluate: val (default) or test")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="report folder (default MODEL_DIR/evaluation-SPLIT)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold (default: reach --target-sensitivity on val, the calibration "
        "split; reported on val itself it is labelled optimistic)",
    )
    p.add_argument(
        "--target-sensitivity",
        type=_positive_float,
        default=None,
        help="sensitivity the threshold reaches on the val split (default: the model's own)",
    )
    p.add_argument(
        "--write-threshold",
        action="store_true",
        help="store the threshold in model.json (read by predict); it is tuned on val, "
        "so use --split test for an unbiased report",
    )
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="tiles per batch (64)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:

    from ..evaluate import evaluate_model

    with _recorded_warnings() as caught:
        ev = evaluate_model(
            args.model,
            args.dataset,
            args.split,
            out_dir=args.out,
            threshold=args.threshold,
            target_sensitivity=args.target_sensitivity,
            ctx=args.ctx,
            batch_size=args.batch_size,
            n_threads=args.threads,
            write_threshold=args.write_threshold,
            overwrite=args.overwrite,
        )
    _print_warnings(caught)  # small splits, optimistic threshold; an error says it alone
    print(ev.report())
    out = args.out or args.model / f"evaluation-{args.split}"
    print(f"wrote:     {out}")
    return 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="framework sanity check: the study's MLP on MNIST or the 8x8 digits; MXNet build",
        description="Train the study's MLP (784-128-64-10, relu, SGD lr 0.05 decayed every 10 "
        "epochs, batch 64, 20 epochs) on MNIST IDX files in MNIST_DIR, or on scikit-learn's "
        "8x8 digits; print accuracy, samples/s, MXNet's version, build features and GPUs.",
    )
    p.add_argument(
        "mnist",
        type=Path,
        nargs="?",
        default=None,
        help="folder of MNIST IDX files (default: scikit-learn's digits)",
    )
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs (20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all)")
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from ..train.check import run_check

    result = run_check(
        args.mnist, epochs=args.epochs, seed=args.seed, ctx=args.ctx, n_threads=args.threads
    )
    print(result.report())
    return 0
