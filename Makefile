# certsync: make demo runs the whole flow locally; make test runs every test.
GO      ?= go
BIN     ?= bin/certsync
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# FUZZTIME bounds each fuzz target in `make fuzz` (and CI).
FUZZTIME ?= 20s

.PHONY: build test race-free demo bench lint fuzz clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/certsync

# Every test, with the race detector. Tests that need certbot, pebble, nginx or
# the nats CLI skip with a hint when those are missing (and fail under CI=true).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

# The whole flow in a temporary folder: embedded server, keys, a certificate,
# a publish, two nodes, their status. No root, no outside service.
demo: build
	./deploy/demo/demo.sh $(BIN)

# Every package's benchmarks, then the publisher's recipient group seals and
# publishes on 1 and 2 cores and the fleet benchmarks (a publisher, up to 500
# nodes and a server in one process), these at a fixed 3 rounds each: an
# operation that takes longer than the default benchtime (sealing 10,000
# recipients takes over a second on one core) is otherwise measured by its
# first call alone, at the GOMAXPROCS the benchmark before left. About six
# minutes on 2 cores. docs/BENCHMARKS.md says what they measure.
bench:
	$(GO) test -run '^$$' -bench . -skip 'Benchmark(SealGroups|PublishGroups)$$' -benchmem $$($(GO) list ./... | grep -v /internal/testing/fleetbench)
	$(GO) test -run '^$$' -bench 'Benchmark(SealGroups|PublishGroups)$$' -benchtime 3x -cpu 1,2 -benchmem -timeout 30m ./publisher/
	$(GO) test -run '^$$' -bench . -benchtime 3x -benchmem -timeout 30m ./internal/testing/fleetbench/

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fuzz:
	./.ci/fuzz $(FUZZTIME)

clean:
	rm -rf bin
