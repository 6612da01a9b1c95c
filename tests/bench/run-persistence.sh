#!/usr/bin/env bash
# Persistence benchmark: S2 with persistent sessions (sync = always / batch)
# against mosquitto with persistence, and a restart with 1,000,000 stored
# messages. Usage: tests/bench/run-persistence.sh [--quick] [--reps N] [--build DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$here/persistence.py" "$@"
