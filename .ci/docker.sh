#!/bin/sh
# Install and start Docker (runc) and gVisor (runsc) for the sandbox integration tests.
# Runs as root on a fresh Debian 12 machine; safe to run again (idempotent).
set -eu

log() { printf 'docker.sh: %s\n' "$*" >&2; }

DAEMON_JSON=${DAEMON_JSON:-/etc/docker/daemon.json}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
SOCK=/var/run/docker.sock
WAIT_SECONDS=${WAIT_SECONDS:-60}

# 1. Packages: one apt-get update, and only when something is missing.
missing=""
for pkg in docker.io runsc curl; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $pkg"
	fi
done
if [ -n "$missing" ]; then
	log "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

# 2. Register runsc as a Docker runtime, merging into an existing daemon.json.
mkdir -p /etc/docker
python_merge() {
	python3 - "$DAEMON_JSON" <<'PY'
import json, os, sys
path = sys.argv[1]
cfg = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        cfg = json.load(f)
want = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
runtimes = cfg.setdefault("runtimes", {})
if runtimes.get("runsc") == want:
    sys.exit(3)  # already configured
runtimes["runsc"] = want
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
PY
}
changed=0
if command -v python3 >/dev/null 2>&1; then
	if python_merge; then changed=1; else rc=$?; [ "$rc" -eq 3 ] || exit "$rc"; fi
elif [ ! -s "$DAEMON_JSON" ]; then
	printf '%s\n' '{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none"]}}}' >"$DAEMON_JSON"
	changed=1
elif ! grep -q '"runsc"' "$DAEMON_JSON"; then
	log "cannot merge $DAEMON_JSON without python3; add the runsc runtime by hand"
	exit 1
fi

# 3. Start dockerd unless it already answers; reload it if daemon.json changed.
answers() { curl -sf --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; }

if answers; then
	if [ "$changed" -eq 1 ]; then
		log "daemon.json changed; asking dockerd to reload"
		[ -s /var/run/docker.pid ] && kill -HUP "$(cat /var/run/docker.pid)" || true
	fi
else
	log "starting dockerd (log: $DOCKERD_LOG)"
	nohup dockerd --config-file "$DAEMON_JSON" >>"$DOCKERD_LOG" 2>&1 &
	i=0
	until answers; do
		i=$((i + 1))
		if [ "$i" -gt "$WAIT_SECONDS" ]; then
			log "dockerd did not answer on $SOCK within ${WAIT_SECONDS}s; last log lines:"
			tail -n 30 "$DOCKERD_LOG" >&2 || true
			exit 1
		fi
		sleep 1
	done
fi

# 4. Versions.
dockerd --version
runsc --version 2>/dev/null | head -n 1 || true
curl -sf --unix-socket "$SOCK" http://localhost/version 2>/dev/null || true
echo
curl -sf --unix-socket "$SOCK" http://localhost/info 2>/dev/null |
	python3 -c 'import json,sys; i=json.load(sys.stdin); print("runtimes:", sorted(i.get("Runtimes", {})), "default:", i.get("DefaultRuntime"))' 2>/dev/null || true
