// Package bpf holds the buildtrace eBPF programs and their bpf2go bindings.
// The generated files are committed so building needs no clang; regenerate
// with `go generate` in this directory.
package bpf

//go:generate go tool bpf2go -tags linux -cc clang -target bpfel -cflags "-O2 -g -Wall -Werror" -type event -type cg_stats -type traffic_key -type traffic_val Buildtrace buildtrace.bpf.c -- -I.

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
