"""One prepared GPU check (issue 9): compile, verify, benchmark and train, in one call.

    bash benchmarks/gpu_check.sh OUT_DIR              # on a CUDA machine (fits in 8 minutes on an H200)
    bash benchmarks/gpu_check.sh OUT_DIR --dry-run    # the same steps at tiny shapes on the CPU (CI)
    python benchmarks/gpu_check.py OUT_DIR [--dry-run] [--budget-s 420] [--only a,b] [--skip a,b]
                                           [--limit STEP=SECONDS] [--aot-workers N]

Steps, in order, each in its own subprocess (a crash, a hang or a poisoned CUDA context loses
that step only), each timed, each result appended to OUT_DIR/gpu_check.json and
OUT_DIR/gpu_check.md as soon as it exists (both rewritten atomically after every step):

  env            GPU, driver, torch / triton / CUDA versions; bandwidth and peak FLOPs from a
                 table keyed by the device name (an assumption, said so in the output)
  aot            every Triton kernel variant the dispatcher can launch, compiled ahead of time for
                 sm_80, sm_90 and sm_100 with Triton's bundled ptxas (no GPU needed): registers,
                 shared memory, spills
  correctness    triton (and chunked) against torch: NELBO forward + backward, linear_nelbo,
                 the sampling step (exact greedy / nucleus, chi-square of draws)
  kernel_bench   benchmarks/kernels.py's measurements: time, peak memory, GB/s
  train          a short bf16 training of the small DiT at L = 1024 (tokens/s, MFU, memory)
  train_compile  the same under torch.compile
  deepspeed      DeepSpeed ZeRO-2 for a few steps (one process, world size 1)

A step that fails records its error and the next one runs (the env step excepted); after
``--budget-s`` seconds the remaining steps are recorded as skipped.  Exit status: 1 if a kernel
disagrees with torch (or an AOT compile fails or spills), 2 if another step failed, else 0.
docs/kernels.md ("GPU check") describes the steps, the formulas and the tolerances.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runner import STEP_NAMES, child_main, run_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out_dir", nargs="?", help="where gpu_check.json / .md, steps/ and logs/ go")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (interpreter, chunked)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="global time budget in seconds; later steps are skipped (default 420; 900 in the dry run)")
    parser.add_argument("--only", default=None, help="comma-separated steps to run (env always runs)")
    parser.add_argument("--skip", default=None, help="comma-separated steps to skip")
    parser.add_argument("--aot-workers", type=int, default=None, help="parallel compiles (default: CPU count)")
    parser.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS",
                        help="override one step's time limit (repeatable)")
    parser.add_argument("--aot-json", type=Path, default=None,
                        help="only compile every kernel variant ahead of time and write the report here "
                             "(tests/kernels/test_gpu_compile.py)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--context", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:  # inside a step's subprocess (runner.run_step starts it)
        return child_main(args.step, Path(args.result), Path(args.context))
    if args.aot_json:
        from .aot_compile import aot_main

        return aot_main(args.aot_json, args.aot_workers)
    if not args.out_dir:
        parser.error("OUT_DIR is required")
    budget = args.budget_s if args.budget_s is not None else (900.0 if args.dry_run else 420.0)
    selected = [n for n in STEP_NAMES if n == "env" or not args.only or n in args.only.split(",")]
    skipped_by_flag = set(args.skip.split(",")) if args.skip else set()
    unknown = (set(args.only.split(",")) if args.only else set()) | skipped_by_flag
    if unknown - set(STEP_NAMES):
        parser.error(f"unknown steps {sorted(unknown - set(STEP_NAMES))}; steps: {', '.join(STEP_NAMES)}")
    limits = {}
    for item in args.limit:
        step, _, seconds = item.partition("=")
        if step not in STEP_NAMES or not seconds:
            parser.error(f"--limit wants STEP=SECONDS with a step of {', '.join(STEP_NAMES)}, got {item!r}")
        limits[step] = float(seconds)
    command = [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
    return run_all(Path(args.out_dir).resolve(), args.dry_run, budget, selected, skipped_by_flag, limits,
                   {"aot_workers": args.aot_workers}, command)
