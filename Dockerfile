# syntax=docker/dockerfile:1
# Multi-stage build of symbi. SQLite is linked in through cgo, so the build stage has gcc
# and the runtime stage glibc; nothing else is needed at run time.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/symbi ./cmd/symbi

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/symbi --create-home symbi
COPY --from=build /out/symbi /usr/local/bin/symbi
COPY configs/ /usr/share/symbi/
USER symbi
WORKDIR /var/lib/symbi
EXPOSE 8080
# Mount your configuration at /etc/symbi/symbi.toml (see /usr/share/symbi/symbi.example.toml):
# inside a container it must listen on 0.0.0.0:8080 and configure [[server.tokens]], since
# without tokens only loopback clients are served. State and the audit trail go to
# data_dir; mount a volume there.
#   docker run -p 8080:8080 -v $PWD/symbi.toml:/etc/symbi/symbi.toml -e SYMBI_TOKEN symbi
ENTRYPOINT ["symbi"]
CMD ["serve", "--config", "/etc/symbi/symbi.toml"]
