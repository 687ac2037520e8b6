#!/usr/bin/env bash
# One prepared GPU check (issue 9; docs/kernels.md, "GPU check").
#   bash benchmarks/gpu_check.sh OUT_DIR             # on a CUDA machine, about 7 minutes on an H200
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run   # tiny shapes on the CPU, Triton under its interpreter
# Further options go to benchmarks/gpu_check.py (--budget-s, --only, --skip, --aot-workers).
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run] [gpu_check.py options]" >&2
    exit 64
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
unset TRITON_INTERPRET
for arg in "$@"; do
    # the interpreter only for the dry run, set before anything imports triton
    if [ "$arg" = "--dry-run" ]; then export TRITON_INTERPRET=1; fi
done
export PYTHONPATH="$root/platform${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
