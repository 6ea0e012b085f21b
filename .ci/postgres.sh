#!/bin/sh
# Install PostgreSQL 15 and the pgvector extension for the rag/ store tests.
# Runs as root on a fresh Debian 12 machine; safe to run again (idempotent).
#
# Debian 12 ships PostgreSQL 15 but no pgvector package, so pgvector is built
# from the Debian source package of a later release (fetched with apt-get
# source through a private apt state that does not touch the system's lists)
# against postgresql-server-dev-15. No server is started here: the tests start
# a throwaway cluster of their own (see rag/pgtest_test.go).
set -eu

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

PG_MAJOR=${PG_MAJOR:-15}
PGVECTOR_SUITE=${PGVECTOR_SUITE:-trixie}
PGVECTOR_VERSION=${PGVECTOR_VERSION:-0.8.0}
PGVECTOR_ORIG_SHA256=${PGVECTOR_ORIG_SHA256:-867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0}
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin

# 1. Packages: one apt-get update, and only when something is missing.
missing=""
for pkg in "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" build-essential dpkg-dev xz-utils; do
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

# 2. pgvector, unless this PostgreSQL already has it.
if [ -f "/usr/share/postgresql/$PG_MAJOR/extension/vector.control" ] &&
	[ -f "/usr/lib/postgresql/$PG_MAJOR/lib/vector.so" ]; then
	log "pgvector already installed"
else
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	log "fetching the pgvector source package ($PGVECTOR_SUITE) into $work"
	mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/etc"
	uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
	[ -n "$uri" ] || uri=http://deb.debian.org/debian
	cat >"$work/etc/sources.list" <<EOF
deb-src $uri $PGVECTOR_SUITE main
EOF
	aptopts="-o Dir::Etc::SourceList=$work/etc/sources.list -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$work/lists -o Dir::Cache::Archives=$work/archives -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache="
	# shellcheck disable=SC2086
	apt-get $aptopts update -q >&2
	# shellcheck disable=SC2086
	(cd "$work" && apt-get $aptopts source --download-only -q "pgvector=$PGVECTOR_VERSION-1" >&2)
	orig="$work/pgvector_$PGVECTOR_VERSION.orig.tar.gz"
	echo "$PGVECTOR_ORIG_SHA256  $orig" | sha256sum -c - >&2
	mkdir -p "$work/src"
	tar -xzf "$orig" -C "$work/src" --strip-components=1
	log "building pgvector $PGVECTOR_VERSION for PostgreSQL $PG_MAJOR"
	# OPTFLAGS= keeps the build portable (no -march=native).
	make -C "$work/src" -s PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS= >&2
	make -C "$work/src" -s PG_CONFIG="$PG_BIN/pg_config" install >&2
fi

# 3. Versions.
"$PG_BIN/postgres" --version
grep default_version "/usr/share/postgresql/$PG_MAJOR/extension/vector.control"
