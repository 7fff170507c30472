package server

import (
	"slices"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// NoncePrefix and NonceSuffix wrap a step's nonce in NO_PROXY: the
// frontend adds "buildtrace-<nonce>.invalid" to each step's proxy
// environment (not part of BuildKit's cache key, so caching is unchanged)
// and registers the nonces with its plan. A client can choose a build's
// TRACEPARENT; it cannot learn a step's nonce, which only the frontend, the
// tracer and that step's own container hold.
const (
	NoncePrefix = "buildtrace-"
	NonceSuffix = ".invalid"
)

// checkNonce returns the build a container belongs to: the bundle's
// TRACEPARENT, when that build's plan gives the container's step no nonce
// (a build without the buildtrace frontend), or when the container carries
// the step's nonce and is the first container of that step to. Otherwise
// it was started by someone else (another client that chose the build's
// TRACEPARENT, or a second container for the step): it is left
// unattributed (sealed and kept, put into that build's trace as such,
// which then fails to verify) rather than let into the build's record.
func (s *Server) checkNonce(c steptag.Container, l rootfs.Layout, why string) (string, string) {
	if l.TraceID == "" {
		return "", why
	}
	nonce, ok := s.plans.stepNonce(l.TraceID, c.StepID)
	if !ok || nonce == "" {
		return l.TraceID, why
	}
	if !slices.Contains(l.NoProxy, NoncePrefix+nonce+NonceSuffix) {
		s.log.Warn("a container names a build but lacks its step's nonce: another client's", "trace", l.TraceID, "step", c.StepID, "container", c.ContainerID)
		return "", "the container names build " + l.TraceID + " but was not started by that build's frontend (it lacks its step's nonce)"
	}
	if first := s.plans.claim(l.TraceID, c.StepID, c.ContainerID); first != c.ContainerID {
		s.log.Warn("a second container carries a step's nonce", "trace", l.TraceID, "step", c.StepID, "container", c.ContainerID, "first", first)
		return "", "container " + first + " already ran step " + c.StepID + " of build " + l.TraceID + " with its nonce"
	}
	return l.TraceID, why
}
