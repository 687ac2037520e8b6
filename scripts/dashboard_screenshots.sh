#!/usr/bin/env bash
# Regenerate docs/img/dashboard/*.png: the dashboard's browser tests, keeping their screenshots
# there (a real two-run sweep, `xdlm dashboard`, headless Chromium; ~1.5 min on 2 cores).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p docs/img/dashboard
XDLM_SCREENSHOTS="$root/docs/img/dashboard" bash scripts/test.sh tests/dashboard/test_browser.py -q "$@"
