# buildtrace — see README.md. Everything that needs the lab runs as root.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false
GO ?= go
# Tests run packages one at a time: the end-to-end packages share one lab.
GOTEST_FLAGS ?= -p 1 -count=1 -timeout 45m

.PHONY: all build lab lab-down lab-status demo examples test unit bench generate check-generate vet clean

all: build

build:
	@mkdir -p bin
	@# Static, no cgo: the tracer and frontend run from FROM scratch images too.
	@if ls cmd/*/main.go >/dev/null 2>&1; then CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...; fi
	@# The frontend runs in a FROM scratch image: static, no cgo.
	@if [ -d cmd/buildtrace-frontend ]; then CGO_ENABLED=0 $(GO) build -trimpath -o bin/buildtrace-frontend ./cmd/buildtrace-frontend; fi

lab: build
	hack/lab.sh up

lab-down:
	hack/lab.sh down

lab-status:
	hack/lab.sh status

demo: lab
	hack/demo.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.lab/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# generate rebuilds the committed bpf2go output (needs clang, bpftool).
generate:
	cd bpf && $(GO) generate ./...

check-generate:
	hack/check-generate.sh

test: lab vet check-generate
	$(GO) test $(GOTEST_FLAGS) ./...

unit:
	$(GO) test -short ./...

# Micro benchmarks run for the usual second each; the end-to-end ones set
# their own rounds (one iteration is many builds).
bench: lab
	$(GO) test -run '^$$' -bench . -timeout 20m $$($(GO) list ./... | grep -v /test/e2e)
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/e2e/

clean:
	rm -rf bin

# examples builds examples/* through the lab with the buildtrace frontend and
# verifies each with its policy (compromised must fail; see hack/examples.sh).
examples: lab
	hack/examples.sh
