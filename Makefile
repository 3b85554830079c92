# certsync: make demo runs the whole flow locally; make test runs every test.
GO      ?= go
BIN     ?= bin/certsync
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# FUZZTIME bounds each fuzz target in `make fuzz` (and CI).
FUZZTIME ?= 20s

.PHONY: build test race-free demo bench bench-fleet lint fuzz clean

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
# publishes on 1 and 2 cores, the small fleet benchmarks (a publisher, up to
# 500 nodes and a server in one process), these at a fixed 3 rounds each (an
# operation that takes longer than the default benchtime, such as sealing
# 10,000 recipients on one core, is otherwise measured by its first call
# alone, at the GOMAXPROCS the benchmark before left), and the smallest row
# of the fleet at scale (100 nodes): about eight minutes on 2 cores.
# docs/BENCHMARKS.md says what they measure.
bench:
	$(GO) test -run '^$$' -bench . -skip 'Benchmark(SealGroups|PublishGroups)$$' -benchmem $$($(GO) list ./... | grep -v /internal/testing/fleetbench)
	$(GO) test -run '^$$' -bench 'Benchmark(SealGroups|PublishGroups)$$' -benchtime 3x -cpu 1,2 -benchmem -timeout 30m ./publisher/
	$(GO) test -run '^$$' -bench 'Benchmark(FleetDelivery|NodeSync|RunMemory|PublishRecipients)$$' -benchtime 3x -benchmem -timeout 30m ./internal/testing/fleetbench/
	$(GO) test -run '^$$' -bench 'BenchmarkScale/servers=1/nodes=100$$' -benchtime 1x -timeout 30m ./internal/testing/fleetbench/

# The fleet at scale (BenchmarkScale): thousands of `node run` nodes against
# real `certsync server` processes, one row at a time, each in its own
# process: 1,000, 5,000 and 10,000 nodes on one server, 1,000 on a cluster of
# three with each way of replicating the consumers; then BenchmarkServerFloor,
# what nats-server itself holds for an idle node. About 30 minutes on 2
# cores and up to 6 GB of memory; FLEET_ROWS picks rows. docs/BENCHMARKS.md
# has the figures.
FLEET_ROWS ?= servers=1/nodes=1000 servers=1/nodes=5000 servers=1/nodes=10000 \
	servers=3/nodes=1000/consumers=R3-file servers=3/nodes=1000/consumers=R1-file \
	servers=3/nodes=1000/consumers=R3-memory
bench-fleet:
	for row in $(FLEET_ROWS); do \
		$(GO) test -run '^$$' -bench "BenchmarkScale/$$row\$$" -benchtime 1x -timeout 60m ./internal/testing/fleetbench/ || exit 1; \
	done
	$(GO) test -run '^$$' -bench 'BenchmarkServerFloor' -benchtime 1x -timeout 30m ./internal/testing/fleetbench/

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fuzz:
	./.ci/fuzz $(FUZZTIME)

clean:
	rm -rf bin
