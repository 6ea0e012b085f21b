#!/usr/bin/env bash
# The whole test suite, in stages; `make test` runs them all (so does CI, via .ci/run).
#
#   scripts/test.sh all|setup|lint|unit|integration|fuzz|conformance
#
# setup installs what the tests need on a fresh Debian 12 machine: Docker (runc) and
# gVisor (runsc) from Debian, started and registered (.ci/docker.sh, needs root), and
# Node 22 plus the pinned npm peers into test/.cache/node (.ci/node.sh), PostgreSQL 15
# with pgvector built from source (.ci/postgres.sh), Debian's Chromium (.ci/chromium.sh). Nothing is
# skipped silently: without Docker or Node the stages that need them fail, and so do tests
# that need the reference fixtures in ../shared (SYMBI_REQUIRE_NODE, SYMBI_REQUIRE_SHARED).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

GO=${GO:-go}
# A count, not a duration: with a wall-clock -fuzztime, Go 1.26's fuzz coordinator can
# report its own deadline as "context deadline exceeded" and fail a target that found
# nothing (go.dev/issue/75804, fixed in Go 1.27). A count has no deadline to race.
FUZZTIME=${FUZZTIME:-30000x}
export SYMBI_NODE_CACHE=${SYMBI_NODE_CACHE:-$root/test/.cache/node}
# The rag store suite runs on a real PostgreSQL (a throwaway cluster the tests start):
# without it, those tests fail rather than skip.
export SYMBI_REQUIRE_POSTGRES=${SYMBI_REQUIRE_POSTGRES:-1}
# The web console's browser test drives Debian's Chromium (.ci/chromium.sh): without it,
# it fails rather than skips.
export SYMBI_REQUIRE_CHROMIUM=${SYMBI_REQUIRE_CHROMIUM:-1}

log() { printf '\n== %s\n' "$*" >&2; }

stage_setup() {
	log "setup: Docker and gVisor"
	if [ "$(id -u)" = 0 ]; then
		sh .ci/docker.sh
	elif ! docker info >/dev/null 2>&1; then
		echo "Docker is not running and this is not root: start Docker (with the runsc runtime) first, see .ci/docker.sh" >&2
		exit 1
	fi
	log "setup: the Go build image for the Dockerfile (debootstrap and the Go module proxy)"
	if [ "$(id -u)" = 0 ]; then
		sh .ci/baseimages.sh
	elif ! docker image inspect symbi-local/golang:1.26-bookworm >/dev/null 2>&1; then
		echo "the Go build image is missing and this is not root: see .ci/baseimages.sh" >&2
		exit 1
	fi
	log "setup: PostgreSQL and pgvector"
	if [ "$(id -u)" = 0 ]; then
		sh .ci/postgres.sh
	elif ! ls /usr/share/postgresql/*/extension/vector.control >/dev/null 2>&1; then
		echo "PostgreSQL with pgvector is not installed and this is not root: see .ci/postgres.sh" >&2
		exit 1
	fi
	log "setup: Chromium (the web console's browser test)"
	if [ "$(id -u)" = 0 ]; then
		sh .ci/chromium.sh
	elif ! command -v chromium >/dev/null 2>&1; then
		echo "Chromium is not installed and this is not root: see .ci/chromium.sh" >&2
		exit 1
	fi
	log "setup: Node 22 and the npm peers"
	eval "$(bash .ci/node.sh "$SYMBI_NODE_CACHE")"
	log "setup: Go modules"
	$GO mod download
	log "setup: Jaeger (the OTLP receiver of the tracing end-to-end test)"
	sh .ci/jaeger.sh >/dev/null
}

stage_lint() {
	log "lint: gofmt, go vet, staticcheck, go mod tidy"
	unformatted=$(gofmt -l $(git ls-files '*.go'))
	if [ -n "$unformatted" ]; then
		echo "gofmt would change:" $unformatted >&2
		exit 1
	fi
	$GO vet ./...
	$GO vet -tags integration ./...
	$GO run "${STATICCHECK:-honnef.co/go/tools/cmd/staticcheck@v0.8.2}" ./...
	cp go.mod /tmp/symbi-go.mod.bak && cp go.sum /tmp/symbi-go.sum.bak
	$GO mod tidy
	if ! git diff --quiet -- go.mod go.sum; then
		git diff -- go.mod go.sum >&2
		cp /tmp/symbi-go.mod.bak go.mod && cp /tmp/symbi-go.sum.bak go.sum
		echo "go mod tidy changes go.mod/go.sum: run it and commit" >&2
		exit 1
	fi
}

stage_unit() {
	log "unit and end-to-end tests (go test -race ./...)"
	SYMBI_REQUIRE_NODE=1 SYMBI_REQUIRE_SHARED=1 $GO test -race -count=1 -timeout 20m ./...
}

stage_integration() {
	log "sandbox integration tests against the real Docker engine and gVisor"
	# One package at a time: both start and reap labelled containers on the same engine,
	# and the sandbox package's reaper must not meet the end-to-end tests' containers.
	SYMBI_REQUIRE_NODE=1 SYMBI_REQUIRE_SHARED=1 SYMBI_REQUIRE_JAEGER=1 $GO test -race -count=1 -timeout 20m -p 1 -tags integration ./sandbox/... ./test/...
}

stage_fuzz() {
	log "short fuzz runs ($FUZZTIME each)"
	# Every FuzzXxx target in the module, one at a time (go test allows one -fuzz per run).
	git grep -l '^func Fuzz' -- '*_test.go' | while read -r f; do
		pkg="./$(dirname "$f")"
		for t in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
			echo "fuzz $pkg $t"
			$GO test -run='^$' -fuzz="^${t}\$" -fuzztime="$FUZZTIME" -timeout 10m "$pkg"
		done
	done
}

stage_conformance() {
	log "official MCP conformance suite, direct vs through symbi"
	bash test/conformance/run.sh
	log "MCP Inspector CLI through symbi"
	bash test/conformance/inspector.sh
}

case "${1:-all}" in
all)
	stage_setup
	stage_lint
	stage_unit
	stage_integration
	stage_fuzz
	stage_conformance
	;;
setup | lint | unit | integration | fuzz | conformance)
	"stage_$1"
	;;
*)
	echo "usage: $0 all|setup|lint|unit|integration|fuzz|conformance" >&2
	exit 2
	;;
esac
