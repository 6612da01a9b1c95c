#!/usr/bin/env bash
# Benchmark: libmqttbroker vs mosquitto 2.0.11, scenarios S1-S8 of BENCH.md.
# Usage: tests/bench/run.sh [--quick] [--only S1,S3] [--broker ours|mosquitto|both]
#                           [--reps N] [--unpinned-reps N] [--no-unpinned]
#                           [--build DIR] [--broker-cli PATH] [--tool PATH] [--out DIR]
# See tests/bench/README.md. Results go to tests/bench/results/ (git-ignored).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# S6/S8 hold thousands of sockets: raise the soft fd limit to the hard one
# (the broker and the tool are separate processes, each with its own limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$here/bench.py" "$@"
