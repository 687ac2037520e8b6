"""The ``xdlm`` command line: one subcommand per job kind."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from xdlm.demo import run_demo

    if not 0.0 < args.confidence <= 1.0:
        raise SystemExit(f"xdlm demo: --confidence must be in (0, 1], got {args.confidence}")
    run_demo(sentence=args.sentence, steps=args.steps, confidence=args.confidence, seed=args.seed)
    return 0


def _load(args: argparse.Namespace):
    from xdlm.config import load_job

    return load_job(args.job, args.overrides)


def _train(args: argparse.Namespace) -> int:
    from xdlm.train.launch import run_training

    job = _load(args)
    if args.address:
        job.cluster.address = args.address
    outcome = run_training(job, resume=args.resume)
    print(f"\nrun {job.name}: checkpoints in {outcome.run_dir}")
    if outcome.checkpoint:
        print(f"final checkpoint: {outcome.checkpoint}")
    if outcome.run_id:
        print(f"MLflow run {outcome.run_id} at {outcome.tracking_uri}")
        print(f"  browse: mlflow ui --backend-store-uri {outcome.tracking_uri}")
    keys = [k for k in sorted(outcome.metrics) if k.startswith(("val/", "zeroshot/", "gen/"))]
    for key in keys:
        print(f"  {key:32s} {outcome.metrics[key]:.4f}")
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.reference:
        from xdlm.config_reference import reference_markdown

        print(reference_markdown())
        return 0
    if not args.job:
        raise SystemExit("xdlm config: give a job file (or --reference)")
    from xdlm.config import to_yaml

    print(to_yaml(_load(args)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdlm",
        description="Train, sweep and track XDLM discrete diffusion language models on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="show the XDLM forward process and posterior sampler on a sentence")
    demo.add_argument("--sentence", default="discrete diffusion balances understanding and generation")
    demo.add_argument("--steps", type=int, default=8, help="sampler steps (network calls)")
    demo.add_argument("--confidence", type=float, default=0.8, help="mass the stand-in denoiser puts on the truth")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    train = sub.add_parser("train", help="train a model on Ray Train, tracked in MLflow")
    train.add_argument("job", help="job file (YAML), e.g. jobs/quickstart.yaml")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. diffusion.k=0.5")
    train.add_argument("--resume", action="store_true", help="continue the run of the same name from its last checkpoint")
    train.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    train.set_defaults(func=_train)

    config = sub.add_parser("config", help="validate a job and print its resolved configuration")
    config.add_argument("job", nargs="?", help="job file (YAML)")
    config.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    config.add_argument("--reference", action="store_true", help="print the configuration reference (Markdown)")
    config.set_defaults(func=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # ConfigError and friends: a clear message, no traceback
        print(f"xdlm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
