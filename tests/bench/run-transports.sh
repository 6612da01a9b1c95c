#!/usr/bin/env bash
# Transports benchmark: S2/S4 over TCP, TLS, WebSocket, secure WebSocket, and TLS
# handshakes per second, against mosquitto where it offers the same.
# Usage: tests/bench/run-transports.sh [--quick] [--reps N] [--build DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$here/transports.py" "$@"
