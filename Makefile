# Drover's one entry point. `make help` lists the targets.

GO        ?= go
# Build and test with a Go whose standard library has no known
# vulnerability (govulncheck, make vulncheck): the go command fetches this
# toolchain through the module proxy the first time (about 75 MB).
GOTOOLCHAIN ?= go1.26.10
export GOTOOLCHAIN
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS      := ./...
GOLANGCI  := $(GO) tool -modfile=tools/go.mod golangci-lint
BUF       := $(GO) tool -modfile=tools/go.mod buf
# gqlgen is pinned by the tool directive of go.mod, at the version of its
# runtime library; its paths are relative to its config, so it runs there.
GQLGEN     = (cd api/graphql && $(GO) tool gqlgen generate --config gqlgen.yml)
GQLGEN_OUT := internal/graphqlapi/exec_gen.go internal/graphqlapi/models_gen.go

.PHONY: help build run test test-short pg lint golangci-lint fmt vet crash soak faults partition overload vulncheck fuzz fuzz-ci bench bench-workloads ceilings generate gen-check verify clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

build: ## build ./bin/drover (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/drover ./cmd/drover

run: ## run the server on the embedded store in ./drover-data
	$(GO) run ./cmd/drover serve

test: ## the full test suite with the race detector (what CI runs); starts PostgreSQL when it can
	@scripts/ensure-postgres || echo "WARNING: no PostgreSQL: its tests will SKIP (CI=true makes them fail)" >&2
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

pg: ## install (Debian, as root), start and prepare the PostgreSQL the tests use
	scripts/ensure-postgres

test-short: ## a quick pass without the race detector
	$(GO) test -count=1 -short $(PKGS)

lint: fmt vet golangci-lint ## gofmt, go vet and golangci-lint (.golangci.yml)

golangci-lint: ## golangci-lint alone, pinned in tools/go.mod
	$(GOLANGCI) run $(PKGS)

fmt: ## fail if any file is not gofmt-ed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi

vet: ## go vet
	$(GO) vet $(PKGS)

crash: ## the kill -9 crash harness at CI's counts: drover serve 100x on the embedded store, 20x on PostgreSQL (stopping it too)
	DROVER_CRASH_PG_STOP=1 $(GO) test -count=1 -timeout 60m -run '^TestCrash(Embedded|Postgres)$$' -v ./e2e/crash -crash.iterations=100 -crash.pg-iterations=20

soak: ## the long crash run: drover serve 2,000x on the embedded store, 200x on PostgreSQL (stopping it too); the store alone 500x
	DROVER_CRASH_PG_STOP=1 $(GO) test -count=1 -timeout 6h -run '^TestCrash(Embedded|Postgres)$$' -v ./e2e/crash -crash.iterations=2000 -crash.pg-iterations=200
	DROVER_CRASH_ITERATIONS=500 $(GO) test -count=1 -timeout 60m -run 'TestCrashKill9' -v ./internal/store/sqlitestore

faults: ## the embedded store's simulated fsync failures, full disk, power loss and bit flips, 5x the CI counts
	DROVER_FAULT_LONG=1 $(GO) test -race -count=1 -timeout 60m -run 'TestFsyncFailure|TestStorageFull|TestPowerLoss|TestBitFlips|TestFailedBatch' ./internal/store/sqlitestore/...

partition: ## the partition soak through fault proxies, 2,000 jobs per store (CI runs 200)
	DROVER_PARTITION_JOBS=2000 $(GO) test -count=1 -timeout 30m -run 'TestPartition' -v ./e2e

overload: ## the overload and slow-client tests in their long mode (20s levels, 2,000 slow connections for 30s; CI runs the quick mode)
	DROVER_OVERLOAD_LONG=1 $(GO) test -count=1 -timeout 30m -run 'TestOverload' -v ./e2e

vulncheck: ## govulncheck offline, on the vulnerability database of golang.org/x/vulndb
	scripts/govulncheck

fuzz: ## fuzz every target in every package for FUZZTIME each (default 30s; 1000x means 1,000 runs)
	@for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -c6- | sort); do \
			echo "== $$dir $$t"; \
			$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$${FUZZTIME:-30s} \
				-fuzzminimizetime=$${FUZZMINIMIZETIME:-60s} $$dir || exit 1; \
		done; done

# Counts, not durations: with a -fuzztime duration, Go 1.26 can fail a
# target with a spurious "context deadline exceeded" when the machine is
# loaded (golang/go#75804, fixed in Go 1.27).
fuzz-ci: ## every fuzz target briefly (500 runs each); a failing input is left in testdata/fuzz
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$${FUZZTIME:-500x} FUZZMINIMIZETIME=$${FUZZMINIMIZETIME:-200x}

bench: ## store and library micro-benchmarks
	$(GO) test -run=XXX -bench=. -benchmem -count=1 ./internal/store/sqlitestore .

bench-workloads: build ## the W1-W5 workloads of DESIGN.md section 5, in-process on the embedded store
	./bin/drover bench

# The test database unless DROVER_DATABASE_URL names another.
CEILING_DB ?= $(or $(DROVER_DATABASE_URL),postgres://postgres@127.0.0.1:5432/test?sslmode=disable)

ceilings: build ## what the machine allows for each workload's shape, Drover taken out (ADR 0007): C1-C3, and the embedded engines alone
	./bin/drover bench --ceilings --database-url '$(CEILING_DB)'
	cd tools/enginebench && $(GO) run . -reps 1 -workload a,d

generate: ## lint api/proto and regenerate internal/gen (buf and plugins pinned in tools/go.mod) and internal/graphqlapi/*_gen.go (gqlgen, pinned in go.mod)
	$(BUF) lint
	$(BUF) generate
	$(GQLGEN)

gen-check: ## fail if api/proto breaks its lint, or internal/gen or internal/graphqlapi/*_gen.go is not what make generate writes
	$(BUF) lint
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(BUF) generate -o "$$tmp" && \
		diff -r internal/gen "$$tmp/internal/gen" || { echo "internal/gen is stale: run make generate" >&2; exit 1; }
	@# gqlgen writes only where its config says: regenerate in place, compare
	@# with what was there, and put that back, so that the check changes nothing.
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		cp $(GQLGEN_OUT) "$$tmp/" && \
		{ $(GQLGEN) || failed=1; } && \
		stale=; for f in $(GQLGEN_OUT); do diff "$$tmp/$$(basename $$f)" $$f || stale="$$stale $$f"; done; \
		for f in $(GQLGEN_OUT); do cp "$$tmp/$$(basename $$f)" $$f; done; \
		if [ -n "$$failed" ]; then echo "gqlgen failed on api/graphql (see above)" >&2; exit 1; fi; \
		if [ -n "$$stale" ]; then echo "stale:$$stale: run make generate" >&2; exit 1; fi

verify: lint gen-check ## checks that generated and tidy files are fresh
	$(GO) mod tidy -diff

clean: ## remove build output
	rm -rf bin
