#!/bin/sh
# Build Jaeger (all-in-one, v2: an OpenTelemetry Collector distribution with OTLP
# receivers, in-memory storage and the query API) for the tracing end-to-end test, from
# the Go module proxy only. Its module tree lives in test/tools/jaeger (a separate
# go.mod with a `tool` directive), so symbi's own go.mod does not carry it.
#
#   .ci/jaeger.sh [CACHE_DIR]     (default: test/.cache/jaeger under the repository root)
#
# Idempotent: a binary already built for the pinned version is kept. Prints the
# binary's path on stdout (logs go to stderr): `SYMBI_JAEGER=$(sh .ci/jaeger.sh)`.
set -eu

log() { printf 'jaeger.sh: %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$root/test/.cache/jaeger}
tools="$root/test/tools/jaeger"
version=$(sed -n 's#^[[:space:]]*github.com/jaegertracing/jaeger \(v[^ ]*\).*#\1#p' "$tools/go.mod" | head -n 1)
if [ -z "$version" ]; then
	log "no jaeger version in $tools/go.mod"
	exit 1
fi
out="$cache/jaeger-$version"
if [ -x "$out" ] && "$out" --help >/dev/null 2>&1; then
	log "jaeger $version already built: $out"
	echo "$out"
	exit 0
fi
mkdir -p "$cache"
GO=${GO:-go}
start=$(date +%s)
log "building jaeger $version (cold: several minutes)"
(cd "$tools" && $GO build -o "$out.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
mv "$out.tmp" "$out"
log "built $out in $(($(date +%s) - start))s"
echo "$out"
