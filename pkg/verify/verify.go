// Package verify checks an image platform's runtime-trace attestation: that
// the tracer signed what it says, that it belongs to this image, that the
// trace is complete, and that the build kept to a policy.
package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/buildtrace/buildtrace/pkg/attest"
	"github.com/buildtrace/buildtrace/pkg/policy"
	"github.com/buildtrace/buildtrace/pkg/sign"
	"github.com/buildtrace/buildtrace/pkg/trace"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Checks, as named in failures.
const (
	CheckAttestation  = "attestation"  // there is a readable runtime-trace statement
	CheckSignature    = "signature"    // the tracer's envelope verifies with the key
	CheckContent      = "content"      // the predicate is exactly what the signed trace yields
	CheckSubject      = "subject"      // the statement is about this manifest
	CheckBinding      = "binding"      // the image's RUN layers are the traced steps' diffs
	CheckCompleteness = "completeness" // nothing of the build went unobserved
	CheckCached       = "cached"       // no step was skipped as cached
	CheckPolicy       = "policy"
)

// Target is one platform's image manifest and its runtime-trace statement.
type Target struct {
	Manifest  ocispec.Descriptor
	Platform  string
	Image     ocispec.Manifest
	Config    ocispec.Image
	Statement []byte // the in-toto Statement JSON; nil when absent
}

// Options say how to verify.
type Options struct {
	Verifier *sign.Verifier
	Policy   *policy.Checker // nil: the empty policy
	// OpenLayer streams a layer blob of the target's repository.
	OpenLayer func(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error)
	// BaseDiffIDs are the layers of a trusted base image; when the image's
	// rootfs starts with them, those layers are not bound to steps.
	BaseDiffIDs []digest.Digest
}

// Failure is one thing that did not hold.
type Failure struct {
	Check       string   `json:"check"`
	Rule        string   `json:"rule,omitempty"` // policy rule
	StepID      string   `json:"stepID,omitempty"`
	Location    string   `json:"location,omitempty"` // Dockerfile:12-13
	Instruction string   `json:"instruction,omitempty"`
	PID         uint32   `json:"pid,omitempty"`
	Binary      string   `json:"binary,omitempty"`
	Argv        []string `json:"argv,omitempty"`
	Event       string   `json:"event"`
}

// Step is a step's outcome.
type Step struct {
	StepID      string `json:"stepID"`
	Location    string `json:"location,omitempty"`
	Instruction string `json:"instruction,omitempty"`
	Status      string `json:"status"`
	Failures    int    `json:"failures"`
}

// Layer is one RUN layer and the step it was bound to.
type Layer struct {
	Digest     digest.Digest `json:"digest"`
	CreatedBy  string        `json:"createdBy"`
	DiffDigest string        `json:"diffDigest,omitempty"`
	StepID     string        `json:"stepID,omitempty"` // empty when unbound
	Cached     bool          `json:"cached,omitempty"` // explained by a cached step
}

// Result is the outcome for one platform.
type Result struct {
	Platform     string    `json:"platform"`
	Manifest     string    `json:"manifest"`
	BuildTraceID string    `json:"buildTraceID,omitempty"`
	KeyID        string    `json:"keyID,omitempty"`
	Steps        []Step    `json:"steps"`
	Layers       []Layer   `json:"layers"`
	Failures     []Failure `json:"failures"`
}

// Pass reports whether every check held.
func (r *Result) Pass() bool { return len(r.Failures) == 0 }

func (r *Result) fail(f Failure) { r.Failures = append(r.Failures, f) }

// Location formats a step's first Dockerfile location.
func Location(s attest.Step) string {
	if len(s.Locations) == 0 {
		return ""
	}
	l := s.Locations[0]
	if l.EndLine > l.StartLine {
		return fmt.Sprintf("%s:%d-%d", l.File, l.StartLine, l.EndLine)
	}
	return fmt.Sprintf("%s:%d", l.File, l.StartLine)
}

func stepFailure(check string, s attest.Step, event string) Failure {
	return Failure{Check: check, StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Event: event}
}

// Verify checks one platform. A failure to read a layer is reported as a
// binding failure, not an error: the result is always complete.
func Verify(ctx context.Context, t Target, opts Options) *Result {
	r := &Result{Platform: t.Platform, Manifest: t.Manifest.Digest.String(), Steps: []Step{}, Layers: []Layer{}, Failures: []Failure{}}
	checker := opts.Policy
	if checker == nil {
		checker, _ = policy.Compile(nil)
	}
	if t.Statement == nil {
		r.fail(Failure{Check: CheckAttestation, Event: "no runtime-trace attestation (" + attest.PredicateType + ") for this manifest"})
		return r
	}
	pred, err := attest.Parse(t.Statement)
	if err != nil {
		r.fail(Failure{Check: CheckAttestation, Event: err.Error()})
		return r
	}
	r.BuildTraceID = pred.MonitoredProcess.Event
	checkSubject(r, t)

	if !pred.Buildtrace.Monitored {
		r.fail(Failure{Check: CheckCompleteness, Event: "build was not monitored: " + pred.Buildtrace.UnmonitoredReason})
		for _, s := range pred.Buildtrace.Steps {
			r.Steps = append(r.Steps, Step{StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Status: s.Status})
		}
		return r
	}
	if opts.Verifier == nil {
		r.fail(Failure{Check: CheckSignature, Event: "no verification key given"})
		return r
	}
	r.KeyID = opts.Verifier.KeyID()
	payload, err := sign.Verify(ctx, opts.Verifier, pred.Buildtrace.Envelope, trace.PayloadType)
	if err != nil {
		r.fail(Failure{Check: CheckSignature, Event: err.Error()})
		return r
	}
	var b trace.Build
	if err := json.Unmarshal(payload, &b); err != nil {
		r.fail(Failure{Check: CheckSignature, Event: "signed payload is not a trace: " + err.Error()})
		return r
	}
	if b.Version != trace.Version {
		r.fail(Failure{Check: CheckSignature, Event: fmt.Sprintf("signed trace has version %q, want %q", b.Version, trace.Version)})
		return r
	}
	if b.BuildTraceID != pred.MonitoredProcess.Event {
		r.fail(Failure{Check: CheckContent, Event: fmt.Sprintf("signed trace is of build %s, the predicate names build %s", b.BuildTraceID, pred.MonitoredProcess.Event)})
		return r
	}
	if err := checkContent(t.Statement, pred, &b); err != nil {
		r.fail(Failure{Check: CheckContent, Event: err.Error()})
		return r
	}

	runs := map[string][]*trace.Step{}
	for i := range b.Steps {
		s := &b.Steps[i]
		runs[s.StepID] = append(runs[s.StepID], s)
	}
	for _, s := range pred.Buildtrace.Steps {
		before := len(r.Failures)
		checkStep(r, checker, s, runs[s.StepID])
		r.Steps = append(r.Steps, Step{StepID: s.StepID, Location: Location(s), Instruction: s.Instruction, Status: s.Status, Failures: len(r.Failures) - before})
	}
	bind(ctx, r, t, pred, runs, checker.AllowCached(), opts)
	return r
}

func checkStep(r *Result, c *policy.Checker, s attest.Step, runs []*trace.Step) {
	switch s.Status {
	case attest.StatusUnknown:
		if !c.AllowIncomplete() {
			r.fail(stepFailure(CheckCompleteness, s, "step status unknown: "+s.Reason))
		}
	case attest.StatusCached:
		if !c.AllowCached() {
			r.fail(stepFailure(CheckCached, s, "step was cached: it did not run in this build, so what it did was not observed (allow with cached.allow)"))
		}
	}
	if s.Status == attest.StatusExecuted && len(runs) == 0 {
		r.fail(stepFailure(CheckContent, s, "step is executed but the signed trace has no run of it"))
	}
	for _, run := range runs {
		if !run.Completeness.Complete && !c.AllowIncomplete() {
			r.fail(stepFailure(CheckCompleteness, s, incompleteEvent(run)))
		}
	}
	if len(runs) == 0 {
		for _, v := range c.Check(policy.Step{Info: s}) {
			r.fail(policyFailure(s, v))
		}
	}
	for _, run := range runs {
		for _, v := range c.Check(policy.Step{Info: s, Run: run}) {
			r.fail(policyFailure(s, v))
		}
	}
}

func incompleteEvent(run *trace.Step) string {
	c := run.Completeness
	var why []string
	if !c.FollowedFromStart {
		why = append(why, "not followed from its start")
	}
	if c.EventsDropped > 0 {
		why = append(why, fmt.Sprintf("%d events dropped", c.EventsDropped))
	}
	if c.EventsTruncated > 0 {
		why = append(why, fmt.Sprintf("%d events truncated", c.EventsTruncated))
	}
	for k, n := range c.Unobserved {
		why = append(why, fmt.Sprintf("%d unobserved %s", n, k))
	}
	slices.Sort(why)
	why = append(why, c.Reasons...)
	return fmt.Sprintf("trace of container %s is incomplete: %s", run.ContainerID, strings.Join(why, "; "))
}

func policyFailure(s attest.Step, v policy.Violation) Failure {
	f := stepFailure(CheckPolicy, s, v.Event)
	f.Rule, f.PID, f.Binary, f.Argv = v.Rule, v.PID, v.Binary, v.Argv
	return f
}

// statementSubject is the part of an in-toto Statement naming its subjects.
type statementSubject struct {
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
}

func checkSubject(r *Result, t Target) {
	var st statementSubject
	if err := json.Unmarshal(t.Statement, &st); err != nil {
		r.fail(Failure{Check: CheckSubject, Event: "statement: " + err.Error()})
		return
	}
	want := t.Manifest.Digest
	var got []string
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
			if d == want {
				return
			}
			got = append(got, d.String())
		}
	}
	r.fail(Failure{Check: CheckSubject, Event: fmt.Sprintf("statement subject %v is not this image manifest %s", got, want)})
}

// checkContent re-derives the predicate from the verified trace and the
// predicate's own (unsigned) step descriptions, and requires the statement
// to hold exactly that: every observation shown must come from the
// signature, nothing added, removed or altered.
func checkContent(statement []byte, pred *attest.Predicate, b *trace.Build) error {
	var infos []attest.StepInfo
	for _, s := range pred.Buildtrace.Steps {
		infos = append(infos, attest.StepInfo{StepID: s.StepID, OpDigest: s.OpDigest, Name: s.Name, Instruction: s.Instruction,
			Stage: s.Stage, Platform: s.Platform, Locations: s.Locations})
	}
	in := attest.Input{
		Envelope:     pred.Buildtrace.Envelope,
		Build:        b,
		Steps:        infos,
		BuildStart:   pred.Metadata.BuildStartedOn,
		Platform:     pred.Buildtrace.Platform,
		BuildTraceID: pred.Buildtrace.BuildTraceID,
		Monitored:    true,
	}
	if pred.Metadata.BuildFinishedOn != nil {
		in.BuildFinish = *pred.Metadata.BuildFinishedOn
	}
	want, err := attest.Derive(in)
	if err != nil {
		return fmt.Errorf("re-deriving the predicate from the signed trace: %w", err)
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		return err
	}
	var st struct {
		Predicate json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(statement, &st); err != nil {
		return fmt.Errorf("statement: %w", err)
	}
	a, err := canonical(st.Predicate)
	if err != nil {
		return fmt.Errorf("statement predicate: %w", err)
	}
	w, err := canonical(wantJSON)
	if err != nil {
		return err
	}
	if !bytes.Equal(a, w) {
		return fmt.Errorf("predicate differs from what the signed trace yields: %s", firstDifference(a, w))
	}
	return nil
}

// canonical re-encodes JSON with sorted keys and exact numbers.
func canonical(data []byte) ([]byte, error) {
	v, err := decodeExact(data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func decodeExact(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// firstDifference names the first JSON path where a and b (canonical)
// differ, for the failure message.
func firstDifference(a, b []byte) string {
	va, _ := decodeExact(a)
	vb, _ := decodeExact(b)
	if p, ok := diffPath("predicate", va, vb); ok {
		return p
	}
	return "encoding differs"
}

func diffPath(p string, a, b any) (string, bool) {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return p + " has a different type", true
		}
		keys := make([]string, 0, len(x)+len(y))
		for k := range x {
			keys = append(keys, k)
		}
		for k := range y {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range slices.Compact(keys) {
			xv, xok := x[k]
			yv, yok := y[k]
			switch {
			case !xok:
				return p + "." + k + " is missing", true
			case !yok:
				return p + "." + k + " is not in the signed trace", true
			}
			if d, ok := diffPath(p+"."+k, xv, yv); ok {
				return d, true
			}
		}
		return "", false
	case []any:
		y, ok := b.([]any)
		if !ok {
			return p + " has a different type", true
		}
		for i := 0; i < min(len(x), len(y)); i++ {
			if d, ok := diffPath(fmt.Sprintf("%s[%d]", p, i), x[i], y[i]); ok {
				return d, true
			}
		}
		if len(x) != len(y) {
			return fmt.Sprintf("%s has %d entries, the signed trace yields %d", p, len(x), len(y)), true
		}
		return "", false
	default:
		xa, _ := json.Marshal(a)
		yb, _ := json.Marshal(b)
		if !bytes.Equal(xa, yb) {
			return fmt.Sprintf("%s is %s, the signed trace yields %s", p, truncate(string(xa)), truncate(string(yb))), true
		}
		return "", false
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
