#!/bin/sh
# Usage: check_config_docs.sh BROKER_CLI DOCS/CONFIG.md
# Fails when CONFIG.md differs from what `broker-cli --config-docs` prints.
cli="$1"
doc="$2"
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
"$cli" --config-docs >"$tmp" || { echo "$cli --config-docs failed" >&2; exit 1; }
if ! diff -u "$doc" "$tmp"; then
	echo >&2
	echo "docs/CONFIG.md is out of date. Regenerate it with:" >&2
	echo "  $cli --config-docs > $doc" >&2
	exit 1
fi
