package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/tracer/peer"
	"github.com/buildtrace/buildtrace/tracer/rootfs"
)

// maxPlanBytes bounds a plan part's body: one part lists a solve's ops.
const maxPlanBytes = 16 << 20

// Handler returns the API on the TCP listener: health and blob reads for
// anyone, plan, seal and blob writes for a build's own frontend only.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tracerapi.HealthPath, s.serveHealth)
	mux.HandleFunc("POST "+tracerapi.TracePath+"{id}"+tracerapi.PlanSuffix, s.servePlan)
	mux.HandleFunc("POST "+tracerapi.TracePath+"{id}"+tracerapi.SealSuffix, s.serveSeal)
	mux.HandleFunc("GET "+tracerapi.TracePath+"{id}", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "a build's trace is served to its own frontend only (POST %s<id>%s); root can read any trace on the admin socket", tracerapi.TracePath, tracerapi.SealSuffix)
	})
	mux.HandleFunc("PUT "+tracerapi.BlobPath+"{sha256}", func(w http.ResponseWriter, r *http.Request) {
		fe, err := s.frontend(r)
		if err != nil {
			writeError(w, http.StatusForbidden, "%v", err)
			return
		}
		// The MAC covers the blob's name; putBlob checks the content
		// against it.
		if sum, ok := s.checkSigned(w, r, fe); !ok {
			return
		} else if sum != r.PathValue("sha256") {
			s.refuse(w, r, fe, "the signed body digest is not the blob's name")
			return
		}
		s.putBlob(w, r)
	})
	mux.HandleFunc("GET "+tracerapi.BlobPath+"{sha256}", s.getBlob)
	return mux
}

// AdminHandler is the API on the admin socket, which only root can open:
// any build's trace, for debugging and tests. Its traces name the admin as
// requester, so they never verify.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tracerapi.HealthPath, s.serveHealth)
	mux.HandleFunc("GET "+tracerapi.TracePath+"{id}", s.serveAdminTrace)
	mux.HandleFunc("GET "+tracerapi.UnattributedPath+"{step}", s.serveUnattributed)
	return mux
}

// serveUnattributed lists (unsigned, admin only) the sealed containers of
// a step whose build could not be decided.
func (s *Server) serveUnattributed(w http.ResponseWriter, r *http.Request) {
	steps, err := s.cfg.Store.UnattributedSteps([]string{r.PathValue("step")})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if steps == nil {
		steps = []trace.Step{}
	}
	writeJSON(w, http.StatusOK, steps)
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
	h := tracerapi.Health{Version: s.cfg.Tracer.Version, Since: s.cfg.Tracer.Since, KeyID: s.cfg.Signer.KeyID(), Evidence: s.evidenceHealth()}
	if hs, ok := s.cfg.Source.(hookSource); ok {
		size, hw := hs.Ring()
		h.Ringbuf = &tracerapi.RingbufHealth{Size: size, HighWater: hw}
		st := hs.SyscallHook()
		h.SyscallHook = &tracerapi.SyscallHookHealth{Attached: st.Attached, OnDemand: st.OnDemand, Attaches: st.Attaches, Holds: st.Holds, Error: st.Err}
		if !st.Since.IsZero() {
			h.SyscallHook.Since = st.Since.UTC()
		}
	}
	writeJSON(w, http.StatusOK, h)
}

// frontend identifies the caller of a TCP request as a build's frontend.
func (s *Server) frontend(r *http.Request) (*peer.Frontend, error) {
	if s.cfg.Identify != nil {
		return s.cfg.Identify(r)
	}
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: caller address %q", peer.ErrNotFrontend, r.RemoteAddr)
	}
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	local, err := netip.ParseAddrPort(fmt.Sprint(la))
	if err != nil {
		return nil, fmt.Errorf("%w: local address %v", peer.ErrNotFrontend, la)
	}
	return s.finder.Frontend(remote, local)
}

// ownFrontend checks that the caller is the frontend of build id.
func (s *Server) ownFrontend(w http.ResponseWriter, r *http.Request) (*peer.Frontend, string, bool) {
	id := r.PathValue("id")
	if !tracerapi.ValidTraceID(id) {
		writeError(w, http.StatusBadRequest, "invalid build trace ID %q: want 32 lowercase hex characters, not all zero", id)
		return nil, "", false
	}
	fe, err := s.frontend(r)
	if err != nil {
		s.log.Warn("refused a caller", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusForbidden, "%v", err)
		return nil, "", false
	}
	if fe.TraceID != id {
		s.log.Warn("refused a frontend asking about another build", "path", r.URL.Path, "frontendBuild", fe.TraceID, "container", fe.ContainerID)
		writeError(w, http.StatusForbidden, "%v: the caller is the frontend of build %s, not of build %s", peer.ErrNotFrontend, fe.TraceID, id)
		return nil, "", false
	}
	return fe, id, true
}

func requesterOf(fe *peer.Frontend) trace.Requester {
	return trace.Requester{Kind: trace.RequesterFrontend, PID: fe.PID, ContainerID: fe.ContainerID, Executable: fe.Executable, ExecutableDigest: fe.ExecutableDigest}
}

func (s *Server) servePlan(w http.ResponseWriter, r *http.Request) {
	fe, id, ok := s.ownFrontend(w, r)
	if !ok {
		return
	}
	body, ok := s.signedBody(w, r, fe, maxPlanBytes)
	if !ok {
		return
	}
	var part trace.PlanPart
	if err := json.Unmarshal(body, &part); err != nil {
		writeError(w, http.StatusBadRequest, "decoding plan part: %v", err)
		return
	}
	if part.ID == "" || part.Platform == "" {
		writeError(w, http.StatusBadRequest, "plan part needs an id and a platform")
		return
	}
	// Step nonces come from the frontend's key, never from the network:
	// plans.stepNonce derives them from root, and a nonce in the body is
	// never read (public drops it before signing).
	root := tracerapi.NonceRoot(fe.RequestKey)
	part.Received = s.now().UTC()
	// The frontend's bundle sits beside its steps' bundles: watch them
	// from now on, before any step of this build starts.
	s.watchExecutorOf(rootfs.Layout{Bundle: fe.Bundle, Namespace: fe.Namespace})
	if err := s.plans.add(id, requesterOf(fe), root, part); err != nil {
		writeError(w, http.StatusConflict, "%v", err)
		return
	}
	// Before answering: the build's first step starts after this.
	s.holdSyscalls(id, fe.PID)
	s.log.Info("plan received", "trace", id, "part", part.ID, "platform", part.Platform, "steps", len(part.Steps), "layers", len(part.Layers), "frontend", fe.ExecutableDigest)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveSeal(w http.ResponseWriter, r *http.Request) {
	fe, id, ok := s.ownFrontend(w, r)
	if !ok {
		return
	}
	// The seal carries the parts of solves with no step (a COPY-only final
	// stage can list many ops), so it gets a part's room and then some.
	body, ok := s.signedBody(w, r, fe, maxPlanBytes+1<<20)
	if !ok {
		return
	}
	var req tracerapi.SealRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "decoding seal request: %v", err)
		return
	}
	wait, err := parseWait(req.Wait)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	for _, part := range req.Plan {
		// Only solves with no step: a step's plan must be in before it runs.
		if len(part.Steps) > 0 {
			writeError(w, http.StatusBadRequest, "plan part %s has %d steps: it must be registered before its solve runs, not with the seal", part.ID, len(part.Steps))
			return
		}
		if part.ID == "" || part.Platform == "" {
			writeError(w, http.StatusBadRequest, "plan part needs an id and a platform")
			return
		}
	}
	for _, part := range req.Plan {
		part.Received = s.now().UTC()
		if err := s.plans.add(id, requesterOf(fe), tracerapi.NonceRoot(fe.RequestKey), part); err != nil {
			writeError(w, http.StatusConflict, "%v", err)
			return
		}
	}
	who, parts, ok := s.plans.get(id)
	if !ok {
		writeError(w, http.StatusNotFound, "build %s registered no plan with this tracer (was it restarted during the build?)", id)
		return
	}
	if who.ContainerID != fe.ContainerID {
		writeError(w, http.StatusForbidden, "%v: build %s's plan came from container %s, not %s", peer.ErrNotFrontend, id, who.ContainerID, fe.ContainerID)
		return
	}
	for p, part := range req.Results {
		if !slices.ContainsFunc(parts, func(x trace.PlanPart) bool { return x.ID == part && x.Platform == p }) {
			writeError(w, http.StatusBadRequest, "result for %s names plan part %s, which build %s did not register for that platform", p, part, id)
			return
		}
	}
	start := time.Now()
	env, b, err := s.Trace(r.Context(), Request{TraceID: id, Wait: wait, Requester: requesterOf(fe), Plan: parts, Results: req.Results, EvidenceFrom: req.EvidenceFrom})
	if err != nil {
		s.log.Error("trace request failed", "trace", id, "err", err)
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if b.Sealed {
		s.plans.markSealed(id)
		s.releaseSyscalls(id)
	}
	s.log.Info("trace sealed", "trace", id, "steps", len(b.Steps), "pending", len(b.Pending), "sealed", b.Sealed, "evidence", len(b.Evidence), "took", time.Since(start).Round(time.Millisecond))
	writeJSON(w, http.StatusOK, tracerapi.TraceResponse{Envelope: env})
}

func (s *Server) serveAdminTrace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !tracerapi.ValidTraceID(id) {
		writeError(w, http.StatusBadRequest, "invalid build trace ID %q: want 32 lowercase hex characters, not all zero", id)
		return
	}
	wait, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	_, parts, _ := s.plans.get(id)
	env, b, err := s.Trace(r.Context(), Request{TraceID: id, Wait: wait, Requester: trace.Requester{Kind: trace.RequesterAdmin}, Plan: parts})
	if errors.Is(err, errUnknownBuild) {
		writeError(w, http.StatusNotFound, "%v", err)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	s.log.Info("trace served to admin", "trace", id, "steps", len(b.Steps), "pending", len(b.Pending))
	writeJSON(w, http.StatusOK, tracerapi.TraceResponse{Envelope: env})
}

func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid wait %q: want a non-negative Go duration such as 30s", v)
	}
	return d, nil
}

// Request is what a trace is signed for.
type Request struct {
	TraceID   string
	Wait      time.Duration
	Requester trace.Requester
	Plan      []trace.PlanPart
	Results   map[string]string
	// EvidenceFrom names images whose attestations may hold evidence for
	// cached steps (a shared cache's exporter).
	EvidenceFrom []string
}

var errUnknownBuild = errors.New("unknown build")

// Trace returns the signed trace of a build, after waiting up to req.Wait
// for its running steps to end and be sealed. A build the tracer knows
// nothing of (no plan, no step) is an error, never an empty signed trace.
func (s *Server) Trace(ctx context.Context, req Request) (*dsse.Envelope, *trace.Build, error) {
	traceID := req.TraceID
	wait := min(req.Wait, s.cfg.MaxWait)
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
	// A container of a planned step whose build the tracer could not
	// decide is put into the trace of every build that planned the step
	// while it ran, so it is never silently dropped (nor taken as cached).
	if start := trace.FirstReceived(req.Plan); !start.IsZero() {
		var ids []string
		for _, p := range req.Plan {
			for _, st := range p.Steps {
				ids = append(ids, st.StepID)
			}
		}
		un, err := s.cfg.Store.UnattributedSteps(ids)
		if err != nil {
			return nil, nil, err
		}
		for _, st := range un {
			if !st.End.Before(start) {
				steps = append(steps, st)
			}
		}
	}
	if len(steps) == 0 && len(pending) == 0 && len(req.Plan) == 0 {
		return nil, nil, fmt.Errorf("%w: the tracer has no plan and no step of build %s", errUnknownBuild, traceID)
	}
	if start := trace.FirstReceived(req.Plan); !start.IsZero() && req.Requester.Kind == trace.RequesterFrontend {
		// A container that started before the build registered its plan is
		// not the build's: its frontend plans a solve before it runs it.
		// (Another client's container under a chosen TRACEPARENT, or an
		// earlier build that used the same trace ID.)
		steps = slices.DeleteFunc(steps, func(st trace.Step) bool { return st.Start.Before(start) })
	}
	if steps == nil {
		steps = []trace.Step{}
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].Start.Before(steps[j].Start) })
	slices.Sort(pending)
	plan := public(req.Plan)
	b := &trace.Build{
		Version:      trace.Version,
		BuildTraceID: traceID,
		Tracer:       s.cfg.Tracer,
		GeneratedAt:  s.now().UTC(),
		Steps:        steps,
		Pending:      pending,
		Sealed:       len(pending) == 0,
		Requester:    req.Requester,
		Plan:         plan,
		Results:      req.Results,
	}
	frontend := req.Requester.Kind == trace.RequesterFrontend
	if frontend && b.Sealed {
		b.Evidence = s.evidence(ctx, b, req.EvidenceFrom)
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding trace of build %s: %w", traceID, err)
	}
	env, err := sign.Sign(ctx, s.cfg.Signer, trace.PayloadType, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("signing trace of build %s: %w", traceID, err)
	}
	if frontend && b.Sealed {
		s.keepEvidence(env, b)
	}
	return env, b, nil
}
