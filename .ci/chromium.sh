#!/bin/sh
# Install Debian's Chromium for the web console's browser test (test/console_test.go,
# driven headless with chromedp). Runs as root on a fresh Debian 12 machine; safe to run
# again (idempotent): nothing is fetched when the package is installed already.
set -eu

log() { printf 'chromium.sh: %s\n' "$*" >&2; }

missing=""
for pkg in chromium fonts-dejavu-core; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $pkg"
	fi
done
if [ -z "$missing" ]; then
	log "installed already: $(chromium --version 2>/dev/null || echo chromium)"
	exit 0
fi
log "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $missing
log "installed: $(chromium --version 2>/dev/null || echo chromium)"
