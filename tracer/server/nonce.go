package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// NoncePrefix and NonceSuffix wrap a build's nonce in NO_PROXY: the
// frontend adds "buildtrace-<nonce>.invalid" to every step's proxy
// environment (not part of BuildKit's cache key, so caching is unchanged)
// and registers the nonce with its plan. A client can choose a build's
// TRACEPARENT; it cannot learn the nonce, which only the build's frontend
// and the tracer hold while the build runs.
const (
	NoncePrefix = "buildtrace-"
	NonceSuffix = ".invalid"
)

// checkNonce returns the build a container belongs to: the bundle's
// TRACEPARENT, when that build's plan has no nonce or the container
// carries it. A container that names a build with a nonce but lacks it
// was started by another client: it is left unattributed (sealed and kept,
// put into that build's trace as such, which then fails to verify),
// rather than let into the build's record.
func (s *Server) checkNonce(l rootfs.Layout, why string) (string, string) {
	if l.TraceID == "" {
		return "", why
	}
	_, parts, ok := s.plans.get(l.TraceID)
	if !ok {
		return l.TraceID, why
	}
	nonce := ""
	for _, p := range parts {
		if p.Nonce != "" {
			nonce = p.Nonce
		}
	}
	if nonce == "" {
		return l.TraceID, why
	}
	if bundleHasNonce(filepath.Join(l.Bundle, "config.json"), nonce) {
		return l.TraceID, why
	}
	s.log.Warn("a container names a build but lacks its nonce: another client's", "trace", l.TraceID, "bundle", l.Bundle)
	return "", "the container names build " + l.TraceID + " but was not started by that build's frontend (it lacks the build's nonce)"
}

func bundleHasNonce(config, nonce string) bool {
	dt, err := os.ReadFile(config)
	if err != nil {
		return false
	}
	var spec struct {
		Process struct {
			Env []string `json:"env"`
		} `json:"process"`
	}
	if json.Unmarshal(dt, &spec) != nil {
		return false
	}
	want := NoncePrefix + nonce + NonceSuffix
	for _, kv := range spec.Process.Env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "NO_PROXY" || k == "no_proxy" {
			for _, h := range strings.Split(v, ",") {
				if h == want {
					return true
				}
			}
		}
	}
	return false
}
