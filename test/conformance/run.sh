#!/usr/bin/env bash
# Run the official MCP conformance suite against the reference server directly and
# through symbi, and require every scenario that passes directly to pass through symbi.
#
#   test/conformance/run.sh            (from anywhere; needs go, npm and the npm registry)
#
# Steps (each bounded by a timeout, all processes cleaned up on exit):
#  1. .ci/node.sh installs Node 22 and the pinned suite into $SYMBI_NODE_CACHE
#     (default test/.cache/node).
#  2. Builds symbi and the go-sdk conformance/everything-server into a temp dir.
#  3. For each wire:
#       2025-11-25  --suite all --spec-version 2025-11-25, everything-server -stateless=false
#       2026-07-28  --requirements 2026-07-28,             everything-server (stateless)
#     runs the suite (a) against everything-server over streamable HTTP and (b) against
#     `symbi serve` proxying everything-server over stdio with prefix = "", each with a
#     fresh output folder and expected-failures-<wire>.yaml.
#  4. compare.mjs prints a per-scenario table and "N passed, M failed", N and M counting
#     the scenarios that pass directly, through symbi. Exit 1 on any regression.
#
# Environment: SYMBI_NODE_CACHE, CONFORMANCE_KEEP=1 (keep the temp dir and print it),
# CONFORMANCE_SCENARIO_TIMEOUT_MS (per-scenario, default 30000),
# CONFORMANCE_LOG_LEVEL (symbi's --log-level, default info; debug to trace traffic).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${SYMBI_NODE_CACHE:-$root/test/.cache/node}
scenario_timeout=${CONFORMANCE_SCENARIO_TIMEOUT_MS:-30000}
log_level=${CONFORMANCE_LOG_LEVEL:-info}

log() { printf 'conformance: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/symbi-conformance.XXXXXX")
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		# Give symbi time to stop its stdio children, then insist.
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	pids=()
	if [ "${CONFORMANCE_KEEP:-0}" = 1 ]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: end one process we started and forget it.
stop() {
	local pid=$1 keep=() p
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 25); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${pids[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	pids=("${keep[@]+"${keep[@]}"}")
}

# 1. Node 22 and the suite.
eval "$(timeout 1200 bash "$root/.ci/node.sh" "$cache")"

# 2. Binaries.
log "building symbi and everything-server"
(cd "$root" && timeout 600 go build -o "$work/symbi" ./cmd/symbi)
(cd "$root" && timeout 600 go build -o "$work/everything-server" \
	github.com/modelcontextprotocol/go-sdk/conformance/everything-server)
(cd "$root" && timeout 600 go build -o "$work/slowjobs" ./test/servers/slowjobs)

free_port() {
	"$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_port PORT PID: wait until 127.0.0.1:PORT accepts connections (15 s at most).
wait_port() {
	local port=$1 pid=$2
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || return 1
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# start_direct NAME STATELESS: start everything-server over HTTP; sets url.
start_direct() {
	local name=$1 stateless=$2 port
	port=$(free_port)
	"$work/everything-server" -http "127.0.0.1:$port" -stateless="$stateless" \
		>"$work/$name.log" 2>&1 &
	pids+=($!)
	if ! wait_port "$port" "$!"; then
		log "everything-server did not start; its log:"
		cat "$work/$name.log" >&2
		exit 1
	fi
	url="http://127.0.0.1:$port/mcp"
	server_pid=$!
}

# start_symbi NAME [UPSTREAM_TOML]: start symbi serve in front of everything-server
# (stdio), or of the upstream UPSTREAM_TOML describes; sets url.
start_symbi() {
	local name=$1 cfg addr="" upstream=${2:-}
	cfg="$work/$name.toml"
	mkdir -p "$work/$name-data"
	if [ -z "$upstream" ]; then
		upstream="name = \"everything\"
command = [\"$work/everything-server\"]
prefix = \"\""
	fi
	cat >"$cfg" <<-EOF
		version = 1
		[server]
		listen = "127.0.0.1:0"
		data_dir = "$work/$name-data"
		[[upstreams]]
		$upstream
	EOF
	"$work/symbi" serve --config "$cfg" --log-level "$log_level" \
		>"$work/$name.out" 2>"$work/$name.log" &
	pids+=($!)
	server_pid=$!
	for _ in $(seq 1 300); do
		addr=$(sed -n 's#^symbi serving on \(http://[^ ]*/mcp\).*#\1#p' "$work/$name.out" | head -n 1)
		[ -n "$addr" ] && break
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$addr" ]; then
		log "symbi did not start; its output:"
		cat "$work/$name.out" "$work/$name.log" >&2
		exit 1
	fi
	# Wait for the upstream to be connected, so the first scenario sees its tools.
	for _ in $(seq 1 150); do
		grep -q 'upstream connected' "$work/$name.log" && break
		sleep 0.1
	done
	url=$addr
}

# suite NAME URL ARGS...: run the suite once into a fresh output folder.
suite() {
	local name=$1 target=$2 rc=0
	shift 2
	rm -rf "$work/out-$name"
	log "running the suite: $name ($*) against $target"
	timeout 1200 "$NODE" "$CONFORMANCE" server --url "$target" "$@" \
		--timeout "$scenario_timeout" -o "$work/out-$name" \
		>"$work/suite-$name.txt" 2>&1 || rc=$?
	log "$name: $(grep -E '^Total:' "$work/suite-$name.txt" | tail -n 1 || true) (suite exit $rc)"
	if [ "$rc" = 124 ]; then
		log "$name: the suite timed out"
	fi
}

pairs=()
for wire in 2025-11-25 2026-07-28; do
	baseline="$here/expected-failures-$wire.yaml"
	if [ "$wire" = 2025-11-25 ]; then
		args=(--suite all --spec-version 2025-11-25)
		stateless=false
	else
		args=(--requirements 2026-07-28)
		stateless=true
	fi

	start_direct "direct-$wire" "$stateless"
	suite "direct-$wire" "$url" "${args[@]}" --expected-failures "$baseline"
	stop "$server_pid"

	start_symbi "symbi-$wire"
	suite "symbi-$wire" "$url" "${args[@]}" --expected-failures "$baseline"
	stop "$server_pid"

	pairs+=("$wire=$baseline:$work/out-direct-$wire:$work/out-symbi-$wire:$here/known-gaps-$wire.yaml")
done

# The tasks-* scenarios (extension io.modelcontextprotocol/tasks) call fixture tools
# the reference server lacks; they run one by name through symbi in front of
# test/servers/slowjobs, which knows nothing of tasks: symbi adds them (task_tools).
tasks_scenarios=(tasks-lifecycle tasks-capability-negotiation tasks-wire-fields
	tasks-request-state-removal tasks-mrtr-input tasks-request-headers
	tasks-dispatch-and-envelope tasks-status-notifications tasks-required-task-error
	tasks-mrtr-composition)
start_symbi symbi-tasks "name = \"jobs\"
command = [\"$work/slowjobs\"]
prefix = \"\"
task_tools = [\"slow_compute\", \"failing_job\", \"protocol_error_job\", \"confirm_delete\", \"multi_input\", \"test_tool_with_task\"]
task_required = [\"failing_job\", \"test_tool_with_task\"]"
mkdir -p "$work/out-tasks"
for s in "${tasks_scenarios[@]}"; do
	timeout 300 "$NODE" "$CONFORMANCE" server --url "$url" --scenario "$s" \
		--timeout "$scenario_timeout" -o "$work/out-tasks/$s" \
		>"$work/suite-tasks-$s.txt" 2>&1 || true
done
stop "$server_pid"
tasks_rc=0
"$NODE" "$here/tasks.mjs" "$work/out-tasks" "${tasks_scenarios[@]}" || tasks_rc=$?

if [ "${CONFORMANCE_KEEP:-0}" != 1 ]; then
	log "results are removed on exit; CONFORMANCE_KEEP=1 keeps checks.json and the logs"
fi
rc=0
"$NODE" "$here/compare.mjs" "${pairs[@]}" || rc=$?
[ "$tasks_rc" = 0 ] || rc=1
exit "$rc"
