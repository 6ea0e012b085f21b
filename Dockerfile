# Multi-stage build of symbi: a static binary (SQLite is linked in through cgo, statically
# against glibc) on an empty runtime image, running as a non-root user.
#
#   docker build -t symbi .
#   docker run -p 8080:8080 -e SYMBI_TOKEN=$(head -c 24 /dev/urandom | base64) symbi
#
# Build arguments:
#   BUILD_IMAGE    a Debian image with Go, gcc and libc6-dev (libsqlite3-dev is added if missing) (the public golang image has
#                  them; .ci/baseimages.sh builds one without Docker Hub)
#   GOPROXY, GOSUMDB, GOFLAGS, GONOSUMDB, GOPRIVATE
#                  passed to `go mod download` (the build has none of the host's go env)
#   VERSION        what `symbi version` prints
ARG BUILD_IMAGE=golang:1.26-bookworm

FROM ${BUILD_IMAGE} AS build
ARG GOPROXY=https://proxy.golang.org,direct
ARG GOSUMDB=sum.golang.org
ARG GONOSUMDB=
ARG GOPRIVATE=
ARG GOFLAGS=
ENV GOTOOLCHAIN=local CGO_ENABLED=1
WORKDIR /src
# The modules first: this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
# sqlite-vec's cgo code includes sqlite3.h (the public golang image lacks it).
RUN test -f /usr/include/sqlite3.h || { apt-get update \
 && apt-get install -y --no-install-recommends libsqlite3-dev && rm -rf /var/lib/apt/lists/*; }
COPY . .
ARG VERSION=dev
# netgo and osusergo: Go's own DNS resolver and user lookup, so nothing of glibc's NSS is
# needed at run time and the static link is complete.
RUN go build -trimpath -buildvcs=false -tags netgo,osusergo \
      -ldflags "-s -w -X main.version=${VERSION} -linkmode external -extldflags -static" \
      -o /out/symbi ./cmd/symbi \
 && /out/symbi version
# The runtime file tree: a passwd entry for the symbi user (uid 10001), CA certificates
# for HTTPS upstreams and OIDC issuers, time zones, a sticky /tmp, the configuration.
RUN mkdir -p /out/root/etc/ssl/certs /out/root/etc/symbi /out/root/tmp /out/root/usr/share \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nsymbi:x:10001:10001:symbi:/var/lib/symbi:/sbin/nologin\n' >/out/root/etc/passwd \
 && printf 'root:x:0:\nsymbi:x:10001:\n' >/out/root/etc/group \
 && cp /etc/ssl/certs/ca-certificates.crt /out/root/etc/ssl/certs/ \
 && cp -r /usr/share/zoneinfo /out/root/usr/share/ \
 && cp configs/docker/symbi.toml /out/root/etc/symbi/symbi.toml \
 && mkdir -p /out/root/usr/share/symbi && cp -r configs/symbi.example.toml configs/policies /out/root/usr/share/symbi/ \
 && chmod 1777 /out/root/tmp \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /out/root/ /
COPY --from=build --chown=10001:10001 /out/data /var/lib/symbi
COPY --from=build /out/symbi /usr/local/bin/symbi
ENV SYMBI_CONFIG=/etc/symbi/symbi.toml
USER 10001:10001
WORKDIR /var/lib/symbi
VOLUME /var/lib/symbi
EXPOSE 8080
# /etc/symbi/symbi.toml (configs/docker/symbi.toml) listens on 0.0.0.0:8080 with one
# bearer token read from $SYMBI_TOKEN and keeps state in /var/lib/symbi; mount your own
# configuration over it. Health: GET /healthz (alive), GET /readyz (upstreams ready).
ENTRYPOINT ["/usr/local/bin/symbi"]
CMD ["serve", "--config", "/etc/symbi/symbi.toml"]
