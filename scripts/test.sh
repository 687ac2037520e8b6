#!/usr/bin/env bash
# Run the test suite (the README's test command; .ci/run calls exactly this).
# Services the tests need (a local Ray, an MLflow server, an S3 endpoint on loopback) are started
# by the tests' own fixtures. Extra arguments go to pytest, e.g. `-m "not slow"`.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 MLFLOW_ENABLE_ASYNC_LOGGING=false
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
