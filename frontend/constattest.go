//go:build buildtrace_constattest

package frontend

// constAttestation, in a frontend built with -tags buildtrace_constattest
// for BenchmarkCachedRebuild only, replaces every attestation with the same
// bytes, so that BuildKit finds its layer in its cache: the benchmark then
// tells BuildKit's cost of storing a new attestation layer from the rest of
// what the frontend adds. Such a frontend attaches nothing verify accepts.
var constAttestation = []byte(`{"buildtraceBenchmark":"constant attestation, not a trace"}`)
