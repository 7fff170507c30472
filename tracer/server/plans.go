package server

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/buildtrace/buildtrace/pkg/steptag"
	"github.com/buildtrace/buildtrace/pkg/trace"
)

// planTTL is how long a build's plan is kept after it was last added to:
// long enough for any build, and for a frontend to ask again.
const planTTL = 6 * time.Hour

// maxPlans bounds the builds whose plans are held at once.
const maxPlans = 10_000

// plans holds each build's plan as its frontend registered it, in memory:
// a tracer restarted during a build has lost the plan, and the build then
// gets no trace rather than one without a plan.
type plans struct {
	mu     sync.Mutex
	builds map[string]*buildPlan
}

type buildPlan struct {
	frontend trace.Requester
	// nonceRoot derives every step's nonce, for steps of parts not
	// registered yet too: a container must never get into the build for
	// lack of a plan part.
	nonceRoot string
	parts     []trace.PlanPart
	touched   time.Time
	claimed   map[string]string // step ID → the container that carried its nonce first
	sealed    bool              // its frontend asked for the sealed trace
}

// add registers a part of a build's plan. nonceRoot is the frontend's
// (tracerapi.NonceRoot of its request key), from which every step's nonce
// is derived.
func (p *plans) add(traceID string, fe trace.Requester, nonceRoot string, part trace.PlanPart) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for id, b := range p.builds {
		if now.Sub(b.touched) > planTTL {
			delete(p.builds, id)
		}
	}
	if p.builds == nil {
		p.builds = map[string]*buildPlan{}
	}
	b := p.builds[traceID]
	if b == nil {
		if len(p.builds) >= maxPlans {
			return fmt.Errorf("holding the plans of %d builds already", maxPlans)
		}
		b = &buildPlan{frontend: fe, nonceRoot: nonceRoot}
		p.builds[traceID] = b
	}
	if b.frontend.ContainerID != fe.ContainerID {
		if !b.sealed {
			return fmt.Errorf("build %s's plan came from frontend container %s, whose build is not sealed yet; container %s cannot add to it", traceID, b.frontend.ContainerID, fe.ContainerID)
		}
		// A later build with the same trace ID (a CI job that exports one
		// TRACEPARENT for all its builds): the earlier one is done. Its
		// containers started before this plan and stay out of this build.
		b = &buildPlan{frontend: fe, nonceRoot: nonceRoot}
		p.builds[traceID] = b
	}
	// A part sent again (a retried solve) replaces the earlier one.
	b.parts = slices.DeleteFunc(b.parts, func(x trace.PlanPart) bool { return x.ID == part.ID && x.Platform == part.Platform })
	b.parts = append(b.parts, part)
	b.touched = now
	return nil
}

func (p *plans) get(traceID string) (trace.Requester, []trace.PlanPart, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.builds[traceID]
	if b == nil {
		return trace.Requester{}, nil, false
	}
	b.touched = time.Now()
	return b.frontend, slices.Clone(b.parts), true
}

// stepNonce returns the nonce of a step of a build with a plan. Every
// step ID has one, so a container of a step whose part is not registered
// yet (another platform's, in a window another client under the build's
// TRACEPARENT could use) must carry it too.
func (p *plans) stepNonce(traceID, stepID string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.builds[traceID]
	if b == nil {
		return "", false
	}
	return steptag.StepNonce(b.nonceRoot, stepID), true
}

// stepSecrets returns the secrets (environment variables and mounted
// files) that the step planned under stepID mounts: in build traceID, or,
// when the build is not known (a container the tracer could not attribute,
// which goes into every build that planned its step), in any build.
func (p *plans) stepSecrets(traceID, stepID string) (env, files []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, b := range p.builds {
		if traceID != "" && id != traceID {
			continue
		}
		for _, part := range b.parts {
			for _, st := range part.Steps {
				if st.StepID == stepID {
					env = append(env, st.SecretEnv...)
					files = append(files, st.SecretFiles...)
				}
			}
		}
	}
	return env, files
}

// claim records the first container of a step and returns it.
func (p *plans) claim(traceID, stepID, containerID string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.builds[traceID]
	if b == nil {
		return containerID
	}
	if b.claimed == nil {
		b.claimed = map[string]string{}
	}
	if first, ok := b.claimed[stepID]; ok {
		return first
	}
	b.claimed[stepID] = containerID
	return containerID
}

// public returns plan parts as they may be signed: without the steps'
// nonces, which only attribute containers while the build runs.
func public(parts []trace.PlanPart) []trace.PlanPart {
	out := make([]trace.PlanPart, len(parts))
	for i, p := range parts {
		p.Steps = slices.Clone(p.Steps)
		for j := range p.Steps {
			p.Steps[j].Nonce = ""
		}
		out[i] = p
	}
	return out
}

// markSealed records that a build's frontend asked for its sealed trace.
func (p *plans) markSealed(traceID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.builds[traceID]; b != nil {
		b.sealed = true
	}
}
