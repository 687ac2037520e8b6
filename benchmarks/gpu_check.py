"""One prepared GPU check (issue 9): compile, verify, benchmark and train, in one call.

    bash benchmarks/gpu_check.sh OUT_DIR              # on a CUDA machine (fits in 8 minutes on an H200)
    bash benchmarks/gpu_check.sh OUT_DIR --dry-run    # the same steps at tiny shapes on the CPU (CI)
    python benchmarks/gpu_check.py OUT_DIR [--dry-run] [--budget-s 420] [--only a,b] [--skip a,b]
                                           [--limit STEP=SECONDS] [--aot-workers N]
    python benchmarks/gpu_check.py --aot-json FILE    # only the ahead-of-time compile (tests)

The entry point only: the check itself is the package benchmarks/gpucheck/ (one module per
job; its __init__ lists them, gpucheck/cli.py describes the steps).  Each step runs this file
again as a subprocess (``--step NAME``), and the AOT compile's spawned workers import it as
their main module, so it does nothing on import beyond making the packages importable.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent / "platform", HERE):  # xdlm without an installed package; gpucheck
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from gpucheck.cli import main  # noqa: E402 -- after the path set-up above

if __name__ == "__main__":
    raise SystemExit(main())
