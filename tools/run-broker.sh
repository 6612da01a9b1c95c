#!/bin/sh
# Builds the broker and starts it with its embedded defaults (127.0.0.1:1883).
set -e
cd "$(dirname "$0")/.."
MQB_NO_NODE=1 ./tools/install-deps.sh
[ -f build/build.ninja ] || meson setup build
ninja -C build
exec ./build/broker-cli/broker-cli "$@"
