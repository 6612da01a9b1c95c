#!/usr/bin/env bash
# Scale figures: 1,000,000 subscriptions, 1,000,000 retained messages with
# wildcard subscribes, connect rate; ours and mosquitto. See tests/bench/README.md.
# Usage: tests/bench/run-scale.sh [--broker ours|mosquitto|both] [--only subs,retained,connect]
#                                 [--build DIR] [--out DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$here/scale.py" "$@"
