"""``xdlm scaling plan | branches | fit``: the scaling-study commands (docs/scaling.md)."""

from __future__ import annotations

import argparse
import os

from xdlm.cli_args import check_writable, parse_floats
from xdlm.errors import UserError


def _scaling_fit(args: argparse.Namespace) -> int:
    """``xdlm scaling fit EXPERIMENT_OR_SWEEP``: scaling-law fits from MLflow (docs/scaling.md)."""
    from xdlm.scaling.analysis import run_analysis

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('runs')}/mlflow.db"
    if uri.startswith("sqlite:///") and not os.path.isfile(uri.removeprefix("sqlite:///")):
        raise UserError(f"--tracking-uri: no MLflow store at {uri}")
    analysis = run_analysis(args.target, uri, target_flops=args.target_flops, holdout_budget=args.holdout_budget,
                            bootstrap=args.bootstrap, metric=args.metric, log=not args.no_log, out_dir=args.out,
                            seed=args.seed)
    print(analysis.table(), end="")
    for name, path in analysis.files.items():
        print(f"  {name}: {path}")
    if analysis.run_id:
        print(f"MLflow analysis run {analysis.run_id} at {uri}")
    return 0


def _scaling_plan(args: argparse.Namespace) -> int:
    """``xdlm scaling plan``: write an IsoFLOP sweep file (docs/scaling-training.md)."""
    import shlex

    from xdlm.scaling.plan import check_plan, describe, make_plan, total_flops

    if args.sizes < 1:
        raise UserError(f"--sizes: must be >= 1 (models per budget), got {args.sizes}")
    check_writable(args.out, "--out")
    name = args.name or os.path.splitext(os.path.basename(args.out))[0]
    rules = {"aspect": args.aspect, "head_dim": args.head_dim, "tokens_per_param": args.tokens_per_param,
             "memory_gib": args.memory_gib, "min_steps": args.min_steps, "depth_step": args.depth_step}
    plan = make_plan(args.base, parse_floats(args.budgets, "--budgets"), args.sizes, parse_floats(args.k, "--k"), name=name,
                     replicates=args.replicates, overrides=args.overrides, workers=args.workers,
                     cpus_per_worker=args.cpus_per_worker, use_gpu=True if args.gpu else None,
                     trainable_cpus=args.trainable_cpus, **rules)
    flags = [f"--{key.replace('_', '-')} {shlex.quote(str(value))}" for key, value in vars(args).items()
             if key in PLAN_FLAGS and value is not None and value is not False and key != "note"]
    command = " ".join(["xdlm scaling plan", *flags, *(["--gpu"] if args.gpu else []),
                        *(shlex.quote(o) for o in args.overrides)])
    plan.header = describe(plan, command, args.note)
    check_plan(plan, args.out)
    with open(args.out, "w") as f:
        f.write(plan.yaml_text())
    print(plan.table())
    print(f"\n{plan.trials} trials, {total_flops(plan):.3g} FLOPs in all; written to {args.out}")
    print(f"run it: xdlm sweep {args.out}")
    return 0


PLAN_FLAGS = ("base", "budgets", "sizes", "k", "replicates", "out", "name", "memory_gib", "aspect", "head_dim",
              "tokens_per_param", "depth_step", "min_steps", "workers", "cpus_per_worker", "trainable_cpus")


def _scaling_branches(args: argparse.Namespace) -> int:
    """``xdlm scaling branches RUN --at H,...``: decay branches of a run (docs/scaling-training.md)."""
    from xdlm.scaling.branches import run_branches

    decay = float(args.decay_fraction) if args.decay_fraction is not None else None
    results = run_branches(args.run, parse_floats(args.at, "--at"), storage_path=args.storage_path, decay_fraction=decay,
                           overrides=args.overrides, address=args.address)
    for branch, outcome in results:
        where = f"MLflow run {outcome.run_id}" if outcome and outcome.run_id else "already trained"
        print(f"  {branch.name}: horizon {branch.horizon:g}, steps {branch.start_step} -> {branch.steps}; {where}")
    return 0


def add_scaling_parsers(scaling_sub) -> None:
    """``xdlm scaling plan | branches | fit``: each action sets ``func``."""
    # plan and branches
    plan = scaling_sub.add_parser("plan", help="write an IsoFLOP sweep for compute budgets and k values")
    plan.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the base job")
    plan.add_argument("--base", required=True, help="base job file, e.g. jobs/markov_small.yaml")
    plan.add_argument("--budgets", required=True, help="training FLOPs per grid column, e.g. 1e12,3e12,1e13")
    plan.add_argument("--sizes", type=int, default=3, help="model sizes per budget, around N*(C) (default 3)")
    plan.add_argument("--k", default="0,0.5", help="mixing ratios, e.g. 0,0.5 (default)")
    plan.add_argument("--replicates", type=int, default=1, help="seeds per configuration (search.replicates)")
    plan.add_argument("--out", required=True, help="sweep file to write, e.g. sweeps/scaling_quick.yaml")
    plan.add_argument("--name", help="sweep name (default: the --out file's name)")
    plan.add_argument("--memory-gib", type=float, help="memory of one device; larger candidates are dropped (16)")
    plan.add_argument("--aspect", type=float, help="hidden / n_layers of the size ladder (default: the base job's)")
    plan.add_argument("--head-dim", type=int, help="head width of the size ladder (default: the base job's)")
    plan.add_argument("--tokens-per-param", type=float, help="r in N*(C) = sqrt(C / 6r) (default 20)")
    plan.add_argument("--depth-step", type=int, help="ladder depths between a budget's sizes (default 1)")
    plan.add_argument("--min-steps", type=int, help="fewer steps than this drops a candidate (default 20)")
    plan.add_argument("--workers", type=int, help="Ray Train workers per trial (default: the base job's)")
    plan.add_argument("--cpus-per-worker", type=float, help="CPU share per worker")
    plan.add_argument("--gpu", action="store_true", help="one GPU per worker")
    plan.add_argument("--trainable-cpus", type=float, default=0.2, help="CPU share of each trial's driver")
    plan.add_argument("--note", help="a line for the file's header, e.g. the measured duration")
    plan.set_defaults(func=_scaling_plan)

    branches = scaling_sub.add_parser("branches", help="decay branches of a wsd/constant run at several horizons")
    branches.add_argument("run", help="the parent run: name under --storage-path, or its directory")
    branches.add_argument("overrides", nargs="*", help="dotted.key=value overrides of the branches' job")
    branches.add_argument("--at", required=True, help="horizons, fractions of the parent's train.steps: 0.25,0.5,1.0")
    branches.add_argument("--storage-path", default="runs", help="where the parent run is (default: runs)")
    branches.add_argument("--decay-fraction", type=float,
                          help="fraction of each branch's steps spent decaying (default: the parent's optim.decay_fraction)")
    branches.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    branches.set_defaults(func=_scaling_branches)

    # fit (analysis)
    fit = scaling_sub.add_parser("fit", help="fit IsoFLOP minima, power laws, L(N, D) and L(D) with bootstrap "
                                 "intervals from a sweep's or experiment's MLflow runs; crossovers between k")
    fit.add_argument("target", metavar="EXPERIMENT_OR_SWEEP", help="sweep name (tag xdlm.sweep), several sweeps of one study as A,B, or an MLflow experiment")
    fit.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)")
    fit.add_argument("--target-flops", type=float, help="extrapolate N*, D*, L* to this training compute")
    fit.add_argument("--holdout-budget", type=float,
                     help="budget predicted from the others and compared with its measurement (default: the largest)")
    fit.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates per k (0: no intervals)")
    fit.add_argument("--metric", default="val/nelbo", help="loss metric (nats/token)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    fit.add_argument("--no-log", action="store_true", help="do not record an MLflow analysis run")
    fit.add_argument("--out", help="directory for fit.{json,md}, isoflop/curves .png/.html (default: runs/scaling/NAME)")
    fit.set_defaults(func=_scaling_fit)
