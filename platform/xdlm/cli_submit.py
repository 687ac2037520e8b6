"""``xdlm submit`` and ``xdlm jobs``: running on a cluster through Ray Jobs (docs/submit.md)."""

from __future__ import annotations

import argparse
import sys

from xdlm.errors import UserError


def _submit(args: argparse.Namespace) -> int:
    """``xdlm submit JOB_OR_SWEEP.yaml [k=v ...]``: run it on a cluster through Ray Jobs (docs/submit.md)."""
    from xdlm.submit import client, package

    client.resolve_address(args.address)  # a ray:// address is refused before anything else
    sub = package.prepare(args.file, args.overrides, resume=args.resume, name=args.name, python=args.python,
                          env=args.env)  # validated before the cluster is contacted
    conn = client.connect(args.address, submitting=True, allow_unauthenticated=args.allow_unauthenticated)
    job_id = package.submit(conn, sub)
    auth = f"token from {conn.token_source}" if conn.authenticated else "UNAUTHENTICATED (--allow-unauthenticated)"
    print(f"submitted {sub.kind} {sub.name!r} as job {job_id} to {conn.address} ({auth})")
    print(f"  MLflow: experiment {sub.experiment!r} at {sub.tracking_uri}"
          + (" (the sweep's parent run and its trials)" if sub.kind == "sweep" else f" (run {sub.name!r})"))
    print(f"  storage: {sub.storage}")
    print(f"  follow: xdlm jobs logs {job_id} --follow    stop: xdlm jobs stop {job_id}")
    if args.no_wait:
        return 0
    if args.follow:
        status = client.follow(conn, job_id)
        print(f"job {job_id}: {status}")
        return 0 if status == "SUCCEEDED" else 1
    status = package.wait_started(conn, job_id)
    print(f"job {job_id}: {status}" + (f" ({client.job_info(conn, job_id).message})" if status == "FAILED" else ""))
    return 1 if status == "FAILED" else 0


def _jobs(args: argparse.Namespace) -> int:
    """``xdlm jobs list | status ID | logs ID [--follow] | stop ID``."""
    from xdlm.submit import client

    if args.action != "list" and not args.job_id:
        raise UserError(f"jobs {args.action}: give a job id (see `xdlm jobs list`)")
    conn = client.connect(args.address)
    if args.action == "list":
        rows = client.list_jobs(conn)
        if not rows:
            print(f"no submitted jobs on {conn.address}")
        for row in rows:
            print(f"{row['id']:48s} {row['status']:10s} {row['kind']:6s} {row['name']:24s} {row['start']}  {row['end']}")
    elif args.action == "status":
        info = client.job_info(conn, args.job_id)
        row = client.describe(info)
        print(f"{row['id']}: {row['status']} ({row['kind']} {row['name']}; started {row['start']}, ended {row['end']})")
        if info.message:
            print(f"  {info.message}")
    elif args.action == "logs":
        if args.follow:
            status = client.follow(conn, args.job_id)
            print(f"job {args.job_id}: {status}", file=sys.stderr)
        else:
            print(client.logs(conn, args.job_id), end="")
    elif args.action == "stop":
        stopped = client.stop(conn, args.job_id)
        print(f"job {args.job_id}: " + ("stop requested" if stopped else "had already ended"), flush=True)
        if stopped and not args.no_wait:
            left = client.wait_stopped(conn, args.job_id, timeout_s=args.timeout)
            if left:
                names = ", ".join(sorted(f"{a.get('class_name')} ({a.get('state')})" for a in left))
                print(f"job {args.job_id}: still running after {args.timeout:g} s: {names}; their CPUs stay "
                      "held until they end (`xdlm jobs status` shows the job)", file=sys.stderr)
                return 1
            print(f"job {args.job_id}: stopped; none of its actors is left")
    return 0


def add_submit_parsers(sub) -> None:
    """``xdlm submit`` and ``xdlm jobs``: Ray Jobs on a remote cluster (docs/submit.md)."""
    submit = sub.add_parser("submit", help="run a job or sweep on a Ray cluster through Ray Jobs; the laptop "
                            "may close afterwards (docs/submit.md)")
    submit.add_argument("file", metavar="JOB_OR_SWEEP.yaml", help="job file (jobs/*.yaml) or sweep file (sweeps/*.yaml)")
    submit.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    submit.add_argument("--address", help="the dashboard address, http://HEAD:8265 (default: RAY_ADDRESS)")
    submit.add_argument("--resume", action="store_true", help="continue the run (or sweep) of this name from storage")
    submit.add_argument("--name", help="run (or sweep) name; same as the override name=NAME")
    submit.add_argument("--python", default="python",
                        help="the cluster's Python that has xdlm's dependencies (default: python on its PATH)")
    submit.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a non-secret environment variable for the job (repeatable)")
    submit.add_argument("--allow-unauthenticated", action="store_true",
                        help="submit even to a cluster without token authentication (anyone who reaches "
                        "its port can run code on it)")
    wait = submit.add_mutually_exclusive_group()
    wait.add_argument("--no-wait", action="store_true", help="return right after submitting")
    wait.add_argument("--follow", action="store_true", help="stream the logs until the job ends; exit 1 unless it succeeded")
    submit.set_defaults(func=_submit)

    jobs = sub.add_parser("jobs", help="list, inspect, follow or stop submitted jobs (docs/submit.md)")
    jobs.add_argument("action", choices=["list", "status", "logs", "stop"])
    jobs.add_argument("job_id", nargs="?", metavar="ID", help="the submission id `xdlm submit` printed")
    jobs.add_argument("--address", help="the dashboard address, http://HEAD:8265 (default: RAY_ADDRESS)")
    jobs.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    jobs.add_argument("--no-wait", action="store_true", help="stop: return once the stop is requested, without "
                      "waiting for the job's driver and Ray Train workers to end")
    jobs.add_argument("--timeout", type=float, default=60.0, metavar="S",
                      help="stop: how long to wait for the job and its actors to end (default 60); exit 1 if not")
    jobs.set_defaults(func=_jobs)
