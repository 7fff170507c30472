package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
)

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tracerapi.TracePath+"{id}", s.serveTrace)
	mux.HandleFunc("GET "+tracerapi.HealthPath, s.serveHealth)
	mux.HandleFunc("PUT "+tracerapi.BlobPath+"{sha256}", s.putBlob)
	mux.HandleFunc("GET "+tracerapi.BlobPath+"{sha256}", s.getBlob)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, tracerapi.ErrorResponse{Error: fmt.Sprintf(format, args...)})
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, tracerapi.Health{Version: s.cfg.Tracer.Version, Since: s.cfg.Tracer.Since, KeyID: s.cfg.Signer.KeyID()})
}

func (s *Server) serveTrace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !tracerapi.ValidTraceID(id) {
		writeError(w, http.StatusBadRequest, "invalid build trace ID %q: want 32 lowercase hex characters, not all zero", id)
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "invalid wait %q: want a non-negative Go duration such as 30s", v)
			return
		}
		wait = d
	}
	wait = min(wait, s.cfg.MaxWait)
	start := time.Now()
	env, b, err := s.Trace(r.Context(), id, wait)
	if err != nil {
		s.log.Error("trace request failed", "trace", id, "err", err)
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	s.log.Info("trace served", "trace", id, "steps", len(b.Steps), "pending", len(b.Pending), "took", time.Since(start).Round(time.Millisecond))
	writeJSON(w, http.StatusOK, tracerapi.TraceResponse{Envelope: env})
}

// Trace returns the signed trace of build traceID, after waiting up to
// wait for its running steps to end and be sealed.
func (s *Server) Trace(ctx context.Context, traceID string, wait time.Duration) (*dsse.Envelope, *trace.Build, error) {
	deadline := time.Now().Add(wait)
	// Events emitted before the request (a step's end above all) must be
	// assembled before we decide what is pending.
	syncCtx, cancel := context.WithDeadline(ctx, deadline.Add(10*time.Second))
	err := s.cfg.Source.Sync(syncCtx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("waiting for the probe's events: %w", err)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var pending []string
wait:
	for {
		var changed <-chan struct{}
		pending, changed = s.pending(traceID)
		if len(pending) == 0 {
			break
		}
		select {
		case <-changed:
		case <-timer.C:
			break wait
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	// Read the store after the pending list: a step sealed in between is
	// then listed twice rather than lost.
	steps, err := s.cfg.Store.Steps(traceID)
	if err != nil {
		return nil, nil, err
	}
	if steps == nil {
		steps = []trace.Step{}
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].Start.Before(steps[j].Start) })
	slices.Sort(pending)
	b := &trace.Build{
		Version:      trace.Version,
		BuildTraceID: traceID,
		Tracer:       s.cfg.Tracer,
		GeneratedAt:  time.Now().UTC(),
		Steps:        steps,
		Pending:      pending,
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding trace of build %s: %w", traceID, err)
	}
	env, err := sign.Sign(ctx, s.cfg.Signer, trace.PayloadType, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("signing trace of build %s: %w", traceID, err)
	}
	return env, b, nil
}
