# Levee's contract: CI (.ci/run) calls the same targets. `make help` lists them.

GO              ?= go
NATS_URL        ?= nats://127.0.0.1:4222
DATABASE_URL    ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
GOLANGCI_LINT   ?= golangci-lint
GOLANGCI_VERSION = v2.15.0

# Tests talk to the real services; these point them at the local ones unless already set.
export LEVEE_TEST_DATABASE_URL ?= $(DATABASE_URL)
export LEVEE_TEST_NATS_URL     ?= $(NATS_URL)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/worker and bin/enqueue
	$(GO) build -buildvcs=auto -o bin/worker ./cmd/worker
	$(GO) build -buildvcs=auto -o bin/enqueue ./cmd/enqueue

.PHONY: run
run: build ## build and start a worker with examples/levee.yaml (applies migrations)
	LEVEE_NATS_URL=$${LEVEE_NATS_URL:-$(NATS_URL)} LEVEE_DATABASE_URL=$${LEVEE_DATABASE_URL:-$(DATABASE_URL)} \
		./bin/worker --config examples/levee.yaml

.PHONY: test
test: ## run every test with -race against the local Postgres and NATS (skipped tests listed at the end), then fuzz each target 20,000 runs
	$(GO) build -o bin/testsummary ./tools/testsummary
	$(GO) test -json -race -count=1 -timeout 20m ./... | ./bin/testsummary
	@$(MAKE) --no-print-directory fuzz

# Fuzz targets as <package>:<target>; go test -fuzz takes one package and one target at a time.
# FUZZTIME is a run count by default: Go's fuzz coordinator can fail a run bounded by a duration
# with a bare "context deadline exceeded" at the deadline on a loaded machine (golang/go#75804).
FUZZTIME ?= 20000x
FUZZ_TARGETS = ./internal/queue:FuzzDecode ./internal/queue:FuzzNewEnvelope ./internal/config:FuzzParse \
	./internal/builtin:FuzzHTTPPayload ./internal/builtin:FuzzHTTPURL

.PHONY: fuzz
fuzz: ## fuzz each target for FUZZTIME (default 20000x runs; a duration works too, e.g. FUZZTIME=2m); findings land in testdata/fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) $${t%%:*}; \
	done

.PHONY: bench
bench: ## micro-benchmarks, then `enqueue bench` on the local services (BENCH_JOBS=5000 jobs a phase)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
	$(GO) run ./cmd/enqueue bench --jobs $(or $(BENCH_JOBS),5000) \
		--nats-url $${LEVEE_NATS_URL:-$(NATS_URL)} --database-url $${LEVEE_DATABASE_URL:-$(DATABASE_URL)}

.PHONY: bench-compare
bench-compare: build ## Levee vs River (bench/river, its own module), alternating rounds (ROUNDS=3, BENCH_JOBS=20000): ratio per round and median
	cd bench/river && $(GO) build -o bin/riverbench .
	LEVEE_NATS_URL=$${LEVEE_NATS_URL:-$(NATS_URL)} LEVEE_DATABASE_URL=$${LEVEE_DATABASE_URL:-$(DATABASE_URL)} \
		$(GO) run ./tools/benchcompare --rounds $(or $(ROUNDS),3) \
		--levee "bin/enqueue bench --json --jobs $(or $(BENCH_JOBS),20000) $(LEVEE_BENCH_FLAGS)" \
		--river "bench/river/bin/riverbench --json --jobs $(or $(BENCH_JOBS),20000) $(RIVER_BENCH_FLAGS)"

.PHONY: bench-scale
bench-scale: ## how cost grows: Levee vs River at 10k/100k/1M backlog and 1/2/4 workers (SIZES, WORKERS), chart in docs/img/bench-scale.png (~15 min)
	GO=$(GO) bash scripts/bench-scale.sh

.PHONY: bench-durable
bench-durable: ## Levee with NATS 2.15 default vs `sync_interval: always` (the durable profile), alternating rounds
	LEVEE_DATABASE_URL=$${LEVEE_DATABASE_URL:-$(DATABASE_URL)} GO=$(GO) bash scripts/bench-durable.sh

.PHONY: chaos
chaos: ## fault-injection suite at full counts (kill -9, SIGSTOP, NATS restart and cluster, Postgres cut, poison); prints the checker's table
	LEVEE_CHAOS=full $(GO) test -count=1 -v -run Chaos -timeout 30m ./internal/chaos/

.PHONY: demo
demo: ## a one-minute tour: worker, flaky downstream, statuses, DLQ, replay, metrics
	LEVEE_NATS_URL=$${LEVEE_NATS_URL:-$(NATS_URL)} LEVEE_DATABASE_URL=$${LEVEE_DATABASE_URL:-$(DATABASE_URL)} \
		bash scripts/demo.sh

.PHONY: lint
lint: ## gofmt, go vet and golangci-lint (installed on first use)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@command -v $(GOLANGCI_LINT) >/dev/null 2>&1 || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	$(GOLANGCI_LINT) run ./...

.PHONY: clean
clean: ## remove build output
	rm -rf bin
