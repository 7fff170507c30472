# buildtrace — see README.md. Everything that needs the lab runs as root.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false
GO ?= go
# Tests run packages one at a time: the end-to-end packages share one lab.
GOTEST_FLAGS ?= -p 1 -count=1 -timeout 45m

.PHONY: all build lab lab-dc lab-down lab-status demo examples test unit bench generate check-generate check-arm64 vet clean

all: build

build:
	@mkdir -p bin
	@# Static, no cgo: the tracer and frontend run from FROM scratch images too.
	@if ls cmd/*/main.go >/dev/null 2>&1; then CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...; fi
	@# The frontend runs in a FROM scratch image: static, no cgo.
	@if [ -d cmd/buildtrace-frontend ]; then CGO_ENABLED=0 $(GO) build -trimpath -o bin/buildtrace-frontend ./cmd/buildtrace-frontend; fi

lab: build
	hack/lab.sh up

# The docker-container driver's lab (dockerd, builders buildtrace-dc and
# buildtrace-dc-bridge, the tracer from its image); the e2e tests bring it up
# themselves (TestDockerContainerDriver) and take it down after.
lab-dc: lab
	hack/lab-dc.sh up

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

# generate rebuilds the committed bpf2go output (needs clang, bpftool): one
# object per architecture (bpf/gen.go). Old outputs go first, so a target
# dropped from gen.go leaves no stale file behind for check-generate to miss.
generate:
	rm -f bpf/*_bpfel.go bpf/*_bpfel.o bpf/*_bpfeb.go bpf/*_bpfeb.o
	cd bpf && $(GO) generate ./...

check-generate:
	hack/check-generate.sh

# check-arm64: the daemon links and vets for arm64 hosts, and the arm64 BPF
# object relocates against a real arm64 kernel's BTF (Debian's, fetched once
# by hack/arm64-kernel.sh; no arm64 machine runs here: docs/deploy.md). Only
# the daemon's packages: a cold cache cross-compiles all their dependencies
# (~1.5 min of CPU; ./... with the frontend's BuildKit is twice that).
check-arm64:
	GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/buildtraced
	GOARCH=arm64 CGO_ENABLED=0 $(GO) vet ./bpf/... ./tracer/... ./cmd/buildtraced/...
	BUILDTRACE_ARM64_KERNEL=$$(hack/arm64-kernel.sh) $(GO) test -count=1 -run 'Relocat|Syscall|Socketcall' ./bpf/

test: lab vet check-generate check-arm64
	$(GO) test $(GOTEST_FLAGS) ./...

unit:
	$(GO) test -short ./...

# bench runs every benchmark in one run (micro benchmarks for the usual
# second each; the end-to-end ones set their own rounds, one iteration is
# many builds), keeps the output in .lab/bench.txt and ends with one table
# of ratios against their targets (hack/benchtable). BENCH selects
# benchmarks by name; knobs: BUILDTRACE_BENCH_ROUNDS and the others in
# test/e2e/benchlib_test.go. Benchmarks never run under make test.
BENCH ?= .
bench: lab
	@mkdir -p .lab
	@set -o pipefail; rc=0; \
	( $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -timeout 20m $$($(GO) list ./... | grep -v /test/e2e); r=$$?; \
	  $(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 1x -timeout 180m ./test/e2e/ && exit $$r ) 2>&1 | tee .lab/bench.txt || rc=$$?; \
	$(GO) run ./hack/benchtable .lab/bench.txt; exit $$rc

clean:
	rm -rf bin

# examples builds examples/* through the lab with the buildtrace frontend and
# verifies each with its policy (compromised must fail; see hack/examples.sh).
examples: lab
	hack/examples.sh
