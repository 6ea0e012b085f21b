#!/usr/bin/env bash
# Interop check with an independent client: the MCP Inspector CLI
# (`npx @modelcontextprotocol/inspector --cli ...`, pinned by test/conformance/npm)
# lists and calls tools through symbi over stdio, streamable HTTP and SSE.
#
#   test/conformance/inspector.sh      (needs go, npm and the npm registry)
#
#  - stdio, no configuration: `symbi mcp` serves its built-in tools symbi__status,
#    symbi__upstreams and symbi__tools.
#  - stdio, streamable HTTP (/mcp) and SSE (/sse) with one upstream: the npm reference
#    server @modelcontextprotocol/server-everything over stdio, under prefix "ref";
#    its `echo` and `get-sum` tools are called through symbi as ref__echo, ref__get-sum.
#
# Every step has a timeout; processes are cleaned up on exit. Ends with
# "N passed, M failed" and exits 1 when a check failed.
# Environment: SYMBI_NODE_CACHE (default test/.cache/node), INSPECTOR_KEEP=1 keeps logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${SYMBI_NODE_CACHE:-$root/test/.cache/node}

log() { printf 'inspector: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/symbi-inspector.XXXXXX")
serve_pid=""
cleanup() {
	if [ -n "$serve_pid" ]; then
		kill "$serve_pid" 2>/dev/null || true
		for _ in $(seq 1 25); do
			kill -0 "$serve_pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -9 "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
	fi
	if [ "${INSPECTOR_KEEP:-0}" = 1 ]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eval "$(timeout 1200 bash "$root/.ci/node.sh" "$cache")"
# The Inspector launcher starts its CLI with the `node` found on PATH: make it Node 22.
PATH="$(dirname "$NODE"):$PATH"
export PATH

log "building symbi"
(cd "$root" && timeout 600 go build -o "$work/symbi" ./cmd/symbi)

mkdir -p "$work/data"
cat >"$work/symbi.toml" <<EOF
version = 1
[server]
listen = "127.0.0.1:0"
data_dir = "$work/data"
[[upstreams]]
name = "ref"
command = ["$NODE", "$SERVER_EVERYTHING", "stdio"]
prefix = "ref"
EOF

passed=0
failed=0
n=0

# inspect NAME EXPECT... -- INSPECTOR-ARGS...: run the Inspector CLI once (60 s at most,
# its own default 15 s connect timeout) with --format json (one compact JSON object on
# stdout) and require the output to contain every EXPECT string.
inspect() {
	local name=$1 expect=() out rc=0 missing=()
	shift
	while [ "$1" != "--" ]; do
		expect+=("$1")
		shift
	done
	shift
	n=$((n + 1))
	out="$work/$n.out"
	HOME="$work/home" timeout 60 "$NODE" "$INSPECTOR" --cli --format json -q "$@" \
		>"$out" 2>"$work/$n.err" || rc=$?
	local e
	for e in "${expect[@]}"; do
		grep -qF -- "$e" "$out" || missing+=("$e")
	done
	if [ "$rc" = 0 ] && [ "${#missing[@]}" = 0 ]; then
		passed=$((passed + 1))
		printf 'ok    %s\n' "$name"
	else
		failed=$((failed + 1))
		printf 'FAIL  %s (exit %s)\n' "$name" "$rc"
		for e in "${missing[@]+"${missing[@]}"}"; do
			printf '      missing from the output: %s\n' "$e"
		done
		printf '      stdout: %s\n' "$(head -c 600 "$out" | tr '\n' ' ')"
		printf '      stderr: %s\n' "$(head -c 600 "$work/$n.err" | tr '\n' ' ')"
	fi
}

# upstream_checks LABEL TARGET-ARGS...: the upstream's tools through symbi. TARGET-ARGS
# come last: for stdio they are `-- COMMAND ARGS...`.
upstream_checks() {
	local label=$1
	shift
	inspect "$label tools/list shows the upstream's and the built-in tools" \
		'"name":"ref__echo"' '"name":"ref__get-sum"' '"name":"symbi__status"' -- \
		--method tools/list "$@"
	inspect "$label tools/call ref__echo" '"text":"Echo: hello symbi"' -- \
		--method tools/call --tool-name ref__echo --tool-arg 'message=hello symbi' "$@"
	inspect "$label tools/call ref__get-sum" 'The sum of 19 and 23 is 42' -- \
		--method tools/call --tool-name ref__get-sum --tool-arg a=19 --tool-arg b=23 "$@"
	inspect "$label tools/call symbi__upstreams" '"name":"ref"' -- \
		--method tools/call --tool-name symbi__upstreams "$@"
}

# 1. stdio, no configuration: the built-in tools only.
inspect "stdio (no config) tools/list" \
	'"name":"symbi__status"' '"name":"symbi__upstreams"' '"name":"symbi__tools"' -- \
	--method tools/list -- "$work/symbi" mcp
inspect "stdio (no config) tools/call symbi__status" '"server":"symbi"' '"upstreams":0' -- \
	--method tools/call --tool-name symbi__status -- "$work/symbi" mcp
inspect "stdio (no config) tools/call symbi__upstreams" '"upstreams":[]' -- \
	--method tools/call --tool-name symbi__upstreams -- "$work/symbi" mcp
inspect "stdio (no config) tools/call symbi__tools" '"name":"symbi__tools"' -- \
	--method tools/call --tool-name symbi__tools -- "$work/symbi" mcp

# 2. stdio with an upstream.
upstream_checks "stdio" -- "$work/symbi" mcp --config "$work/symbi.toml"

# 3. streamable HTTP and SSE against symbi serve.
"$work/symbi" serve --config "$work/symbi.toml" >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
url=""
for _ in $(seq 1 300); do
	url=$(sed -n 's#^symbi serving on \(http://[^ ]*\)/mcp.*#\1#p' "$work/serve.out" | head -n 1)
	[ -n "$url" ] && break
	kill -0 "$serve_pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$url" ]; then
	log "symbi serve did not start:"
	cat "$work/serve.out" "$work/serve.log" >&2
	failed=$((failed + 1))
else
	for _ in $(seq 1 150); do
		grep -q 'upstream connected' "$work/serve.log" && break
		sleep 0.1
	done
	upstream_checks "streamable HTTP" --transport http --server-url "$url/mcp"
	upstream_checks "SSE" --transport sse --server-url "$url/sse"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
