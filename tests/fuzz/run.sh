#!/bin/sh
# Builds the fuzzers if needed and runs each for N seconds (default 60) on a
# copy of its seed corpus. Exits nonzero if any fuzzer finds a crash; crash
# inputs are kept in $BUILD_DIR/fuzz-artifacts/.
#
#   tests/fuzz/run.sh [SECONDS]       BUILD_DIR (default build-fuzz) may be set
set -u

secs=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" "$root" -Dfuzz=true || exit 1
fi
meson compile -C "$build" fuzz_decode fuzz_topic fuzz_transport || exit 1

artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"
status=0
for name in decode topic transport; do
	bin=$build/tests/fuzz/fuzz_$name
	if [ ! -x "$bin" ]; then
		echo "fuzz_$name: not built" >&2
		status=1
		continue
	fi
	corpus=$(mktemp -d)
	if [ -d "$root/tests/fuzz/seeds/$name" ]; then
		cp -R "$root/tests/fuzz/seeds/$name/." "$corpus/"
	fi
	echo "== fuzz_$name for ${secs}s"
	if ! "$bin" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$artifacts/${name}-" "$corpus"; then
		echo "fuzz_$name: FAILED (see $artifacts)" >&2
		status=1
	fi
	rm -rf "$corpus"
done
exit $status
