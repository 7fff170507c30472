//go:build !buildtrace_constattest

package frontend

// constAttestation is nil in every real build; see constattest.go.
var constAttestation []byte
