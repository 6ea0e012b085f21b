# symbi: the two commands a newcomer needs are `make run` and `make test`.
GO        ?= go
BIN       ?= bin/symbi
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test lint unit integration fuzz conformance setup clean

build:
	$(GO) build -o $(BIN) ./cmd/symbi

# Serve MCP over HTTP on 127.0.0.1:8080 with the embedded defaults: no upstreams, the
# built-in symbi__* tools, SQLite state and the audit trail in ./symbi-data.
run: build
	$(BIN) serve $(if $(CONFIG),--config $(CONFIG),)

# Everything CI runs: set-up (Docker + gVisor, Node 22 and the npm peers), lint, unit
# and end-to-end tests, sandbox integration tests, short fuzz runs, the official MCP
# conformance suite and the MCP Inspector interop check.
test:
	scripts/test.sh all

lint:
	scripts/test.sh lint
unit:
	scripts/test.sh unit
integration:
	scripts/test.sh integration
fuzz:
	scripts/test.sh fuzz
conformance:
	scripts/test.sh conformance
setup:
	scripts/test.sh setup

clean:
	rm -rf bin
