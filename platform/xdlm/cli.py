"""The ``xdlm`` command line: one subcommand per job kind."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from xdlm.cli_args import check_writable, parse_floats
from xdlm.cli_eval import add_eval_code_parser
from xdlm.cli_scaling import add_scaling_parsers
from xdlm.cli_submit import add_submit_parsers
from xdlm.errors import RunFailed, UserError
from xdlm.eval.metric_names import is_evaluation


def _demo(args: argparse.Namespace) -> int:
    from xdlm.demo import run_demo

    if not 0.0 < args.confidence <= 1.0:
        raise UserError(f"--confidence must be in (0, 1], got {args.confidence}")
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
    outcome = run_training(job, resume=args.resume, take_over=args.take_over)
    print(f"\nrun {job.name}: checkpoints in {outcome.run_dir}")
    if outcome.checkpoint:
        print(f"final checkpoint: {outcome.checkpoint}")
    if outcome.run_id:
        print(f"MLflow run {outcome.run_id} at {outcome.tracking_uri}")
        if not outcome.tracking_uri.startswith(("http://", "https://")):
            print(f"  browse: mlflow ui --backend-store-uri {outcome.tracking_uri}")
        print(f"  run page (training layout): {outcome.ui_url()}")
    keys = [k for k in sorted(outcome.metrics) if is_evaluation(k)]
    for key in keys:
        print(f"  {key:32s} {outcome.metrics[key]:.4f}")
    if outcome.run_id:
        from xdlm.train.launch import latest_samples

        samples = latest_samples(outcome.tracking_uri, outcome.run_id)
        if samples:
            print("\nsamples from the final model (MLflow table samples.json):\n" + samples)
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from xdlm.eval.offline import evaluate_run

    if args.json:
        check_writable(args.json, "--json")  # before the evaluation, not after it
    metrics = evaluate_run(
        args.run, eval_sets=args.sets.split(",") if args.sets else None,
        sample_steps=[int(s) for s in args.steps.split(",")] if args.steps else None,
        num_samples=args.num_samples, max_batches=args.max_batches, evaluator=args.evaluator,
        storage_path=args.storage_path,
    )
    for key, value in metrics.items():
        print(f"{key:36s} {value:12.4f}")
    if not args.no_log:
        from xdlm.eval.offline import log_to_run

        run_id = log_to_run(args.run, metrics, args.storage_path)
        if run_id:
            print(f"logged to MLflow run {run_id} (beside the training's own numbers)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(metrics, f, indent=2)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from xdlm.eval.offline import sample_run_recorded

    if args.trajectory is not None and args.trajectory < 1:
        raise UserError(f"--trajectory: the number of samples to record must be >= 1, got {args.trajectory}")
    texts, trajectory = sample_run_recorded(
        args.run, num_samples=args.num_samples, steps=args.steps, prefix=args.prefix, top_p=args.top_p,
        seed=args.seed, storage_path=args.storage_path, trajectory_rows=args.trajectory or 0)
    for i, text in enumerate(texts):
        print(f"--- sample {i} ({args.steps} steps)\n{text}")
    if trajectory is not None:
        _store_trajectory(args, trajectory)
    return 0


def _store_trajectory(args: argparse.Namespace, payload: dict) -> None:
    """The trajectory as an artifact of the run's MLflow run (with its figure under dashboard/),
    or a local JSON file when the run was not tracked or --trajectory-json says so."""
    import json

    from xdlm.eval.offline import mlflow_run_of, trajectory_artifact

    name = trajectory_artifact(payload)
    tracked = None if args.trajectory_json else mlflow_run_of(args.run, args.storage_path)
    if tracked is None:
        path = args.trajectory_json or os.path.basename(name)
        check_writable(path, "--trajectory-json")
        with open(path, "w") as f:
            json.dump(payload, f)
        print(f"trajectory of {len(payload['samples'])} sample(s): {path}")
        return
    import tempfile

    from xdlm.dashboard.data import TRAJECTORY_TAG
    from xdlm.dashboard.figures import log_figure, trajectory_figure
    from xdlm.tracking.runs import make_client

    tracking_uri, run_id = tracked
    client = make_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(name))
        with open(local, "w") as f:
            json.dump(payload, f)
        client.log_artifact(run_id, local, os.path.dirname(name))
    client.set_tag(run_id, TRAJECTORY_TAG, name)
    figures = log_figure(client, run_id, os.path.splitext(os.path.basename(name))[0], trajectory_figure(payload))
    print(f"trajectory of {len(payload['samples'])} sample(s) logged to MLflow run {run_id}: {name}, "
          f"{', '.join(figures)} (view: xdlm dashboard, page Trajectories)")


def _config(args: argparse.Namespace) -> int:
    if args.reference:
        from xdlm.config_reference import reference_markdown

        print(reference_markdown())
        return 0
    if not args.job:
        raise UserError("give a job file (or --reference)")
    from xdlm.config import to_yaml

    job = _load(args)
    if args.plan:
        from xdlm.train.memory_plan import check_plan

        check_plan(job)  # raises ConfigError (exit 2) when cluster.gpu_memory_gb cannot hold it
        return 0
    print(to_yaml(job), end="")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    """``xdlm sweep SWEEP.yaml [k=v ...]``, ``xdlm sweep --resume NAME``, ``xdlm sweep report NAME``."""
    from pathlib import Path

    from xdlm.tune.report import build_report
    from xdlm.tune.runner import resume_sweep, run_sweep

    if args.resume:
        if args.target:
            raise UserError("--resume NAME takes no sweep file or overrides")
        outcome = resume_sweep(args.resume, storage_path=args.storage, address=args.address)
    elif args.target and args.target[0] == "report":
        if len(args.target) != 2:
            raise UserError("report: give one sweep NAME (or its directory)")
        from xdlm.tune.layout import locate

        report = build_report(locate(args.target[1], args.storage), log_to_mlflow=not args.no_log)
        print(report.text(), end="")
        for name, path in report.files.items():
            print(f"  {name}: {path}")
        return 0
    elif args.target:
        outcome = run_sweep(args.target[0], args.target[1:], address=args.address)
    else:
        raise UserError("give a sweep file (sweeps/*.yaml), --resume NAME or report NAME")
    print(f"\nsweep {outcome.name}: {outcome.directory}")
    print(f"MLflow parent run {outcome.parent_run_id} at {outcome.tracking_uri}")
    counts = {s: list(outcome.statuses.values()).count(s) for s in sorted(set(outcome.statuses.values()))}
    print("trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; best: {outcome.best_trial_id}")
    if outcome.interrupted:
        print(f"the sweep stopped with trials unfinished: continue with `xdlm sweep --resume {outcome.name}`")
    report_md = Path(outcome.directory) / "report" / "trials.md"
    if report_md.is_file():
        print()
        print(report_md.read_text(), end="")
    return 0


def _oracle(args: argparse.Namespace) -> int:
    """``xdlm oracle [JOB.yaml] [k=v ...]``: the exact denoiser's study on a Markov source."""
    from xdlm.config import load_job
    from xdlm.eval.oracle_study import run_oracle_study
    from xdlm.train.launch import default_tracking_uri

    if args.job and "=" in args.job and not os.path.isfile(args.job):  # only overrides were given
        args.overrides, args.job = [args.job, *args.overrides], None
    job = load_job(args.job, [*ORACLE_DEFAULTS, *args.overrides] if not args.job else args.overrides)
    study = run_oracle_study(
        job, ks=parse_floats(args.k, "--k"), steps=[int(s) for s in parse_floats(args.steps, "--steps")],
        num_samples=args.num_samples, nelbo_repeats=args.repeats, out_dir=args.out,
        tracking_uri=None if args.no_log else default_tracking_uri(job))
    print(study.table(), end="")
    print(f"({study.seconds:.1f} s)")
    for name, path in study.files.items():
        print(f"  {name}: {path}")
    if study.run_id:
        print(f"MLflow run {study.run_id} at {default_tracking_uri(job)}")
    return 0


#: ``xdlm oracle`` without a job file: the Markov source's defaults (docs/synthetic.md).
ORACLE_DEFAULTS = ("name=oracle", "data.source=markov", "data.eval_sets=[]", "data.seq_len=32",
                   "data.markov.order=2", "data.markov.concentration=0.3", "data.markov.validation_sequences=256")


def _tracking(args: argparse.Namespace) -> int:
    """``xdlm tracking flush RUN``: deliver a run's spilled MLflow records without training."""
    from xdlm.train.launch import flush_spill

    delivered, left = flush_spill(args.run, args.storage_path)
    print(f"delivered {delivered} spilled records" + (f"; {left} still undelivered" if left else ""))
    return 0 if not left else 1


def _dashboard(args: argparse.Namespace) -> int:
    from xdlm.dashboard.serve import run_dashboard

    if args.refresh <= 0:
        raise UserError(f"--refresh: seconds between reloads of live pages, must be > 0, got {args.refresh}")
    run_dashboard(args.tracking_uri, host=args.host, port=args.port, mlflow_port=args.mlflow_port,
                  refresh_s=args.refresh)
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
    train.add_argument("--take-over", action="store_true",
                       help="take the run's lock over from a process that is gone (see the error that suggests it)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="zero-shot perplexity and generation quality of a trained run")
    evaluate.add_argument("run", help="run directory, or run name under --storage-path")
    evaluate.add_argument("--sets", help="comma-separated eval sets (default: the job's data.eval_sets)")
    evaluate.add_argument("--steps", help="comma-separated sampler steps (default: the job's eval.sample_steps)")
    evaluate.add_argument("--num-samples", type=int, help="samples per step count")
    evaluate.add_argument("--max-batches", type=int, default=50, help="batches per eval set")
    evaluate.add_argument("--evaluator", help="run directory of a causal evaluator (jobs/ar_evaluator.yaml)")
    evaluate.add_argument("--storage-path", default="runs")
    evaluate.add_argument("--json", help="also write the metrics to this JSON file")
    evaluate.add_argument("--no-log", action="store_true", help="do not add the numbers to the run's MLflow run")
    evaluate.set_defaults(func=_eval)

    sample = sub.add_parser("sample", help="generate text with a trained diffusion run")
    sample.add_argument("run", help="run directory, or run name under --storage-path")
    sample.add_argument("--steps", type=int, default=32, help="sampler steps (network calls)")
    sample.add_argument("--num-samples", type=int, default=4)
    sample.add_argument("--prefix", help="text the samples start with (kept fixed while sampling)")
    sample.add_argument("--top-p", type=float)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--storage-path", default="runs")
    sample.add_argument("--trajectory", type=int, nargs="?", const=1, metavar="N",
                        help="record the denoising trajectory of N samples (default 1): each step's tokens and "
                             "what happened to each position; logged to the run's MLflow run (trajectories/)")
    sample.add_argument("--trajectory-json", metavar="FILE", help="write the trajectory to FILE instead of MLflow")
    sample.set_defaults(func=_sample)

    config = sub.add_parser("config", help="validate a job and print its resolved configuration")
    config.add_argument("job", nargs="?", help="job file (YAML)")
    config.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    config.add_argument("--reference", action="store_true", help="print the configuration reference (Markdown)")
    config.add_argument("--plan", action="store_true",
                        help="print the job's memory plan per GPU and ZeRO stage instead (docs/deepspeed.md); "
                             "exit 2 when it exceeds cluster.gpu_memory_gb")
    config.set_defaults(func=_config)

    sweep = sub.add_parser("sweep", help="run, resume or report a Ray Tune sweep (docs/sweeps.md)")
    sweep.add_argument("target", nargs="*",
                       help="SWEEP.yaml [dotted.key=value ...], or: report NAME")
    sweep.add_argument("--resume", metavar="NAME", help="continue the sweep NAME after its driver died")
    sweep.add_argument("--storage", default="runs", help="where sweeps live for --resume/report (default: runs)")
    sweep.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    sweep.add_argument("--no-log", action="store_true", help="report: do not log the report to MLflow")
    sweep.set_defaults(func=_sweep)
    oracle = sub.add_parser("oracle", help="the exact denoiser of a Markov source: NELBO vs entropy per k, "
                            "true NLL of its samples vs steps (docs/synthetic.md)")
    oracle.add_argument("job", nargs="?", help="job file with data.source: markov (default: the built-in source)")
    oracle.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. data.markov.order=1")
    oracle.add_argument("--k", default="0,0.1,0.5,1", help="comma-separated mixing ratios")
    oracle.add_argument("--steps", default="1,2,4,8,16,32,64,128", help="comma-separated sampler steps")
    oracle.add_argument("--num-samples", type=int, default=128, help="samples per k and step count")
    oracle.add_argument("--repeats", type=int, default=16, help="passes over the validation set for the NELBO")
    oracle.add_argument("--out", default="runs/oracle", help="directory for oracle.{json,md,png,html}")
    oracle.add_argument("--no-log", action="store_true", help="do not log an MLflow run")
    oracle.set_defaults(func=_oracle)

    scaling = sub.add_parser("scaling", help="scaling studies: plan an IsoFLOP sweep, branch decays off a run, "
                             "fit scaling laws from MLflow (docs/scaling.md)")
    scaling_sub = scaling.add_subparsers(dest="scaling_command", metavar="ACTION")
    scaling_sub.required = True
    add_scaling_parsers(scaling_sub)

    dashboard = sub.add_parser("dashboard", help="the MLflow UI and the review pages (curves, sweeps, scaling, "
                               "trajectories) over the tracking store (docs/dashboard.md)")
    dashboard.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else runs/mlflow.db)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    dashboard.add_argument("--port", type=int, default=8090, help="port of the review pages")
    dashboard.add_argument("--mlflow-port", type=int, default=5000, help="port of the MLflow UI it starts")
    dashboard.add_argument("--refresh", type=float, default=10.0, help="seconds between reloads of live pages")
    dashboard.set_defaults(func=_dashboard)

    tracking = sub.add_parser("tracking", help="tracking housekeeping: flush RUN delivers a run's spilled records")
    tracking.add_argument("action", choices=["flush"])
    tracking.add_argument("run", help="run name under --storage-path, or its directory")
    tracking.add_argument("--storage-path", default="runs")
    tracking.set_defaults(func=_tracking)
    add_submit_parsers(sub)
    add_eval_code_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the run's Source in MLflow, also for runs opened inside Ray workers (sweep trials)
    os.environ["XDLM_COMMAND"] = " ".join(["xdlm", *(sys.argv[1:] if argv is None else argv)])[:500]
    try:
        return args.func(args)
    except UserError as err:  # a mistake in the request: one line, no traceback
        print(f"xdlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:  # stopped on purpose, for a reason it names (a non-finite loss)
        print(f"xdlm {args.command}: run failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xdlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # not the user's mistake: a bug (or the environment), shown in full
        traceback.print_exc()
        print(f"xdlm {args.command}: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
              "This is not a problem with your input; the traceback above says where it happened.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
