# Drover's one entry point. `make help` lists the targets.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PKGS      := ./...
GOLANGCI  := $(GO) tool -modfile=tools/go.mod golangci-lint

.PHONY: help build run test test-short pg lint golangci-lint fmt vet crash fuzz bench bench-workloads verify clean

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

crash: ## the kill -9 crash test, 500 iterations (CI runs 20)
	DROVER_CRASH_ITERATIONS=500 $(GO) test -count=1 -timeout 60m -run 'TestCrashKill9' -v ./internal/store/sqlitestore

fuzz: ## fuzz every target in every package for FUZZTIME each (default 30s)
	@for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run=XXX -fuzz="^$$t$$" -fuzztime=$${FUZZTIME:-30s} $$pkg || exit 1; \
		done; done

bench: ## store and library micro-benchmarks
	$(GO) test -run=XXX -bench=. -benchmem -count=1 ./internal/store/sqlitestore .

bench-workloads: build ## the W1-W5 workloads of DESIGN.md section 5, in-process on the embedded store
	./bin/drover bench

verify: lint ## checks that generated and tidy files are fresh
	$(GO) mod tidy -diff

clean: ## remove build output
	rm -rf bin
