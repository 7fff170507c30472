// Package bpf holds the buildtrace eBPF programs and their bpf2go bindings.
// The generated files are committed so building needs no clang; regenerate
// with `make generate`.
//
// One object per architecture: the syscall hook reads the architecture's
// pt_regs and decodes its syscall numbers (arch_x86.h, arch_arm64.h), so
// bpf2go compiles buildtrace.bpf.c once per target with __TARGET_ARCH_<arch>
// defined, into buildtrace_x86_bpfel.* (GOARCH amd64, 386) and
// buildtrace_arm64_bpfel.* (arm64). Other GOARCHes have no object and do not
// build this package.
package bpf

//go:generate go tool bpf2go -tags linux -cc clang -target amd64,arm64 -cflags "-O2 -g -Wall -Werror" -type event -type cg_stats -type traffic_key -type traffic_val Buildtrace buildtrace.bpf.c -- -I.

import (
	"crypto/sha256"
	"encoding/hex"
)

// ObjectDigest is "sha256:<hex>" of the compiled BPF object the tracer
// loads, so a trace names exactly which programs watched the build.
func ObjectDigest() string {
	sum := sha256.Sum256(_BuildtraceBytes)
	return "sha256:" + hex.EncodeToString(sum[:])
}
