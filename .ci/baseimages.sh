#!/bin/sh
# Build, without Docker Hub, the Go build image the Dockerfile starts from, and tag it
# locally; the runtime stage is `scratch` and needs no image. For a machine that reaches
# only a Debian mirror and the Go module proxy:
#
#   - a Debian bookworm root file system with gcc, libc6-dev and libsqlite3-dev (cgo,
#     static SQLite; sqlite-vec includes sqlite3.h),
#     CA certificates and time zones, made by debootstrap from the Debian mirror;
#   - the Go toolchain from the module proxy (golang.org/toolchain, checked against the
#     checksum database like any module), unpacked in /usr/local/go;
#   - `docker import`ed as $BUILD_IMAGE with PATH and GOTOOLCHAIN=local.
#
# Then: docker build --build-arg BUILD_IMAGE=$BUILD_IMAGE --build-arg GOPROXY=... .
# Runs as root (debootstrap); safe to run again: an image with the same Go version and
# Debian suite is kept. Prints the image name on stdout.
set -eu

log() { printf 'baseimages.sh: %s\n' "$*" >&2; }

GO_VERSION=${GO_VERSION:-1.26.8}
SUITE=${SUITE:-bookworm}
BUILD_IMAGE=${BUILD_IMAGE:-symbi-local/golang:1.26-$SUITE}
GO=${GO:-go}

uri=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
[ -n "$uri" ] || uri=http://deb.debian.org/debian

# The image trusts what this host trusts: a host behind a TLS-inspecting proxy reaches
# the module proxy only with that proxy's CA (in the host's bundle). A changed bundle
# makes a new image.
HOST_CA=${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
ca=none
[ -s "$HOST_CA" ] && ca=$(sha256sum "$HOST_CA" | cut -c1-12)
want="go$GO_VERSION $SUITE sqlite3-dev ca:$ca"
have=$(docker image inspect -f '{{index .Config.Labels "dev.symbi.base"}}' "$BUILD_IMAGE" 2>/dev/null || true)
if [ "$have" = "$want" ]; then
	log "$BUILD_IMAGE is there ($want)"
	echo "$BUILD_IMAGE"
	exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
	log "installing debootstrap"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends debootstrap >&2
fi

case $(uname -m) in
x86_64) goarch=amd64 ;;
aarch64) goarch=arm64 ;;
*) log "unsupported machine $(uname -m)"; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

log "debootstrap $SUITE from $uri (a few minutes)"
debootstrap --variant=minbase --include=gcc,libc6-dev,libsqlite3-dev,ca-certificates,tzdata \
	"$SUITE" "$root" "$uri" >"$work/debootstrap.log" 2>&1 || {
	tail -n 30 "$work/debootstrap.log" >&2
	exit 1
}
[ "$ca" = none ] || cp "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log

log "Go $GO_VERSION from the module proxy"
mod="golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-$goarch"
# Outside any module, with the host's GOPROXY and GOSUMDB; the zip is verified against
# the checksum database.
dir=$(cd "$work" && GOTOOLCHAIN=local GOFLAGS=-mod=mod "$GO" mod download -json "$mod" |
	sed -n 's/^[[:space:]]*"Dir": *"\(.*\)",*$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/bin/go" ]; then
	log "could not download $mod"
	exit 1
fi
mkdir -p "$root/usr/local/go"
cp -r "$dir/." "$root/usr/local/go/"
# Module zips carry no file modes: make the tools executable and the tree writable by root.
chmod -R u+w "$root/usr/local/go"
chmod 0755 "$root"/usr/local/go/bin/* "$root"/usr/local/go/pkg/tool/*/*
rm -f "$root/usr/local/go/go.mod"
"$root/usr/local/go/bin/go" version >&2

log "importing as $BUILD_IMAGE"
tar -C "$root" -c . | docker import \
	--change 'ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV GOPATH=/go' \
	--change 'ENV GOTOOLCHAIN=local' \
	--change "LABEL dev.symbi.base=\"$want\"" \
	--change 'CMD ["/bin/bash"]' \
	- "$BUILD_IMAGE" >&2
echo "$BUILD_IMAGE"
