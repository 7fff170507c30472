package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/registry"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/buildtrace/buildtrace/pkg/tracerapi"
	"github.com/buildtrace/buildtrace/pkg/verify"
	"github.com/buildtrace/buildtrace/tracer/store"
)

// maxEvidencePerStep bounds the candidate runs put into a trace for one
// cached step: runs of one step with different diffs (other contexts).
const maxEvidencePerStep = 4

// maxImported bounds the envelopes read from one evidence image.
const maxImported = 64

// evidence finds, for each step of the build's plan that did not run and
// is not pending, the signed runs of earlier builds that ran it. When the
// local store has none, the runtime-trace attestations of the images
// named in from (the image that exported a shared cache, say) are read,
// and each envelope the tracer's own key verifies is kept as evidence.
func (s *Server) evidence(ctx context.Context, b *trace.Build, from []string) []trace.Evidence {
	ran := map[string]bool{}
	for _, st := range b.Steps {
		ran[st.StepID] = true
	}
	for _, id := range b.Pending {
		ran[id] = true
	}
	var want []string
	seen := map[string]bool{}
	for _, p := range b.Plan {
		for _, st := range p.Steps {
			if !ran[st.StepID] && !seen[st.StepID] {
				seen[st.StepID] = true
				want = append(want, st.StepID)
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	imported := false
	carried := map[string]bool{}
	var out []trace.Evidence
	for _, id := range want {
		refs, envs, err := s.cfg.Store.Evidence(id, maxEvidencePerStep)
		if err != nil {
			s.log.Error("reading evidence", "step", id, "err", err)
		}
		if len(refs) == 0 && len(from) > 0 && !imported {
			imported = true
			s.importEvidence(ctx, from)
			refs, envs, _ = s.cfg.Store.Evidence(id, maxEvidencePerStep)
		}
		for i, r := range refs {
			if carried[r.BuildTraceID] {
				// The envelope travels once per build.
				out = append(out, trace.Evidence{StepID: id, BuildTraceID: r.BuildTraceID, ContainerID: r.ContainerID})
				continue
			}
			carried[r.BuildTraceID] = true
			var env dsse.Envelope
			if err := json.Unmarshal(envs[i], &env); err != nil {
				s.log.Error("stored evidence envelope", "build", r.BuildTraceID, "err", err)
				continue
			}
			out = append(out, trace.Evidence{StepID: id, BuildTraceID: r.BuildTraceID, ContainerID: r.ContainerID, Envelope: &env})
		}
	}
	return out
}

// keepEvidence stores a sealed build's envelope with an index of its runs
// that can serve as evidence: complete, attributed, with a diff.
func (s *Server) keepEvidence(env *dsse.Envelope, b *trace.Build) {
	var runs []store.RunRef
	for i := range b.Steps {
		st := &b.Steps[i]
		if !st.Completeness.Complete || st.Diff.Digest == "" || st.Attribution == trace.AttributionNone {
			continue
		}
		// Only a run of a step the build planned, that ran the planned
		// command: anything else under the build's ID is not its step.
		ps, ok := verify.PlannedStep(b, st.StepID)
		if !ok || verify.CommandMismatch(st, ps) != "" {
			continue
		}
		runs = append(runs, store.RunRef{StepID: st.StepID, DiffDigest: st.Diff.Digest, ContainerID: st.ContainerID})
	}
	if len(runs) == 0 {
		return
	}
	dt, err := json.Marshal(env)
	if err == nil {
		// Ranked by when the build was sealed, not when it was stored: an
		// imported old trace is not "newer" than the run it repeats.
		err = s.cfg.Store.PutEvidence(b.BuildTraceID, dt, runs, b.GeneratedAt)
	}
	if err != nil {
		s.log.Error("keeping evidence", "trace", b.BuildTraceID, "err", err)
	}
}

// importEvidence reads the runtime-trace attestations of images and keeps
// the sealed build envelopes (and the evidence nested in them) that the
// tracer's own key verifies.
func (s *Server) importEvidence(ctx context.Context, refs []string) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v := s.cfg.Signer.Verifier()
	c := registry.New(registry.Options{})
	n := 0
	for _, ref := range refs {
		img, err := c.Read(ctx, ref)
		if err != nil {
			s.log.Info("no evidence from image", "image", ref, "err", err)
			continue
		}
		for _, a := range img.Attestations {
			st, ok := a.Statement(attest.PredicateType)
			if !ok {
				continue
			}
			pred, err := attest.Parse(st.Data)
			if err != nil || pred.Buildtrace.Envelope == nil {
				continue
			}
			queue := []*dsse.Envelope{pred.Buildtrace.Envelope}
			for len(queue) > 0 && n < maxImported {
				env := queue[0]
				queue = queue[1:]
				b, err := s.verifyEvidence(ctx, v, env)
				if err != nil {
					s.log.Warn("evidence envelope refused", "image", ref, "err", err)
					continue
				}
				s.keepEvidence(env, b)
				n++
				for _, e := range b.Evidence {
					if e.Envelope != nil {
						queue = append(queue, e.Envelope)
					}
				}
			}
		}
	}
	if n > 0 {
		s.log.Info("imported evidence", "images", refs, "envelopes", n)
	}
}

// verifyEvidence checks an envelope is a sealed trace this tracer's key
// signed for a build's frontend.
func (s *Server) verifyEvidence(ctx context.Context, v *sign.Verifier, env *dsse.Envelope) (*trace.Build, error) {
	if env == nil {
		return nil, errors.New("no envelope")
	}
	payload, err := sign.Verify(ctx, v, env, trace.PayloadType)
	if err != nil {
		return nil, err
	}
	var b trace.Build
	if err := json.Unmarshal(payload, &b); err != nil {
		return nil, err
	}
	if b.Version != trace.Version || !b.Sealed || b.Requester.Kind != trace.RequesterFrontend {
		return nil, fmt.Errorf("build %s: not a sealed %s trace signed for a frontend", b.BuildTraceID, trace.Version)
	}
	return &b, nil
}

// ExpireEvidence drops evidence older than retention, then the oldest
// until at most maxBytes are held, and says what it evicted in the log and
// the health answer.
func (s *Server) ExpireEvidence(retention time.Duration, maxBytes int64) {
	ev, err := s.cfg.Store.ExpireEvidence(time.Now().Add(-retention), maxBytes)
	s.evMu.Lock()
	defer s.evMu.Unlock()
	h := &s.evHealth
	h.Retention, h.MaxBytes = retention.String(), maxBytes
	if err != nil {
		h.LastEvictionErr = err.Error()
		s.log.Error("expiring evidence", "err", err)
		return
	}
	h.LastEvictionErr = ""
	h.HeldBuilds, h.HeldBytes = ev.HeldBuilds, ev.HeldBytes
	if ev.Builds > 0 {
		h.EvictedBuilds += ev.Builds
		h.EvictedBytes += ev.Bytes
		h.LastEviction = time.Now().UTC()
		s.log.Info("evicted evidence", "builds", ev.Builds, "bytes", ev.Bytes, "heldBuilds", ev.HeldBuilds, "heldBytes", ev.HeldBytes, "retention", retention, "maxBytes", maxBytes)
	}
}

func (s *Server) evidenceHealth() *tracerapi.EvidenceHealth {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	h := s.evHealth
	return &h
}
